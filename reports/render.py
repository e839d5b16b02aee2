"""Render the bake-off comparison report as a self-contained HTML page and a Markdown file.

Input is two polars frames produced by ``warehouse.transforms``:

* ``summary``: one row per bench cell (throughput, goodput, latency percentiles);
* ``requests``: one row per request (status, per-request latencies, tokens/s).

Everything shown is aggregated here in polars first; the charts only ever see small aggregates
(Altair refuses data sets above 5,000 rows). The HTML page embeds the Vega / Vega-Lite /
vega-embed JavaScript bundle from vl-convert once, so it opens offline (no CDN).

This module imports only polars, altair, vl_convert, the standard library and the request statuses
(tasks/records.py's, as the gate's suites admit them: reports import warehouse, not tasks).
"""

from __future__ import annotations

import functools
import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from warehouse.suites import STATUSES

__all__ = [
    "CHART_IDS",
    "METRIC_DEFINITIONS",
    "REQUEST_COLUMNS",
    "SUMMARY_COLUMNS",
    "fmt_value",
    "render_report",
]

LATENCY_METRICS: tuple[tuple[str, str], ...] = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E"))

SUMMARY_COLUMNS: tuple[str, ...] = (
    "run_id", "cell_id", "deployment_id", "engine", "model", "workload_id", "concurrency", "repeat",
    "requests", "ok", "failed", "wall_s", "output_tokens", "output_throughput_tps",
    "request_throughput_rps", "goodput_rps",
    *(f"{m}_{s}" for m, _ in LATENCY_METRICS for s in ("mean", "p50", "p95", "p99")),
    "itl_ms_p50", "itl_ms_p95", "itl_ms_p99",
)  # fmt: skip
REQUEST_COLUMNS: tuple[str, ...] = (
    "run_id", "cell_id", "request_id", "deployment_id", "engine", "model", "max_tokens", "status",
    "ttft_ms", "tpot_ms", "e2e_ms", "queue_ms", "tokens_per_s", "completion_tokens",
)  # fmt: skip

#: ids of the chart ``<div>`` elements in report.html (a chart with no data to show is left out).
CHART_IDS: dict[str, str] = {
    "latency_hist": "chart-latency-hist",
    "latency_quantiles": "chart-latency-quantiles",
    "throughput_by_length": "chart-throughput-by-length",
}

#: (name, definition): stated verbatim in both reports; these are how the numbers are computed.
METRIC_DEFINITIONS: tuple[tuple[str, str], ...] = (
    ("TTFT", "TTFT = first_token_at − sent_at (first chunk with non-empty content)"),
    ("E2E", "E2E = last_token_at − sent_at"),
    ("Queue delay", "queue delay = sent_at − scheduled_at"),
    ("TPOT", "TPOT = (E2E − TTFT)/(completion_tokens − 1) for completion_tokens > 1"),
    ("ITL", "ITL = gaps between consecutive content chunks pooled over requests"),
    ("Per-request tokens/s", "per-request tokens/s = completion_tokens / E2E"),
    ("Output throughput", "output throughput = Σ completion_tokens / cell wall time"),
    ("Goodput", "goodput = requests meeting every SLO / cell wall time"),
)

MISSING = "—"
_ORDER = ("run_id", "deployment_id", "workload_id", "concurrency", "repeat", "cell_id")


# --------------------------------------------------------------------------------------------
# formatting and the table model
# --------------------------------------------------------------------------------------------


def fmt_value(value: Any) -> str:
    """Format one table value.

    None/NaN -> "—"; int -> thousands separators ("1,234"); float -> 1 decimal when |v| >= 100,
    2 decimals when |v| >= 1, else 3 decimals; anything else -> ``str``.
    """
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        magnitude = abs(value)
        if magnitude >= 100 or math.isinf(value):
            return f"{value:,.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


@dataclass(frozen=True)
class Column:
    key: str  # column of the source frame
    header: str  # full header (Markdown, and HTML when there is no group)
    group: str | None = None  # HTML: grouped header cell spanning consecutive columns
    sub: str | None = None  # HTML: header under the group
    numeric: bool = True


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, columns: Sequence[Column], caption: str = "") -> Table:
        rows = tuple(tuple(fmt_value(rec.get(c.key)) for c in columns) for rec in frame.iter_rows(named=True))
        return cls(tuple(columns), rows, caption)


