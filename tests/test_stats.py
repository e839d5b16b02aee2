"""warehouse.stats on data whose answer is known: by hand, or seeded samples from known distributions."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from warehouse import stats


def test_constant_sample_has_a_zero_width_interval():
    ci = stats.bootstrap_ci([7.0] * 50, "median")
    assert (ci.estimate, ci.low, ci.high, ci.n) == (7.0, 7.0, 7.0, 50)


def test_estimate_is_the_sample_statistic_and_nans_are_dropped():
    ci = stats.bootstrap_ci([1.0, 2.0, float("nan"), 3.0, 10.0], 0.9, n_resamples=200)
    assert ci.n == 4
    assert ci.estimate == pytest.approx(3 + 0.7 * 7)  # rank 0.9 * 3 = 2.7 between 3 and 10
    assert ci.low <= ci.estimate <= ci.high


def test_seeded_results_repeat_and_seeds_differ():
    x = np.random.default_rng(1).exponential(size=300)
    assert stats.bootstrap_ci(x, 0.95, seed=3) == stats.bootstrap_ci(x, 0.95, seed=3)
    assert stats.bootstrap_ci(x, 0.95, seed=3) != stats.bootstrap_ci(x, 0.95, seed=4)


def test_median_interval_width_matches_theory():
    # Median of N(0, 1), n = 400: standard error sqrt(pi / 2) / sqrt(n) = 0.0627, so a 95 % interval is
    # about 2 * 1.96 * 0.0627 = 0.246 wide. One sample's width is noisy (the median is discrete), so
    # average over 20 seeded samples: it must be of that size, not half or double.
    rng = np.random.default_rng(7)
    widths = [
        (lambda ci: ci.high - ci.low)(stats.bootstrap_ci(rng.normal(size=400), "median", n_resamples=1000, seed=i))
        for i in range(20)
    ]
    assert 0.20 < np.mean(widths) < 0.30


def test_interval_covers_the_true_percentile_about_95_percent_of_the_time():
    # 200 seeded samples of n = 200 from Exp(1); the true p90 is ln(10). Expected coverage ~0.95; the
    # binomial sd over 200 trials is 0.015, and the percentile bootstrap under-covers slightly at p90.
    rng = np.random.default_rng(11)
    hits = 0
    for trial in range(200):
        ci = stats.bootstrap_ci(rng.exponential(size=200), 0.9, n_resamples=500, seed=trial)
        hits += ci.low <= math.log(10) <= ci.high
    assert 0.86 <= hits / 200 <= 0.99


def test_ratio_interval_of_a_known_ratio():
    rng = np.random.default_rng(5)
    b = rng.lognormal(mean=3.0, sigma=0.3, size=500)
    a = 2.0 * rng.lognormal(mean=3.0, sigma=0.3, size=500)  # a's median is twice b's
    ci = stats.bootstrap_ratio_ci(a, b, "median", seed=2)
    assert ci.low < 2.0 < ci.high
    assert 1.8 < ci.estimate < 2.2
    exact = stats.bootstrap_ratio_ci([6.0] * 10, [3.0] * 20, 0.99)
    assert (exact.estimate, exact.low, exact.high) == (2.0, 2.0, 2.0)


def test_resampling_in_batches_gives_the_same_size_of_result(monkeypatch):
    monkeypatch.setattr(stats, "_BATCH_CELLS", 1000)  # forces many batches for n = 300
    x = np.random.default_rng(3).normal(size=300)
    ci = stats.bootstrap_ci(x, "mean", n_resamples=777)
    assert ci.low < ci.estimate < ci.high


def test_grouped_ci_one_row_per_group():
    frame = pl.DataFrame({"engine": ["a"] * 5 + ["b"] * 3, "ttft_ms": [1.0, 2, 3, 4, 5, 10, 10, 10]})
    out = stats.grouped_ci(frame, ["engine"], "ttft_ms", ("median", 0.95), n_resamples=300)
    assert out["engine"].to_list() == ["a", "b"]
    assert out["n"].to_list() == [5, 3]
    assert out["ttft_ms_p50_estimate"].to_list() == [3.0, 10.0]
    assert out.row(1, named=True)["ttft_ms_p95_ci_low"] == 10.0
    assert out.row(0, named=True)["ttft_ms_p95_estimate"] == pytest.approx(4.8)


def test_stability_by_hand():
    frame = pl.DataFrame({"k": ["x"] * 5 + ["y"] * 2, "v": [1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 10.0]})
    x, y = stats.stability(frame, ["k"], "v").sort("k").iter_rows(named=True)
    assert x["n"] == 5 and x["mean"] == 3.0
    assert x["std"] == pytest.approx(math.sqrt(2.5))  # sample std of 1..5
    assert x["cv"] == pytest.approx(math.sqrt(2.5) / 3)
    assert (x["p25"], x["p75"], x["iqr"]) == (2.0, 4.0, 2.0)
    assert (x["min"], x["max"], x["range"]) == (1.0, 5.0, 4.0)
    assert (y["cv"], y["iqr"], y["range"]) == (0.0, 0.0, 0.0)


def nights(values, **config) -> pl.DataFrame:
    import datetime as dt

    return pl.DataFrame(
        {
            "night": [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(len(values))],
            "engine": config.get("engine", "vllm"),
            "concurrency": config.get("concurrency", 4),
            "metric": [float(v) for v in values],
        }
    )


def test_a_latency_jump_beyond_the_noise_is_flagged_and_the_noise_is_not():
    # history 100 +- 1-2 ms; the last night jumps to 130: median of the 7 before = 100, MAD = 1,
    # noise = 1.4826, z = 30 / 1.4826 = 20 > 3, and 30 % > 2 %.
    out = stats.detect_regressions(nights([100, 101, 99, 100, 102, 98, 100, 101, 99, 130]), "metric")
    assert out["regressed"].to_list() == [None, None, None] + [False] * 6 + [True]
    last = out.row(-1, named=True)
    assert last["baseline"] == 100.0
    assert last["noise"] == pytest.approx(1.4826)
    assert last["z"] == pytest.approx(30 / 1.4826)
    assert last["change"] == pytest.approx(0.30)
    assert last["improved"] is False


def test_direction_matters():
    drop = [50, 51, 49, 50, 50, 30]
    assert stats.detect_regressions(nights(drop), "metric", higher_is_better=True)["regressed"][-1] is True
    assert stats.detect_regressions(nights(drop), "metric", higher_is_better=False)["improved"][-1] is True
    # throughput columns are known to be higher-is-better without saying so
    frame = nights(drop).rename({"metric": "output_throughput_tps"})
    assert stats.detect_regressions(frame, "output_throughput_tps")["regressed"][-1] is True


def test_flat_history_needs_the_relative_floor():
    # MAD = 0, so any move has infinite z; 1 % is under the 2 % floor, 10 % is not.
    assert stats.detect_regressions(nights([100] * 6 + [101]), "metric")["regressed"][-1] is False
    assert stats.detect_regressions(nights([100] * 6 + [110]), "metric")["regressed"][-1] is True


def test_configurations_are_judged_separately_and_one_outlier_does_not_widen_the_band():
    a = nights([10, 10.2, 9.9, 10.1, 40, 10, 10.1, 13], engine="a")  # 40: an old outlier night
    b = nights([20, 26, 14, 22, 18, 25, 15, 23], engine="b")  # noisy: 23 is within its noise
    out = stats.detect_regressions(pl.concat([b, a]), "metric").sort("engine", "night")
    assert out.filter(pl.col("engine") == "a")["regressed"][-1] is True
    assert out.filter(pl.col("engine") == "b")["regressed"][-1] is False


def test_nightly_regressions_reads_v_nightly(tmp_path, warehouse):
    from datetime import timedelta

    from tests.builders import T0, cell_row, record, run_row, stage
    from warehouse import store

    ttfts = [10, 11, 10, 9, 10, 30]  # ms, one request a night; the last night regressed
    for i, t in enumerate(ttfts):
        run = run_row(f"n{i}")
        run["started_at"] = (T0 + timedelta(days=i)).isoformat()
        store.load_run(
            warehouse,
            stage(
                tmp_path / str(i), [record(0, run_id=f"n{i}", chunks_ms=(t, t + 5))], [cell_row(run_id=f"n{i}")], run
            ),
        )
    out = stats.nightly_regressions(warehouse, "ttft_ms_p50").sort("night")
    assert out["run_id"].to_list() == [f"n{i}" for i in range(6)]
    assert out["regressed"].to_list() == [None, None, None, False, False, True]


def test_comparison_ci_pairs_instances_like_v_comparison(tmp_path, warehouse):
    from tests.builders import cell_row, deployment_row, record, run_row, stage
    from warehouse import store

    # vllm's TTFTs are 20 ms each, sglang's 10 ms each: the median ratio is exactly 2, interval [2, 2];
    # llama runs at another concurrency, so it has no partner.
    recs = [record(i, cell_id="v", deployment_id="dv", engine="vllm", chunks_ms=(20, 30)) for i in range(5)]
    recs += [record(i, cell_id="s", deployment_id="ds", engine="sglang", chunks_ms=(10, 15)) for i in range(4)]
    recs += [record(0, cell_id="l", deployment_id="dl", engine="llamacpp", chunks_ms=(50, 60))]
    cells = [
        cell_row("v", deployment_id="dv", engine="vllm"),
        cell_row("s", deployment_id="ds", engine="sglang"),
        cell_row("l", deployment_id="dl", engine="llamacpp", concurrency=8),
    ]
    store.load_run(
        warehouse,
        stage(tmp_path, recs, cells, run_row(), [deployment_row(deployment_id=d) for d in ("dv", "ds", "dl")]),
    )
    out = stats.comparison_ci(warehouse, "run-1", "ttft_ms", "median", n_resamples=200).sort("engine_a")
    assert out["engine_a"].to_list() == ["sglang", "vllm"] and out["engine_b"].to_list() == ["vllm", "sglang"]
    v = out.row(1, named=True)
    assert (v["ttft_ms_p50_ratio"], v["ci_low"], v["ci_high"], v["n_a"], v["n_b"]) == (2.0, 2.0, 2.0, 5, 4)
    sql = warehouse.execute("SELECT ttft_p50_ratio FROM v_comparison WHERE engine_a = 'vllm'").fetchall()
    assert sql == [(pytest.approx(2.0),)]
    with pytest.raises(ValueError, match="metric must be one of"):
        stats.comparison_ci(warehouse, "run-1", "ttft_ms; DROP TABLE runs")


def test_ratio_of_sums_draws_a_request_whole():
    # every request produced tokens at exactly 10 tok/s (a) and 5 tok/s (b), in very different amounts: a
    # resample keeping each request's tokens with its own time has no spread; one that broke pairs would
    tokens = np.array([5.0, 50.0, 500.0, 20.0, 80.0])
    ci = stats.bootstrap_ratio_of_sums_ci(tokens, tokens / 10, tokens, tokens / 5, n_resamples=500)
    assert ci.estimate == pytest.approx(2.0)
    assert ci.low == pytest.approx(2.0) and ci.high == pytest.approx(2.0)
    scaled = stats.bootstrap_ratio_of_sums_ci(tokens, tokens / 10, tokens, tokens / 5, scale_a=3.0, n_resamples=50)
    assert scaled.estimate == pytest.approx(6.0)
    assert np.isnan(stats.bootstrap_ratio_of_sums_ci([], [], tokens, tokens).estimate)
