"""Every load shape and workload kind against the real CPU engine (llama.cpp's llama-server serving
SmolLM2), through bench.run_cell, then into a real warehouse: small cells, short outputs."""

from __future__ import annotations

import pytest
import yaml

from tasks import deploy
from tasks.bench import run_cell
from tasks.loadgen import arrival_offsets_ns
from tasks.matrix import load_matrix
from tasks.plan import plan
from tests import builders

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory, llama_server, smollm2):
    """One llama-server (2 slots) for the module; the matrix has every shape and workload kind."""
    tmp = tmp_path_factory.mktemp("shapes")
    matrix = builders.cpu_engine_matrix(
        "shapes-engine",
        llama_server,
        smollm2,
        workloads=[
            {"id": "study", "limit_prompts": 2, "output_lengths": [6]},
            {
                "id": "prefix",
                "kind": "shared_prefix",
                "num_requests": 4,
                "groups": 1,
                "input_tokens": 120,
                "shared_fraction": 0.9,
                "output_tokens": 4,
            },
            {
                "id": "random",
                "kind": "random",
                "num_requests": 3,
                "input_tokens": 16,
                "output_tokens": 6,
                "range_ratio": 0.5,
            },
        ],
        load={
            "concurrency": [1, 2],
            "rates": [8],
            "arrival": "gamma",
            "burstiness": 0.5,
            "max_concurrency": 2,
            "requests_per_cell": 4,
            "warmup_requests": 1,
            "request_timeout_s": 60,
        },
    )
    path = tmp / "matrix.yaml"
    path.write_text(yaml.safe_dump(matrix))
    matrix, _ = load_matrix(path)
    (group,) = plan(matrix)
    (planned,) = group.instances
    handle = deploy.launch_instance(matrix, planned, start_order=0, run_id="run-1", run_dir=tmp / "run", base_dir=tmp)
    try:
        yield matrix, group, planned, handle, tmp
    finally:
        handle.stop()


def run(engine, cell_id: str):
    matrix, group, _planned, handle, tmp = engine
    cell = next(c for c in group.cells if c.cell_id == cell_id)
    workload = next(w for w in matrix.workloads if w.id == cell.workload_id)
    return cell, run_cell(
        matrix, cell, handle.target, handle.request_extras(workload), run_id="run-1", base_dir=tmp, label=cell_id
    )


@pytest.mark.parametrize("cell_id", ["cpu-0.study.c1.r0", "cpu-0.study.c2.r0"])
def test_closed_loop_on_the_real_engine(engine, cell_id):
    cell, out = run(engine, cell_id)
    assert [r.status for r in out.records] == ["ok"] * 4
    assert all(r.completion_tokens == r.max_tokens == 6 for r in out.records)  # ignore_eos, usage reported
    assert out.row.load_kind == "closed" and out.row.concurrency == cell.concurrency
    assert out.row.client_kept_up in (True, False)


def test_open_loop_gamma_on_the_real_engine(engine, tmp_path):
    cell, out = run(engine, "cpu-0.study.gamma8rps-b0.5-max2.r0")
    assert [r.status for r in out.records] == ["ok"] * 4
    assert [r.scheduled_at for r in out.records] == arrival_offsets_ns(4, cell.shape, seed=0)
    assert all(r.sent_at >= r.scheduled_at and r.completion_tokens == 6 for r in out.records)
    row = out.row
    assert (row.load_kind, row.arrival, row.rate_rps, row.burstiness, row.max_concurrency) == (
        "open",
        "gamma",
        8.0,
        0.5,
        2,
    )
    # The row and its requests load, and the views read an open-loop cell.
    from warehouse import store

    with store.opened(tmp_path / "wh.duckdb") as con:
        store.load_run(con, builders.stage(tmp_path, out.records, [row]))
        ok, kind = con.execute("SELECT ok, load_kind FROM v_cells").fetchone()
    assert (ok, kind) == (4, "open")


def test_shared_prefix_hits_the_engines_prompt_cache(engine):
    _, out = run(engine, "cpu-0.prefix.c1.r0")
    assert [r.status for r in out.records] == ["ok"] * 4
    assert len({r.prompt_id for r in out.records}) == 4
    # One group, one slot at a time: after the first request the ~108-word system prompt is cached.
    # (The warmup request already filled the cache with the same prefix.)
    cached = [r.cached_prompt_tokens for r in out.records]
    assert all(c is not None and c >= 50 for c in cached[1:]), cached
    assert all(r.prompt_tokens > 100 for r in out.records)


def test_a_cold_workload_is_not_served_from_the_prompt_cache(engine):
    # the study cell sends its 2 prompts twice each (requests_per_cell 4 cycles them) after a warm-up on the
    # same prompts, at one slot: with llama-server's default the repeats would read their prompt from the
    # KV cache (the shared-prefix test shows it does); the cold workload's `cache_prompt: false` stops that
    _, out = run(engine, "cpu-0.study.c1.r0")
    assert len({r.prompt_id for r in out.records}) == 2
    assert [r.cached_prompt_tokens for r in out.records] == [0, 0, 0, 0]


def test_random_workload_on_the_real_engine(engine):
    _, out = run(engine, "cpu-0.random.c2.r0")
    assert [r.status for r in out.records] == ["ok"] * 4  # 3 specs, cycled to requests_per_cell
    assert {r.max_tokens for r in out.records} <= set(range(3, 10))
    assert all(r.completion_tokens == r.max_tokens for r in out.records)  # requested vs produced, both kept
