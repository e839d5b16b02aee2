"""The comparison report: a model computed from the warehouse (model.py), charts (charts.py), and
the same content written as self-contained HTML (html.py, templates/) and Markdown (markdown.py).

Entry points:
* `render_run(con, run_id, out_dir, *, title=None, compose=None, nights=14, baseline=None)`: every section, from the warehouse alone;
* `render_report(summary, requests, out_dir, *, title, run_info)`: the per-cell sections from the two
  frames of warehouse.transforms.summarize_run (the call of flows/ before render_run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import polars as pl

from reports.html import render_html
from reports.markdown import render_markdown
from reports.model import ReportModel, build_model, model_from_frames
from reports.tables import MISSING

__all__ = ["key_metrics", "render_report", "render_run", "write_report"]


def _write_atomically(path: Path, data: bytes) -> None:
    """A temporary name, then a rename: a full disk leaves the previous file or none, never a truncated one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def chart_pngs(model: ReportModel, charts_dir: Path) -> dict[str, Path]:
    """Every chart of the model as a PNG (vl-convert), for the Markdown report and the Prefect artifacts."""
    import vl_convert as vlc

    charts_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for c in model.all_charts:
        path = charts_dir / f"{c.div_id}.png"
        _write_atomically(path, vlc.vegalite_to_png(c.spec, scale=1.5))
        out[c.div_id] = path
    return out


def key_metrics(model: ReportModel) -> list[dict[str, str]]:
    """One row per configuration, as the report prints it: the throughput table's columns, TTFT P50 and
    E2E P95 from the latency table, and the verdicts naming it a winner (Prefect's table artifact)."""
    if model.throughput is None:
        return []
    headers = [c.header for c in model.throughput.configurations.columns]
    rows = [dict(zip(headers, r, strict=True)) for r in model.throughput.configurations.rows]
    if model.latency is not None:
        lat_headers = [c.header for c in model.latency.table.columns]
        for r in model.latency.table.rows:
            rec = dict(zip(lat_headers, r, strict=True))
            for row in rows:
                if (row["Configuration"], row["Model · workload · load"]) == (
                    rec["Configuration"],
                    rec["Model · workload · load"],
                ):
                    if rec["Metric"] == "TTFT":
                        row["TTFT P50 (ms)"] = rec["P50 (ms)"]
                    if rec["Metric"] == "E2E":
                        row["E2E P95 (ms)"] = rec["P95 (ms)"]
    for row in rows:
        wins = [
            c.verdict
            for c in model.throughput.comparisons
            if c.winner == row["Configuration"] and c.shape == row["Model · workload · load"]
        ]
        row["Wins"] = "; ".join(wins) or MISSING
    return rows


def write_report(model: ReportModel, out_dir: Path) -> dict[str, Path]:
    """Write ``report.html``, ``report.md``, ``key_metrics.json`` and ``charts/*.png`` into out_dir, each file
    atomically; returns ``{"html": path, "markdown": path, "key_metrics": path, "charts": dir}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "html": out_dir / "report.html",
        "markdown": out_dir / "report.md",
        "key_metrics": out_dir / "key_metrics.json",
        "charts": out_dir / "charts",
    }
    pngs = chart_pngs(model, paths["charts"])
    images = {div_id: f"charts/{p.name}" for div_id, p in pngs.items()}
    _write_atomically(paths["html"], render_html(model).encode("utf-8"))
    _write_atomically(paths["markdown"], render_markdown(model, images).encode("utf-8"))
    _write_atomically(paths["key_metrics"], json.dumps(key_metrics(model), ensure_ascii=False, indent=1).encode())
    return paths


def render_run(
    con,
    run_id: str,
    out_dir: Path,
    *,
    title: str | None = None,
    compose: Callable[[str, str], str] | None = None,
    nights: int = 14,
    baseline: str | None = None,
) -> dict[str, Path]:
    """One run's full report, from the warehouse (read-only). Raises warehouse.store.NoSuchRun for an unknown run.
    `compose(matrix_path, deployment_id)` regenerates a group's compose file (tasks.compose.compose_from_path;
    passed in because reports/ does not import tasks/); without it the section gives the command only.
    `nights`: how many nights the trend section shows, ending with this run. `baseline`: a run id to set this
    run against, configuration by configuration (reports/baseline.py)."""
    model = build_model(con, run_id, title=title, compose=compose, nights=nights, baseline=baseline)
    return write_report(model, out_dir)


def render_report(
    summary: pl.DataFrame, requests: pl.DataFrame, out_dir: Path, *, title: str, run_info: dict
) -> dict[str, Path]:
    """The per-cell report from a summary frame and a request frame (reports.model.SUMMARY_COLUMNS /
    REQUEST_COLUMNS); nulls show as "—". Kept for callers that have the frames, not a connection."""
    return write_report(model_from_frames(summary, requests, title=title, header=run_info), out_dir)
