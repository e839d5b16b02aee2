"""SGLang's server (upstream lmsysorg/sglang, or the custom Blackwell image): flags, health,
metrics and failures."""

from __future__ import annotations

from pathlib import Path

from tasks.engines.base import CacheReset, EngineAdapter, LaunchSpec, ProfileReview
from tasks.engines.classify import GPU_FAILURE_PATTERNS
from tasks.matrix import Engine, Instance

# The study's RTX 5090 set: everything that had no sm_120 kernels in that release turned off,
# attention in plain PyTorch. Costly: no CUDA graphs, no RadixAttention (prefix cache).
# The study also passed --disable-flashinfer, which SGLang 0.5.2 no longer has (flashinfer is one
# of the --attention-backend choices now, so torch_native already keeps it off);
# tests/test_engine_flags.py caught it against the version's real flags.
PROFILES: dict[str, list[str]] = {
    "blackwell": [
        "--disable-cuda-graph",
        "--disable-custom-all-reduce",
        "--disable-radix-cache",
        "--attention-backend",
        "torch_native",
    ],
}

# Which of the profile's workarounds each version still needs (docs/engine-versions.md has the review).
# 0.5.2 has no sm_120 case at all (utils.py knows is_sm100_supported only, and server_args.py refuses
# trtllm_mha off SM100); 0.5.23 (torch 2.14.1, flashinfer 0.7.2 for CUDA 13, sglang-kernel 0.4.10) has
# is_sm120 / is_sm120_supported and SM120 paths in its attention and KV-cache hooks (trtllm_mha allowed on
# SM120, FlashInfer for hybrid models), and calls --disable-cuda-graph deprecated. One GPU never uses the
# custom all-reduce (it is for tensor parallelism), so that flag was never needed there.
_STUDY = "--disable-cuda-graph", "--disable-radix-cache", "--attention-backend"
PROFILE_REVIEWS: dict[str, dict[str, ProfileReview]] = {
    "blackwell": {
        "0.5.2": ProfileReview(
            needed=(*_STUDY, "--disable-custom-all-reduce"),
            not_needed=(),
            basis="measured",
            evidence=(
                "the study (RTX 5090, 2025-09-18) on the custom image: no sm_120 kernels for the defaults "
                "(--disable-custom-all-reduce is kept as the study set it; one GPU never uses it)"
            ),
        ),
        "0.5.23": ProfileReview(
            needed=(),
            not_needed=(*_STUDY, "--disable-custom-all-reduce"),
            basis="source",
            evidence=(
                "wheel: utils/common.py is_sm120, arg_groups/attention_hook.py allows trtllm_mha on SM120, "
                "layers/attention/attention_registry.py has SM120 backends; --disable-cuda-graph deprecated "
                "(--cuda-graph-backend-{decode,prefill}=disabled)"
            ),
        ),
    },
}

# GET or POST /flush_cache in both listed versions (entrypoints/http_server.py); 200 once flushed, 400
# while requests are running.
CACHE_RESETS: list[tuple[str, CacheReset | None]] = [("0.5.2", CacheReset("POST", "/flush_cache"))]
# The /metrics names (0.5.2: srt/metrics/collector.py; 0.5.23: srt/observability/metrics_collector.py).
# 0.5.23 renamed num_aborted_requests to num_aborted_requests_total and dropped total_retracted_reqs.
_METRICS = {
    "running": "sglang:num_running_reqs",
    "waiting": "sglang:num_queue_reqs",
    "kv_cache_usage": "sglang:token_usage",
    "prefix_cache_hit_rate": "sglang:cache_hit_rate",
    "cached_tokens": "sglang:cached_tokens_total",
    "prompt_tokens": "sglang:prompt_tokens_total",
    "generation_tokens": "sglang:generation_tokens_total",
    "ttft_seconds": "sglang:time_to_first_token_seconds",
    "itl_seconds": "sglang:inter_token_latency_seconds",
    "retracted": "sglang:num_retracted_reqs",
}
METRIC_NAMES: list[tuple[str, dict[str, str]]] = [
    ("0.5.2", {**_METRICS, "aborted": "sglang:num_aborted_requests", "retracted_total": "sglang:total_retracted_reqs"}),
    ("0.5.23", {**_METRICS, "aborted": "sglang:num_aborted_requests_total"}),
]


class SglangAdapter(EngineAdapter):
    kind = "sglang"
    upstream_image = "lmsysorg/sglang:v{version}"
    version_path = "/get_server_info"
    version_field = "version"
    health_path = "/health"
    metrics_path = "/metrics"  # served with --enable-metrics
    failure_patterns = GPU_FAILURE_PATTERNS
    memory_flag = "--mem-fraction-static"
    memory_fraction_of = "free_at_start"
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
        argv = [
            "python3",
            "-m",
            "sglang.launch_server",
            "--model-path",
            str(model_path),
            "--served-model-name",
            served_name,
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--context-length",
            str(inst.context_length),
            "--max-running-requests",
            str(inst.parallel),
            "--enable-metrics",
            *memory_args,
            *PROFILES.get(engine.profile or "", []),
            *engine.args,
            *inst.args,
        ]
        return LaunchSpec(argv=argv, env=dict(engine.env), port=port)
