"""Statistics over the warehouse's metrics: bootstrap confidence intervals, stability, regressions.

* Bootstrap: the percentile bootstrap. `n_resamples` resamples of the same size, drawn with
  replacement from a seeded numpy Generator as one (resamples x n) index matrix, so the statistic is
  computed for all resamples in one vectorised call (in batches, to bound memory), never in a Python
  loop per resample. The interval is the (alpha/2, 1 - alpha/2) quantiles of the resampled statistic.
  Percentiles are linear-interpolated, the same definition as the SQL views and the transforms.
* Ratios (engine a vs engine b): a and b are resampled independently (they are different requests),
  the ratio stat(a*) / stat(b*) is formed per resample pair, and its percentile interval is reported.
* Stability: coefficient of variation (sample std / mean), IQR (p75 - p25, linear) and min-max range.
* Regressions, night over night: see `detect_regressions`, which states the test and threshold.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import numpy as np
import polars as pl

if TYPE_CHECKING:
    import duckdb

# A sample: a numpy array, a polars Series or a sequence of numbers (None/NaN dropped).
Sample: TypeAlias = "np.ndarray | pl.Series | Sequence[float | None]"

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
# Cap on the index matrix of one batch (resamples x n), ~64 MB of int64: bounds memory for big samples.
_BATCH_CELLS = 8_000_000

# Regression test defaults (warehouse/README.md, "Statistics", states the same).
REGRESSION_WINDOW = 7  # nights of history the latest night is compared with
REGRESSION_MIN_HISTORY = 3  # fewer earlier nights: no verdict
REGRESSION_Z = 3.0  # robust z-score beyond which a move is not noise
REGRESSION_MIN_RELATIVE = 0.02  # and at least 2 % of the history's median (a dead-flat history has MAD 0)
MAD_TO_SIGMA = 1.4826  # MAD x 1.4826 estimates the standard deviation of normal noise

# Metrics of v_nightly where a larger value is better; every other metric is a latency (smaller is better).
HIGHER_IS_BETTER = ("output_throughput_tps", "request_throughput_rps", "goodput_rps", "ok")


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}estimate": self.estimate, f"{prefix}ci_low": self.low, f"{prefix}ci_high": self.high}


def _statistic(stat: str | float | Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """A function of a (resamples x n) matrix returning one value per row. `stat` is "median",
    "mean", a quantile in (0, 1), or such a function."""
    if callable(stat):
        return stat
    if stat == "median":
        stat = 0.5
    if stat == "mean":
        return lambda m: m.mean(axis=-1)
    q = float(stat)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"a quantile is in [0, 1], got {stat!r}")
    return lambda m: np.quantile(m, q, axis=-1, method="linear")


def _resampled(
    values: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    n = len(values)
    out = np.empty(n_resamples)
    batch = max(1, _BATCH_CELLS // max(n, 1))
    for start in range(0, n_resamples, batch):  # a loop per batch of resamples, not per resample
        size = min(batch, n_resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        out[start : start + size] = fn(values[idx])
    return out


def _clean(values: Sample) -> np.ndarray:
    a = np.asarray(values.to_numpy() if isinstance(values, pl.Series) else values, dtype=float)
    return np.asarray(a[~np.isnan(a)], dtype=float)


def bootstrap_ci(
    values: Sample,
    stat: str | float = "median",
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | Sequence[int] = 0,
) -> Interval:
    """Percentile-bootstrap interval of a statistic of one sample (NaN/None dropped)."""
    x = _clean(values)
    if len(x) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    fn = _statistic(stat)
    rng = np.random.default_rng(seed)
    boot = _resampled(x, fn, n_resamples, rng)
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2], method="linear")
    return Interval(float(fn(x[None, :])[0]), float(low), float(high), len(x))


def bootstrap_ratio_ci(
    a: Sample,
    b: Sample,
    stat: str | float = "median",
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | Sequence[int] = 0,
) -> Interval:
    """Interval of stat(a) / stat(b), a and b resampled independently (e.g. TTFTs of two engines)."""
    xa, xb = _clean(a), _clean(b)
    if len(xa) == 0 or len(xb) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    fn = _statistic(stat)
    rng = np.random.default_rng(seed)
    boot_a = _resampled(xa, fn, n_resamples, rng)
    boot_b = _resampled(xb, fn, n_resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = boot_a / boot_b
        estimate = float(fn(xa[None, :])[0] / fn(xb[None, :])[0])
    alpha = 1.0 - confidence
    low, high = np.nanquantile(ratios, [alpha / 2, 1 - alpha / 2], method="linear")
    return Interval(estimate, float(low), float(high), min(len(xa), len(xb)))


def grouped_ci(
    frame: pl.DataFrame,
    by: Sequence[str],
    value: str,
    stats: Sequence[str | float] = ("median", 0.95),
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> pl.DataFrame:
    """One row per group (sorted by key): n, and for each stat `{value}_{name}_estimate`, `_ci_low`,
    `_ci_high`. Group i draws from its own generator seeded with (seed, i): reruns give the same numbers."""
    rows = []
    groups = frame.select(*by, value).drop_nulls(value).partition_by(list(by), as_dict=True, maintain_order=True)
    for i, key in enumerate(sorted(groups, key=lambda k: tuple((v is None, v) for v in k))):
        values = groups[key][value].to_numpy()
        row = dict(zip(by, key, strict=True))
        row["n"] = len(values)
        for stat in stats:
            name = _stat_name(stat)
            ci = bootstrap_ci(values, stat, n_resamples=n_resamples, confidence=confidence, seed=[seed, i])
            row.update(ci.as_dict(f"{value}_{name}_"))
        rows.append(row)
    return pl.DataFrame(rows)


def _stat_name(stat: str | float) -> str:
    if isinstance(stat, str):
        return "p50" if stat == "median" else stat
    return f"p{float(stat) * 100:g}"


def stability(frame: pl.DataFrame, by: Sequence[str], value: str) -> pl.DataFrame:
    """Per group: n, mean, std (sample), cv = std / mean, p25, p75, iqr, min, max, range."""
    v = pl.col(value)
    return (
        frame.group_by(*by, maintain_order=True)
        .agg(
            v.drop_nulls().len().alias("n"),
            v.mean().alias("mean"),
            v.std(ddof=1).alias("std"),
            v.quantile(0.25, "linear").alias("p25"),
            v.quantile(0.75, "linear").alias("p75"),
            v.min().alias("min"),
            v.max().alias("max"),
        )
        .with_columns(
            cv=pl.col("std") / pl.col("mean"),
            iqr=pl.col("p75") - pl.col("p25"),
            range=pl.col("max") - pl.col("min"),
        )
    )


# v_nightly's configuration columns: what identifies "the same thing measured again" night after night.
CONFIG_COLUMNS = (
    "engine",
    "model",
    "deployment_id",
    "instance_id",
    "workload_id",
    "load_kind",
    "arrival",
    "concurrency",
    "rate_rps",
    "burstiness",
    "max_concurrency",
    "duration_limit_s",
)


def detect_regressions(
    nightly: pl.DataFrame,
    metric: str,
    *,
    by: Sequence[str] | None = None,
    order: str = "night",
    higher_is_better: bool | None = None,
    window: int = REGRESSION_WINDOW,
    min_history: int = REGRESSION_MIN_HISTORY,
    z_threshold: float = REGRESSION_Z,
    min_relative: float = REGRESSION_MIN_RELATIVE,
) -> pl.DataFrame:
    """Flag each night whose metric moved beyond the configuration's recent noise.

    The test, per configuration (`by`, default CONFIG_COLUMNS present in the frame), for every night:
      history  = the metric on the previous `window` nights of that configuration (nulls skipped);
      centre   = median(history); noise = 1.4826 * MAD(history) (a robust standard deviation);
      z        = (value - centre) / noise;
      regressed when the move is in the bad direction AND |z| > z_threshold (3) AND
      |value - centre| > min_relative (2 %) x |centre|; improved likewise in the good direction.
    Fewer than `min_history` (3) earlier nights: no verdict (z and the flags are null). The relative
    floor keeps a dead-flat history (MAD 0) from flagging a 0.1 % wobble; the median and MAD keep one
    earlier outlier night from widening the band. Returns the frame with `baseline`, `noise`, `z`,
    `change` (relative), `regressed`, `improved` added.
    """
    if higher_is_better is None:
        higher_is_better = metric in HIGHER_IS_BETTER
    by = [c for c in (by or CONFIG_COLUMNS) if c in nightly.columns]
    parts = []
    for part in nightly.sort(order).partition_by(by, maintain_order=True) if by else [nightly.sort(order)]:
        values = part[metric].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        n = len(values)
        padded = np.concatenate([np.full(window, np.nan), values])
        # row i's history is padded[i : i + window] = values[i - window : i]
        hist = np.lib.stride_tricks.sliding_window_view(padded, window)[:n]
        count = np.sum(~np.isnan(hist), axis=1)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN history rows: no verdict, below
            centre = np.nanmedian(hist, axis=1)
            noise = MAD_TO_SIGMA * np.nanmedian(np.abs(hist - centre[:, None]), axis=1)
            delta = values - centre
            z = np.where(noise > 0, delta / noise, np.sign(delta) * np.inf)
            z = np.where(delta == 0, 0.0, z)
            change = delta / np.abs(centre)
        enough = (count >= min_history) & ~np.isnan(values)
        beyond = enough & (np.abs(z) > z_threshold) & (np.abs(delta) > min_relative * np.abs(centre))
        worse = delta < 0 if higher_is_better else delta > 0
        parts.append(
            part.with_columns(
                baseline=pl.Series(np.where(enough, centre, np.nan)).fill_nan(None),
                noise=pl.Series(np.where(enough, noise, np.nan)).fill_nan(None),
                z=pl.Series(np.where(enough, z, np.nan)).fill_nan(None),
                change=pl.Series(np.where(enough, change, np.nan)).fill_nan(None),
                regressed=pl.when(pl.Series(enough)).then(pl.Series(beyond & worse)),
                improved=pl.when(pl.Series(enough)).then(pl.Series(beyond & ~worse)),
            )
        )
    return pl.concat(parts) if parts else nightly


def nightly_regressions(
    con: duckdb.DuckDBPyConnection,
    metric: str,
    *,
    nights: int = 60,
    until_run: str | None = None,
    run_ids: list[str] | None = None,
    **kw: Any,
) -> pl.DataFrame:
    """`detect_regressions` over v_nightly's last `nights` runs (read-only query); with `until_run`, the
    last `nights` runs that started no later than that run (a report re-rendered for an older night);
    with `run_ids`, those runs (the report's trend: the nights that measured its run's configurations).

    The runs are picked from `runs` first and v_nightly is filtered on their run_id: a filter on run_id
    reaches the requests scan (run ids begin with the UTC start time, so the range is tight), where a
    filter on `night` is applied after every night has been summarised."""
    until = "WHERE started_at <= (SELECT started_at FROM runs WHERE run_id = ?)" if until_run else ""
    params = [until_run, nights] if until_run else [nights]
    ids = run_ids
    if ids is None:
        picked = con.execute(f"SELECT run_id FROM runs {until} ORDER BY started_at DESC LIMIT ?", params).fetchall()
        ids = [r[0] for r in picked]
    cols = ", ".join(["run_id", "night", *CONFIG_COLUMNS, metric])
    frame = cast(
        pl.DataFrame,
        pl.from_arrow(
            con.sql(
                f"SELECT {cols} FROM v_nightly WHERE run_id BETWEEN ? AND ? AND run_id = ANY(?::VARCHAR[])",
                params=[min(ids, default=""), max(ids, default=""), ids],
            ).to_arrow_table()
        ),
    )
    return detect_regressions(frame, metric, **kw)


LOAD_SHAPE_COLUMNS = (
    "model",
    "workload_id",
    "load_kind",
    "arrival",
    "concurrency",
    "rate_rps",
    "burstiness",
    "max_concurrency",
    "duration_limit_s",
)
PER_REQUEST_METRICS = ("ttft_ms", "tpot_ms", "e2e_ms", "queue_ms", "tokens_per_s")


def comparison_ci(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    metric: str = "ttft_ms",
    stat: str | float = "median",
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> pl.DataFrame:
    """v_comparison's ratios with intervals: for each pair of instances of one run on the same model,
    workload and load shape (v_comparison's pairing, both orders), stat(a's metric) / stat(b's) over
    their ok requests, with a percentile-bootstrap interval (`bootstrap_ratio_ci`)."""
    if metric not in PER_REQUEST_METRICS:
        raise ValueError(f"metric must be one of {PER_REQUEST_METRICS}, got {metric!r}")
    shape = ", ".join(f"c.{k}" for k in LOAD_SHAPE_COLUMNS)
    requests = cast(
        pl.DataFrame,
        pl.from_arrow(
            con.sql(
                f"SELECT q.engine, q.deployment_id, q.instance_id, {shape}, q.{metric} AS value "
                "FROM v_requests q JOIN cells c USING (run_id, cell_id) WHERE q.run_id = ? AND q.status = 'ok'",
                params=[run_id],
            ).to_arrow_table()
        ),
    )
    rows = []
    name = _stat_name(stat)
    for i, (key, group) in enumerate(
        sorted(
            requests.partition_by(list(LOAD_SHAPE_COLUMNS), as_dict=True).items(),
            key=lambda kv: tuple((v is None, v) for v in kv[0]),
        )
    ):
        by_instance = sorted(group.partition_by("deployment_id", "instance_id", as_dict=True).items())
        for (dep_a, inst_a), a in by_instance:
            for (dep_b, inst_b), b in by_instance:
                if (dep_a, inst_a) == (dep_b, inst_b):
                    continue
                ci = bootstrap_ratio_ci(
                    a["value"], b["value"], stat, n_resamples=n_resamples, confidence=confidence, seed=[seed, i]
                )
                rows.append(
                    {
                        **dict(zip(LOAD_SHAPE_COLUMNS, key, strict=True)),
                        "engine_a": a["engine"][0],
                        "engine_b": b["engine"][0],
                        "deployment_a": dep_a,
                        "deployment_b": dep_b,
                        "instance_a": inst_a,
                        "instance_b": inst_b,
                        "n_a": a.height,
                        "n_b": b.height,
                        f"{metric}_{name}_ratio": ci.estimate,
                        "ci_low": ci.low,
                        "ci_high": ci.high,
                    }
                )
    return pl.DataFrame(rows)


def _pairs(num: Sample, den: Sample) -> np.ndarray:
    m = np.column_stack([_clean_keep(num), _clean_keep(den)])
    return np.asarray(m[~np.isnan(m).any(axis=1)], dtype=float)


def _clean_keep(values: Sample) -> np.ndarray:
    return np.asarray(values.to_numpy() if isinstance(values, pl.Series) else values, dtype=float)


def _ratio_of_sums_resampled(pairs: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Σnum/Σden of n_resamples resamples of the (num, den) rows, a row drawn whole."""
    n = len(pairs)
    out = np.empty(n_resamples)
    batch = max(1, _BATCH_CELLS // max(n, 1))
    for start in range(0, n_resamples, batch):
        size = min(batch, n_resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        out[start : start + size] = pairs[idx, 0].sum(axis=-1) / pairs[idx, 1].sum(axis=-1)
    return out


def bootstrap_ratio_of_sums_ci(
    num_a: Sample,
    den_a: Sample,
    num_b: Sample,
    den_b: Sample,
    *,
    scale_a: float = 1.0,
    scale_b: float = 1.0,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | Sequence[int] = 0,
) -> Interval:
    """Interval of (scale_a · Σnum_a/Σden_a) / (scale_b · Σnum_b/Σden_b): the (num, den) rows of a and of b
    resampled independently, a row drawn whole (a request's tokens with its own time). NaN rows are dropped."""
    pa, pb = _pairs(num_a, den_a), _pairs(num_b, den_b)
    if len(pa) == 0 or len(pb) == 0 or pa[:, 1].sum() <= 0 or pb[:, 1].sum() <= 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = (_ratio_of_sums_resampled(pa, n_resamples, rng) * scale_a) / (
            _ratio_of_sums_resampled(pb, n_resamples, rng) * scale_b
        )
    estimate = (scale_a * pa[:, 0].sum() / pa[:, 1].sum()) / (scale_b * pb[:, 0].sum() / pb[:, 1].sum())
    alpha = 1.0 - confidence
    low, high = np.nanquantile(ratios, [alpha / 2, 1 - alpha / 2], method="linear")
    return Interval(float(estimate), float(low), float(high), min(len(pa), len(pb)))


def throughput_comparison_ci(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> pl.DataFrame:
    """comparison_ci's pairs, on the cell output throughput (Σ ok output tokens / Σ cell wall seconds) with an
    interval. By Little's law a configuration's throughput is L · Σtokens/Σbusy, where busy is a request's
    sent-to-done time and L = Σbusy/Σwall its mean number in flight; the interval resamples requests (a
    request's tokens with its own busy time, failed requests counting their time and no tokens) with L held
    at its measured value. Column `output_tps_ratio` is exactly the ratio of the cells' throughputs."""
    shape = ", ".join(f"c.{k}" for k in LOAD_SHAPE_COLUMNS)
    requests = cast(
        pl.DataFrame,
        pl.from_arrow(
            con.sql(
                f"SELECT q.engine, q.deployment_id, q.instance_id, {shape}, "
                "CASE WHEN q.status = 'ok' THEN coalesce(q.completion_tokens, 0) ELSE 0 END::DOUBLE AS tokens, "
                "(r.done_at - r.sent_at) / 1e9 AS busy_s "
                "FROM v_requests q JOIN requests r ON r.run_id = q.run_id AND r.request_id = q.request_id "
                "JOIN cells c ON c.run_id = q.run_id AND c.cell_id = q.cell_id "
                "WHERE q.run_id = ? AND r.done_at IS NOT NULL AND r.sent_at IS NOT NULL",
                params=[run_id],
            ).to_arrow_table()
        ),
    )
    key_cols = [*LOAD_SHAPE_COLUMNS, "deployment_id", "instance_id"]
    wall = {
        tuple(r[:-1]): r[-1]
        for r in con.execute(
            f"SELECT {', '.join('c.' + k for k in key_cols)}, sum(c.wall_ns) / 1e9 FROM cells c "
            "WHERE c.run_id = ? GROUP BY ALL",
            [run_id],
        ).fetchall()
    }
    rows = []
    for i, (key, group) in enumerate(
        sorted(
            requests.partition_by(list(LOAD_SHAPE_COLUMNS), as_dict=True).items(),
            key=lambda kv: tuple((v is None, v) for v in kv[0]),
        )
    ):
        by_instance = sorted(group.partition_by("deployment_id", "instance_id", as_dict=True).items())

        def in_flight(dep: str, inst: str, frame: pl.DataFrame, key: tuple[object, ...] = key) -> float:
            wall_s = wall.get((*key, dep, inst))
            busy = float(frame["busy_s"].sum())
            return busy / wall_s if wall_s else float("nan")

        for (dep_a, inst_a), a in by_instance:
            for (dep_b, inst_b), b in by_instance:
                if (dep_a, inst_a) == (dep_b, inst_b):
                    continue
                ci = bootstrap_ratio_of_sums_ci(
                    a["tokens"],
                    a["busy_s"],
                    b["tokens"],
                    b["busy_s"],
                    scale_a=in_flight(dep_a, inst_a, a),
                    scale_b=in_flight(dep_b, inst_b, b),
                    n_resamples=n_resamples,
                    confidence=confidence,
                    seed=[seed, i],
                )
                rows.append(
                    {
                        **dict(zip(LOAD_SHAPE_COLUMNS, key, strict=True)),
                        "engine_a": a["engine"][0],
                        "engine_b": b["engine"][0],
                        "deployment_a": dep_a,
                        "deployment_b": dep_b,
                        "instance_a": inst_a,
                        "instance_b": inst_b,
                        "n_a": a.height,
                        "n_b": b.height,
                        "output_tps_ratio": ci.estimate,
                        "ci_low": ci.low,
                        "ci_high": ci.high,
                    }
                )
    return pl.DataFrame(rows)


RUN_COMPARISON_KEY = ("deployment_id", "instance_id", "engine", *LOAD_SHAPE_COLUMNS)


def _run_requests(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> pl.DataFrame:
    shape = ", ".join(f"c.{k}" for k in LOAD_SHAPE_COLUMNS)
    return cast(
        pl.DataFrame,
        pl.from_arrow(
            con.sql(
                f"SELECT q.run_id, q.engine, q.deployment_id, q.instance_id, {shape}, q.status, q.ttft_ms, q.e2e_ms, "
                "CASE WHEN q.status = 'ok' THEN coalesce(q.completion_tokens, 0) ELSE 0 END::DOUBLE AS tokens, "
                "(r.done_at - r.sent_at) / 1e9 AS busy_s "
                "FROM v_requests q JOIN requests r ON r.run_id = q.run_id AND r.request_id = q.request_id "
                "JOIN cells c ON c.run_id = q.run_id AND c.cell_id = q.cell_id "
                "WHERE q.run_id = ANY(?::VARCHAR[]) AND r.done_at IS NOT NULL AND r.sent_at IS NOT NULL",
                params=[list(run_ids)],
            ).to_arrow_table()
        ),
    )


def run_comparison_ci(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    baseline_run: str,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> pl.DataFrame:
    """Each configuration (RUN_COMPARISON_KEY: the same instance of the same deployment on the same model,
    workload and load shape) measured in both runs: this run over the baseline for the cell output
    throughput (throughput_comparison_ci's estimator), TTFT P50 and E2E P95 (bootstrap_ratio_ci, ok
    requests), each with its interval, and both runs' engine versions."""
    requests = _run_requests(con, [run_id, baseline_run])
    key = list(RUN_COMPARISON_KEY)
    wall = {
        tuple(r[:-1]): r[-1]
        for r in con.execute(
            f"SELECT run_id, {', '.join(key)}, sum(wall_ns) / 1e9 FROM cells "
            "WHERE run_id = ANY(?::VARCHAR[]) GROUP BY ALL",
            [[run_id, baseline_run]],
        ).fetchall()
    }
    versions = {
        (r, d, i): v
        for r, d, i, v in con.execute(
            "SELECT run_id, deployment_id, instance_id, engine_version FROM deployments "
            "WHERE run_id = ANY(?::VARCHAR[])",
            [[run_id, baseline_run]],
        ).fetchall()
    }
    rows = []
    groups = requests.partition_by(key, as_dict=True)
    for i, (k, frame) in enumerate(sorted(groups.items(), key=lambda kv: tuple((v is None, str(v)) for v in kv[0]))):
        mine, base = frame.filter(pl.col("run_id") == run_id), frame.filter(pl.col("run_id") == baseline_run)
        if mine.height == 0 or base.height == 0:
            continue

        def in_flight(f: pl.DataFrame, run: str, k: tuple[object, ...] = k) -> float:
            w = wall.get((run, *k))
            return float(f["busy_s"].sum()) / w if w else float("nan")

        tps = bootstrap_ratio_of_sums_ci(
            mine["tokens"],
            mine["busy_s"],
            base["tokens"],
            base["busy_s"],
            scale_a=in_flight(mine, run_id),
            scale_b=in_flight(base, baseline_run),
            n_resamples=n_resamples,
            confidence=confidence,
            seed=[seed, i, 0],
        )
        ok_m, ok_b = mine.filter(pl.col("status") == "ok"), base.filter(pl.col("status") == "ok")
        ttft = bootstrap_ratio_ci(
            ok_m["ttft_ms"], ok_b["ttft_ms"], "median", n_resamples=n_resamples, seed=[seed, i, 1]
        )
        e2e = bootstrap_ratio_ci(ok_m["e2e_ms"], ok_b["e2e_ms"], 0.95, n_resamples=n_resamples, seed=[seed, i, 2])
        kd = dict(zip(key, k, strict=True))
        rows.append(
            {
                **kd,
                "n": mine.height,
                "n_baseline": base.height,
                "version": versions.get((run_id, kd["deployment_id"], kd["instance_id"])),
                "version_baseline": versions.get((baseline_run, kd["deployment_id"], kd["instance_id"])),
                **{
                    f"output_tps_{n}": v
                    for n, v in zip(("ratio", "ci_low", "ci_high"), (tps.estimate, tps.low, tps.high), strict=True)
                },
                **{
                    f"ttft_p50_{n}": v
                    for n, v in zip(("ratio", "ci_low", "ci_high"), (ttft.estimate, ttft.low, ttft.high), strict=True)
                },
                **{
                    f"e2e_p95_{n}": v
                    for n, v in zip(("ratio", "ci_low", "ci_high"), (e2e.estimate, e2e.low, e2e.high), strict=True)
                },
            }
        )
    return pl.DataFrame(rows)
