"""Charts of the report (Altair), always drawn from small aggregates computed here in polars.

Altair refuses data sets above 5,000 rows, and a chart of raw requests would bloat the page: every
builder bins or groups first. `build_charts` returns the specs the HTML embeds (reports/html.py).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any

import altair as alt
import polars as pl

LATENCY_METRICS: tuple[tuple[str, str], ...] = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E"))
_ORDER = ("run_id", "deployment_id", "workload_id", "concurrency", "repeat", "cell_id")

#: ids of the chart ``<div>`` elements in report.html (a chart with no data to show is left out).
CHART_IDS: dict[str, str] = {
    "latency_hist": "chart-latency-hist",
    "latency_quantiles": "chart-latency-quantiles",
    "throughput_by_length": "chart-throughput-by-length",
}


@dataclass(frozen=True)
class Chart:
    div_id: str
    title: str
    note: str
    spec: dict[str, Any]


def _conc_label(value: Any) -> str:
    return "c=?" if value is None else f"c={value}"


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 tick values within [lo, hi] for a log axis (Vega's default log ticks crowd the labels)."""
    ticks = []
    for exp in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0**exp for m in (1, 2, 5) if lo <= m * 10.0**exp <= hi]
    if len(ticks) > 9:  # wide range: powers of ten only
        ticks = [t for t in ticks if math.isclose(math.log10(t), round(math.log10(t)))]
    return ticks


def _latency_hist_chart(requests: pl.DataFrame, deployments: list[str]) -> alt.TopLevelMixin | None:
    """TTFT and E2E histograms per deployment, binned in polars (shared bins per metric)."""
    ok = requests.filter(pl.col("status") == "ok")
    panels = []
    for metric, label in (("ttft_ms", "TTFT"), ("e2e_ms", "E2E")):
        vals = (
            ok.select(pl.col("deployment_id").cast(pl.String), pl.col(metric).alias("v"))
            .drop_nulls()
            .filter(pl.col("v").is_finite() & (pl.col("v") >= 0))
        )
        if vals.height == 0:
            continue
        nbins = max(10, min(40, math.ceil(2 * vals.height ** (1 / 3))))  # Rice rule, clamped
        lo, hi = float(vals["v"].min()), float(vals["v"].max())
        positive = vals.filter(pl.col("v") > 0)
        lo_pos = float(positive["v"].min()) if positive.height else 0.0
        log = lo_pos > 0 and hi / lo_pos > 50  # heavy tail: log-spaced bins on a log axis
        if log:
            t_lo, t_hi = math.log10(lo_pos), math.log10(hi)
            t = pl.col("v").clip(lower_bound=lo_pos).log10()
        else:
            t_lo, t_hi = lo, hi
            t = pl.col("v")
        if t_hi <= t_lo:  # all values equal
            t_lo, t_hi = t_lo - 0.5, t_hi + 0.5
            if not log:
                t_lo = max(t_lo, 0.0) if lo >= 0.5 else t_lo
        width = (t_hi - t_lo) / nbins
        edges = [t_lo + i * width for i in range(nbins + 1)]
        if log:
            edges = [10**e for e in edges]
        counts = (
            vals.with_columns(((t - t_lo) / width).floor().clip(0, nbins - 1).cast(pl.Int64).alias("bin"))
            .group_by("deployment_id", "bin")
            .agg(pl.len().cast(pl.Int64).alias("count"))
        )
        grid = pl.DataFrame({"deployment_id": deployments}).join(
            pl.DataFrame(
                {"bin": list(range(nbins)), "bin_start": edges[:-1], "bin_end": edges[1:]},
                schema={"bin": pl.Int64, "bin_start": pl.Float64, "bin_end": pl.Float64},
            ),
            how="cross",
        )
        binned = (
            grid.join(counts, on=["deployment_id", "bin"], how="left")
            .with_columns(pl.col("count").fill_null(0))
            .with_columns((pl.col("count") / pl.col("count").sum().over("deployment_id")).fill_nan(0.0).alias("share"))
            .sort("deployment_id", "bin")
        )
        axis_title = f"{label} (ms{', log scale' if log else ''})"
        panel = (
            alt.Chart(binned, title=alt.Title(f"{label} distribution", anchor="start"))
            .mark_bar(orient="vertical", stroke="white", strokeWidth=0.5)
            .encode(
                x=alt.X(
                    "bin_start:Q",
                    title=axis_title,
                    scale=alt.Scale(type="log" if log else "linear", nice=False, domain=[edges[0], edges[-1]]),
                    axis=(
                        alt.Axis(values=_log_ticks(edges[0], edges[-1]), format="~s")
                        if log
                        else alt.Axis(labelOverlap="greedy")
                    ),
                ),
                x2="bin_end:Q",
                y=alt.Y("count:Q", title="requests", axis=alt.Axis(tickCount=3)),
                y2=alt.datum(0),
                color=alt.Color("deployment_id:N", title="deployment", sort=deployments),
                tooltip=[
                    alt.Tooltip("deployment_id:N", title="deployment"),
                    alt.Tooltip("bin_start:Q", title=f"{label} from (ms)", format=",.1f"),
                    alt.Tooltip("bin_end:Q", title=f"{label} to (ms)", format=",.1f"),
                    alt.Tooltip("count:Q", title="requests"),
                    alt.Tooltip("share:Q", title="share", format=".1%"),
                ],
            )
            .properties(width=400, height=80)
            .facet(
                row=alt.Row(
                    "deployment_id:N",
                    sort=deployments,
                    title=None,
                    header=alt.Header(labelOrient="top", labelAnchor="start", labelAngle=0, labelFontWeight="bold"),
                )
            )
        )
        panels.append(panel)
    if not panels:
        return None
    return alt.hconcat(*panels, spacing=40)


