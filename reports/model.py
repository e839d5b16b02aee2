"""The report model: every section's figures as plain dataclasses, computed from the warehouse.

`build_model(con, run_id)` reads one run (tables and views, warehouse/README.md) and computes each
section; `model_from_frames` builds the sections that need only the per-cell summary and the
per-request metrics (warehouse.transforms.summarize_run), the report as it was before the model.
The writers (reports/html.py, reports/markdown.py) only lay out and escape what is here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from reports.charts import LATENCY_METRICS, Chart, build_charts
from reports.header import environment_rows, run_info
from reports.tables import MISSING, Column, Table, fmt_gib, fmt_ratio, fmt_value, kv_table
from warehouse.stats import LOAD_SHAPE_COLUMNS
from warehouse.suites import STATUSES  # the request statuses, as the gate allows them

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
    (
        "Reasoning",
        "time to first reasoning token = first_reasoning_at − sent_at (first chunk with non-empty "
        "reasoning_content); TTFT above is then the time to the first answer token; reasoning tokens = "
        "usage.completion_tokens_details.reasoning_tokens as the server reports it",
    ),
    ("Valid share", "valid share = ok structured replies that validate against their schema / ok replies judged"),
    ("Prefix hit share", "prefix hit share = Σ cached_prompt_tokens / Σ prompt_tokens (the server's counts)"),
)

# A configuration: what one instance measured on one workload at one load shape (repeats pooled).
SHAPE_COLUMNS = LOAD_SHAPE_COLUMNS  # warehouse/stats.py: what makes two cells comparable
CONFIG_COLUMNS = ("deployment_id", "instance_id", "engine", *SHAPE_COLUMNS)
HEADER_ON_TOP = ("run_id", "matrix_name", "started_at", "status", "validation")
LOG_EXCERPT_CHARS = 400  # the tail of an engine log: where its error is
TAIL_SHARE = 0.05  # the slowest 5% of a configuration's requests
TAIL_MIN_REQUESTS = 40  # the slowest 5% must be 2 requests at least for "what they have in common"
_ORDER = ("run_id", "deployment_id", "workload_id", "concurrency", "repeat", "cell_id")


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentSection:
    deployment_id: str
    anchor: str
    engines: str
    models: str
    throughput: Table
    latency: Table


@dataclass(frozen=True)
class FeasibilityGroup:
    deployment_id: str
    placement: str  # "alone" | "co-located (n instances)"
    started_whole: bool
    verdict: str  # one sentence: started whole, or which instance failed first and why
    instances: Table


@dataclass(frozen=True)
class Comparison:
    """One comparable pair, the better one first (a/b ratio ≥ 1 on the compared metric)."""

    shape: str
    a: str
    b: str
    ratio: float
    low: float
    high: float
    n_a: int
    n_b: int
    winner: str | None  # None: no measurable difference, or not enough data
    verdict: str


@dataclass(frozen=True)
class Throughput:
    configurations: Table
    comparisons: tuple[Comparison, ...]
    comparison_table: Table
    metric: str  # what the verdicts compare, in words
    chart: Chart | None = None


@dataclass(frozen=True)
class TailExplanation:
    configuration: str
    sentence: str
    explained: bool


@dataclass(frozen=True)
class Stability:
    table: Table
    tails: tuple[TailExplanation, ...]


@dataclass(frozen=True)
class ReportModel:
    title: str
    header: tuple[tuple[str, str], ...]
    overview: Table
    status: Table
    notes: Table | None
    deployments: tuple[DeploymentSection, ...]
    charts: tuple[Chart, ...]
    environment: Table | None = None
    feasibility: tuple[FeasibilityGroup, ...] | None = None
    throughput: Throughput | None = None
    stability: Stability | None = None
    colocation: Any = None  # reports.colocation.Colocation
    workloads: Any = None  # reports.workloads.Workloads (only when a workload kind has a section)
    recommendations: Any = None  # reports.recommend.Recommendations
    deployment: Any = None  # reports.deployment.DeploymentToCopy
    method: Any = None  # reports.method.Method
    trend: Any = None  # reports.trend.Trend
    latency: Any = None  # reports.latency.Latency
    characteristics: Any = None  # reports.characteristics.Characteristics
    baseline: Any = None  # reports.baseline.Baseline (only when asked for)
    definitions: tuple[tuple[str, str], ...] = METRIC_DEFINITIONS

    @property
    def all_charts(self) -> tuple[Chart, ...]:
        """Every chart on the page, in page order: the sections' own, then the Charts section's."""
        own = [self.throughput.chart if self.throughput is not None else None]
        own += list(self.latency.charts) if self.latency is not None else []
        return (*(c for c in own if c is not None), *self.charts)

    @property
    def toc(self) -> list[tuple[str, str]]:
        """(anchor, title) of every section present, in page order."""
        out = [
            (a, t)
            for a, t, present in (
                ("environment", "Environment", self.environment is not None),
                ("feasibility", "Feasibility", self.feasibility is not None),
                ("throughput", "Throughput", self.throughput is not None),
                ("latency", "Latency", self.latency is not None),
                ("stability", "Stability", self.stability is not None),
                ("colocation", "Co-location", self.colocation is not None),
                ("workloads", "Workloads", self.workloads is not None),
                ("characteristics", "Flags and characteristics", self.characteristics is not None),
                ("recommendations", "Recommendations", self.recommendations is not None),
                ("deployment", "The deployment to copy", self.deployment is not None),
                ("trend", "Nightly trend", self.trend is not None),
                ("baseline", "Against the baseline", self.baseline is not None),
                ("method", "Method", self.method is not None),
            )
            if present
        ]
        out += [("overview", "Overview"), ("charts", "Charts")]
        out += [(s.anchor, f"Deployment {s.deployment_id}") for s in self.deployments]
        return [*out, ("definitions", "Metric definitions")]


# --------------------------------------------------------------------------------------------
# the per-cell sections (from the summary and request frames)
# --------------------------------------------------------------------------------------------


def _cell_key_columns(with_run: bool) -> list[Column]:
    cols = [Column("run_id", "Run", numeric=False)] if with_run else []
    return [
        *cols,
        Column("workload_id", "Workload", numeric=False),
        Column("concurrency", "Conc."),
        Column("repeat", "Rep."),
    ]


def _throughput_columns(with_run: bool) -> list[Column]:
    return [
        *_cell_key_columns(with_run),
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
        cols.append(Column(f"itl_ms_{stat_label.lower()}", f"ITL {stat_label}", group="ITL (ms)", sub=stat_label))
    return cols


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
            texts.append(
                f"the load generator did not keep up (p99 send lateness {fmt_value(late)} ms, p99 event-loop "
                f"lag {fmt_value(lag)} ms): its timings may be skewed"
            )
        if "sweep_stop_reason" in has and rec["sweep_stop_reason"]:
            texts.append(f"the rate sweep stopped after this cell: {rec['sweep_stop_reason']}")
        for text in texts:
            notes.append((str(rec["deployment_id"]), str(rec["cell_id"]), text))
    if not notes:
        return None
    columns = (
        Column("deployment_id", "Deployment", numeric=False),
        Column("cell_id", "Cell", numeric=False),
        Column("note", "Note", numeric=False),
    )
    return Table(columns, tuple(notes), caption="Cells to read with care.")


def _slug(text: str, index: int) -> str:
    return f"dep-{index}-" + (re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x")


def model_from_frames(
    summary: pl.DataFrame, requests: pl.DataFrame, *, title: str, header: dict[str, str] | Sequence[tuple[str, str]]
) -> ReportModel:
    """The per-cell sections from ``summary`` (one row per cell, :data:`SUMMARY_COLUMNS`) and
    ``requests`` (one row per request, :data:`REQUEST_COLUMNS`); the warehouse sections left empty."""
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
    deployments = _deployments(summary, requests)
    dep_ids: list[str] = deployments["deployment_id"].to_list()
    with_run = summary["run_id"].n_unique() > 1
    sections = []
    for i, rec in enumerate(deployments.iter_rows(named=True)):
        cells = summary.filter(pl.col("deployment_id") == rec["deployment_id"]).sort(list(_ORDER), nulls_last=True)
        sections.append(
            DeploymentSection(
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
    rows = header.items() if isinstance(header, dict) else header
    return ReportModel(
        title=title,
        header=tuple((str(k), str(v)) for k, v in rows),
        overview=_overview_table(summary, deployments),
        status=_status_table(requests, deployments),
        notes=_notes_table(summary),
        deployments=tuple(sections),
        charts=tuple(build_charts(summary, requests, dep_ids)),
    )


# --------------------------------------------------------------------------------------------
# the warehouse sections
# --------------------------------------------------------------------------------------------


def _records(con, sql: str, params: Sequence[Any]) -> list[dict]:
    cur = con.execute(sql, list(params))
    rows = cur.fetchall()  # fetch all: DuckDB refuses new queries while a result is unfinished
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in rows]


def _frame(con, sql: str, params: Sequence[Any]) -> pl.DataFrame:
    return pl.from_arrow(con.sql(sql, params=list(params)).to_arrow_table())


def load_shape(rec: dict) -> str:
    """The load shape in words: "closed, concurrency 4" / "poisson 2 req/s, max concurrency 8"."""
    if rec.get("load_kind") == "closed":
        return f"closed, concurrency {fmt_value(rec.get('concurrency'))}"
    text = (
        f"{rec.get('arrival') or 'open'} {rec['rate_rps']:g} req/s"
        if rec.get("rate_rps") is not None
        else f"{rec.get('arrival') or 'open'}"
    )
    if rec.get("burstiness") is not None:
        text += f", burstiness {rec['burstiness']:g}"
    if rec.get("max_concurrency") is not None:
        text += f", max concurrency {rec['max_concurrency']}"
    if rec.get("duration_limit_s") is not None:
        text += f", ≤ {rec['duration_limit_s']:g} s"
    return text


def shape_text(rec: dict) -> str:
    return f"{rec.get('model')} · {rec.get('workload_id')} · {load_shape(rec)}"


def _names(con, run_id: str) -> dict[tuple[str, str], str]:
    """What a configuration is called: its deployment, or its instance where the deployment has several."""
    rows = _records(
        con,
        "SELECT DISTINCT deployment_id, instance_id FROM deployments WHERE run_id = ? UNION "
        "SELECT DISTINCT deployment_id, instance_id FROM cells WHERE run_id = ?",
        [run_id, run_id],
    )
    per_dep: dict[str, int] = {}
    for r in rows:
        per_dep[r["deployment_id"]] = per_dep.get(r["deployment_id"], 0) + 1
    return {
        (r["deployment_id"], r["instance_id"]): r["deployment_id"]
        if per_dep[r["deployment_id"]] == 1
        else r["instance_id"]
        for r in rows
    }


def _excerpt(text: str | None) -> str | None:
    if not text:
        return None
    text = text.strip()
    return text if len(text) <= LOG_EXCERPT_CHARS else "…" + text[-LOG_EXCERPT_CHARS:]


FEASIBILITY_COLUMNS = (
    Column("instance_id", "Instance", numeric=False),
    Column("start_order", "Start order"),
    Column("engine_text", "Engine", numeric=False),
    Column("model", "Model", numeric=False),
    Column("memory_text", "Memory share", numeric=False),
    Column("memory_flag", "Engine memory flag", numeric=False),
    Column("started_text", "Started", numeric=False),
    Column("failure_class", "Failure class", numeric=False),
    Column("failure_text", "Failure / log excerpt", numeric=False),
    Column("startup_s", "Startup s"),
    Column("predicted_text", "Predicted memory", numeric=False),
    Column("measured_text", "Measured memory", numeric=False),
)


def feasibility(con, run_id: str) -> tuple[FeasibilityGroup, ...]:
    """One group per deployment (alone or co-located), one row per instance, in start order."""
    deps = _records(
        con, "SELECT * FROM deployments WHERE run_id = ? ORDER BY deployment_id, start_order, instance_id", [run_id]
    )
    groups: dict[str, list[dict]] = {}
    for d in deps:
        groups.setdefault(d["deployment_id"], []).append(d)
    out = []
    for dep_id, rows in groups.items():
        recs = []
        for d in rows:
            share = d.get("memory_share")
            predicted = d.get("predicted_budget_bytes")
            pred_text = fmt_gib(predicted)
            if predicted is not None and d.get("predicted_fit") is not None:
                pred_text += ", fits" if d["predicted_fit"] else ", does not fit"
            failure = " — ".join(t for t in (d.get("failure_message"), _excerpt(d.get("log_excerpt"))) if t)
            recs.append(
                {
                    **d,
                    "engine_text": f"{d['engine']} ({d['engine_kind']} {d.get('engine_version') or '?'})",
                    "memory_text": MISSING if share is None else f"{share:.0%}",
                    "started_text": "yes" if d["started"] else "no",
                    "failure_text": failure or None,
                    "predicted_text": pred_text,
                    "measured_text": fmt_gib(d.get("measured_memory_bytes")),
                }
            )
        failed = [d for d in rows if not d["started"] or d.get("failure_class")]
        whole = not failed
        if whole:
            verdict = f"started whole ({len(rows)} instance{'s' if len(rows) > 1 else ''})"
        else:
            first = min(failed, key=lambda d: (d["start_order"], d["instance_id"]))
            how = "did not start" if not first["started"] else "started, then failed"
            why_text = first.get("failure_message")
            if not why_text:  # the log's last line is where an engine says why it stopped
                lines = (_excerpt(first.get("log_excerpt")) or "").splitlines()
                why_text = lines[-1] if lines else None
            verdict = (
                f"did not start whole: {first['instance_id']} (start order {first['start_order']}) "
                f"{how} first: {first.get('failure_class') or 'unknown'}"
            )
            if why_text:
                verdict += f": {why_text}"
        placement = "alone" if len(rows) == 1 else f"co-located ({len(rows)} instances)"
        out.append(
            FeasibilityGroup(
                dep_id,
                placement,
                whole,
                verdict,
                Table.from_records(recs, FEASIBILITY_COLUMNS, caption="One row per instance, in start order."),
            )
        )
    return tuple(out)


def _requests_frame(con, run_id: str) -> pl.DataFrame:
    """Every request of the run with its configuration, its place in its cell and its cell's client flag."""
    shape = ", ".join(f"c.{k}" for k in SHAPE_COLUMNS if k != "model")
    frame = _frame(
        con,
        f"""
        SELECT r.sent_at, r.done_at, q.request_id, q.cell_id, q.deployment_id, q.instance_id, q.engine, q.model, {shape},
               q.status, q.error_class, q.completion_tokens, q.ttft_ms, q.e2e_ms, q.queue_ms, q.tokens_per_s,
               (r.done_at - r.sent_at) / 1e6 AS done_ms, c.client_kept_up, q.meets_slo,
               (row_number() OVER (PARTITION BY q.cell_id ORDER BY r.scheduled_at, q.request_id) - 1)
                   / greatest(count(*) OVER (PARTITION BY q.cell_id) - 1, 1) AS position
        FROM v_requests q JOIN requests r USING (run_id, request_id)
        JOIN cells c ON c.run_id = q.run_id AND c.cell_id = q.cell_id
        WHERE q.run_id = ?""",
        [run_id],
    )
    return _with_in_flight(frame)


