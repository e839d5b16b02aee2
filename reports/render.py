"""Where the report's names used to live; the package (reports/__init__.py) has them now."""

from reports import render_report, render_run
from reports.charts import CHART_IDS
from reports.model import METRIC_DEFINITIONS, REQUEST_COLUMNS, SUMMARY_COLUMNS
from reports.tables import fmt_value

__all__ = [
    "CHART_IDS",
    "METRIC_DEFINITIONS",
    "REQUEST_COLUMNS",
    "SUMMARY_COLUMNS",
    "fmt_value",
    "render_report",
    "render_run",
]