def _latency_quantile_chart(summary: pl.DataFrame, deployments: list[str]) -> alt.TopLevelMixin | None:
    """Boxplot-style chart from the cells' precomputed quantiles: P50 dot, P95 tick, P50–P99 line, mean diamond."""
    if summary.height == 0:
        return None
    cells = summary.sort(list(_ORDER)).with_columns(
        pl.concat_str(
            [
                pl.col("deployment_id").cast(pl.String),
                pl.lit(" · "),
                pl.col("workload_id").cast(pl.String).fill_null("?"),
                pl.lit(" · c="),
                pl.col("concurrency").cast(pl.String).fill_null("?"),
                pl.lit(" · r="),
                pl.col("repeat").cast(pl.String).fill_null("?"),
            ]
        ).alias("cell")
    )
    if summary["run_id"].n_unique() > 1:
        cells = cells.with_columns(pl.concat_str([pl.col("cell"), pl.lit(" · "), pl.col("run_id").cast(pl.String)]))
    parts = []
    for metric, label in LATENCY_METRICS:
        parts.append(
            cells.select(
                pl.col("cell"),
                pl.col("deployment_id").cast(pl.String),
                pl.lit(label).alias("metric"),
                *(pl.col(f"{metric}_{s}").alias(s) for s in ("mean", "p50", "p95", "p99")),
            )
        )
    data = pl.concat(parts)
    if data.select(pl.any_horizontal(pl.col("mean", "p50", "p95", "p99").is_not_null()).any()).item() is not True:
        return None
    order = list(dict.fromkeys(cells["cell"].to_list()))
    color = alt.Color("deployment_id:N", title="deployment", sort=deployments)
    tooltip = [
        alt.Tooltip("cell:N"),
        alt.Tooltip("metric:N"),
        *(alt.Tooltip(f"{s}:Q", title=f"{s} (ms)", format=",.2f") for s in ("mean", "p50", "p95", "p99")),
    ]
    base = alt.Chart().encode(y=alt.Y("cell:N", sort=order, title=None, axis=alt.Axis(labelLimit=320)), color=color)
    rule = (
        base.transform_filter("isValid(datum.p50) && isValid(datum.p99)")
        .mark_rule(strokeWidth=2, opacity=0.6)
        .encode(x=alt.X("p50:Q", title="ms"), x2="p99:Q", tooltip=tooltip)
    )
    tick = base.mark_tick(thickness=2, size=12).encode(x="p95:Q", tooltip=tooltip)
    p50 = base.mark_point(filled=True, size=45, opacity=1).encode(x="p50:Q", tooltip=tooltip)
    mean = base.mark_point(shape="diamond", filled=False, size=45).encode(x="mean:Q", tooltip=tooltip)
    return (
        alt.layer(rule, tick, p50, mean, data=data)
        .properties(width=230, height=alt.Step(16))
        .facet(
            column=alt.Column(
                "metric:N",
                sort=[label for _, label in LATENCY_METRICS],
                title=None,
                header=alt.Header(labelFontWeight="bold", labelFontSize=12),
            )
        )
        .resolve_scale(x="independent")
    )