def _cell_key_columns(with_run: bool) -> list[Column]:
    cols = [Column("run_id", "Run", numeric=False)] if with_run else []
    return cols + [
        Column("workload_id", "Workload", numeric=False),
        Column("concurrency", "Conc."),
        Column("repeat", "Rep."),
    ]


def _throughput_columns(with_run: bool) -> list[Column]:
    return _cell_key_columns(with_run) + [
        Column("requests", "Requests"),
        Column("ok", "OK"),
        Column("failed", "Failed"),
        Column("wall_s", "Wall s"),
        Column("output_tokens", "Output tokens"),
        Column("output_throughput_tps", "Output tok/s"),
        Column("request_throughput_rps", "Req/s"),
        Column("goodput_rps", "Goodput req/s"),
    ]


def _latency_columns(with_run: bool) -> list[Column]:
    cols = _cell_key_columns(with_run)
    for metric, label in LATENCY_METRICS:
        for stat, stat_label in (("mean", "mean"), ("p50", "P50"), ("p95", "P95"), ("p99", "P99")):
            cols.append(Column(f"{metric}_{stat}", f"{label} {stat_label}", group=f"{label} (ms)", sub=stat_label))
    for stat_label in ("P50", "P95", "P99"):
        cols.append(
            Column(f"itl_ms_{stat_label.lower()}", f"ITL {stat_label}", group="ITL (ms)", sub=stat_label)
        )
    return cols


# --------------------------------------------------------------------------------------------
# input checks and aggregates
# --------------------------------------------------------------------------------------------


