"""The HTML report: the model through Jinja2 templates (reports/templates), autoescaped.

Every string from the model is escaped by the template engine; only two things go in unescaped, both
script text made safe here: the Vega bundle (verbatim, it never holds "</script") and the chart specs
(JSON with <, > and & written as \\u escapes, so no data can close the script or look like markup).
"""

from __future__ import annotations

import functools
import json

import jinja2
from markupsafe import Markup

from reports.charts import script_safe, vega_bundle
from reports.model import TAIL_MIN_REQUESTS, ReportModel
from reports.tables import MISSING, kv_table


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=True),
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the render, not the reader
        keep_trailing_newline=True,
    )
    env.globals.update(zip=zip, kv=kv_table, missing=MISSING, tail_min=TAIL_MIN_REQUESTS)
    return env


def render_html(model: ReportModel) -> str:
    env = environment()
    scripts = None
    if model.all_charts:
        specs = (
            json.dumps({c.div_id: c.spec for c in model.all_charts}, separators=(",", ":"), allow_nan=False)
            .replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
        )
        embed = env.get_template("embed.js.j2").render(specs=specs)
        scripts = {"bundle": Markup(script_safe(vega_bundle())), "embed": Markup(script_safe(embed))}
    return env.get_template("report.html.j2").render(m=model, scripts=scripts)
