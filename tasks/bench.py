"""Run one bench cell against a healthy instance: warmup, then the measured load, with progress;
and a rate sweep (run_sweep): saturation first, then open-loop rates below it, stopping early."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tasks import progress, structured
from tasks.loadgen import KEPT_UP_P99_MS, Target, quantile, run_load
from tasks.matrix import Matrix, Sweep
from tasks.plan import Cell, LoadShape, PlannedInstance
from tasks.records import CLIENT_CANCEL, CellRow, RequestRecord
from tasks.telemetry import Sampler
from tasks.workloads import RequestSpec, build_requests, warmup_specs, with_cancellations

log = logging.getLogger("bakeoff.bench")


class _Progress:
    """Logs requests done/total every `every_s` seconds and at the end, not on every request; every
    call goes to the terminal display (tasks/progress.py), if one is shown."""

    def __init__(self, label: str, every_s: float = 5.0) -> None:
        self.label, self.every_s, self.last = label, every_s, time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        progress.requests(self.label, done, total)
        now = time.monotonic()
        if done == total or now - self.last >= self.every_s:
            self.last = now
            log.info("%s: %d/%d requests done", self.label, done, total)


@dataclass
class CellOutcome:
    row: CellRow  # the `cells` row
    records: list[RequestRecord]
    gpu_samples: list[dict] = field(default_factory=list)
    host_samples: list[dict] = field(default_factory=list)


class CellInterrupted(Exception):
    """A cell stopped by Ctrl-C or a cancelled flow run: `outcome` holds what it measured (requests
    in flight as "cancelled"), `cause` is the interruption to re-raise once that is kept."""

    def __init__(self, outcome: CellOutcome, cause: BaseException) -> None:
        super().__init__(
            f"cell {outcome.row.cell_id} interrupted ({type(cause).__name__}) after {len(outcome.records)} requests"
        )
        self.outcome, self.cause = outcome, cause


def cycled(specs: list[RequestSpec], n: int | None) -> list[RequestSpec]:
    """The workload cut or repeated to n requests (None: the workload once)."""
    if n is None:
        return list(specs)
    return [specs[i % len(specs)] for i in range(n)]


def run_cell(
    matrix: Matrix,
    cell: Cell,
    target: Target,
    extra_body: dict,
    *,
    run_id: str,
    base_dir: Path,
    label: str,
    engine_pids: dict[str, int] | None = None,
    cache_state: str | None = None,
) -> CellOutcome:
    """Runs the cell with telemetry sampling around it; returns its row, raw records and samples.
    `cache_state`: what the caller found or made of the engine's prefix cache (tasks/engines/cache.py)."""
    workload = next(w for w in matrix.workloads if w.id == cell.workload_id)
    load, shape = matrix.load, cell.shape
    # The seed varies with the repeat so repeats are not the same request order (nor arrival times).
    seed = load.seed + cell.repeat
    workload_specs = build_requests(workload, seed=seed, base_dir=base_dir)
    # a trace is sent as it is, on its own timestamps: requests_per_cell does not cut or cycle it
    specs = cycled(workload_specs, None if workload.kind == "trace" else load.requests_per_cell)
    specs = with_cancellations(specs, workload, seed=seed)  # cancel_share of them closed after their delay
    warmup = warmup_specs(workload_specs, load.warmup_requests)  # no prefix shared with measured requests
    target = dataclasses.replace(target, extra_body=extra_body)
    how = f"concurrency {shape.concurrency}" if shape.kind == "closed" else f"{shape.label} (open loop)"
    log.info("%s: %d requests at %s (%d warmup)", label, len(specs), how, len(warmup))
    begun: dict = {}
    with Sampler(run_id, cell.cell_id, gpu_index=matrix.gpu_index, pids=engine_pids) as sampler:
        try:
            result = asyncio.run(
                run_load(
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
                    cell_timeout_s=load.cell_timeout_s,
                    progress=_Progress(label),
                    on_start=lambda records, started_at, t0: begun.update(
                        records=records, started_at=started_at, t0=t0
                    ),
                )
            )
        except (KeyboardInterrupt, SystemExit, asyncio.CancelledError) as exc:
            if not begun:
                raise
            # Requests in flight end as "cancelled": asyncio.run cancels them, and one the interruption
            # left unfinished (no done_at: its coroutine never resumed) is closed here.
            sent = [r for r in begun["records"] if r.sent_at is not None]
            wall_ns = time.monotonic_ns() - begun["t0"]
            for r in sent:
                if r.done_at is None:
                    r.status, r.error_class, r.done_at = "cancelled", type(exc).__name__, wall_ns
            structured.judge(sent, workload_specs, {})  # which schema each was for; no reply kept to judge
            row = _cell_row(
                matrix, cell, target, run_id, len(specs), len(warmup), begun["started_at"], wall_ns, None, cache_state
            )
            log.warning("%s: interrupted after %d requests sent; they are kept", label, len(sent))
            raise CellInterrupted(CellOutcome(row, sent, sampler.gpu_rows, sampler.host_rows), exc) from exc
    overhead = result.overhead
    if overhead.kept_up is False:
        # Sends on time but a late loop: the process was not scheduled in time (busy cores), so chunk
        # stamps can be late by about that lag. Say so: on a small machine a CPU engine causes it.
        busy = (overhead.send_lateness_p99_ms or 0) <= KEPT_UP_P99_MS
        log.warning(
            "%s: the client did not keep up (p99 send lateness %.2f ms, p99 loop lag %.2f ms; bound %.1f ms)%s",
            label,
            overhead.send_lateness_p99_ms,
            overhead.loop_lag_p99_ms,
            KEPT_UP_P99_MS,
            ": its event loop woke late, the machine's cores are busy (an engine on the same cores?)" if busy else "",
        )
    structured.judge(result.records, workload_specs, result.texts)  # structured replies against their schemas
    cancelled = sum(r.error_class == CLIENT_CANCEL for r in result.records)  # on purpose: not failures
    failed = sum(r.status != "ok" for r in result.records) - cancelled
    if failed:
        log.warning("%s: %d of %d requests failed", label, failed, len(result.records))
    if cancelled:
        log.info(
            "%s: %d of %d requests cancelled by the client, as the workload asks", label, cancelled, len(result.records)
        )
    row = _cell_row(
        matrix, cell, target, run_id, len(specs), len(warmup), result.started_at, result.wall_ns, overhead, cache_state
    )
    return CellOutcome(row, result.records, sampler.gpu_rows, sampler.host_rows)


