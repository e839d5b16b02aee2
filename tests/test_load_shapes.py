"""Load shapes: the arrival processes, absolute (drift-free) pacing, the open loop's cap and limits,
and a cell's row (load shape + the client's own overhead) landing in the warehouse."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from pathlib import Path

import pytest
import yaml

from tasks.bench import cycled, run_cell
from tasks.loadgen import ClientOverhead, Target, arrival_offsets_ns, paced, quantile, run_load
from tasks.matrix import MatrixError, load_matrix
from tasks.plan import LoadShape, plan
from tasks.workloads import RequestSpec
from tests import builders
from tests.mock_faulty_server import MockFaultyServer

S = 1_000_000_000  # ns


def gaps_s(offsets: list[int]) -> list[float]:
    return [(b - a) / S for a, b in itertools.pairwise(offsets)]


def cv(xs: list[float]) -> float:
    return statistics.pstdev(xs) / statistics.fmean(xs)


# ---------------------------------------------------------------- arrival processes (pure)


@pytest.mark.parametrize(
    "shape, expected_cv",
    [
        (LoadShape("poisson", rate_rps=50.0), 1.0),
        (LoadShape("gamma", rate_rps=50.0, burstiness=1.0), 1.0),
        (LoadShape("gamma", rate_rps=50.0, burstiness=4.0), 0.5),  # 1/sqrt(4)
        (LoadShape("gamma", rate_rps=50.0, burstiness=0.25), 2.0),  # 1/sqrt(0.25): burstier than Poisson
    ],
)
def test_random_arrivals_have_the_mean_rate_and_dispersion(shape, expected_cv):
    gaps = gaps_s(arrival_offsets_ns(20_001, shape, seed=7))
    assert statistics.fmean(gaps) == pytest.approx(1 / 50, rel=0.03)
    assert cv(gaps) == pytest.approx(expected_cv, rel=0.05)


def test_constant_arrivals_are_exactly_regular_without_rounding_drift():
    offsets = arrival_offsets_ns(30_001, LoadShape("constant", rate_rps=3.0), seed=0)
    assert offsets[0] == 0
    # 1/3 s is not a whole number of ns: each gap is 333333333 or ...334, and the sum never drifts.
    assert {b - a for a, b in itertools.pairwise(offsets)} <= {333_333_333, 333_333_334}
    assert offsets[-1] == 10_000 * S


def test_arrivals_are_seeded():
    shape = LoadShape("poisson", rate_rps=10.0)
    assert arrival_offsets_ns(100, shape, seed=1) == arrival_offsets_ns(100, shape, seed=1)
    assert arrival_offsets_ns(100, shape, seed=1) != arrival_offsets_ns(100, shape, seed=2)


# ---------------------------------------------------------------- pacing on absolute times


class FakeClock:
    """A clock whose sleeps overshoot by a fixed amount, end at a fraction of what was asked, or
    (granularity) end on the next multiple of it, as epoll's whole-ms timeouts make asyncio's do.
    sleep(0), a yield to the loop, takes 1 µs."""

    def __init__(self, error_ns: int = 0, fraction: float = 1.0, granularity_ns: int = 0) -> None:
        self.now, self.error_ns, self.fraction, self.granularity_ns, self.sleeps = (
            0,
            error_ns,
            fraction,
            granularity_ns,
            0,
        )

    def __call__(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if seconds == 0:
            self.now += 1_000
            return
        asked = round(seconds * S * self.fraction)
        if self.granularity_ns:
            asked = -(-asked // self.granularity_ns) * self.granularity_ns
        self.now += max(1, asked + self.error_ns)


def pace(offsets: list[int], clock: FakeClock, **kw) -> list[int]:
    async def go() -> list[int]:
        return [clock() - offsets[i] async for i in paced(offsets, 0, clock=clock, sleep=clock.sleep, **kw)]

    return asyncio.run(go())


def test_oversleeping_makes_each_send_late_by_the_same_amount_never_more():
    offsets = arrival_offsets_ns(500, LoadShape("constant", rate_rps=100.0), seed=0)
    lateness = pace(offsets, FakeClock(error_ns=3_000_000), spin_ns=0)
    # The first is due at once; every later one is 3 ms late, however many came before it: a pacer
    # that slept the gap after each send would be 3 ms later with every request (1.5 s by the last).
    assert lateness[0] == 0
    assert set(lateness[1:]) == {3_000_000}


def test_the_last_millisecond_is_waited_out_by_yielding_not_by_a_coarse_timer():
    offsets = [round(i * 10.3e6) for i in range(200)]  # due times that fall between whole ms
    coarse = pace(offsets, FakeClock(granularity_ns=1_000_000), spin_ns=0)
    fine = pace(offsets, FakeClock(granularity_ns=1_000_000))
    assert max(coarse) > 500_000  # a 1 ms timer grid alone: up to 1 ms late
    assert max(fine) <= 1_000 and min(fine) >= 0  # one yield at most


def test_waking_early_never_sends_early():
    offsets = arrival_offsets_ns(200, LoadShape("poisson", rate_rps=100.0), seed=3)
    clock = FakeClock(fraction=0.5)  # every sleep ends halfway
    lateness = pace(offsets, clock)
    assert min(lateness) >= 0
    assert clock.sleeps > 2 * 199  # it went back to sleep instead of sending


# ---------------------------------------------------------------- the open loop against a server


@pytest.fixture(scope="module")
def server():
    with MockFaultyServer() as s:
        yield s


def target(url: str) -> Target:
    return Target(url, "mock-ok", "mock", "m", "dep", "dep-0", {})


def specs(n: int, max_tokens: int = 3) -> list[RequestSpec]:
    return [RequestSpec(f"p{i}", f"prompt {i}", max_tokens) for i in range(n)]


def open_loop(url: str, shape: LoadShape, n: int, **kw):
    return asyncio.run(run_load(target(url), specs(n), shape, run_id="r", cell_id="c", seed=5, **kw))


def peak_in_flight(records) -> int:
    events = sorted([(r.sent_at, 1) for r in records] + [(r.done_at, -1) for r in records])
    in_flight = peak = 0
    for _, delta in events:
        in_flight += delta
        peak = max(peak, in_flight)
    return peak


@pytest.mark.parametrize(
    "shape", [LoadShape("constant", rate_rps=100.0), LoadShape("gamma", rate_rps=100.0, burstiness=0.5)]
)
def test_open_loop_sends_on_the_schedule_and_keeps_both_times(server, shape):
    result = open_loop(server.url, shape, 12)
    assert [r.status for r in result.records] == ["ok"] * 12
    assert [r.scheduled_at for r in result.records] == arrival_offsets_ns(12, shape, seed=5)
    assert all(r.sent_at >= r.scheduled_at for r in result.records)
    o = result.overhead
    assert 0 <= o.send_lateness_p50_ms <= o.send_lateness_p99_ms
    assert o.loop_lag_p99_ms is not None and o.loop_lag_max_ms >= o.loop_lag_p99_ms >= 0


def test_open_loop_cap_limits_in_flight_and_keeps_the_schedule(server):
    shape = LoadShape("constant", rate_rps=1000.0, max_concurrency=2)
    result = open_loop(server.url, shape, 8)
    assert [r.status for r in result.records] == ["ok"] * 8
    assert peak_in_flight(result.records) <= 2
    # Waiting for a slot does not move the schedule: the wait shows as queue delay.
    assert [r.scheduled_at for r in result.records] == arrival_offsets_ns(8, shape, seed=5)
    third_sent = sorted(r.sent_at for r in result.records)[2]
    assert third_sent >= min(r.done_at for r in result.records)


def test_open_loop_without_cap_overlaps_requests(server):
    # 1000 req/s against requests that each take > 5 ms: an uncapped open loop must not wait for them.
    result = open_loop(server.url, LoadShape("constant", rate_rps=1000.0), 6)
    assert peak_in_flight(result.records) > 2


def test_duration_limit_stops_scheduling_new_requests(server):
    # 20 req/s for 0.2 s: the requests due at 0, 50, 100 and 150 ms are sent, none after.
    result = open_loop(server.url, LoadShape("constant", rate_rps=20.0), 100, duration_s=0.2)
    assert [r.scheduled_at for r in result.records] == [0, 50_000_000, 100_000_000, 150_000_000]
    assert [r.request_id for r in result.records] == [f"c#{i:05d}" for i in range(4)]


def test_duration_limit_in_a_closed_loop(server):
    shape = LoadShape("closed", concurrency=1)
    result = asyncio.run(
        run_load(target(server.url), specs(200, max_tokens=5), shape, run_id="r", cell_id="c", duration_s=0.05)
    )
    # Each mock request streams for over 10 ms, so 0.05 s cannot fit 200 of them.
    assert 1 <= len(result.records) < 200
    assert all(r.scheduled_at < 50_000_000 and r.status == "ok" for r in result.records)


def test_open_loop_warmup_is_sent_but_not_recorded(server):
    server.bodies.clear()
    result = open_loop(server.url, LoadShape("poisson", rate_rps=200.0), 3, warmup=[RequestSpec("w", "warm", 2)])
    assert len(server.bodies) == 4
    assert [r.prompt_id for r in result.records] == ["p0", "p1", "p2"]


# ---------------------------------------------------------------- small pure pieces


def test_quantile_interpolates_linearly():
    assert quantile([], 0.5) is None
    assert quantile([4.0], 0.99) == 4.0
    assert quantile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.5
    assert quantile([0.0, 10.0], 0.99) == pytest.approx(9.9)


@pytest.mark.parametrize(
    "late_p99, lag_p99, kept_up",
    [(0.5, 1.0, True), (2.0, 2.0, True), (2.1, 0.1, False), (0.1, 5.0, False), (None, 0.1, None)],
)
def test_client_kept_up_is_both_p99s_within_2_ms(late_p99, lag_p99, kept_up):
    assert ClientOverhead(0.0, late_p99, lag_p99, 9.0).kept_up is kept_up


def test_requests_per_cell_cuts_or_cycles_the_workload():
    w = specs(3)
    assert cycled(w, None) == w
    assert cycled(w, 2) == w[:2]
    assert [s.prompt_id for s in cycled(w, 7)] == ["p0", "p1", "p2", "p0", "p1", "p2", "p0"]


# ---------------------------------------------------------------- the matrix


def matrix_file(tmp_path: Path, load: dict, url: str = "http://127.0.0.1:9") -> Path:
    data = {
        "name": "shapes",
        "engines": {
            "ext": {"kind": "external", "version": "1", "url": url, "launcher": "none", "accepts": ["ignore_eos"]}
        },
        "models": {"m": {"path": "unused", "served_name": "mock-ok"}},
        "deployments": [{"id": "ext", "instances": [{"engine": "ext", "model": "m"}]}],
        "workloads": [{"id": "w", "limit_prompts": 3, "output_lengths": [3]}],
        "load": load,
    }
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_plan_has_a_readable_cell_per_level_and_rate(tmp_path):
    load = {"concurrency": [1, 4], "rates": [0.5, 2], "arrival": "gamma", "burstiness": 0.5, "max_concurrency": 8}
    matrix, _ = load_matrix(matrix_file(tmp_path, load))
    (group,) = plan(matrix)
    assert [c.cell_id for c in group.cells] == [
        "ext-0.w.c1.r0",
        "ext-0.w.c4.r0",
        "ext-0.w.gamma0.5rps-b0.5-max8.r0",
        "ext-0.w.gamma2rps-b0.5-max8.r0",
    ]
    assert group.cells[2].shape == LoadShape("gamma", rate_rps=0.5, burstiness=0.5, max_concurrency=8)
    assert group.cells[1].concurrency == 4 and group.cells[3].concurrency is None


def test_rates_alone_mean_no_closed_loop_cells(tmp_path):
    matrix, _ = load_matrix(matrix_file(tmp_path, {"rates": [1, 2]}))
    assert [c.shape.kind for c in plan(matrix)[0].cells] == ["open", "open"]
    matrix, _ = load_matrix(matrix_file(tmp_path, {}))
    assert [c.cell_id for c in plan(matrix)[0].cells] == ["ext-0.w.c4.r0"]  # the default stays


@pytest.mark.parametrize(
    "load, expected",
    [
        ({"rates": [0]}, "load.rates.0: Input should be greater than 0"),
        ({"rates": [1], "arrival": "uniform"}, "load.arrival: 'uniform' is not allowed"),
        ({"rates": [1], "burstiness": 2}, "load: burstiness: only used with arrival gamma"),
        ({"rates": [1, 1]}, "load: rates: rates must be unique, repeated: [1.0]"),
        ({"concurrency": [2, 2]}, "load: concurrency: levels must be unique"),
        ({"concurrency": [], "rates": []}, "load: concurrency: give at least one concurrency level or one rate"),
        ({"concurrency": [2], "max_concurrency": 4}, "load: max_concurrency: caps open-loop rates"),
        ({"rates": [1], "duration_s": -1}, "load.duration_s: Input should be greater than 0"),
        ({"requests_per_cell": 0}, "load.requests_per_cell: Input should be greater than or equal to 1"),
    ],
)
def test_bad_load_is_one_line_naming_the_field(tmp_path, load, expected):
    with pytest.raises(MatrixError) as err:
        load_matrix(matrix_file(tmp_path, load))
    message = str(err.value)
    assert expected in message and "\n" not in message, message


# ---------------------------------------------------------------- a cell, end to end into the warehouse


def test_run_cell_row_carries_the_shape_and_overhead_into_the_warehouse(tmp_path, server, warehouse):
    from warehouse import store

    load = {
        "rates": [50],
        "arrival": "gamma",
        "burstiness": 2,
        "max_concurrency": 4,
        "requests_per_cell": 5,
        "warmup_requests": 1,
        "duration_s": 30,
    }
    matrix, _ = load_matrix(matrix_file(tmp_path, load, server.url))
    (cell,) = plan(matrix)[0].cells
    outcome = run_cell(
        matrix, cell, target(server.url), {}, run_id="run-1", base_dir=tmp_path, label="t", engine_pids={}
    )
    row = outcome.row
    assert row.load_kind == "open" and row.arrival == "gamma"
    assert (row.rate_rps, row.burstiness, row.max_concurrency, row.duration_limit_s) == (50, 2, 4, 30)
    assert row.requests_planned == 5 and len(outcome.records) == 5
    assert isinstance(row.client_kept_up, bool)

    store.load_run(warehouse, builders.stage(tmp_path, outcome.records, [row]))
    got = warehouse.execute(
        "SELECT load_kind, arrival, rate_rps, burstiness, max_concurrency, duration_limit_s, client_kept_up, "
        "send_lateness_p99_ms >= send_lateness_p50_ms, loop_lag_max_ms >= loop_lag_p99_ms FROM cells"
    ).fetchall()
    assert got == [("open", "gamma", 50.0, 2.0, 4, 30.0, row.client_kept_up, True, True)]
    assert warehouse.execute("SELECT count(*), count(*) FILTER (status = 'ok') FROM requests").fetchone() == (5, 5)