def _with_in_flight(frame: pl.DataFrame) -> pl.DataFrame:
    """`in_flight`: the requests of its cell in flight when a request was sent, itself included (sent at or
    before its send, not yet done): the concurrency it met, which an open loop lets vary."""
    if frame.height == 0:
        return frame.with_columns(pl.lit(None, pl.Int64).alias("in_flight"))
    parts = []
    for part in frame.partition_by("cell_id"):
        sent = part["sent_at"].to_numpy().astype("float64")
        done = np.sort(part["done_at"].fill_null(np.iinfo(np.int64).max).to_numpy().astype("float64"))
        sent_sorted = np.sort(sent)
        started = np.searchsorted(sent_sorted, sent, side="right")
        ended = np.searchsorted(done, sent, side="right")
        parts.append(part.with_columns(pl.Series("in_flight", started - ended, dtype=pl.Int64)))
    return pl.concat(parts)


CONFIGURATION_COLUMNS = (
    Column("name", "Configuration", numeric=False),
    Column("shape", "Model · workload · load", numeric=False),
    Column("cells", "Cells"),
    Column("ok", "OK"),
    Column("output_tps", "Cell output tok/s", group="Output tok/s", sub="cell (Σ tokens / Σ wall)"),
    Column("tps_mean", "Per-request tok/s mean", group="Output tok/s", sub="per request, mean"),
    Column("tps_max", "Per-request tok/s max", group="Output tok/s", sub="per request, max"),
    Column("rps", "Req/s"),
    Column("goodput", "Goodput req/s"),
)
# Shown where the GPU's power was sampled (NVML): the GPU's energy per output token over the cells.
ENERGY_COLUMN = Column("j_per_token", "GPU J / output token")


