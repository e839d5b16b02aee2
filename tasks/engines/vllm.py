"""vLLM's OpenAI server (the vllm/vllm-openai image): its flags, health, metrics and failures."""

from __future__ import annotations

from pathlib import Path

from tasks.engines.base import CacheReset, EngineAdapter, LaunchSpec, ProfileReview
from tasks.engines.classify import GPU_FAILURE_PATTERNS
from tasks.matrix import Engine, Instance

# Named flag sets for GPUs that need them. The study needed --enforce-eager on the RTX 5090
# (no CUDA graph capture / torch.compile for sm_120 in that release).
PROFILES: dict[str, list[str]] = {
    "blackwell": ["--enforce-eager"],
}

# Which of the profile's workarounds each version still needs (docs/engine-versions.md has the review).
# 0.33.0 / 0.34.0 from their wheels: _C_stable_libtorch carries sm_120 SASS (69 kernels; 0.10.2's _C
# had 35, so kernels were never what was missing), torch 2.14.0 (0.10.2: 2.8.0), and SM120 paths in the
# attention backends (triton_attn tunes its decode grid for (12, 0); FlashInfer takes the TRT-LLM decode
# kernels on the sm_120 family); no sm_120 case forces eager mode or turns CUDA graphs off.
_SOURCE_0_3X = (
    "wheel: sm_120 SASS in _C_stable_libtorch, torch 2.14.0; v1/attention/backends/triton_attn.py and "
    "flashinfer.py have SM120 paths; config/ forces eager or cudagraph_mode NONE for no sm_120 case"
)
PROFILE_REVIEWS: dict[str, dict[str, ProfileReview]] = {
    "blackwell": {
        "0.10.2": ProfileReview(
            needed=("--enforce-eager",),
            not_needed=(),
            basis="measured",
            evidence="the study (RTX 5090, 2025-09-18): CUDA graph capture / torch.compile failed without it",
        ),
        "0.33.0": ProfileReview(needed=(), not_needed=("--enforce-eager",), basis="source", evidence=_SOURCE_0_3X),
        "0.34.0": ProfileReview(needed=(), not_needed=("--enforce-eager",), basis="source", evidence=_SOURCE_0_3X),
    },
}

# POST /reset_prefix_cache exists in every listed version, but only on a server started with
# VLLM_SERVER_DEV_MODE=1 (0.10.2: entrypoints/openai/api_server.py; 0.3x: entrypoints/serve/dev/cache/).
# 0.10.2 answers 200 with no body; 0.33 / 0.34 answer {"success": bool}, false while blocks are held.
CACHE_RESETS: list[tuple[str, CacheReset | None]] = [
    ("0.10.2", CacheReset("POST", "/reset_prefix_cache", {"VLLM_SERVER_DEV_MODE": "1"}, "status")),
    ("0.33.0", CacheReset("POST", "/reset_prefix_cache", {"VLLM_SERVER_DEV_MODE": "1"}, "json-success")),
]
# The /metrics names (vllm/v1/metrics/loggers.py) bakeoff reads. 0.10.2 still exposed the old names
# beside the new (gpu_cache_usage_perc, gpu_prefix_cache_*); 0.33 has only the new, and its TPOT
# histogram is request_time_per_output_token_seconds (0.10.2: time_per_output_token_seconds).
_METRICS_COMMON = {
    "running": "vllm:num_requests_running",
    "waiting": "vllm:num_requests_waiting",
    "kv_cache_usage": "vllm:kv_cache_usage_perc",
    "prefix_cache_queries": "vllm:prefix_cache_queries_total",
    "prefix_cache_hits": "vllm:prefix_cache_hits_total",
    "preemptions": "vllm:num_preemptions_total",
    "prompt_tokens": "vllm:prompt_tokens_total",
    "generation_tokens": "vllm:generation_tokens_total",
    "ttft_seconds": "vllm:time_to_first_token_seconds",
    "itl_seconds": "vllm:inter_token_latency_seconds",
}
METRIC_NAMES: list[tuple[str, dict[str, str]]] = [
    ("0.10.2", {**_METRICS_COMMON, "tpot_seconds": "vllm:time_per_output_token_seconds"}),
    (
        "0.33.0",
        {
            **_METRICS_COMMON,
            "tpot_seconds": "vllm:request_time_per_output_token_seconds",
            "prompt_tokens_cached": "vllm:prompt_tokens_cached_total",
        },
    ),
]


class VllmAdapter(EngineAdapter):
    kind = "vllm"
    upstream_image = "vllm/vllm-openai:v{version}"
    version_path = "/version"
    version_field = "version"
    health_path = "/health"
    metrics_path = "/metrics"
    failure_patterns = GPU_FAILURE_PATTERNS
    memory_flag = "--gpu-memory-utilization"
    memory_fraction_of = "total"
    gpu_by_default = True
    cache_resets = CACHE_RESETS
    metric_names_by_version = METRIC_NAMES
    profile_reviews = PROFILE_REVIEWS

    def launch_spec(
        self,
        engine: Engine,
        inst: Instance,
        model_path: Path | str,
        served_name: str,
        port: int,
        memory_args: list[str] = (),
    ) -> LaunchSpec:
        # The image's entrypoint is the OpenAI server; these are its arguments.
        argv = [
            "--model",
            str(model_path),
            "--served-model-name",
            served_name,
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--max-model-len",
            str(inst.context_length),
            "--max-num-seqs",
            str(inst.parallel),
            *memory_args,
            *PROFILES.get(engine.profile or "", []),
            *engine.args,
            *inst.args,
        ]
        return LaunchSpec(argv=argv, env=dict(engine.env), port=port)
