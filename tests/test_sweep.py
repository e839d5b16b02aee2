"""The rate sweep (matrix load.sweep): the rate list, the stop rule and the order of cells on hand-made
outcomes; the matrix fields; and one tiny sweep against the real llama-server."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tasks.bench import CellOutcome, completed_rate_rps, run_sweep, sweep_rates, sweep_stop_reason
from tasks.matrix import MatrixError, Sweep, load_matrix
from tasks.night import bench_group
from tasks.plan import Cell, plan
from tasks.records import CellRow
from tests import builders
from tests.mock_faulty_server import MockFaultyServer

S = 1_000_000_000  # ns


def outcome(cell_id: str = "c", *, ttfts_ms=(10.0,) * 10, failed: int = 0, wall_s: float = 1.0) -> CellOutcome:
    """ok requests with the given TTFTs (sent at 0, first token at TTFT), plus `failed` http errors."""
    ok = [builders.record(i, cell_id=cell_id, chunks_ms=(t, t + 5)) for i, t in enumerate(ttfts_ms)]
    bad = [builders.record(100 + i, cell_id=cell_id, chunks_ms=(), status="http_error") for i in range(failed)]
    return CellOutcome(CellRow(**builders.cell_row(cell_id, wall_ms=wall_s * 1000)), ok + bad)


# ---------------------------------------------------------------- the rate list


def test_rates_are_evenly_spaced_between_the_fractions_of_saturation():
    assert sweep_rates(Sweep(rates=5, low_fraction=0.1, high_fraction=0.9), 10.0) == [1, 3, 5, 7, 9]
    assert sweep_rates(Sweep(rates=3, low_fraction=0.2, high_fraction=0.6), 50.0) == [10, 20, 30]


def test_one_rate_is_the_high_fraction():
    assert sweep_rates(Sweep(rates=1, low_fraction=0.1, high_fraction=0.8), 10.0) == [8]


def test_rates_are_rounded_to_three_significant_digits_and_run_once():
    # 1/pi requests/s saturation: 0.1, 0.5, 0.9 of it.
    assert sweep_rates(Sweep(rates=3), 3.14159) == [0.314, 1.57, 2.83]
    # 50 fractions between 0.1 and 0.101 of 1 req/s round to only two distinct rates.
    assert sweep_rates(Sweep(rates=50, low_fraction=0.1, high_fraction=0.101), 1.0) == [0.1, 0.101]


def test_saturation_rate_counts_completed_requests_over_wall_time():
    assert completed_rate_rps(outcome(ttfts_ms=[10.0] * 8, failed=2, wall_s=2.0)) == 4.0
    assert completed_rate_rps(outcome(ttfts_ms=[], failed=3)) is None


# ---------------------------------------------------------------- the stop rule


def test_error_rate_over_the_limit_stops():
    sweep = Sweep(stop_error_rate=0.05)
    assert sweep_stop_reason(sweep, outcome(failed=0), None) is None
    reason = sweep_stop_reason(sweep, outcome(ttfts_ms=[10.0] * 9, failed=1), None)  # 10% > 5%
    assert reason is not None and "error rate 1/10" in reason
    # At the limit is not over it.
    assert sweep_stop_reason(Sweep(stop_error_rate=0.1), outcome(ttfts_ms=[10.0] * 9, failed=1), None) is None


def test_ttft_factor_compares_p99_with_the_lowest_rates_p50():
    sweep = Sweep(stop_ttft_factor=10)
    calm = outcome(ttfts_ms=[10.0] * 9 + [90.0])  # p99 = 10 + 0.91 * 80 = 82.8 ms
    hot = outcome(ttfts_ms=[10.0] * 9 + [200.0])  # p99 = 182.9 ms
    assert sweep_stop_reason(sweep, calm, baseline_ttft_p50_ms=10.0) is None
    assert "stop_ttft_factor 10" in sweep_stop_reason(sweep, hot, baseline_ttft_p50_ms=10.0)
    # The lowest-rate cell itself has no baseline; a factor of null turns the rule off.
    assert sweep_stop_reason(sweep, hot, baseline_ttft_p50_ms=None) is None
    assert sweep_stop_reason(Sweep(stop_ttft_factor=None), hot, baseline_ttft_p50_ms=10.0) is None


def test_absolute_ttft_bound_stops_without_a_baseline():
    sweep = Sweep(stop_ttft_factor=None, stop_ttft_p99_ms=100)
    assert sweep_stop_reason(sweep, outcome(ttfts_ms=[50.0] * 10), None) is None
    assert "stop_ttft_p99_ms 100" in sweep_stop_reason(sweep, outcome(ttfts_ms=[50.0] * 9 + [300.0]), None)


# ---------------------------------------------------------------- the sweep's cells, on a fake engine


class FakeEngine:
    """Measures a cell without a server: saturation 10 req/s; TTFT 10 ms + 10 ms per req/s above
    `knee`; every request fails at or above `fail_at` req/s."""

    def __init__(self, knee: float = 100.0, fail_at: float = 1e9, saturation_ok: int = 10) -> None:
        self.knee, self.fail_at, self.saturation_ok, self.cells = knee, fail_at, saturation_ok, []
        self.outcomes: list[CellOutcome] = []  # as measured, before run_sweep returns them

    def __call__(self, cell: Cell) -> CellOutcome:
        self.cells.append(cell)
        self.outcomes.append(self._measure(cell))
        return self.outcomes[-1]

    def _measure(self, cell: Cell) -> CellOutcome:
        if cell.shape.kind == "closed":
            return outcome(cell.cell_id, ttfts_ms=[10.0] * self.saturation_ok, failed=10 - self.saturation_ok)
        rate = cell.shape.rate_rps
        if rate >= self.fail_at:
            return outcome(cell.cell_id, ttfts_ms=[], failed=5)
        return outcome(cell.cell_id, ttfts_ms=[10.0 + 10.0 * max(0.0, rate - self.knee)] * 5)


def sweep_matrix(tmp_path: Path, sweep: dict, url: str = "http://127.0.0.1:9", **load):
    data = {
        "name": "sweep",
        "engines": {
            "ext": {"kind": "external", "version": "1", "url": url, "launcher": "none", "accepts": ["ignore_eos"]}
        },
        "models": {"m": {"path": "unused"}},
        "deployments": [{"id": "ext", "instances": [{"engine": "ext", "model": "m"}]}],
        "workloads": [{"id": "w", "limit_prompts": 3, "output_lengths": [3]}, {"id": "v", "output_lengths": [4]}],
        "load": {"sweep": sweep, **load},
    }
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    matrix, _ = load_matrix(path)
    return matrix, plan(matrix)[0]


def test_saturation_first_then_rising_rates_with_readable_ids(tmp_path):
    matrix, group = sweep_matrix(
        tmp_path, {"saturation_concurrency": 16, "rates": 3, "low_fraction": 0.2, "high_fraction": 0.8}
    )
    engine = FakeEngine()
    outs = run_sweep(matrix, group.instances[0], engine)
    assert [o.row.cell_id for o in outs] == [
        "ext-0.w.sweep-sat-c16.r0",
        "ext-0.w.sweep-poisson2rps.r0",
        "ext-0.w.sweep-poisson5rps.r0",
        "ext-0.w.sweep-poisson8rps.r0",
    ]
    closed, *open_ = engine.cells
    assert (closed.shape.arrival, closed.shape.concurrency, closed.workload_id) == ("closed", 16, "w")
    assert [(c.shape.arrival, c.shape.rate_rps) for c in open_] == [("poisson", 2), ("poisson", 5), ("poisson", 8)]
    assert {(c.instance_id, c.deployment_id, c.repeat) for c in engine.cells} == {("ext-0", "ext", 0)}


def test_the_sweep_stops_when_the_ttft_factor_trips(tmp_path, caplog):
    matrix, group = sweep_matrix(tmp_path, {"rates": 5, "stop_ttft_factor": 3})
    engine = FakeEngine(knee=1.0)  # TTFT at 1, 3, 5, 7, 9 req/s: 10, 30, 50, 70, 90 ms; stop over 3 x 10 ms
    with caplog.at_level("WARNING", logger="bakeoff.bench"):
        outs = run_sweep(matrix, group.instances[0], engine)
    assert [c.shape.rate_rps for c in engine.cells[1:]] == [1, 3, 5]  # 30 ms is not over 30; 50 is
    assert outs[-1].row.cell_id == "ext-0.w.sweep-poisson5rps.r0"
    assert "stopped at 5 requests/s" in caplog.text and "skipped 7, 9 requests/s" in caplog.text
    # The reason is kept on the cell that tripped the rule (warehouse: cells.sweep_stop_reason).
    assert (
        outs[-1].row.sweep_stop_reason == "p99 TTFT 50.0 ms > stop_ttft_factor 3 x the lowest rate's p50 TTFT 10.0 ms"
    )
    assert [o.row.sweep_stop_reason for o in outs[:-1]] == [None] * 3
    assert engine.outcomes[-1].row.sweep_stop_reason is None  # a new row: the one measured is not changed


def test_the_sweep_stops_when_errors_explode(tmp_path, caplog):
    matrix, group = sweep_matrix(tmp_path, {"rates": 5, "workload": "v"})
    engine = FakeEngine(fail_at=4.0)
    with caplog.at_level("WARNING", logger="bakeoff.bench"):
        outs = run_sweep(matrix, group.instances[0], engine)
    assert [c.shape.rate_rps for c in engine.cells[1:]] == [1, 3, 5]
    assert {c.workload_id for c in engine.cells} == {"v"}
    assert [r.status for r in outs[-1].records] == ["http_error"] * 5  # the tripping cell is kept
    assert "error rate 5/5" in caplog.text
    assert outs[-1].row.sweep_stop_reason.startswith("error rate 5/5 = 100% > stop_error_rate")


def test_no_completed_request_at_saturation_ends_the_sweep(tmp_path):
    matrix, group = sweep_matrix(tmp_path, {})
    engine = FakeEngine(saturation_ok=0)
    outs = run_sweep(matrix, group.instances[0], engine)
    assert [o.row.cell_id for o in outs] == ["ext-0.w.sweep-sat-c16.r0"]
    assert outs[0].row.sweep_stop_reason == "no request completed at saturation_concurrency 16"


def test_the_stop_reason_reaches_the_staged_cells_row(tmp_path):
    """Through the flow's own group loop (tasks/night.bench_group): it keeps the outcomes run_sweep
    returns, so the staged cells.parquet has the reason on the tripping cell. The external engine's
    server answers its health check only (the fake engine measures the cells)."""
    with MockFaultyServer() as server:
        matrix, group = sweep_matrix(tmp_path, {"rates": 5, "stop_ttft_factor": 3}, url=server.url)
        engine = FakeEngine(knee=1.0)
        got = bench_group(
            matrix,
            group,
            run_id="run-1",
            run_dir=tmp_path / "run",
            base_dir=tmp_path,
            images={},
            where="group 1/1",
            run_cell=lambda matrix, cell, *args, **kw: engine(cell),
        )
    run_dir = builders.stage(tmp_path, got.records, got.cells)
    staged = {r["cell_id"]: r["sweep_stop_reason"] for r in pq.read_table(run_dir / "cells.parquet").to_pylist()}
    assert staged == {
        "ext-0.w.sweep-sat-c16.r0": None,
        "ext-0.w.sweep-poisson1rps.r0": None,
        "ext-0.w.sweep-poisson3rps.r0": None,
        "ext-0.w.sweep-poisson5rps.r0": "p99 TTFT 50.0 ms > stop_ttft_factor 3 x the lowest rate's p50 TTFT 10.0 ms",
    }


def test_gamma_sweep_cells_carry_the_burstiness(tmp_path):
    matrix, group = sweep_matrix(tmp_path, {"rates": 2, "arrival": "gamma", "burstiness": 0.5})
    engine = FakeEngine()
    run_sweep(matrix, group.instances[0], engine)
    assert [c.cell_id for c in engine.cells[1:]] == [
        "ext-0.w.sweep-gamma1rps-b0.5.r0",
        "ext-0.w.sweep-gamma9rps-b0.5.r0",
    ]


# ---------------------------------------------------------------- the matrix


def test_a_sweep_alone_plans_no_ordinary_cells_and_takes_the_defaults(tmp_path):
    matrix, group = sweep_matrix(tmp_path, {})
    assert group.cells == ()
    assert matrix.load.sweep == Sweep()
    s = matrix.load.sweep
    assert (
        s.saturation_concurrency,
        s.rates,
        s.low_fraction,
        s.high_fraction,
        s.arrival,
        s.stop_error_rate,
        s.stop_ttft_factor,
        s.stop_ttft_p99_ms,
    ) == (16, 5, 0.1, 0.9, "poisson", 0.05, 10.0, None)
    # Beside ordinary levels, the ordinary cells stay.
    _, group = sweep_matrix(tmp_path, {}, concurrency=[2])
    assert [c.cell_id for c in group.cells] == ["ext-0.w.c2.r0", "ext-0.v.c2.r0"]


@pytest.mark.parametrize(
    "sweep, expected",
    [
        ({"rates": 0}, "load.sweep.rates: Input should be greater than or equal to 1"),
        (
            {"saturation_concurrency": 0},
            "load.sweep.saturation_concurrency: Input should be greater than or equal to 1",
        ),
        ({"low_fraction": 0.5, "high_fraction": 0.5}, "load.sweep: low_fraction: must be below high_fraction"),
        ({"high_fraction": 1.5}, "load.sweep.high_fraction: Input should be less than or equal to 1"),
        ({"low_fraction": 0}, "load.sweep.low_fraction: Input should be greater than 0"),
        ({"arrival": "closed"}, "load.sweep.arrival: 'closed' is not allowed"),
        ({"burstiness": 2}, "load.sweep: burstiness: only used with arrival gamma"),
        ({"stop_error_rate": 1.5}, "load.sweep.stop_error_rate: Input should be less than or equal to 1"),
        ({"stop_ttft_factor": 1}, "load.sweep.stop_ttft_factor: Input should be greater than 1"),
        ({"stop_ttft_p99_ms": 0}, "load.sweep.stop_ttft_p99_ms: Input should be greater than 0"),
        ({"workload": "nope"}, "load.sweep.workload: 'nope' is not one of workloads"),
        ({"rate": 3}, "load.sweep.rate: unknown field"),
    ],
)
def test_bad_sweep_is_one_line_naming_the_field(tmp_path, sweep, expected):
    with pytest.raises(MatrixError) as err:
        sweep_matrix(tmp_path, sweep)
    message = str(err.value)
    assert expected in message and "\n" not in message, message


# ---------------------------------------------------------------- against the real engine


@pytest.mark.engine
def test_sweep_on_the_real_engine(tmp_path, llama_server, smollm2):
    from tasks import deploy
    from tasks.bench import run_cell
    from tests.builders import cpu_engine_matrix

    data = cpu_engine_matrix(
        "sweep-engine",
        llama_server,
        smollm2,
        workloads=[{"id": "study", "limit_prompts": 3, "output_lengths": [8]}],
        # Stop rules off: this checks the cells, not how a 2-core machine's TTFT varies.
        load={
            "requests_per_cell": 6,
            "warmup_requests": 1,
            "request_timeout_s": 60,
            "sweep": {
                "saturation_concurrency": 2,
                "rates": 2,
                "low_fraction": 0.3,
                "high_fraction": 0.6,
                "stop_error_rate": 1,
                "stop_ttft_factor": None,
            },
        },
    )
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    matrix, _ = load_matrix(path)
    (group,) = plan(matrix)
    (planned,) = group.instances
    handle = deploy.launch_instance(
        matrix, planned, start_order=0, run_id="run-1", run_dir=tmp_path / "run", base_dir=tmp_path
    )
    try:
        outs = run_sweep(
            matrix,
            planned,
            lambda cell: run_cell(
                matrix,
                cell,
                handle.target,
                handle.request_extras(matrix.workloads[0]),
                run_id="run-1",
                base_dir=tmp_path,
                label=cell.cell_id,
            ),
        )
    finally:
        handle.stop()
    rows = [o.row for o in outs]
    assert next(r.cell_id for r in rows) == "cpu-0.study.sweep-sat-c2.r0"
    assert [(r.load_kind, r.concurrency, r.arrival) for r in rows] == [
        ("closed", 2, "closed"),
        ("open", None, "poisson"),
        ("open", None, "poisson"),
    ]
    sat = completed_rate_rps(outs[0])
    rates = [r.rate_rps for r in rows[1:]]
    assert rates == sorted(rates) and rates[0] < rates[1]
    assert rates == pytest.approx([0.3 * sat, 0.6 * sat], rel=0.01)  # 3 significant digits
    assert [r.cell_id for r in rows[1:]] == [f"cpu-0.study.sweep-poisson{r:g}rps.r0" for r in rates]
    assert all(len(o.records) == 6 and {r.status for r in o.records} == {"ok"} for o in outs)
    assert all(r.completion_tokens == 8 for o in outs for r in o.records)
    assert [r.sweep_stop_reason for r in rows] == [None] * 3  # every rate ran