def _configurations(con, run_id: str, requests: pl.DataFrame, names: dict) -> list[dict]:
    cells = _records(
        con,
        f"""
        SELECT {", ".join(CONFIG_COLUMNS)}, count(*) AS cells, sum(requests) AS requests, sum(ok) AS ok,
               sum(output_tokens) / sum(wall_s) AS output_tps, sum(ok) / sum(wall_s) AS rps,
               bool_or(client_kept_up = false) AS client_fell_behind,
               sum(goodput_rps * wall_s) / sum(wall_s) AS goodput,
               sum(energy_j) / nullif(sum(output_tokens) FILTER (energy_j IS NOT NULL), 0) AS j_per_token,
               min(output_throughput_tps) AS tps_cell_min, max(output_throughput_tps) AS tps_cell_max,
               stddev_samp(output_throughput_tps) / avg(output_throughput_tps) AS tps_cell_cv
        FROM v_cells WHERE run_id = ? GROUP BY ALL""",
        [run_id],
    )
    per_req = (
        requests.filter(pl.col("status") == "ok")
        .group_by(list(CONFIG_COLUMNS))
        .agg(tps_mean=pl.col("tokens_per_s").mean(), tps_max=pl.col("tokens_per_s").max())
    )
    by_key = {tuple(r[k] for k in CONFIG_COLUMNS): r for r in per_req.iter_rows(named=True)}
    out = []
    for c in cells:
        r = by_key.get(tuple(c[k] for k in CONFIG_COLUMNS), {})
        out.append(
            {
                **c,
                "tps_mean": r.get("tps_mean"),
                "tps_max": r.get("tps_max"),
                "name": names.get((c["deployment_id"], c["instance_id"]), c["instance_id"]),
                "shape": shape_text(c),
            }
        )
    return sorted(out, key=lambda c: (c["shape"], c["name"]))


