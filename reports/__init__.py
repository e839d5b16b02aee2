"""Report rendering: summary + request frames -> self-contained HTML and Markdown."""

from reports.render import render_report

__all__ = ["render_report"]
