"""Test helpers: builders of raw rows with hand-written timings (so expected metrics can be computed by
hand), and `require`, the skip that CI turns into a failure."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks.records import RequestRecord, records_to_arrow
from warehouse import store


def require(env_var: str, reason: str) -> None:
    """Skip with the reason, or fail where CI says the thing is installed."""
    if os.environ.get(env_var) == "1":
        pytest.fail(f"{reason} (and {env_var}=1 says it must be available here)")
    pytest.skip(reason)


def import_or_require(module: str, env_var: str, reason: str):
    """The module, or require(env_var, reason) when it cannot be imported."""
    try:
        return __import__(module)
    except ImportError as exc:
        require(env_var, f"{reason} ({exc})")


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at `where` (root only: a full or read-only file system made for the test),
    unmounted after; a skip with the reason elsewhere, a failure where BAKEOFF_REQUIRE_TMPFS=1 (CI)."""
    if os.geteuid() != 0:
        require("BAKEOFF_REQUIRE_TMPFS", "mounting a tmpfs needs root")
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=False).returncode:
        require("BAKEOFF_REQUIRE_TMPFS", "this machine does not allow a tmpfs mount")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


MS = 1_000_000  # ns
T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def record(
    i: int,
    *,
    run_id="run-1",
    cell_id="cell-a",
    sent_ms=0.0,
    chunks_ms=(10, 20, 30),
    tokens=3,
    status="ok",
    max_tokens=8,
    deployment_id="dep",
    engine="llamacpp",
    model="m",
    **kw,
) -> RequestRecord:
    chunks = [int(c * MS) for c in chunks_ms]
    ok_like = status == "ok"
    return RequestRecord(
        run_id=run_id,
        cell_id=cell_id,
        request_id=f"{cell_id}#{i}",
        prompt_id=f"p{i}",
        engine=engine,
        model=model,
        deployment_id=deployment_id,
        instance_id=f"{deployment_id}-0",
        max_tokens=max_tokens,
        cell_started_at=T0,
        scheduled_at=kw.pop("scheduled_at", int(sent_ms * MS)),
        sent_at=int(sent_ms * MS),
        first_chunk_at=int(kw.pop("first_chunk_ms") * MS)
        if "first_chunk_ms" in kw
        else chunks[0] - 1
        if chunks
        else None,
        first_token_at=chunks[0] if chunks else None,
        last_token_at=chunks[-1] if chunks else None,
        done_at=int(kw.pop("done_ms") * MS) if "done_ms" in kw else (chunks[-1] if chunks else int(sent_ms * MS)) + 1,
        chunk_times=chunks,
        prompt_tokens=5,
        completion_tokens=tokens if ok_like else None,
        status=status,
        **kw,
    )


def cell_row(cell_id="cell-a", *, run_id="run-1", wall_ms=100.0, deployment_id="dep", concurrency=2, **kw) -> dict:
    return {
        "run_id": run_id,
        "cell_id": cell_id,
        "deployment_id": deployment_id,
        "instance_id": f"{deployment_id}-0",
        "engine": kw.get("engine", "llamacpp"),
        "model": kw.get("model", "m"),
        "workload_id": "w",
        "load_kind": "closed",
        "arrival": "closed",
        "concurrency": concurrency,
        "repeat": 0,
        "requests_planned": kw.get("planned", 0),
        "warmup_requests": 0,
        "started_at": T0,
        "wall_ns": int(wall_ms * MS),
    }


def run_row(run_id="run-1", **slo) -> dict:
    return {
        "run_id": run_id,
        "matrix_name": "test",
        "matrix_path": "m.yaml",
        "matrix_sha256": "0" * 64,
        "started_at": T0.isoformat(),
        "finished_at": T0.isoformat(),
        "status": "completed",
        "slo_ttft_ms": slo.get("ttft_ms"),
        "slo_tpot_ms": slo.get("tpot_ms"),
        "slo_e2e_ms": slo.get("e2e_ms"),
        "validation": None,
    }