COMPARED_METRIC = "output tokens/s"
COMPARISON_COLUMNS = (
    Column("shape", "Model · workload · load", numeric=False),
    Column("a", "A", numeric=False),
    Column("b", "B", numeric=False),
    Column("ratio_text", "A / B", numeric=False),
    Column("interval_text", "95% interval", numeric=False),
    Column("n_text", "Requests (a / b)", numeric=False),
    Column("verdict", "Verdict", numeric=False),
)


def verdict_sentence(
    a: str, b: str, ratio: float, low: float, high: float, metric: str = COMPARED_METRIC
) -> tuple[str | None, str]:
    """(winner or None, the sentence a person would say). An interval that includes 1 names no winner."""
    if any(math.isnan(x) for x in (ratio, low, high)):
        return None, f"not enough data to compare {a} and {b} on {metric}"
    interval = f"[{low:.2f}–{high:.2f}]"
    if low > 1.0:
        return a, f"{a} is {ratio:.2f}× {b} {interval} on {metric}"
    if high < 1.0:  # cannot happen for the better-first order, but a caller may pass either
        return b, f"{b} is {1 / ratio:.2f}× {a} [{1 / high:.2f}–{1 / low:.2f}] on {metric}"
    return None, f"no measurable difference between {a} and {b} on {metric} ({ratio:.2f}× {interval}, includes 1)"


