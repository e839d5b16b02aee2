"""vLLM's OpenAI server (the vllm/vllm-openai image): its flags, health, metrics and failures."""

from __future__ import annotations

from pathlib import Path

from tasks.engines.base import EngineAdapter, LaunchSpec
from tasks.engines.classify import GPU_FAILURE_PATTERNS
from tasks.matrix import Engine, Instance

# Named flag sets for GPUs that need them. The study needed --enforce-eager on the RTX 5090
# (no CUDA graph capture / torch.compile for sm_120 in that release).
PROFILES: dict[str, list[str]] = {
    "blackwell": ["--enforce-eager"],
}


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
