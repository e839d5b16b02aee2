"""SGLang's server (upstream lmsysorg/sglang, or the custom Blackwell image): flags, health,
metrics and failures."""

from __future__ import annotations

from pathlib import Path

from tasks.engines.base import EngineAdapter, LaunchSpec
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