def _spread(column: str) -> list[pl.Expr]:
    """mean, min, max and count of a column: one bar with its min-max rule in the throughput chart."""
    c = pl.col(column)
    return [c.mean().alias("mean"), c.min().alias("min"), c.max().alias("max"), pl.len().alias("n")]


def _throughput_chart(
    summary: pl.DataFrame, requests: pl.DataFrame, deployments: list[str]
) -> tuple[alt.TopLevelMixin | None, bool]:
    """Throughput by output length: per deployment × max_tokens (× concurrency when it varies).

    Top: mean per-request tokens/s (bar) with its min–max (rule), over ok requests.
    Bottom: output tok/s of the cells whose requests all share one max_tokens (mean bar, min–max
    rule over those cells); cells that mix output lengths cannot be attributed and are left out.
    Returns (chart, whether the bottom panel could be drawn).
    """
    cell_keys = ["run_id", "cell_id"]
    conc = summary.select(*cell_keys, "concurrency").unique(subset=cell_keys, keep="first")
    req = requests.join(conc, on=cell_keys, how="left")
    multi_conc = req.filter(pl.col("max_tokens").is_not_null())["concurrency"].n_unique() > 1

    per_request = (
        req.filter(
            (pl.col("status") == "ok") & pl.col("tokens_per_s").is_not_null() & pl.col("max_tokens").is_not_null()
        )
        .group_by("deployment_id", "concurrency", "max_tokens")
        .agg(*_spread("tokens_per_s"))
    )
    single = (
        requests.filter(pl.col("max_tokens").is_not_null())
        .group_by(cell_keys)
        .agg(pl.col("max_tokens").n_unique().alias("n_lengths"), pl.col("max_tokens").first().alias("max_tokens"))
        .filter(pl.col("n_lengths") == 1)
    )
    per_cell = (
        summary.join(single, on=cell_keys, how="inner")
        .filter(pl.col("output_throughput_tps").is_not_null())
        .group_by("deployment_id", "concurrency", "max_tokens")
        .agg(*_spread("output_throughput_tps"))
    )
    if per_request.height == 0 and per_cell.height == 0:
        return None, False

    conc_levels = sorted(
        {c for f in (per_request, per_cell) for c in f["concurrency"].to_list()}, key=lambda c: (c is None, c or 0)
    )
    conc_order = [_conc_label(c) for c in conc_levels]

    def prep(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(
            pl.col("deployment_id").cast(pl.String),
            pl.col("concurrency").map_elements(_conc_label, return_dtype=pl.String).alias("conc"),
        ).sort("deployment_id", "concurrency", "max_tokens", nulls_last=True)

    def panel(frame: pl.DataFrame, title: str, y_title: str, n_title: str) -> alt.TopLevelMixin:
        frame = prep(frame)
        x = alt.X("max_tokens:O", title="max_tokens", axis=alt.Axis(labelAngle=0))
        x_off = alt.XOffset("deployment_id:N", sort=deployments)
        color = alt.Color("deployment_id:N", title="deployment", sort=deployments)
        tooltip = [
            alt.Tooltip("deployment_id:N", title="deployment"),
            alt.Tooltip("conc:N", title="concurrency"),
            alt.Tooltip("max_tokens:O"),
            alt.Tooltip("mean:Q", format=",.1f"),
            alt.Tooltip("min:Q", format=",.1f"),
            alt.Tooltip("max:Q", format=",.1f"),
            alt.Tooltip("n:Q", title=n_title),
        ]
        base = alt.Chart().encode(x=x, xOffset=x_off, color=color, tooltip=tooltip)
        bars = base.mark_bar(opacity=0.85).encode(y=alt.Y("mean:Q", title=y_title))
        rules = base.mark_rule(color="#333", strokeWidth=1.5).encode(y="min:Q", y2="max:Q")
        layered = alt.layer(bars, rules, data=frame)
        # a step per max_tokens band (the deployments' bars share it): wide enough for the bars and
        # for the axis title when there are few bands; a fixed width would misplace the xOffset bars
        step = max(16 * len(deployments), math.ceil(100 / max(1, frame["max_tokens"].n_unique())))
        if multi_conc:
            return (
                layered.properties(width=alt.Step(step, **{"for": "position"}), height=170)
                .facet(
                    column=alt.Column("conc:N", sort=conc_order, title=None, header=alt.Header(labelFontWeight="bold"))
                )
                .properties(title=alt.Title(title, anchor="start"))
            )
        if len(conc_levels) == 1 and conc_levels[0] is not None:
            title += f" · concurrency {conc_levels[0]}"
        return layered.properties(
            width=alt.Step(step, **{"for": "position"}),
            height=170,
            title=alt.Title(title, anchor="start"),
        )

    panels = []
    if per_request.height:
        panels.append(
            panel(per_request, "Per-request tokens/s (mean, rule = min–max)", "tokens/s per request", "requests")
        )
    if per_cell.height:
        panels.append(
            panel(per_cell, "Output tok/s of single-length cells (mean, rule = min–max)", "output tok/s", "cells")
        )
    if len(panels) == 1:
        return panels[0], per_cell.height > 0
    # independent offset scales: a shared one would size the lower panel's bars by the upper panel's step
    chart = alt.vconcat(*panels, spacing=30).resolve_scale(x="independent", xOffset="independent")
    return chart, per_cell.height > 0


def chart_spec(chart: alt.TopLevelMixin) -> dict[str, Any]:
    chart = (
        chart.configure(font="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif")
        .configure_view(stroke="#ddd")
        .configure_axis(labelFontSize=11, titleFontSize=12)
        .configure_legend(labelLimit=320, orient="right")
    )
    return chart.to_dict()


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """The vega + vega-lite + vega-embed bundle (as altair's ``save(..., inline=True)`` embeds it)."""
    import vl_convert as vlc
    from altair.utils._importers import vl_version_for_vl_convert

    return vlc.javascript_bundle(vl_version=vl_version_for_vl_convert())


def script_safe(text: str) -> str:
    """Keep a script's text from closing its <script> element early.

    Only ``</script`` is touched (as ``<\\/script``, the same inside JS strings and templates): a
    blanket ``</`` replacement would corrupt regex literals such as ``/</g`` in the Vega bundle.
    """
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)