def _cell_row(
    matrix: Matrix,
    cell: Cell,
    target: Target,
    run_id: str,
    planned: int,
    warmup: int,
    started_at,
    wall_ns: int,
    overhead,
    cache_state: str | None,
) -> CellRow:
    """The `cells` row; `overhead` is None for an interrupted cell (its client figures are unknown).
    sweep_stop_reason is left None: run_sweep sets it on the cell after which a stop rule ended it."""
    load, shape = matrix.load, cell.shape
    # ClientOverhead's fields are the row's columns of the same names.
    client = {} if overhead is None else {**dataclasses.asdict(overhead), "client_kept_up": overhead.kept_up}
    return CellRow(
        run_id=run_id,
        cell_id=cell.cell_id,
        deployment_id=cell.deployment_id,
        instance_id=cell.instance_id,
        engine=target.engine,
        model=target.model,
        workload_id=cell.workload_id,
        repeat=cell.repeat,
        requests_planned=planned,
        warmup_requests=warmup,
        started_at=started_at,
        wall_ns=wall_ns,
        load_kind=shape.kind,
        arrival=shape.arrival,
        concurrency=shape.concurrency,
        rate_rps=shape.rate_rps,
        burstiness=shape.burstiness,
        max_concurrency=shape.max_concurrency,
        duration_limit_s=load.duration_s,
        cache_state=cache_state,
        **client,
    )


# ---------------------------------------------------------------- the rate sweep (matrix load.sweep)


def completed_rate_rps(outcome: CellOutcome) -> float | None:
    """Requests completed ok per second of the cell's wall time (None when none completed)."""
    ok = sum(r.status == "ok" for r in outcome.records)
    wall_s = outcome.row.wall_ns / 1e9
    return ok / wall_s if ok and wall_s > 0 else None


def _sig3(x: float) -> float:
    """x rounded to 3 significant digits: readable cell ids, and the id says the rate that was run."""
    return round(x, 2 - math.floor(math.log10(abs(x))))


