"""llama.cpp's native `llama-server`: the CPU engine (not llama-cpp-python's own server:
it batches concurrent requests with --parallel, reports usage, and has /health and /metrics)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from tasks.engines.base import EngineAdapter, LaunchSpec
from tasks.matrix import Engine, Instance, MatrixError, Workload
from tasks.workloads import COLD_WORKLOAD_KINDS


def cached_binary(version: str) -> Path:
    """Where `make llama-server` (docker/build-llama-server.sh) caches the build of a version."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "bakeoff" / "llama-server" / version / "llama-server"


class LlamaCppAdapter(EngineAdapter):
    kind = "llamacpp"
    upstream_image = "ghcr.io/ggml-org/llama.cpp:server"  # entrypoint llama-server; CPU build
    version_path = "/props"
    version_field = "build_info"
    health_path = "/health"  # 503 while the model loads, 200 when ready
    metrics_path = "/metrics"  # served with --metrics
    # Log lines from tools/server/server.cpp, server-http.cpp and llama.cpp's model loader.
    failure_patterns: ClassVar[list[tuple[str, str]]] = [
        ("port_in_use", r"couldn't bind HTTP server socket"),
        ("model_not_found", r"failed to open GGUF file|No such file or directory"),
        ("out_of_memory", r"failed to allocate|out of memory|unable to allocate"),
        ("model_load_failed", r"invalid magic|failed to load model|exiting due to model loading error"),
        ("http_server_error", r"exiting due to HTTP server error"),
        ("unsupported_cpu", r"Illegal instruction"),
        # common/arg.cpp: an unknown flag, or a value it cannot parse (deterministic: never retried)
        ("bad_flag", r"error: invalid argument: |error while handling argument"),
    ]

    def binary(self, engine: Engine) -> Path:
        if engine.binary:
            return Path(os.path.expandvars(engine.binary)).expanduser()
        if os.environ.get("BAKEOFF_LLAMA_SERVER"):
            return Path(os.environ["BAKEOFF_LLAMA_SERVER"])
        return cached_binary(engine.version)

    def request_extras(self, workload: Workload, engine: Engine | None = None) -> dict:
        """ignore_eos as every engine takes it, and `cache_prompt: false` on a cold workload: llama-server
        re-uses a previous request's KV cache for a shared prompt prefix unless told not to, which made the
        demo's study set read 75% of its prompt tokens from the cache."""
        extras = super().request_extras(workload, engine)
        if workload.kind in COLD_WORKLOAD_KINDS:
            extras["cache_prompt"] = False
        return extras

    def launch_spec(
        self,
        engine: Engine,
        inst: Instance,
        model_path: Path | str,
        served_name: str,
        port: int,
        memory_args: list[str] = (),
    ) -> LaunchSpec:
        args = [
            "--model",
            str(model_path),
            "--alias",
            served_name,
            # In a container on a bridge network it must listen beyond its own loopback.
            "--host",
            "0.0.0.0" if engine.launcher == "docker" and engine.network == "bridge" else "127.0.0.1",
            "--port",
            str(port),
            # The context is split between slots: each of the `parallel` slots gets ctx/parallel.
            "--ctx-size",
            str(inst.context_length * inst.parallel),
            "--parallel",
            str(inst.parallel),
            "--metrics",
            *engine.args,
            *inst.args,
        ]
        if engine.launcher == "docker":  # the image's entrypoint is llama-server
            return LaunchSpec(argv=args, env=dict(engine.env), port=port)
        binary = self.binary(engine)
        if not binary.is_file():
            raise MatrixError(
                f"engines: llama-server {engine.version} is not built at {binary}; run `make llama-server` "
                "or set BAKEOFF_LLAMA_SERVER"
            )
        return LaunchSpec(argv=[str(binary), *args], env=dict(engine.env), port=port)