def build_charts(summary: pl.DataFrame, requests: pl.DataFrame, dep_ids: list[str]) -> list[Chart]:
    """The charts that have data to show, in page order."""
    charts: list[Chart] = []
    hist = _latency_hist_chart(requests, dep_ids)
    if hist is not None:
        charts.append(
            Chart(
                CHART_IDS["latency_hist"],
                "Latency distribution",
                "Histograms of TTFT and E2E over the ok requests of each deployment (all its cells pooled); "
                "bins are shared across deployments, log-spaced when the range spans more than 50×.",
                chart_spec(hist),
            )
        )
    quant = _latency_quantile_chart(summary, dep_ids)
    if quant is not None:
        charts.append(
            Chart(
                CHART_IDS["latency_quantiles"],
                "Latency percentiles per cell",
                "Per bench cell: dot = P50, tick = P95, line = P50 to P99, diamond = mean (milliseconds).",
                chart_spec(quant),
            )
        )
    thr, attributable = _throughput_chart(summary, requests, dep_ids)
    if thr is not None:
        note = "Per deployment and max_tokens (and concurrency, when the matrix varies it), over the ok requests."
        if not attributable:
            note += (
                " The cells mix output lengths, so cell output throughput cannot be split by max_tokens;"
                " see the Output tok/s column of the cell tables."
            )
        else:
            note += " Output tok/s uses only the cells whose requests all share one max_tokens."
        charts.append(Chart(CHART_IDS["throughput_by_length"], "Throughput by output length", note, chart_spec(thr)))
    return charts