def care_note(names: Sequence[str]) -> str:
    """The clause a verdict carries when a configuration it rests on was measured while the client fell
    behind (cells.client_kept_up false): the figures may be the client's, and the reader is told."""
    return f"; read with care: the load generator did not keep up measuring {', '.join(sorted(set(names)))}"


def _comparisons(con, run_id: str, names: dict, configs: list[dict]) -> tuple[Comparison, ...]:
    from warehouse.stats import throughput_comparison_ci

    behind = {(c["shape"], c["name"]) for c in configs if c.get("client_fell_behind")}
    ci = throughput_comparison_ci(con, run_id)
    if ci.height == 0:
        return ()
    out = []
    for r in ci.iter_rows(named=True):
        ratio = r["output_tps_ratio"]
        pair_a, pair_b = (r["deployment_a"], r["instance_a"]), (r["deployment_b"], r["instance_b"])
        # both orders are listed: keep the better-first one (the first by name when undecided)
        if not (ratio > 1 or ((math.isnan(ratio) or ratio == 1) and pair_a < pair_b)):
            continue
        a, b = names.get(pair_a, pair_a[1]), names.get(pair_b, pair_b[1])
        winner, sentence = verdict_sentence(a, b, ratio, r["ci_low"], r["ci_high"])
        late = [n for n in (a, b) if (shape_text(r), n) in behind]
        if late:
            sentence += care_note(late)
        out.append(
            Comparison(shape_text(r), a, b, ratio, r["ci_low"], r["ci_high"], r["n_a"], r["n_b"], winner, sentence)
        )
    return tuple(sorted(out, key=lambda c: (c.shape, c.a, c.b)))


