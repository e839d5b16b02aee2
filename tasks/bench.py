"""Run one bench cell against a healthy instance: warmup, then the measured load, with progress."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

from dataclasses import dataclass, field

from tasks.loadgen import KEPT_UP_P99_MS, Target, run_load
from tasks.matrix import Cell, Matrix
from tasks.records import RequestRecord
from tasks.telemetry import Sampler
from tasks.workloads import RequestSpec, build_requests

log = logging.getLogger("bakeoff.bench")


class _Progress:
    """Logs requests done/total every `every_s` seconds and at the end, not on every request."""

    def __init__(self, label: str, every_s: float = 5.0) -> None:
        self.label, self.every_s, self.last = label, every_s, time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= self.every_s:
            self.last = now
            log.info("%s: %d/%d requests done", self.label, done, total)


@dataclass
class CellOutcome:
    row: dict  # the `cells` row
    records: list[RequestRecord]
    gpu_samples: list[dict] = field(default_factory=list)
    host_samples: list[dict] = field(default_factory=list)


def cycled(specs: list[RequestSpec], n: int | None) -> list[RequestSpec]:
    """The workload cut or repeated to n requests (None: the workload once)."""
    if n is None:
        return list(specs)
    return [specs[i % len(specs)] for i in range(n)]


def run_cell(
    matrix: Matrix, cell: Cell, target: Target, extra_body: dict, *, run_id: str, base_dir: Path, label: str,
    engine_pids: dict[str, int] | None = None,
) -> CellOutcome:
    """Runs the cell with telemetry sampling around it; returns its row, raw records and samples."""
    workload = next(w for w in matrix.workloads if w.id == cell.workload_id)
    load, shape = matrix.load, cell.shape
    # The seed varies with the repeat so repeats are not the same request order (nor arrival times).
    seed = load.seed + cell.repeat
    workload_specs = build_requests(workload, seed=seed, base_dir=base_dir)
    specs = cycled(workload_specs, load.requests_per_cell)
    warmup = workload_specs[: load.warmup_requests]
    target = dataclasses.replace(target, extra_body=extra_body)
    how = f"concurrency {shape.concurrency}" if shape.kind == "closed" else f"{shape.label} (open loop)"
    log.info("%s: %d requests at %s (%d warmup)", label, len(specs), how, len(warmup))
    gpu_index = matrix.gpu.index if matrix.gpu else 0
    with Sampler(run_id, cell.cell_id, gpu_index=gpu_index, pids=engine_pids) as sampler:
        result = asyncio.run(run_load(
            target,
            specs,
            shape,
            run_id=run_id,
            cell_id=cell.cell_id,
            seed=seed,
            warmup=warmup,
            temperature=workload.temperature,
            request_timeout_s=load.request_timeout_s,
            duration_s=load.duration_s,
            progress=_Progress(label),
        ))
    overhead = result.overhead
    if overhead.kept_up is False:
        log.warning("%s: the client did not keep up (p99 send lateness %.2f ms, p99 loop lag %.2f ms; bound %.1f ms)",
                    label, overhead.send_lateness_p99_ms, overhead.loop_lag_p99_ms, KEPT_UP_P99_MS)
    failed = sum(r.status != "ok" for r in result.records)
    if failed:
        log.warning("%s: %d of %d requests failed", label, failed, len(result.records))
    row = {
        "run_id": run_id,
        "cell_id": cell.cell_id,
        "deployment_id": cell.deployment_id,
        "instance_id": cell.instance_id,
        "engine": target.engine,
        "model": target.model,
        "workload_id": cell.workload_id,
        "load_kind": shape.kind,
        "concurrency": shape.concurrency,
        "repeat": cell.repeat,
        "requests_planned": len(specs),
        "warmup_requests": len(warmup),
        "started_at": result.started_at,
        "wall_ns": result.wall_ns,
        # migration 0002
        "arrival": shape.arrival,
        "rate_rps": shape.rate_rps,
        "burstiness": shape.burstiness,
        "max_concurrency": shape.max_concurrency,
        "duration_limit_s": load.duration_s,
        "send_lateness_p50_ms": overhead.send_lateness_p50_ms,
        "send_lateness_p99_ms": overhead.send_lateness_p99_ms,
        "loop_lag_p99_ms": overhead.loop_lag_p99_ms,
        "loop_lag_max_ms": overhead.loop_lag_max_ms,
        "client_kept_up": overhead.kept_up,
    }
    return CellOutcome(row, result.records, sampler.gpu_rows, sampler.host_rows)
