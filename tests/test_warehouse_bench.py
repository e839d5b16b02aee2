"""The warehouse benchmark runs end to end at a tiny size (its figures are measured, not asserted)."""

from __future__ import annotations

import json


def test_benchmark_runs_at_a_tiny_size(tmp_path):
    from benchmarks import warehouse_bench

    out = tmp_path / "bench.json"
    assert (
        warehouse_bench.main(
            [
                "--rows",
                "3000",
                "--summary-rows",
                "30000",
                "--nights",
                "4",
                "--repeats",
                "1",
                "--naive-rows",
                "50",
                "--tmp",
                str(tmp_path / "scratch"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["load"]["rows"] == 3000
    # the comparisons of the load, measured in the same run
    assert all(result["load"][k] > 0 for k in ("int64_s", "old_storage_s", "to_staged_s"))
    assert result["big"]["nights"] == 4 and result["big"]["requests"] > 25_000
    assert result["queries"]["v_cells_rows"] == 4 * 96 and result["queries"]["v_nightly_rows"] == 4 * 32
    assert all(seconds >= 0 for seconds in result["queries"]["report"].values())
    assert "| load 3,000 requests" in warehouse_bench.render(result)