def deployment_row(run_id="run-1", deployment_id="dep", started=True, **kw) -> dict:
    return {
        "run_id": run_id,
        "instance_id": f"{deployment_id}-0",
        "deployment_id": deployment_id,
        "start_order": 0,
        "engine": "llamacpp",
        "engine_kind": "llamacpp",
        "engine_version": "0.3.36",
        "model": "m",
        "launcher": "process",
        "flags": ["--parallel", "2"],
        "started": started,
        "failure_class": kw.get("failure_class"),
        "startup_s": 1.5 if started else None,
    }


def stage(
    tmp_path: Path,
    records: list[RequestRecord],
    cells: list[dict],
    run: dict | None = None,
    deployments: list[dict] | None = None,
    host_samples: list[dict] = (),
    gpu_samples: list[dict] = (),
) -> Path:
    run = run or run_row(records[0].run_id if records else "run-1")
    run_dir = tmp_path / "runs" / run["run_id"]
    store.stage_run(
        run_dir,
        run,
        deployments if deployments is not None else [deployment_row(run["run_id"])],
        cells,
        records_to_arrow(records),
        host_samples=host_samples,
        gpu_samples=gpu_samples,
    )
    return run_dir


def host_sample(run_id="run-1", cell_id="cell-a", *, at_s: float = 0.0, **kw) -> dict:
    """One /proc sample as tasks/telemetry writes it: `cpu` the machine's %, `engine_cpu` the engine's."""
    from datetime import timedelta

    return {
        "run_id": run_id,
        "cell_id": cell_id,
        "sampled_at": T0 + timedelta(seconds=at_s),
        "instance_id": kw.get("instance_id", "dep-0"),
        "cpu_util_pct": kw.get("cpu", 50.0),
        "load1": 1.0,
        "engine_rss_bytes": kw.get("rss", 123_456_789),
        "engine_cpu_pct": kw.get("engine_cpu"),
    }


def gpu_sample(run_id="run-1", cell_id="cell-a", *, power_w: float | None, at_s: float = 0.0, gpu_index=0) -> dict:
    """One NVML sample as tasks/telemetry.gpu_sample writes it."""
    from datetime import timedelta

    return {
        "run_id": run_id,
        "cell_id": cell_id,
        "sampled_at": T0 + timedelta(seconds=at_s),
        "gpu_index": gpu_index,
        "memory_used_bytes": 1 << 30,
        "memory_total_bytes": 32 << 30,
        "gpu_util_pct": 80,
        "memory_util_pct": 40,
        "power_w": power_w,
        "temperature_c": 60,
        "sm_clock_mhz": 2000,
    }


def external_engine_matrix(
    name: str, url: str, served_name: str = "mock-ok", *, startup_timeout_s: float = 5, **sections
) -> dict:
    """A matrix measuring one `external` server (the MOCK faulty server, or a llama-server run by the
    test) that streams to max_tokens (`accepts: [ignore_eos]`); `sections` replace top-level fields."""
    matrix = {
        "name": name,
        "engines": {
            "ext": {
                "kind": "external",
                "version": "1",
                "url": url,
                "launcher": "none",
                "startup_timeout_s": startup_timeout_s,
                "accepts": ["ignore_eos"],
            }
        },
        "models": {"m": {"path": "unused", "served_name": served_name}},
        "deployments": [{"id": "ext", "instances": [{"engine": "ext", "model": "m"}]}],
        "workloads": [{"id": "w", "limit_prompts": 2, "output_lengths": [3]}],
        "load": {"concurrency": [1], "warmup_requests": 0, "request_timeout_s": 5},
    }
    matrix.update(sections)
    return matrix


def cpu_engine_matrix(name: str, llama_server: Path, smollm2: Path, **sections) -> dict:
    """A matrix serving SmolLM2 on the real llama-server (2 slots, 512-token context per slot);
    `sections` (workloads, load, deployments, models, slo, ...) replace or add top-level fields."""
    matrix = {
        "name": name,
        "engines": {
            "cpu": {
                "kind": "llamacpp",
                "version": "0.3.36",
                "binary": str(llama_server),
                "args": ["--threads", "2"],
                "startup_timeout_s": 60,
            }
        },
        "models": {"smollm2": {"path": str(smollm2), "served_name": "smollm2"}},
        "deployments": [
            {"id": "cpu", "instances": [{"engine": "cpu", "model": "smollm2", "parallel": 2, "context_length": 512}]}
        ],
    }
    matrix.update(sections)
    return matrix