def throughput(con, run_id: str, configs: list[dict], names: dict) -> Throughput:
    comps = _comparisons(con, run_id, names, configs)
    energy = any(c.get("j_per_token") is not None for c in configs)
    table = Table.from_records(
        configs,
        (*CONFIGURATION_COLUMNS, ENERGY_COLUMN) if energy else CONFIGURATION_COLUMNS,
        caption=(
            "One row per configuration (instance × model × workload × load shape), repeats pooled; per-request "
            "figures over ok requests."
            + (
                " GPU J / output token: the GPU's mean power (NVML samples) × cell wall time / output tokens; "
                "on a shared GPU it counts every instance's draw."
                if energy
                else " No GPU power was sampled (no NVML on this machine): energy per token not measured."
            )
        ),
    )
    comp_rows = [
        {
            "shape": c.shape,
            "a": c.a,
            "b": c.b,
            "ratio_text": fmt_ratio(c.ratio),
            "interval_text": MISSING if math.isnan(c.low) else f"{c.low:.2f}–{c.high:.2f}",
            "n_text": f"{c.n_a:,} / {c.n_b:,}",
            "verdict": c.verdict,
        }
        for c in comps
    ]
    comp_table = Table.from_records(
        comp_rows,
        COMPARISON_COLUMNS,
        caption=(
            "Each comparable pair (same model, workload and load shape): the ratio of the cells' output tokens/s "
            "(Σ ok output tokens / Σ cell wall seconds) with a 95% percentile-bootstrap interval "
            "(warehouse/stats.throughput_comparison_ci: by Little's law throughput = mean in flight × Σ tokens / "
            "Σ request time; requests are resampled, the mean in flight held at its measured value). An interval "
            "that includes 1 names no winner."
        ),
    )
    from reports.latency import throughput_chart

    return Throughput(table, comps, comp_table, COMPARED_METRIC, throughput_chart(configs))


STABILITY_METRICS = (("ttft_ms", "TTFT (ms)"), ("e2e_ms", "E2E (ms)"))
STABILITY_COLUMNS = (
    Column("name", "Configuration", numeric=False),
    Column("shape", "Model · workload · load", numeric=False),
    Column("n", "OK requests"),
    *(
        Column(f"{m}_{s}", f"{label} {sub}", group=label, sub=sub)
        for m, label in STABILITY_METRICS
        for s, sub in (("min", "min"), ("max", "max"), ("iqr", "IQR"), ("cv", "CV"))
    ),
    Column("tps_cell_min", "Cell tok/s min", group="Cell output tok/s across repeats", sub="min"),
    Column("tps_cell_max", "Cell tok/s max", group="Cell output tok/s across repeats", sub="max"),
    Column("tps_cell_cv", "Cell tok/s CV", group="Cell output tok/s across repeats", sub="CV"),
)


def _median(s: pl.Series) -> float | None:
    s = s.drop_nulls()
    return float(s.median()) if s.len() else None


