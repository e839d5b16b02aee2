"""Latency: TTFT, TPOT, ITL and E2E per configuration (mean, P50, P95, P99 with intervals), their
distributions (ECDF), and latency against load where a configuration ran at several load shapes.

Intervals are 95% percentile-bootstrap intervals over the configuration's ok requests
(warehouse/stats.bootstrap_ci). ITL is pooled over every chunk gap of those requests and has no
interval: the gaps of one request are not independent draws, so resampling them would overstate
the precision. Every chart is drawn from an aggregate (quantile points, per-cell percentiles).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import altair as alt
import polars as pl

from reports.charts import Chart, chart_spec
from reports.tables import MISSING, Column, Table, fmt_value

METRICS = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"), ("e2e_ms", "E2E"))
ECDF_METRICS = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E"))
ECDF_POINTS = 101  # quantiles 0, 0.01, ..., 1 per configuration and metric
PERCENTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
# below these many samples a percentile is (nearly) the slowest value: shown, and said so beside it
MIN_SAMPLES = {"p95": 20, "p99": 100}
CHART_IDS = {"ecdf": "chart-latency-ecdf", "vs_load": "chart-latency-vs-load", "throughput": "chart-throughput"}

COLUMNS = (
    Column("name", "Configuration", numeric=False),
    Column("shape", "Model · workload · load", numeric=False),
    Column("metric", "Metric", numeric=False),
    Column("n", "n"),
    Column("mean", "Mean (ms)"),
    *(
        c
        for _, p in PERCENTILES
        for c in (
            Column(p, f"{p.upper()} (ms)", group=p.upper(), sub="ms"),
            Column(f"{p}_ci", f"{p.upper()} 95% interval", group=p.upper(), sub="95% interval", numeric=False),
        )
    ),
)


@dataclass(frozen=True)
class Latency:
    table: Table
    charts: tuple[Chart, ...]


def _interval(values, q: float, seed: int) -> tuple[float, str]:
    from warehouse.stats import bootstrap_ci

    ci = bootstrap_ci(values, q, seed=seed)
    if ci.n == 0:
        return math.nan, MISSING
    return ci.estimate, f"{fmt_value(ci.low)}–{fmt_value(ci.high)}"


def _rows(frame: pl.DataFrame, name: str, shape: str, seed: int) -> list[dict]:
    rows = []
    for metric, label in METRICS:
        if metric == "itl_ms":
            values = frame["itl_ms"].explode().drop_nulls()
        else:
            values = frame[metric].drop_nulls().drop_nans()
        row: dict = {"name": name, "shape": shape, "metric": label, "n": values.len()}
        row["mean"] = float(values.mean()) if values.len() else None  # type: ignore[arg-type]
        for q, p in PERCENTILES:
            if metric == "itl_ms":
                row[p] = float(values.quantile(q, "linear")) if values.len() else None  # type: ignore[arg-type]
                row[f"{p}_ci"] = "pooled gaps: none" if values.len() else MISSING
            else:
                est, text = _interval(values, q, seed)
                if 0 < values.len() < MIN_SAMPLES.get(p, 0):
                    text = f"{text}; under {MIN_SAMPLES[p]} samples: near the slowest"
                row[p], row[f"{p}_ci"] = (None if math.isnan(est) else est), text
        rows.append(row)
    return rows


def per_request(metrics: pl.DataFrame, summary: pl.DataFrame, shape_cols: Sequence[str]) -> pl.DataFrame:
    """The ok requests with their cell's load shape (and the sweep's stop reason)."""
    cell_cols = [c for c in ("cell_id", *shape_cols, "sweep_stop_reason") if c in summary.columns and c != "model"]
    return metrics.filter(pl.col("status") == "ok").join(summary.select(cell_cols), on="cell_id", how="left")


def _ecdf_chart(ok: pl.DataFrame, key_cols: Sequence[str], label: Callable[[dict], str]) -> dict | None:
    qs = [i / (ECDF_POINTS - 1) for i in range(ECDF_POINTS)]
    points = []
    for key, frame in ok.partition_by(list(key_cols), as_dict=True).items():
        name = label(dict(zip(key_cols, key, strict=True)))
        for metric, metric_label in ECDF_METRICS:
            values = frame[metric].drop_nulls().drop_nans()
            if values.len() < 2:
                continue
            points += [
                {"configuration": name, "metric": metric_label, "share": q, "ms": float(values.quantile(q, "linear"))}
                for q in qs
            ]
    if not points:
        return None
    data = pl.DataFrame(points).filter(pl.col("ms") > 0)  # a log axis cannot place 0
    panels = []
    for _, metric_label in ECDF_METRICS:
        part = data.filter(pl.col("metric") == metric_label)
        if part.height == 0:
            continue
        panels.append(
            alt.Chart(alt.Data(values=part.to_dicts()), title=metric_label)
            .mark_line(interpolate="step-after")
            .encode(
                x=alt.X("ms:Q", title=f"{metric_label} (ms, log scale)", scale=alt.Scale(type="log")),
                y=alt.Y("share:Q", title="share of ok requests ≤ x", axis=alt.Axis(format="%")),
                color=alt.Color("configuration:N", title="Configuration"),
                tooltip=["configuration:N", alt.Tooltip("share:Q", format=".0%"), alt.Tooltip("ms:Q", format=",.1f")],
            )
            .properties(width=260, height=200)
        )
    return chart_spec(alt.hconcat(*panels).resolve_scale(x="independent")) if panels else None


def _load_axis(kind: str) -> tuple[str, str]:
    return ("concurrency", "concurrency") if kind == "closed" else ("rate_rps", "offered rate (req/s)")


def _vs_load_chart(ok: pl.DataFrame, name_of: Callable[[dict], str]) -> dict | None:
    """P50 and P95 of TTFT and E2E per cell against its load, where a configuration (instance, model,
    workload, load kind) ran at two or more loads. A sweep's stop reason rides in the tooltip."""
    rows = []
    group_cols = ["deployment_id", "instance_id", "model", "workload_id", "load_kind"]
    for key, frame in ok.partition_by(group_cols, as_dict=True).items():
        k = dict(zip(group_cols, key, strict=True))
        x_col, _ = _load_axis(str(k["load_kind"]))
        if x_col not in frame.columns or frame[x_col].drop_nulls().n_unique() < 2:
            continue
        name = f"{name_of(k)} · {k['model']} · {k['workload_id']}"
        per_cell = frame.group_by("cell_id", x_col).agg(
            *(
                pl.col(m).quantile(q, "linear").alias(f"{m}|{p}")
                for m, _ in (("ttft_ms", ""), ("e2e_ms", ""))
                for q, p in PERCENTILES[:2]
            ),
            pl.col("sweep_stop_reason").first().alias("stop") if "sweep_stop_reason" in frame.columns else pl.lit(None),
        )
        for r in per_cell.iter_rows(named=True):
            for m, label in (("ttft_ms", "TTFT"), ("e2e_ms", "E2E")):
                for _, p in PERCENTILES[:2]:
                    if r[f"{m}|{p}"] is None:
                        continue
                    rows.append(
                        {
                            "configuration": name,
                            "kind": str(k["load_kind"]),
                            "load": float(r[x_col]),
                            "metric": label,
                            "stat": p.upper(),
                            "ms": float(r[f"{m}|{p}"]),
                            "stop": r.get("stop") or "",
                        }
                    )
    if not rows:
        return None
    data = pl.DataFrame(rows).sort("configuration", "metric", "stat", "load")
    panels = []
    for kind in sorted(data["kind"].unique().to_list()):
        _, x_title = _load_axis(kind)
        for metric in ("TTFT", "E2E"):
            part = data.filter((pl.col("kind") == kind) & (pl.col("metric") == metric))
            if part.height == 0:
                continue
            panels.append(
                alt.Chart(alt.Data(values=part.to_dicts()), title=f"{metric} against load ({kind})")
                .mark_line(point=True)
                .encode(
                    x=alt.X("load:Q", title=x_title),
                    y=alt.Y("ms:Q", title=f"{metric} (ms)"),
                    color=alt.Color("configuration:N", title="Configuration"),
                    strokeDash=alt.StrokeDash("stat:N", title="Percentile"),
                    tooltip=[
                        "configuration:N",
                        "stat:N",
                        alt.Tooltip("load:Q", title=x_title),
                        alt.Tooltip("ms:Q", format=",.1f"),
                        alt.Tooltip("stop:N", title="sweep stop reason"),
                    ],
                )
                .properties(width=300, height=200)
            )
    return chart_spec(alt.hconcat(*panels).resolve_scale(x="independent")) if panels else None


