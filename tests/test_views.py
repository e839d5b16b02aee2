"""v_cells, v_nightly and v_comparison on hand-computed data (v_requests: tests/test_metrics.py).

Night 1 (SLO: TTFT <= 25 ms), model m, workload w, closed loop:
  vllm   dep-v-0.w.c2.r0  wall 100 ms  chunks (10, 20, 30) 3 tok;  (20, 40) 2 tok
  vllm   dep-v-0.w.c2.r1  wall 200 ms  chunks (30, 50, 70, 90) 4 tok;  a timeout
  sglang dep-s-0.w.c2.r0  wall 100 ms  chunks (5, 25) 2 tok;  (15, 35, 55) 3 tok
  sglang dep-s-0.w.c4.r0  wall 100 ms  chunks (10, 20) 2 tok   (concurrency 4: vllm has no partner)
Night 2: vllm dep-v-0.w.c2.r0 only. Every request is sent at 0 ms.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.builders import T0, cell_row, deployment_row, record, run_row, stage
from warehouse import store


def _night(tmp_path, warehouse, run_id, started_at, cells_and_records):
    recs, cells, deps = [], [], {}
    for (cell_id, engine, dep, conc, wall), chunk_lists in cells_and_records:
        cells.append(cell_row(cell_id, run_id=run_id, wall_ms=wall, deployment_id=dep, concurrency=conc, engine=engine))
        deps[dep] = deployment_row(run_id, dep)
        for i, chunks in enumerate(chunk_lists):
            if chunks is None:
                recs.append(
                    record(
                        i,
                        run_id=run_id,
                        cell_id=cell_id,
                        chunks_ms=(),
                        tokens=None,
                        status="timeout",
                        deployment_id=dep,
                        engine=engine,
                    )
                )
            else:
                recs.append(
                    record(
                        i,
                        run_id=run_id,
                        cell_id=cell_id,
                        chunks_ms=chunks,
                        tokens=len(chunks),
                        deployment_id=dep,
                        engine=engine,
                    )
                )
    run = run_row(run_id, ttft_ms=25)
    run["started_at"] = started_at.isoformat()
    store.load_run(warehouse, stage(tmp_path, recs, cells, run, list(deps.values())))


@pytest.fixture
def nights(tmp_path, warehouse):
    _night(
        tmp_path,
        warehouse,
        "night-1",
        T0,
        [
            (("dep-v-0.w.c2.r0", "vllm", "dep-v", 2, 100), [(10, 20, 30), (20, 40)]),
            (("dep-v-0.w.c2.r1", "vllm", "dep-v", 2, 200), [(30, 50, 70, 90), None]),
            (("dep-s-0.w.c2.r0", "sglang", "dep-s", 2, 100), [(5, 25), (15, 35, 55)]),
            (("dep-s-0.w.c4.r0", "sglang", "dep-s", 4, 100), [(10, 20)]),
        ],
    )
    _night(
        tmp_path,
        warehouse,
        "night-2",
        T0 + timedelta(days=1),
        [
            (("dep-v-0.w.c2.r0", "vllm", "dep-v", 2, 100), [(12, 24)]),
        ],
    )
    return warehouse


def rows(con, sql, params=()):
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def test_v_cells_by_hand(nights):
    cells = {r["cell_id"]: r for r in rows(nights, "SELECT * FROM v_cells WHERE run_id = 'night-1'")}
    a = cells["dep-v-0.w.c2.r0"]
    assert (a["requests"], a["ok"], a["failed"], a["output_tokens"]) == (2, 2, 0, 5)
    assert a["output_throughput_tps"] == pytest.approx(5 / 0.1)
    assert a["ttft_ms_p50"] == pytest.approx(15.0)  # TTFT 10, 20
    assert a["ttft_ms_p90"] == pytest.approx(19.0)  # 10 + 0.9 * (20 - 10)
    assert a["e2e_ms_p99"] == pytest.approx(39.9)  # E2E 30, 40
    assert a["itl_ms_p90"] == pytest.approx(18.0)  # ITL 10, 10, 20: rank 1.8 -> 10 + 0.8 * 10
    assert a["goodput_rps"] == pytest.approx(2 / 0.1)  # both TTFTs <= 25
    b = cells["dep-v-0.w.c2.r1"]
    assert (b["requests"], b["ok"], b["failed"]) == (2, 1, 1)
    assert b["goodput_rps"] == pytest.approx(0.0)  # TTFT 30 > 25
    assert b["tpot_ms_p50"] == pytest.approx(20.0)  # (90 - 30) / 3
    # cells' own columns pass through (c.*), e.g. those of migration 0002
    assert {"wall_ns", "started_at", "arrival", "client_kept_up"} <= set(a)


def test_v_nightly_by_hand(nights):
    got = rows(nights, "SELECT * FROM v_nightly ORDER BY night, engine, concurrency")
    assert [(r["run_id"], r["engine"], r["concurrency"]) for r in got] == [
        ("night-1", "sglang", 2),
        ("night-1", "sglang", 4),
        ("night-1", "vllm", 2),
        ("night-2", "vllm", 2),
    ]
    assert [str(r["night"]) for r in got] == ["2026-11-01"] * 3 + ["2026-11-02"]
    v = got[2]
    # two repeats pooled: 4 requests, 3 ok, 9 tokens over 0.1 + 0.2 s
    assert (v["repeats"], v["requests"], v["ok"], v["failed"], v["output_tokens"]) == (2, 4, 3, 1, 9)
    assert v["wall_s"] == pytest.approx(0.3)
    assert v["output_throughput_tps"] == pytest.approx(9 / 0.3)
    assert (v["output_throughput_tps_min"], v["output_throughput_tps_max"]) == (
        pytest.approx(20.0),
        pytest.approx(50.0),
    )
    assert v["request_throughput_rps"] == pytest.approx(3 / 0.3)
    assert v["goodput_rps"] == pytest.approx(2 / 0.3)  # TTFT 10, 20 meet 25; 30 does not
    assert v["ttft_ms_p50"] == pytest.approx(20.0)  # TTFT 10, 20, 30
    assert v["ttft_ms_p90"] == pytest.approx(28.0)  # 20 + 0.8 * 10
    assert v["e2e_ms_p50"] == pytest.approx(40.0)  # E2E 30, 40, 90
    assert v["tpot_ms_mean"] == pytest.approx(50 / 3)  # TPOT 10, 20, 20
    assert v["itl_ms_p50"] == pytest.approx(20.0)  # ITL 10, 10, 20, 20, 20, 20
    assert v["itl_ms_p90"] == pytest.approx(20.0)
    assert got[3]["output_throughput_tps"] == pytest.approx(2 / 0.1)


def test_v_comparison_by_hand(nights):
    got = rows(nights, "SELECT * FROM v_comparison ORDER BY engine_a")
    # only concurrency 2 of night 1 has both engines; both orders are listed
    assert [(r["engine_a"], r["engine_b"], r["concurrency"], r["run_id"]) for r in got] == [
        ("sglang", "vllm", 2, "night-1"),
        ("vllm", "sglang", 2, "night-1"),
    ]
    v_vs_s = got[1]
    assert v_vs_s["output_throughput_ratio"] == pytest.approx((9 / 0.3) / (5 / 0.1))
    assert v_vs_s["ttft_p50_ratio"] == pytest.approx(20.0 / 10.0)  # sglang TTFT 5, 15
    assert v_vs_s["ttft_p90_ratio"] == pytest.approx(28.0 / 14.0)
    assert v_vs_s["e2e_p50_ratio"] == pytest.approx(40.0 / 40.0)  # sglang E2E 25, 55
    assert v_vs_s["goodput_ratio"] == pytest.approx((2 / 0.3) / (2 / 0.1))
    assert got[0]["output_throughput_ratio"] == pytest.approx(1 / v_vs_s["output_throughput_ratio"])


def test_views_without_slo_give_no_goodput(tmp_path, warehouse):
    store.load_run(warehouse, stage(tmp_path, [record(0)], [cell_row()]))
    assert rows(warehouse, "SELECT goodput_rps FROM v_cells") == [{"goodput_rps": None}]
    assert rows(warehouse, "SELECT goodput_rps, repeats FROM v_nightly") == [{"goodput_rps": None, "repeats": 1}]


def test_readme_example_queries_run(nights):
    """Every example query of warehouse/README.md runs on the hand-made nights (docs that cannot rot)."""
    import re
    from pathlib import Path

    text = (Path(store.__file__).parent / "README.md").read_text()
    block = re.search(r"### Example queries\s+```sql\n(.*?)```", text, re.S).group(1)
    statements = [
        s
        for s in block.split(";")
        if any(line.strip() and not line.strip().startswith("--") for line in s.splitlines())
    ]
    assert len(statements) >= 6
    for sql in statements:
        sql = sql.replace("RUN_ID", "night-1").replace("REQUEST_ID", "dep-v-0.w.c2.r0#0")
        nights.execute(sql).fetchall()
    last = statements[-1].replace("RUN_ID", "night-1").replace("REQUEST_ID", "dep-v-0.w.c2.r0#0")
    offsets = nights.execute(last).fetchall()
    assert offsets == [("dep-v-0.w.c2.r0#0", [10.0, 20.0, 30.0])]


def test_a_run_with_rejected_rows_is_flagged_in_v_cells_and_left_out_of_v_nightly_and_v_comparison(tmp_path, nights):
    """Night 3 measured both engines at concurrency 2, and one vllm row failed the gate: its run is
    loaded without that row and marked; v_cells shows the flag and the cell's rejected count, v_nightly
    and v_comparison leave the night out (its percentiles lack a row)."""
    run_id = "night-3"
    recs = [
        record(
            i,
            run_id=run_id,
            cell_id="dep-v-0.w.c2.r0",
            chunks_ms=(10, 20),
            tokens=2,
            deployment_id="dep-v",
            engine="vllm",
        )
        for i in range(3)
    ]
    recs += [
        record(
            i,
            run_id=run_id,
            cell_id="dep-s-0.w.c2.r0",
            chunks_ms=(5, 25),
            tokens=2,
            deployment_id="dep-s",
            engine="sglang",
        )
        for i in range(2)
    ]
    recs[1].chunk_times = [recs[1].chunk_times[1], recs[1].chunk_times[0]]  # out of order: rejected
    cells = [
        cell_row("dep-v-0.w.c2.r0", run_id=run_id, deployment_id="dep-v", engine="vllm"),
        cell_row("dep-s-0.w.c2.r0", run_id=run_id, deployment_id="dep-s", engine="sglang"),
    ]
    deps = [deployment_row(run_id, "dep-v"), deployment_row(run_id, "dep-s")]
    run = run_row(run_id, ttft_ms=25)
    run["started_at"] = (T0 + timedelta(days=2)).isoformat()
    verdict, _ = store.gate_and_load(nights, stage(tmp_path, recs, cells, run, deps))
    assert verdict.outcome == "failed_rows"

    got = rows(nights, "SELECT run_id, cell_id, validation_status, requests, rejected FROM v_cells ORDER BY ALL")
    assert [r for r in got if r["run_id"] == "night-3"] == [
        {
            "run_id": "night-3",
            "cell_id": "dep-s-0.w.c2.r0",
            "validation_status": "failed_rows",
            "requests": 2,
            "rejected": 0,
        },
        {
            "run_id": "night-3",
            "cell_id": "dep-v-0.w.c2.r0",
            "validation_status": "failed_rows",
            "requests": 2,
            "rejected": 1,
        },
    ]
    assert {(r["validation_status"], r["rejected"]) for r in got if r["run_id"] != "night-3"} == {(None, 0)}
    assert {r["run_id"] for r in rows(nights, "SELECT run_id FROM v_nightly")} == {"night-1", "night-2"}
    assert {r["run_id"] for r in rows(nights, "SELECT run_id FROM v_comparison")} == {"night-1"}
    # the README's "which rows were rejected and why" query answers it
    import re
    from pathlib import Path

    text = (Path(store.__file__).parent / "README.md").read_text()
    query = re.search(r"-- Which rows the validation gate rejected.*?\n(SELECT.*?);", text, re.S).group(1)
    assert nights.execute(query).fetchall() == [
        (
            "night-3",
            "dep-v-0.w.c2.r0#1",
            "dep-v-0.w.c2.r0",
            "ok",
            ["expect_column_values_to_be_in_set(chunk_times_ordered)"],
        )
    ]
    # the same night passing would be in both: the filter is the mark, not the data
    nights.execute("UPDATE runs SET validation_status = 'passed' WHERE run_id = 'night-3'")
    assert {r["run_id"] for r in rows(nights, "SELECT run_id FROM v_comparison")} == {"night-1", "night-3"}


def test_v_cells_validity_guards(tmp_path, warehouse):
    """The prefix-hit share is the server's cached prompt tokens over the prompt tokens of the requests that
    reported them; ended_early counts ok replies shorter than max_tokens (failed ones are not replies)."""
    from tests.builders import cell_row, record, stage
    from warehouse import store

    records = [
        record(0, tokens=8, max_tokens=8, cached_prompt_tokens=4),  # 5 prompt tokens each (the builder's)
        record(1, tokens=3, max_tokens=8, cached_prompt_tokens=5),  # ended early
        record(2, tokens=8, max_tokens=8),  # reported no cache count: not in the share
        record(3, status="timeout", max_tokens=8),
    ]
    store.load_run(warehouse, stage(tmp_path, records, [cell_row()]))
    (cell,) = rows(warehouse, "SELECT prefix_hit_share, ended_early FROM v_cells")
    assert cell["prefix_hit_share"] == pytest.approx(9 / 10)
    assert cell["ended_early"] == 1


def test_v_cells_says_how_busy_the_machine_was(tmp_path, warehouse):
    """Per sample: the machine's CPU minus every engine's (two co-located instances sampled together)."""
    from datetime import timedelta

    from tests.builders import T0, cell_row, host_sample, record, stage
    from warehouse import store

    samples = []
    for k, (machine, a, b) in enumerate(((90.0, 30.0, 10.0), (70.0, 20.0, 10.0))):
        at = T0 + timedelta(seconds=k)
        samples += [
            {**host_sample(cpu=machine), "sampled_at": at, "instance_id": "a", "engine_cpu_pct": a},
            {**host_sample(cpu=machine), "sampled_at": at, "instance_id": "b", "engine_cpu_pct": b},
        ]
    samples.append({**host_sample(cpu=50.0), "sampled_at": T0 + timedelta(seconds=5), "engine_cpu_pct": None})
    store.load_run(warehouse, stage(tmp_path, [record(0)], [cell_row()], host_samples=samples))
    (cell,) = rows(warehouse, "SELECT engine_cpu_pct_mean, other_cpu_pct_mean, other_cpu_pct_max FROM v_cells")
    # engines 40 and 30, others 50 and 40; the sample without an engine figure is left out
    assert cell == pytest.approx({"engine_cpu_pct_mean": 35.0, "other_cpu_pct_mean": 45.0, "other_cpu_pct_max": 50.0})


def test_v_cells_gives_the_gpu_energy_per_output_token(tmp_path, warehouse):
    """Mean power of the samples (every GPU sampled summed per sample) × cell wall time / output tokens;
    NULL where no power was sampled (a CPU machine, or a board that does not report power)."""
    from tests.builders import gpu_sample

    samples = [
        gpu_sample(cell_id="a", power_w=100.0, at_s=0),
        gpu_sample(cell_id="a", power_w=200.0, at_s=1),
        gpu_sample(cell_id="b", power_w=None, at_s=0),
    ]
    records = [record(i, cell_id=c, tokens=3) for c in ("a", "b") for i in range(3)]
    cells = [cell_row(c, wall_ms=2000.0) for c in ("a", "b")]
    store.load_run(warehouse, stage(tmp_path, records, cells, gpu_samples=samples))
    got = {
        r["cell_id"]: r
        for r in rows(warehouse, "SELECT cell_id, gpu_power_w_mean, energy_j, energy_per_output_token_j FROM v_cells")
    }
    assert got["a"]["gpu_power_w_mean"] == pytest.approx(150.0)
    assert got["a"]["energy_j"] == pytest.approx(300.0)  # 150 W for 2 s
    assert got["a"]["energy_per_output_token_j"] == pytest.approx(300.0 / 9)
    assert got["b"]["energy_j"] is None and got["b"]["energy_per_output_token_j"] is None


def test_v_nightly_carries_the_engine_version_of_each_night(tmp_path, warehouse):
    """The night an engine was upgraded is a query: v_nightly says which version ran each night."""
    for night, version in (("night-1", "0.10.2"), ("night-2", "0.11.0")):
        run = run_row(night)
        run["started_at"] = (T0 + timedelta(days=int(night[-1]))).isoformat()
        dep = {**deployment_row(night, "dep"), "engine_version": version}
        store.load_run(
            warehouse,
            stage(tmp_path, [record(0, run_id=night)], [cell_row(run_id=night)], run, [dep]),
        )
    got = rows(warehouse, "SELECT run_id, engine_version FROM v_nightly ORDER BY night")
    assert [(r["run_id"], r["engine_version"]) for r in got] == [("night-1", "0.10.2"), ("night-2", "0.11.0")]


def test_v_requests_peer_by_hand(tmp_path, warehouse):
    """Each ok request in vLLM's, SGLang's, GuideLLM's and AIPerf's definitions (warehouse/README.md's table).
    Request 0: sent at 0 ms, the role chunk at 4, content chunks at 10, 20, 35, [DONE] at 40, 4 tokens.
    Request 1: sent at 100, its one content chunk at 130 in the read that also held the role chunk, [DONE] at 131.
    Request 2 timed out: not a reply, not in the view."""
    records = [
        record(0, chunks_ms=(10, 20, 35), tokens=4, first_chunk_ms=4, done_ms=40),
        record(1, sent_ms=100, chunks_ms=(130,), tokens=1, first_chunk_ms=130, done_ms=131),
        record(2, chunks_ms=(), status="timeout"),
    ]
    store.load_run(warehouse, stage(tmp_path, records, [cell_row()]))
    got = rows(
        warehouse,
        "SELECT * EXCLUDE (run_id, cell_id, engine, model, deployment_id, instance_id, workload_id, "
        "load_kind, concurrency, repeat, max_tokens, prompt_tokens) FROM v_requests_peer ORDER BY request_id",
    )
    by_hand = [
        {
            "request_id": "cell-a#0",
            "completion_tokens": 4,
            # vLLM 0.34 = bakeoff: first/last content chunk, (35 - 10) / 3, the content gaps
            "vllm_ttft_ms": 10.0,
            "vllm_tpot_ms": 25 / 3,
            "vllm_itl_ms": [10.0, 15.0],
            "vllm_e2el_ms": 35.0,
            # vLLM 0.10: the role chunk is the first token, the end is the usage chunk before [DONE]
            "vllm_legacy_ttft_ms": 4.0,
            "vllm_legacy_tpot_ms": 12.0,
            "vllm_legacy_itl_ms": [6.0, 10.0, 15.0],
            "vllm_legacy_e2el_ms": 40.0,
            # SGLang: content chunks, but the latency ends at the last line ([DONE])
            "sglang_ttft_ms": 10.0,
            "sglang_tpot_ms": 10.0,
            "sglang_itl_ms": [10.0, 15.0],
            "sglang_e2e_ms": 40.0,
            # GuideLLM: TPOT with the first token (35 / 4); ITL = bakeoff's TPOT; latency to the stream's close
            "guidellm_ttft_ms": 10.0,
            "guidellm_tpot_ms": 8.75,
            "guidellm_itl_ms": 25 / 3,
            "guidellm_e2e_ms": 40.0,
            # AIPerf: "ITL" = bakeoff's TPOT, "ICL" = the chunk gaps, latency to the last content response
            "aiperf_ttft_ms": 10.0,
            "aiperf_itl_ms": 25 / 3,
            "aiperf_icl_ms": [10.0, 15.0],
            "aiperf_request_latency_ms": 35.0,
        },
        {
            "request_id": "cell-a#1",
            "completion_tokens": 1,
            "vllm_ttft_ms": 30.0,
            "vllm_tpot_ms": None,
            "vllm_itl_ms": [],
            "vllm_e2el_ms": 30.0,
            "vllm_legacy_ttft_ms": 30.0,
            "vllm_legacy_tpot_ms": None,
            "vllm_legacy_itl_ms": [],
            "vllm_legacy_e2el_ms": 31.0,
            "sglang_ttft_ms": 30.0,
            "sglang_tpot_ms": None,
            "sglang_itl_ms": [],
            "sglang_e2e_ms": 31.0,
            "guidellm_ttft_ms": 30.0,
            "guidellm_tpot_ms": 30.0,
            "guidellm_itl_ms": None,
            "guidellm_e2e_ms": 31.0,
            "aiperf_ttft_ms": 30.0,
            "aiperf_itl_ms": None,
            "aiperf_icl_ms": [],
            "aiperf_request_latency_ms": 30.0,
        },
    ]
    assert len(got) == 2
    for row, expected in zip(got, by_hand, strict=True):
        assert row.keys() == expected.keys()
        for key, value in expected.items():
            assert row[key] == (pytest.approx(value) if value is not None else None), key


def test_v_requests_peer_agrees_with_bakeoff_where_the_definitions_match(nights):
    """Where a peer defines a figure as bakeoff does, the view gives bakeoff's number (v_requests)."""
    (diff,) = nights.execute(
        """SELECT max(greatest(abs(p.vllm_ttft_ms - q.ttft_ms), abs(p.aiperf_ttft_ms - q.ttft_ms),
                               abs(p.vllm_e2el_ms - q.e2e_ms), abs(coalesce(p.aiperf_itl_ms - q.tpot_ms, 0)),
                               abs(coalesce(p.guidellm_itl_ms - q.tpot_ms, 0)))),
                  bool_and(p.sglang_itl_ms = q.itl_ms AND p.aiperf_icl_ms = q.itl_ms), count(*)
           FROM v_requests_peer p JOIN v_requests q USING (run_id, request_id)"""
    ).fetchall()
    assert diff[0] == 0 and diff[1] is True
    assert diff[2] == nights.execute("SELECT count(*) FROM v_requests WHERE status = 'ok'").fetchone()[0]
