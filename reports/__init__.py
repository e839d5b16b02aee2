"""The comparison report: a model computed from the warehouse (model.py), charts (charts.py), and
the same content written as self-contained HTML (html.py, templates/) and Markdown (markdown.py).

Entry points:
* `render_run(con, run_id, out_dir, *, title=None, compose=None, nights=14)`: every section, from the warehouse alone;
* `render_report(summary, requests, out_dir, *, title, run_info)`: the per-cell sections from the two
  frames of warehouse.transforms.summarize_run (the call of flows/ before render_run).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from reports.html import render_html
from reports.markdown import render_markdown
from reports.model import ReportModel, build_model, model_from_frames

__all__ = ["render_report", "render_run", "write_report"]


def write_report(model: ReportModel, out_dir: Path) -> dict[str, Path]:
    """Write ``report.html`` and ``report.md`` into out_dir; returns ``{"html": path, "markdown": path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_dir / "report.html", "markdown": out_dir / "report.md"}
    paths["html"].write_text(render_html(model), encoding="utf-8")
    paths["markdown"].write_text(render_markdown(model), encoding="utf-8")
    return paths


def render_run(
    con,
    run_id: str,
    out_dir: Path,
    *,
    title: str | None = None,
    compose: Callable[[str, str], str] | None = None,
    nights: int = 14,
) -> dict[str, Path]:
    """One run's full report, from the warehouse (read-only). Raises warehouse.store.NoSuchRun for an unknown run.
    `compose(matrix_path, deployment_id)` regenerates a group's compose file (tasks.compose.compose_from_path;
    passed in because reports/ does not import tasks/); without it the section gives the command only.
    `nights`: how many nights the trend section shows, ending with this run."""
    return write_report(build_model(con, run_id, title=title, compose=compose, nights=nights), out_dir)


def render_report(
    summary: pl.DataFrame, requests: pl.DataFrame, out_dir: Path, *, title: str, run_info: dict
) -> dict[str, Path]:
    """The per-cell report from a summary frame and a request frame (reports.model.SUMMARY_COLUMNS /
    REQUEST_COLUMNS); nulls show as "—". Kept for callers that have the frames, not a connection."""
    return write_report(model_from_frames(summary, requests, title=title, header=run_info), out_dir)