def _check_columns(frame: pl.DataFrame, required: Sequence[str], name: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame lacks column(s) {', '.join(missing)}; it must have {', '.join(required)}")


def _normalise(frame: pl.DataFrame, float_cols: Sequence[str]) -> pl.DataFrame:
    """Float columns as Float64 with NaN turned into null (so tables show "—", JSON stays valid)."""
    return frame.with_columns(pl.col(c).cast(pl.Float64).fill_nan(None) for c in float_cols if c in frame.columns)


def _deployments(summary: pl.DataFrame, requests: pl.DataFrame) -> pl.DataFrame:
    """One row per deployment: deployment_id, engines, models (joined when several)."""
    both = pl.concat(
        [
            summary.select(pl.col(c).cast(pl.String) for c in ("deployment_id", "engine", "model")),
            requests.select(pl.col(c).cast(pl.String) for c in ("deployment_id", "engine", "model")),
        ]
    ).drop_nulls("deployment_id")
    return (
        both.group_by("deployment_id")
        .agg(
            pl.col("engine").drop_nulls().unique().sort().str.join(", ").alias("engines"),
            pl.col("model").drop_nulls().unique().sort().str.join(", ").alias("models"),
        )
        .sort("deployment_id")
    )


def _overview_table(summary: pl.DataFrame, deployments: pl.DataFrame) -> Table:
    per_dep = summary.group_by("deployment_id").agg(
        pl.len().alias("cells"),
        pl.col("requests").sum().alias("requests"),
        pl.col("ok").sum().alias("ok"),
        pl.col("failed").sum().alias("failed"),
        pl.col("output_throughput_tps").mean().alias("tps_mean"),
        pl.col("output_throughput_tps").max().alias("tps_max"),
        pl.col("goodput_rps").mean().alias("goodput_mean"),
    )
    frame = deployments.join(per_dep, on="deployment_id", how="left").sort("deployment_id")
    frame = frame.with_columns(pl.col("cells").fill_null(0))
    columns = [
        Column("deployment_id", "Deployment", numeric=False),
        Column("engines", "Engine", numeric=False),
        Column("models", "Model", numeric=False),
        Column("cells", "Cells"),
        Column("requests", "Requests"),
        Column("ok", "OK"),
        Column("failed", "Failed"),
        Column("tps_mean", "Output tok/s (mean of cells)"),
        Column("tps_max", "Output tok/s (best cell)"),
        Column("goodput_mean", "Goodput req/s (mean of cells)"),
    ]
    return Table.from_frame(frame, columns, caption="Totals over each deployment's bench cells.")


def _status_table(requests: pl.DataFrame, deployments: pl.DataFrame) -> Table:
    statuses = list(STATUSES)
    extra = sorted(set(requests["status"].drop_nulls().cast(pl.String).unique().to_list()) - set(statuses))
    statuses += extra
    counts = requests.group_by("deployment_id").agg(
        [(pl.col("status") == s).sum().cast(pl.Int64).alias(f"status::{s}") for s in statuses]
        + [pl.col("status").is_null().sum().cast(pl.Int64).alias("status::(none)"), pl.len().alias("total")]
    )
    frame = deployments.select("deployment_id").join(counts, on="deployment_id", how="left").sort("deployment_id")
    fill = [c for c in frame.columns if c != "deployment_id"]
    frame = frame.with_columns(pl.col(c).fill_null(0) for c in fill)
    columns = [Column("deployment_id", "Deployment", numeric=False)]
    columns += [Column(f"status::{s}", s) for s in statuses]
    if frame["status::(none)"].sum():
        columns.append(Column("status::(none)", "(no status)"))
    columns.append(Column("total", "Total"))
    return Table.from_frame(frame, columns, caption="Requests by final status (from the per-request records).")


def _notes_table(summary: pl.DataFrame) -> Table | None:
    """The cells a reader must know about before trusting their figures: the client did not keep up
    (its timings may be skewed), or a rate sweep stopped there (and why). None when there are none.
    Both come from the `cells` table (client_kept_up, sweep_stop_reason); older runs lack them."""
    notes: list[tuple[str, str, str]] = []
    has = set(summary.columns)
    for rec in summary.iter_rows(named=True):
        texts = []
        if "client_kept_up" in has and rec["client_kept_up"] is False:
            late, lag = rec.get("send_lateness_p99_ms"), rec.get("loop_lag_p99_ms")
            texts.append(f"the load generator did not keep up (p99 send lateness {fmt_value(late)} ms, p99 event-loop "
                         f"lag {fmt_value(lag)} ms): its timings may be skewed")
        if "sweep_stop_reason" in has and rec["sweep_stop_reason"]:
            texts.append(f"the rate sweep stopped after this cell: {rec['sweep_stop_reason']}")
        for text in texts:
            notes.append((str(rec["deployment_id"]), str(rec["cell_id"]), text))
    if not notes:
        return None
    columns = (Column("deployment_id", "Deployment", numeric=False), Column("cell_id", "Cell", numeric=False),
               Column("note", "Note", numeric=False))
    return Table(columns, tuple(notes), caption="Cells to read with care.")


# --------------------------------------------------------------------------------------------
# charts: always from small aggregates
# --------------------------------------------------------------------------------------------


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


def _chart_spec(chart: alt.TopLevelMixin) -> dict[str, Any]:
    chart = chart.configure(font="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif").configure_view(
        stroke="#ddd"
    ).configure_axis(labelFontSize=11, titleFontSize=12).configure_legend(labelLimit=320, orient="right")
    return chart.to_dict()


@functools.lru_cache(maxsize=1)
def _vega_bundle() -> str:
    """The vega + vega-lite + vega-embed bundle (as altair's ``save(..., inline=True)`` embeds it)."""
    import vl_convert as vlc
    from altair.utils._importers import vl_version_for_vl_convert

    return vlc.javascript_bundle(vl_version=vl_version_for_vl_convert())


def _script_safe(text: str) -> str:
    """Keep a script's text from closing its <script> element early.

    Only ``</script`` is touched (as ``<\\/script``, the same inside JS strings and templates): a
    blanket ``</`` replacement would corrupt regex literals such as ``/</g`` in the Vega bundle.
    """
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# output writers
# --------------------------------------------------------------------------------------------


def _slug(text: str, index: int) -> str:
    return f"dep-{index}-" + (re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x")


def _html_table(table: Table, *, css_class: str = "") -> str:
    e = html.escape
    out = [f'<div class="table-wrap"><table class="{e(css_class)}">']
    if table.caption:
        out.append(f"<caption>{e(table.caption)}</caption>")
    out.append("<thead>")
    if any(c.group for c in table.columns):
        top, subs, i = [], [], 0
        cols = table.columns
        while i < len(cols):
            col = cols[i]
            if col.group is None:
                top.append(f'<th rowspan="2" class="{"num" if col.numeric else "txt"}">{e(col.header)}</th>')
                i += 1
                continue
            j = i
            while j < len(cols) and cols[j].group == col.group:
                subs.append(f'<th class="num">{e(cols[j].sub or cols[j].header)}</th>')
                j += 1
            top.append(f'<th colspan="{j - i}" class="group">{e(col.group)}</th>')
            i = j
        out.append("<tr>" + "".join(top) + "</tr>")
        out.append("<tr>" + "".join(subs) + "</tr>")
    else:
        out.append(
            "<tr>"
            + "".join(f'<th class="{"num" if c.numeric else "txt"}">{e(c.header)}</th>' for c in table.columns)
            + "</tr>"
        )
    out.append("</thead><tbody>")
    for row in table.rows:
        cells = "".join(
            f'<td class="{"num" if c.numeric else "txt"}">{e(v)}</td>' for c, v in zip(table.columns, row, strict=True)
        )
        out.append(f"<tr>{cells}</tr>")
    if not table.rows:
        out.append(f'<tr><td colspan="{len(table.columns)}" class="empty">no rows</td></tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_inline(text: str) -> str:
    """Escape text for a Markdown heading / paragraph."""
    return re.sub(r"([\\`*_{}\[\]<>#|])", r"\\\1", text.replace("\n", " "))


def _md_table(table: Table) -> str:
    lines = []
    if table.caption:
        lines += [f"_{_md_inline(table.caption)}_", ""]
    lines.append("| " + " | ".join(_md_escape(c.header) for c in table.columns) + " |")
    lines.append("|" + "|".join("---:" if c.numeric else ":---" for c in table.columns) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_escape(v) for v in row) + " |")
    if not table.rows:
        lines.append("| " + " | ".join(["no rows"] + [""] * (len(table.columns) - 1)) + " |")
    return "\n".join(lines)


_CSS = """
:root { --fg:#1d2430; --muted:#5b6472; --line:#d9dee5; --head:#f3f5f8; --accent:#2f5d9e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0; background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 12px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
p, li { max-width: 900px; }
.muted, caption { color: var(--muted); }
caption { caption-side: top; text-align: left; font-size: 12.5px; padding: 0 0 4px; }
nav ul { margin: 4px 0; padding-left: 20px; columns: 2; }
a { color: var(--accent); }
.table-wrap { overflow-x: auto; margin: 6px 0 14px; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 3px 7px; white-space: nowrap; }
th { background: var(--head); font-weight: 600; white-space: normal; vertical-align: bottom; max-width: 130px; }
th.group { text-align: center; }
td.num, th.num { text-align: right; }
td.txt, th.txt { text-align: left; }
td.empty { color: var(--muted); font-style: italic; }
tbody tr:nth-child(even) td { background: #fafbfc; }
table.kv th { text-align: left; }
table.kv td { white-space: normal; word-break: break-all; max-width: 900px; }
.chart { margin: 10px 0 6px; overflow-x: auto; min-height: 40px; }
.chart-note { font-size: 12.5px; color: var(--muted); margin: 2px 0 16px; }
.chart-error { color: #a4161a; font-weight: 600; white-space: pre-wrap; }
dl.defs dt { font-weight: 600; margin-top: 6px; }
dl.defs dd { margin: 0 0 0 18px; font-size: 13px;
             font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
footer { margin-top: 40px; font-size: 12px; color: var(--muted); }
"""

_EMBED_JS = """
(function () {
  var specs = %s;
  function fail(el, err) {
    el.classList.add("chart-error");
    el.textContent = "Chart failed to render: " + (err && err.message ? err.message : String(err));
  }
  Object.keys(specs).forEach(function (id) {
    var el = document.getElementById(id);
    if (!el) { return; }
    if (typeof vegaEmbed !== "function") { fail(el, "the embedded Vega JavaScript did not load"); return; }
    try {
      vegaEmbed(el, specs[id], {renderer: "svg", actions: false, mode: "vega-lite"})
        .catch(function (err) { fail(el, err); });
    } catch (err) { fail(el, err); }
  });
})();
"""


@dataclass(frozen=True)
class _Chart:
    div_id: str
    title: str
    note: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class _DeploymentSection:
    deployment_id: str
    anchor: str
    engines: str
    models: str
    throughput: Table
    latency: Table


def render_report(
    summary: pl.DataFrame,
    requests: pl.DataFrame,
    out_dir: Path,
    *,
    title: str,
    run_info: dict,
) -> dict[str, Path]:
    """Write ``report.html`` (self-contained, offline, Altair charts) and ``report.md`` into out_dir.

    ``summary``: one row per bench cell (columns :data:`SUMMARY_COLUMNS`); ``requests``: one row per
    request (columns :data:`REQUEST_COLUMNS`). Nulls are shown as "—". Returns
    ``{"html": path, "markdown": path}``.
    """
    _check_columns(summary, SUMMARY_COLUMNS, "summary")
    _check_columns(requests, REQUEST_COLUMNS, "requests")
    summary_floats = [
        "wall_s", "output_throughput_tps", "request_throughput_rps", "goodput_rps",
        *(c for c in SUMMARY_COLUMNS if c.endswith(("_mean", "_p50", "_p95", "_p99"))),
    ]  # fmt: skip
    summary = _normalise(summary, summary_floats).with_columns(pl.col("deployment_id").cast(pl.String))
    requests = _normalise(requests, ["ttft_ms", "tpot_ms", "e2e_ms", "queue_ms", "tokens_per_s"]).with_columns(
        pl.col("deployment_id").cast(pl.String), pl.col("status").cast(pl.String)
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    deployments = _deployments(summary, requests)
    dep_ids: list[str] = deployments["deployment_id"].to_list()
    with_run = summary["run_id"].n_unique() > 1
    overview = _overview_table(summary, deployments)
    status = _status_table(requests, deployments)
    notes = _notes_table(summary)
    info_rows = tuple((str(k), str(v)) for k, v in run_info.items())

    sections: list[_DeploymentSection] = []
    for i, rec in enumerate(deployments.iter_rows(named=True)):
        cells = summary.filter(pl.col("deployment_id") == rec["deployment_id"]).sort(list(_ORDER), nulls_last=True)
        sections.append(
            _DeploymentSection(
                deployment_id=rec["deployment_id"],
                anchor=_slug(rec["deployment_id"], i),
                engines=rec["engines"],
                models=rec["models"],
                throughput=Table.from_frame(
                    cells, _throughput_columns(with_run), caption="Throughput, one row per bench cell."
                ),
                latency=Table.from_frame(
                    cells, _latency_columns(with_run), caption="Latency in milliseconds, one row per bench cell."
                ),
            )
        )

    charts: list[_Chart] = []
    hist = _latency_hist_chart(requests, dep_ids)
    if hist is not None:
        charts.append(
            _Chart(
                CHART_IDS["latency_hist"],
                "Latency distribution",
                "Histograms of TTFT and E2E over the ok requests of each deployment (all its cells pooled); "
                "bins are shared across deployments, log-spaced when the range spans more than 50×.",
                _chart_spec(hist),
            )
        )
    quant = _latency_quantile_chart(summary, dep_ids)
    if quant is not None:
        charts.append(
            _Chart(
                CHART_IDS["latency_quantiles"],
                "Latency percentiles per cell",
                "Per bench cell: dot = P50, tick = P95, line = P50 to P99, diamond = mean (milliseconds).",
                _chart_spec(quant),
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
        charts.append(_Chart(CHART_IDS["throughput_by_length"], "Throughput by output length", note, _chart_spec(thr)))

    html_path = out_dir / "report.html"
    md_path = out_dir / "report.md"
    html_path.write_text(_render_html(title, info_rows, overview, status, notes, sections, charts), encoding="utf-8")
    md_path.write_text(_render_markdown(title, info_rows, overview, status, notes, sections, bool(charts)), encoding="utf-8")
    return {"html": html_path, "markdown": md_path}


def _kv_table(rows: tuple[tuple[str, str], ...]) -> Table:
    return Table((Column("key", "Key", numeric=False), Column("value", "Value", numeric=False)), rows)


def _render_html(
    title: str,
    info_rows: tuple[tuple[str, str], ...],
    overview: Table,
    status: Table,
    notes: Table | None,
    sections: list[_DeploymentSection],
    charts: list[_Chart],
) -> str:
    e = html.escape
    body: list[str] = [f"<h1>{e(title)}</h1>"]
    if info_rows:
        body.append(_html_table(_kv_table(info_rows), css_class="kv"))
    toc = [
        ("overview", "Overview"),
        ("charts", "Charts"),
        *((s.anchor, f"Deployment {s.deployment_id}") for s in sections),
        ("definitions", "Metric definitions"),
    ]
    body.append("<nav><ul>" + "".join(f'<li><a href="#{e(a)}">{e(t)}</a></li>' for a, t in toc) + "</ul></nav>")

    body.append('<h2 id="overview">Overview</h2>')
    body.append(_html_table(overview))
    body.append(_html_table(status))
    if notes is not None:
        body.append('<h3 id="notes">Notes</h3>')
        body.append(_html_table(notes))

    body.append('<h2 id="charts">Charts</h2>')
    if not charts:
        body.append('<p class="muted">No data to chart.</p>')
    for chart in charts:
        body.append(f'<h3 id="{e(chart.div_id)}-title">{e(chart.title)}</h3>')
        body.append(f'<div class="chart" id="{e(chart.div_id)}" data-chart="{e(chart.title)}"></div>')
        body.append(f'<p class="chart-note">{e(chart.note)}</p>')
    body.append(
        '<noscript><p class="noscript">The charts need JavaScript (embedded in this file; no network needed).</p>'
        "</noscript>"
    )

    for s in sections:
        body.append(f'<h2 id="{e(s.anchor)}">Deployment {e(s.deployment_id)}</h2>')
        body.append(f'<p class="muted">engine: {e(s.engines or MISSING)} · model: {e(s.models or MISSING)}</p>')
        body.append("<h3>Throughput</h3>")
        body.append(_html_table(s.throughput))
        body.append("<h3>Latency</h3>")
        body.append(_html_table(s.latency))

    body.append('<h2 id="definitions">Metric definitions</h2>')
    body.append('<dl class="defs">')
    for name, definition in METRIC_DEFINITIONS:
        body.append(f"<dt>{e(name)}</dt><dd>{e(definition)}</dd>")
    body.append("</dl>")
    body.append(
        '<p class="muted">Latencies are in milliseconds. “—” means not defined or not measured '
        "(e.g. no successful request, or no SLO set for goodput).</p>"
    )
    body.append('<footer>Generated by bakeoff. Self-contained page: works offline.</footer>')

    scripts = ""
    if charts:
        specs = (
            json.dumps({c.div_id: c.spec for c in charts}, separators=(",", ":"), allow_nan=False)
            .replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
        )  # text from the data can neither close the <script> nor look like markup
        scripts = (
            '<script type="text/javascript">\n' + _script_safe(_vega_bundle()) + "\n</script>\n"
            '<script type="text/javascript">' + _script_safe(_EMBED_JS % specs) + "</script>"
        )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n"
        + scripts
        + "\n</body>\n</html>\n"
    )


def _render_markdown(
    title: str,
    info_rows: tuple[tuple[str, str], ...],
    overview: Table,
    status: Table,
    notes: Table | None,
    sections: list[_DeploymentSection],
    has_charts: bool,
) -> str:
    out: list[str] = [f"# {_md_inline(title)}", ""]
    if info_rows:
        out += [_md_table(_kv_table(info_rows)), ""]
    out += ["## Overview", "", _md_table(overview), "", _md_table(status), ""]
    if notes is not None:
        out += ["### Notes", "", _md_table(notes), ""]
    if has_charts:
        out += ["_Charts (latency distribution, percentiles, throughput by output length) are in report.html._", ""]
    for s in sections:
        out += [
            f"## Deployment {_md_inline(s.deployment_id)}",
            "",
            f"engine: {_md_inline(s.engines or MISSING)} · model: {_md_inline(s.models or MISSING)}",
            "",
            "### Throughput",
            "",
            _md_table(s.throughput),
            "",
            "### Latency",
            "",
            _md_table(s.latency),
            "",
        ]
    out += ["## Metric definitions", ""]
    out += [f"- **{_md_inline(name)}**: `{d}`" for name, d in METRIC_DEFINITIONS]
    out += [
        "",
        "Latencies are in milliseconds. “—” means not defined or not measured "
        "(e.g. no successful request, or no SLO set for goodput).",
        "",
    ]
    return "\n".join(out)
