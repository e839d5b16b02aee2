"""Metric formulas on hand-computed examples, in polars and in the SQL views (they must agree)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from tests.builders import cell_row, record, run_row, stage
from warehouse import store
from warehouse.chunks import to_staged
from warehouse.transforms import cell_summary, request_metrics, summarize_run


def test_request_metrics_by_hand():
    # sent at 5 ms, content chunks at 25, 40, 45, 65 ms, 4 tokens; scheduled at 2 ms.
    rec = record(0, sent_ms=5, chunks_ms=(25, 40, 45, 65), tokens=4, scheduled_at=2_000_000)
    from tasks.records import records_to_arrow

    m = request_metrics(pl.from_arrow(to_staged(records_to_arrow([rec])))).row(0, named=True)  # as stored
    assert m["ttft_ms"] == pytest.approx(20.0)  # 25 - 5
    assert m["e2e_ms"] == pytest.approx(60.0)  # 65 - 5
    assert m["queue_ms"] == pytest.approx(3.0)  # 5 - 2
    assert m["tpot_ms"] == pytest.approx((60 - 20) / 3)  # (E2E - TTFT) / (tokens - 1)
    assert m["tokens_per_s"] == pytest.approx(4 / 0.060)
    assert m["itl_ms"] == pytest.approx([15.0, 5.0, 20.0])


def test_tpot_undefined_for_one_token():
    from tasks.records import records_to_arrow

    m = request_metrics(pl.from_arrow(to_staged(records_to_arrow([record(0, chunks_ms=(7,), tokens=1)])))).row(
        0, named=True
    )
    assert m["tpot_ms"] is None
    assert m["ttft_ms"] == pytest.approx(7.0)


def hand_run(tmp_path, warehouse):
    # cell-a: three ok requests and one timeout, wall 200 ms; cell-b: one ok request, wall 50 ms.
    recs = [
        record(0, sent_ms=0, chunks_ms=(10, 20, 30), tokens=3),
        record(1, sent_ms=0, chunks_ms=(20, 40, 60, 80), tokens=4),
        record(2, sent_ms=50, chunks_ms=(100, 110), tokens=2),
        record(3, sent_ms=60, chunks_ms=(), tokens=None, status="timeout", error_class="ReadTimeout"),
        record(0, cell_id="cell-b", sent_ms=0, chunks_ms=(5, 15), tokens=2),
    ]
    cells = [cell_row("cell-a", wall_ms=200), cell_row("cell-b", wall_ms=50)]
    run_dir = stage(tmp_path, recs, cells, run_row(ttft_ms=25, tpot_ms=15))
    store.load_run(warehouse, run_dir)
    return summarize_run(warehouse, "run-1")


def test_cell_summary_by_hand(tmp_path, warehouse):
    _run, _deps, summary, _metrics = hand_run(tmp_path, warehouse)
    a = summary.filter(pl.col("cell_id") == "cell-a").row(0, named=True)
    assert (a["requests"], a["ok"], a["failed"]) == (4, 3, 1)
    assert a["output_tokens"] == 9
    assert a["output_throughput_tps"] == pytest.approx(9 / 0.2)
    assert a["request_throughput_rps"] == pytest.approx(3 / 0.2)
    ttfts = sorted([10.0, 20.0, 50.0])  # 10-0, 20-0, 100-50
    assert a["ttft_ms_mean"] == pytest.approx(sum(ttfts) / 3)
    assert a["ttft_ms_p50"] == pytest.approx(20.0)
    assert a["ttft_ms_p95"] == pytest.approx(20 + 0.9 * 30)  # linear between 20 and 50 at rank 1.9
    # TPOT: (30-10)/2 = 10, (80-20)/3 = 20, (110-100)/1 = 10; SLO ttft<=25 & tpot<=15 -> only request 0.
    assert a["tpot_ms_mean"] == pytest.approx(40 / 3)
    assert a["goodput_rps"] == pytest.approx(1 / 0.2)
    # ITL pooled over ok requests: [10, 10], [20, 20, 20], [10] -> p50 = 10 + 0.5*(20-10)?  sorted: 10,10,10,20,20,20
    assert a["itl_ms_p50"] == pytest.approx(15.0)
    b = summary.filter(pl.col("cell_id") == "cell-b").row(0, named=True)
    assert b["output_throughput_tps"] == pytest.approx(2 / 0.05)


def test_sql_views_agree_with_polars(tmp_path, warehouse):
    _run, _deps, summary, _metrics = hand_run(tmp_path, warehouse)
    sql = pl.from_arrow(warehouse.sql("SELECT * FROM v_cells ORDER BY cell_id").to_arrow_table())
    assert sql.height == summary.height == 2
    ours = summary.sort("cell_id")
    quantiles = [f"{m}_{q}" for m in ("ttft_ms", "tpot_ms", "e2e_ms", "itl_ms") for q in ("p50", "p90", "p95", "p99")]
    for column in [
        "requests",
        "ok",
        "failed",
        "output_tokens",
        "output_throughput_tps",
        "request_throughput_rps",
        "goodput_rps",
        "ttft_ms_mean",
        "tpot_ms_mean",
        "e2e_ms_mean",
        *quantiles,
    ]:
        for mine, theirs in zip(ours[column].to_list(), sql[column].to_list(), strict=True):
            assert mine == pytest.approx(theirs), column
    per_request = warehouse.execute(
        "SELECT ttft_ms, tpot_ms, e2e_ms, itl_ms FROM v_requests WHERE request_id = 'cell-a#1'"
    ).fetchone()
    assert per_request[0] == pytest.approx(20.0)
    assert per_request[1] == pytest.approx(20.0)
    assert per_request[2] == pytest.approx(80.0)
    assert per_request[3] == pytest.approx([20.0, 20.0, 20.0])


def test_no_slo_means_no_goodput(tmp_path, warehouse):
    run_dir = stage(tmp_path, [record(0)], [cell_row()])
    store.load_run(warehouse, run_dir)
    _run, _deps, summary, _m = summarize_run(warehouse, "run-1")
    assert summary["goodput_rps"].to_list() == [None]
    assert warehouse.execute("SELECT goodput_rps FROM v_cells").fetchone()[0] is None


def test_cell_without_any_request_still_summarized():
    cells = pl.DataFrame([cell_row(wall_ms=10)])
    from tasks.records import REQUEST_SCHEMA

    empty = request_metrics(pl.from_arrow(to_staged(REQUEST_SCHEMA.empty_table())))
    out = cell_summary(empty, cells).row(0, named=True)
    assert (out["requests"], out["ok"], out["output_tokens"]) == (0, 0, 0)
    assert out["ttft_ms_p50"] is None or math.isnan(out["ttft_ms_p50"])