def _tail_findings(tail: pl.DataFrame, rest: pl.DataFrame) -> list[str]:
    """What the slowest requests share that the others do not: each rule states its threshold."""
    found = []
    k = tail.height
    bad = tail.filter(pl.col("status") != "ok")
    if bad.height * 2 >= k:  # errors: most of the tail did not end ok
        kinds = ", ".join(f"{s} {n}" for s, n in bad["status"].value_counts(sort=True).iter_rows())
        found.append(f"{bad.height} of {k} ended in an error ({kinds})")
    tp, rp = _median(tail["position"]), _median(rest["position"])
    if tp is not None and rp is not None:
        if tp <= 0.1 and rp >= 0.3:  # position: the start of the cell (cold caches, warm-up)
            found.append(
                f"they came first in their cells (median position {tp:.0%} into the cell, the others "
                f"{rp:.0%}): a cold start"
            )
        elif tp >= 0.9 and rp <= 0.7:
            found.append(f"they came last in their cells (median position {tp:.0%}, the others {rp:.0%})")
    tl, rl = _median(tail["completion_tokens"]), _median(rest["completion_tokens"])
    if tl is not None and rl is not None and tl >= 1.5 * rl:  # output length: 1.5× the others'
        found.append(f"they generated longer outputs (median {tl:,.0f} tokens, the others {rl:,.0f})")
    ti, ri = _median(tail["in_flight"]), _median(rest["in_flight"])
    if ti is not None and ri is not None and ti >= 1.5 * ri and ti - ri >= 1:  # concurrency: 1.5× and 1 more
        found.append(
            f"they were sent while more requests were in flight (median {ti:,.0f}, the others {ri:,.0f}): "
            "the engine was busier"
        )
    tq, rq = _median(tail["queue_ms"]), _median(rest["queue_ms"])
    if tq is not None and rq is not None and tq >= 2 * rq and tq - rq >= 1.0:  # queue: 2× and ≥ 1 ms more
        found.append(
            f"they waited longer before being sent (median queue delay {tq:,.1f} ms, the others "
            f"{rq:,.1f} ms): the load outran the engine"
        )
    late_t = tail["client_kept_up"].eq(False).sum() / k
    late_r = rest["client_kept_up"].eq(False).sum() / max(rest.height, 1)
    if late_t >= 0.5 and late_t - late_r >= 0.2:  # the client: most of the tail in cells it did not keep up
        found.append(
            f"{late_t:.0%} of them were measured in cells where the load generator did not keep up "
            f"(the others {late_r:.0%}): their timings may be the client's"
        )
    ok_t = tail.filter(pl.col("e2e_ms") > 0)
    ok_r = rest.filter(pl.col("e2e_ms") > 0)
    if ok_t.height and ok_r.height:
        ft = _median(ok_t["ttft_ms"] / ok_t["e2e_ms"])
        fr = _median(ok_r["ttft_ms"] / ok_r["e2e_ms"])
        if ft is not None and fr is not None and ft >= 0.5 and fr < 0.25:  # most of their time before token 1
            found.append(
                f"they spent most of their time waiting for the first token (median {ft:.0%} of E2E, the "
                f"others {fr:.0%}): prefill or queueing inside the engine"
            )
    return found


def tail_explanation(frame: pl.DataFrame, name: str) -> TailExplanation | None:
    """The slowest 5% of one configuration's requests (by time to done; errors included), explained by
    the rules of `_tail_findings`, or the statement that the data cannot explain them."""
    frame = frame.with_columns(pl.coalesce("e2e_ms", "done_ms").alias("_t")).filter(pl.col("_t").is_not_null())
    if frame.height == 0:
        return None
    if frame.height < TAIL_MIN_REQUESTS:
        return TailExplanation(
            name,
            f"{name}: too few requests ({frame.height}) to say what the slowest 5% have in "
            f"common; that takes {TAIL_MIN_REQUESTS}.",
            False,
        )
    k = max(1, math.ceil(TAIL_SHARE * frame.height))
    ranked = frame.sort("_t", descending=True, nulls_last=True)
    tail, rest = ranked.head(k), ranked.tail(frame.height - k)
    ok = frame.filter(pl.col("status") == "ok")["e2e_ms"]
    p50 = ok.quantile(0.5, "linear") if ok.len() else None
    p95 = ok.quantile(0.95, "linear") if ok.len() else None
    lead = (
        f"{name}: the slowest 5% ({k} of {frame.height} requests, from {fmt_value(float(tail['_t'].min()))} ms; "
        f"E2E P50 {fmt_value(p50)} ms, P95 {fmt_value(p95)} ms)"
    )
    found = _tail_findings(tail, rest)
    if found:
        return TailExplanation(name, f"{lead}: " + "; ".join(found) + ".", True)
    return TailExplanation(
        name,
        f"{lead}: the data cannot explain them. They do not differ from the other requests "
        "in errors, position in the cell, output length, requests in flight at their send, queue delay, "
        "the client's pace or time to first token.",
        False,
    )


