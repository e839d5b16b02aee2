"""Run one bench cell against a healthy instance: warmup, then the measured load, with progress."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

from dataclasses import dataclass, field

from tasks.loadgen import Target, run_closed_loop
from tasks.matrix import Cell, Matrix
from tasks.records import RequestRecord
from tasks.telemetry import Sampler
from tasks.workloads import build_requests

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


def run_cell(
    matrix: Matrix, cell: Cell, target: Target, extra_body: dict, *, run_id: str, base_dir: Path, label: str,
    engine_pids: dict[str, int] | None = None,
) -> CellOutcome:
    """Runs the cell with telemetry sampling around it; returns its row, raw records and samples."""
    workload = next(w for w in matrix.workloads if w.id == cell.workload_id)
    # The seed varies with the repeat so repeats are not the same request order.
    specs = build_requests(workload, seed=matrix.load.seed + cell.repeat, base_dir=base_dir)
    warmup = specs[: matrix.load.warmup_requests]
    target = dataclasses.replace(target, extra_body=extra_body)
    log.info("%s: %d requests at concurrency %d (%d warmup)", label, len(specs), cell.concurrency, len(warmup))
    gpu_index = matrix.gpu.index if matrix.gpu else 0
    with Sampler(run_id, cell.cell_id, gpu_index=gpu_index, pids=engine_pids) as sampler:
        result = asyncio.run(run_closed_loop(
            target,
            specs,
            run_id=run_id,
            cell_id=cell.cell_id,
            concurrency=cell.concurrency,
            warmup=warmup,
            temperature=workload.temperature,
            request_timeout_s=matrix.load.request_timeout_s,
            progress=_Progress(label),
        ))
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
        "load_kind": "closed",
        "concurrency": cell.concurrency,
        "repeat": cell.repeat,
        "requests_planned": len(specs),
        "warmup_requests": len(warmup),
        "started_at": result.started_at,
        "wall_ns": result.wall_ns,
    }
    return CellOutcome(row, result.records, sampler.gpu_rows, sampler.host_rows)