def sweep_rates(sweep: Sweep, saturation_rps: float) -> list[float]:
    """The open-loop rates, ascending: `sweep.rates` rates from low_fraction to high_fraction of the
    saturation rate, evenly spaced (one rate: high_fraction). Even, not geometric: latency is flat at
    low load and bends near saturation, so even spacing puts as many points in the upper half (the knee
    the sweep is for) as in the lower; geometric spacing would crowd them into the flat part.
    Rounded to 3 significant digits; rates that round to the same value are run once."""
    n, lo, hi = sweep.rates, sweep.low_fraction, sweep.high_fraction
    fractions = [hi] if n == 1 else [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    return sorted({_sig3(f * saturation_rps) for f in fractions})


def ttft_ms(outcome: CellOutcome) -> list[float]:
    """TTFT (first_token_at - sent_at) of the cell's ok requests, in ms."""
    return [
        (r.first_token_at - r.sent_at) / 1e6
        for r in outcome.records
        if r.status == "ok" and r.first_token_at is not None and r.sent_at is not None
    ]


def sweep_stop_reason(sweep: Sweep, outcome: CellOutcome, baseline_ttft_p50_ms: float | None) -> str | None:
    """Why the sweep stops after this open-loop cell, or None to go on. baseline: the p50 TTFT of the
    lowest-rate cell (None for that cell itself: the factor rule compares later cells with it)."""
    records = outcome.records
    if records:
        failed = sum(r.status != "ok" for r in records)
        if failed / len(records) > sweep.stop_error_rate:
            return f"error rate {failed}/{len(records)} = {failed / len(records):.0%} > stop_error_rate {sweep.stop_error_rate:g}"
    p99 = quantile(ttft_ms(outcome), 0.99)
    if p99 is None:
        return None
    if sweep.stop_ttft_p99_ms is not None and p99 > sweep.stop_ttft_p99_ms:
        return f"p99 TTFT {p99:.1f} ms > stop_ttft_p99_ms {sweep.stop_ttft_p99_ms:g}"
    if (
        sweep.stop_ttft_factor is not None
        and baseline_ttft_p50_ms
        and p99 > sweep.stop_ttft_factor * baseline_ttft_p50_ms
    ):
        return (
            f"p99 TTFT {p99:.1f} ms > stop_ttft_factor {sweep.stop_ttft_factor:g} x the lowest rate's "
            f"p50 TTFT {baseline_ttft_p50_ms:.1f} ms"
        )
    return None


def sweep_cell(matrix: Matrix, planned: PlannedInstance, shape: LoadShape, name: str) -> Cell:
    """A sweep cell: `<instance>.<workload>.sweep-<name>.r0` (one sweep per instance: repeats do not
    apply, each sweep's rates come from its own measured saturation)."""
    workload_id = matrix.load.sweep.workload or matrix.workloads[0].id
    return Cell(
        f"{planned.instance_id}.{workload_id}.sweep-{name}.r0",
        planned.deployment_id,
        planned.instance_id,
        workload_id,
        shape,
        repeat=0,
    )


def run_sweep(matrix: Matrix, planned: PlannedInstance, measure: Callable[[Cell], CellOutcome]) -> list[CellOutcome]:
    """The matrix's load.sweep against one instance: the saturation cell (closed loop at
    saturation_concurrency), then open-loop cells at sweep_rates of its completed-request rate, lowest
    first, until a stop rule trips. `measure` runs one cell (bench.run_cell, with whatever the caller
    does around it); every cell run is returned, in order, as an ordinary CellOutcome. The cell after
    which the sweep stopped is returned with its row's sweep_stop_reason set (a new row: rows are frozen),
    so the caller must keep the RETURNED outcomes' rows, not those `measure` saw."""
    sweep = matrix.load.sweep
    sat_c = sweep.saturation_concurrency
    saturation = measure(sweep_cell(matrix, planned, LoadShape("closed", concurrency=sat_c), f"sat-c{sat_c}"))
    outcomes = [saturation]
    sat_rps = completed_rate_rps(saturation)
    if sat_rps is None:
        outcomes[0] = _stopped(saturation, f"no request completed at saturation_concurrency {sat_c}")
        log.warning(
            "%s sweep: stopped after the saturation cell: no request completed at concurrency %d",
            planned.instance_id,
            sat_c,
        )
        return outcomes
    rates = sweep_rates(sweep, sat_rps)
    log.info(
        "%s sweep: saturation %.3g requests/s at concurrency %d; rates %s",
        planned.instance_id,
        sat_rps,
        sat_c,
        ", ".join(f"{r:g}" for r in rates),
    )
    burstiness = (sweep.burstiness or 1.0) if sweep.arrival == "gamma" else None
    baseline = None
    for i, rate in enumerate(rates):
        shape = LoadShape(sweep.arrival, rate_rps=rate, burstiness=burstiness)
        outcome = measure(sweep_cell(matrix, planned, shape, shape.label))
        outcomes.append(outcome)
        reason = sweep_stop_reason(sweep, outcome, baseline)
        if i == 0:
            baseline = quantile(ttft_ms(outcome), 0.5)
        if reason:
            outcomes[-1] = _stopped(outcome, reason)  # the cells row, for the warehouse and the report
            skipped = rates[i + 1 :]
            log.warning(
                "%s sweep: stopped at %g requests/s: %s%s",
                planned.instance_id,
                rate,
                reason,
                f" (skipped {', '.join(f'{r:g}' for r in skipped)} requests/s)" if skipped else "",
            )
            break
    return outcomes


def _stopped(outcome: CellOutcome, reason: str) -> CellOutcome:
    return dataclasses.replace(outcome, row=dataclasses.replace(outcome.row, sweep_stop_reason=reason))