def stability(requests: pl.DataFrame, configs: list[dict]) -> Stability:
    from warehouse.stats import stability as spread

    ok = requests.filter(pl.col("status") == "ok")
    by = list(CONFIG_COLUMNS)
    stats = {}
    for metric, _ in STABILITY_METRICS:
        for r in spread(ok, by, metric).iter_rows(named=True):
            stats.setdefault(tuple(r[k] for k in by), {}).update(
                {"n": r["n"], **{f"{metric}_{s}": r[s] for s in ("min", "max", "iqr", "cv")}}
            )
    rows, tails = [], []
    for c in configs:
        key = tuple(c[k] for k in by)
        rows.append({**c, **stats.get(key, {"n": 0})})
        mine = requests.filter(
            pl.all_horizontal([pl.col(k).is_null() if c[k] is None else pl.col(k) == c[k] for k in by])
        )
        t = tail_explanation(mine, f"{c['name']} on {c['shape']}")
        if t is not None:
            tails.append(t)
    return Stability(
        Table.from_records(
            rows,
            STABILITY_COLUMNS,
            caption=(
                "Spread per configuration over its ok requests: min–max, IQR (P75 − P25), CV (sample std / mean); and of "
                "the cells' output tok/s across repeats (CV needs two repeats)."
            ),
        ),
        tuple(tails),
    )


def build_model(
    con, run_id: str, *, title: str | None = None, compose=None, nights: int = 14, baseline: str | None = None
) -> ReportModel:
    """Every section of one run's report, from the warehouse (read-only queries). `compose`
    (matrix_path, deployment_id) -> compose file text: see reports/deployment.py. `baseline`: a run to
    set this one against (reports/baseline.py); NoSuchRun when the warehouse does not hold it."""
    from reports.baseline import baseline as against_baseline
    from reports.characteristics import characteristics
    from reports.colocation import colocation
    from reports.deployment import deployment_to_copy
    from reports.latency import latency
    from reports.matrixfile import read_matrix, workload_kinds
    from reports.method import method
    from reports.recommend import recommendations
    from reports.trend import trend
    from reports.workloads import workloads
    from warehouse.transforms import summarize_run

    run, _deps, summary, metrics = summarize_run(con, run_id)  # NoSuchRun
    if baseline is not None and not con.execute("SELECT 1 FROM runs WHERE run_id = ?", [baseline]).fetchall():
        from warehouse.store import NoSuchRun

        raise NoSuchRun(baseline)
    # the header names the run; the Environment section holds the rest of the runs row
    header = {k: v for k, v in run_info(run).items() if k in HEADER_ON_TOP}
    base = model_from_frames(summary, metrics, title=title or f"bakeoff: {run['matrix_name']}", header=header)
    deps = _records(con, "SELECT * FROM deployments WHERE run_id = ? ORDER BY start_order, instance_id", [run_id])
    names = _names(con, run_id)
    requests = _requests_frame(con, run_id)
    configs = _configurations(con, run_id, requests, names)
    matrix = read_matrix(run.get("matrix_path"))
    groups = feasibility(con, run_id)
    tput = throughput(con, run_id, configs, names)
    return replace(
        base,
        environment=kv_table(environment_rows(run, deps), caption="Where and with what this run measured."),
        feasibility=groups,
        throughput=tput,
        latency=latency(metrics, summary, names, SHAPE_COLUMNS, shape_text),
        stability=stability(requests, configs),
        colocation=colocation(requests, deps, names, CONFIG_COLUMNS, shape_text),
        workloads=workloads(con, run_id, names, load_shape),
        characteristics=characteristics(con, run_id, deps, configs, requests, nights),
        recommendations=recommendations(
            requests, names, groups, SHAPE_COLUMNS, shape_text, workload_kinds(matrix), configs, tput.comparisons
        ),
        deployment=deployment_to_copy(groups, run.get("matrix_path"), compose),
        method=method(
            _records(con, "SELECT * FROM v_cells WHERE run_id = ?", [run_id]),
            matrix,
            run.get("matrix_path"),
            load_shape,
        ),
        trend=trend(con, run_id, names, shape_text, nights),
        baseline=None if baseline is None else against_baseline(con, run_id, baseline, names, shape_text),
    )
