"""benchmarks/peer_agreement.py without its peers (their venvs are large; the benchmark is run by hand):
its percentiles in each tool's definition and the side-by-side rows it prints."""

from __future__ import annotations

import duckdb
import pytest

from benchmarks import peer_agreement as pa


@pytest.mark.parametrize("n", [1, 7, 10, 41, 100])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_nearest_rank_is_duckdbs_quantile_disc_and_linear_its_quantile_cont(n, q):
    values = [float((i * 37) % 101) for i in range(n)]
    con = duckdb.connect()
    disc, cont = con.execute(
        f"SELECT quantile_disc(x, {q}), quantile_cont(x, {q}) FROM (SELECT unnest(?) AS x)", [values]
    ).fetchone()
    assert pa.pct(values, q, "nearest") == disc
    assert pa.pct(values, q, "linear") == pytest.approx(cont)


def test_compare_sets_each_tool_beside_bakeoff_in_its_definition():
    cols = {
        "guidellm_ttft_ms": [10.0, 20.0],
        "guidellm_tpot_ms": [5.0, 5.0],
        "guidellm_itl_ms": [4.0, 4.0],
        "guidellm_e2e_ms": [100.0, 200.0],
        "aiperf_ttft_ms": [10.0, 20.0],
        "aiperf_itl_ms": [4.0, 4.0],
        "aiperf_request_latency_ms": [100.0, 200.0],
        "icl": [4.0, 4.0, 4.0],
    }
    dist = {"mean": 15.0, "p50": 10.0, "p90": 20.0, "p99": 20.0}
    aiperf = {"ttft": dist, "itl": dist, "e2e": dist, "icl": None}
    rows = pa.compare({"columns": cols}, None, aiperf)
    ttft = {r["stat"]: r for r in rows if r["metric"] == "TTFT"}
    assert ttft["mean"]["bakeoff_ms"] == 15.0 and ttft["mean"]["diff_pct"] == 0
    assert ttft["p50"]["bakeoff_ms"] == 15.0 and ttft["p50"]["diff_pct"] == pytest.approx(-100 / 3)  # linear p50
    assert {r["tool"] for r in rows} == {"AIPerf"}
    rows = pa.compare({"columns": cols}, {"ttft": dist, "tpot": dist, "itl": dist, "e2e": dist}, None)
    ttft = {r["stat"]: r for r in rows if r["metric"] == "TTFT"}
    assert ttft["p50"]["bakeoff_ms"] == 10.0  # GuideLLM's nearest rank


def test_the_reports_are_read_where_each_tool_writes_its_figures():
    def gdist(m):
        return {"successful": {"mean": m, "median": m, "percentiles": {"p90": m + 1, "p99": m + 2}}}

    guidellm = {
        "benchmarks": [
            {
                "metrics": {
                    "time_to_first_token_ms": gdist(80.0),
                    "time_per_output_token_ms": gdist(35.0),
                    "inter_token_latency_ms": gdist(33.0),
                    "request_latency": gdist(4.0),  # seconds
                    "request_totals": {"successful": 40},
                }
            }
        ]
    }
    g = pa.guidellm_figures(guidellm)
    assert g["ttft"] == {"mean": 80.0, "p50": 80.0, "p90": 81.0, "p99": 82.0}
    assert g["e2e"]["p50"] == 4000.0 and g["ok"] == 40
    aiperf = {
        "records": {
            "time_to_first_token": {"avg": 70.0, "p50": 71.0, "p90": 72.0, "p99": 73.0},
            "inter_token_latency": {"avg": 34.0, "p50": 34.0, "p90": 35.0, "p99": 36.0},
            "request_latency": {"avg": 2000.0, "p50": 2000.0, "p90": 2100.0, "p99": 2200.0},
            "request_count": {"avg": 40},
        }
    }
    a = pa.aiperf_figures(aiperf)
    assert a["ttft"]["p50"] == 71.0 and a["itl"]["mean"] == 34.0 and a["icl"] is None and a["ok"] == 40