def throughput_chart(configs: Sequence[dict]) -> Chart | None:
    """Cell output tok/s per configuration, one panel row per model · workload · load."""
    data = [
        {"configuration": c["name"], "shape": c["shape"], "tps": float(c["output_tps"])}
        for c in configs
        if c.get("output_tps") is not None and not math.isnan(c["output_tps"])
    ]
    if not data:
        return None
    chart = (
        alt.Chart(alt.Data(values=data))
        .mark_bar()
        .encode(
            y=alt.Y("configuration:N", title=None),
            x=alt.X("tps:Q", title="cell output tok/s"),
            color=alt.Color("configuration:N", legend=None),
            row=alt.Row("shape:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left", labelLimit=400)),
            tooltip=["configuration:N", "shape:N", alt.Tooltip("tps:Q", title="tok/s", format=",.1f")],
        )
        .properties(width=420)
    )
    return Chart(
        CHART_IDS["throughput"],
        "Output tokens/s per configuration",
        "Σ ok output tokens / Σ cell wall seconds per configuration (repeats pooled); the winners' intervals are "
        "in the table below.",
        chart_spec(chart),
    )


def latency(
    metrics: pl.DataFrame,
    summary: pl.DataFrame,
    names: dict,
    shape_cols: Sequence[str],
    shape_text: Callable[[dict], str],
) -> Latency:
    """`metrics` and `summary` as warehouse/transforms.summarize_run gives them; `names` maps
    (deployment_id, instance_id) to the configuration's name."""
    ok = per_request(metrics, summary, shape_cols)
    key_cols = ["deployment_id", "instance_id", *shape_cols]

    def name_of(k: dict) -> str:
        return names.get((k["deployment_id"], k["instance_id"]), k["instance_id"])

    rows: list[dict] = []
    parts = sorted(
        ok.partition_by(key_cols, as_dict=True).items(),
        key=lambda kv: (
            shape_text(dict(zip(key_cols, kv[0], strict=True))),
            name_of(dict(zip(key_cols, kv[0], strict=True))),
        ),
    )
    for i, (key, frame) in enumerate(parts):
        k = dict(zip(key_cols, key, strict=True))
        rows += _rows(frame, name_of(k), shape_text(k), seed=i)
    table = Table.from_records(
        rows,
        COLUMNS,
        caption=(
            "Per configuration over its ok requests (repeats pooled): mean and P50 / P95 / P99 with 95% "
            "percentile-bootstrap intervals. ITL pools every chunk gap and has no interval (one request's gaps "
            "are not independent). A P95 from fewer than 20 requests and a P99 from fewer than 100 are close to the "
            "slowest single request: their interval says so."
        ),
    )
    charts = []
    ecdf = _ecdf_chart(ok, key_cols, lambda k: f"{name_of(k)} · {shape_text(k)}")
    if ecdf is not None:
        charts.append(
            Chart(
                CHART_IDS["ecdf"],
                "Latency distributions (ECDF)",
                f"Per configuration: the share of ok requests at or below each latency ({ECDF_POINTS} quantile "
                "points, log scale).",
                ecdf,
            )
        )
    vs_load = _vs_load_chart(ok, name_of)
    if vs_load is not None:
        charts.append(
            Chart(
                CHART_IDS["vs_load"],
                "Latency against load",
                "P50 (solid) and P95 (dashed) per cell against its concurrency or offered rate, where a configuration "
                "ran at two or more loads; the rate sweep's cells are included, its stop reason in the tooltip.",
                vs_load,
            )
        )
    return Latency(table, tuple(charts))
