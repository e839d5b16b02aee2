"""The Markdown report, from the same model as the HTML. Every string is escaped here: table cells
for pipes and line breaks, running text for Markdown's markup characters and raw HTML."""

from __future__ import annotations

import re

from reports.model import ReportModel
from reports.tables import MISSING, Table, kv_table


def md_cell(text: str) -> str:
    """A table cell: backslashes and pipes escaped, line breaks flattened, and no raw HTML (< as an
    entity: GitHub and Prefect's artifact view render inline HTML in cells)."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return text.replace("<", "&lt;")


def md_inline(text: str) -> str:
    """Running text (a heading, a paragraph, a list item): Markdown's markup characters escaped."""
    text = re.sub(r"([\\`*_{}\[\]>#|&])", r"\\\1", text.replace("\r", " ").replace("\n", " "))
    return text.replace("<", "&lt;")  # an entity: no renderer reads it as the start of a tag


def md_fence(text: str, lang: str = "") -> str:
    """A fenced code block: a fence longer than any backtick run inside, so no text can close it early
    (inside a fence nothing is markup, HTML included)."""
    longest = max((len(r) for r in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def md_table(table: Table) -> str:
    lines = []
    if table.caption:
        lines += [f"_{md_inline(table.caption)}_", ""]
    lines.append("| " + " | ".join(md_cell(c.header) for c in table.columns) + " |")
    lines.append("|" + "|".join("---:" if c.numeric else ":---" for c in table.columns) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(md_cell(v) for v in row) + " |")
    if not table.rows:
        lines.append("| " + " | ".join(["no rows"] + [""] * (len(table.columns) - 1)) + " |")
    return "\n".join(lines)


def md_chart(chart, images: dict[str, str]) -> list[str]:
    """A chart as its PNG (written beside the report by reports.write_report), or a pointer to the HTML."""
    path = images.get(chart.div_id)
    if path is None:
        return [f"_Chart “{md_inline(chart.title)}” is in report.html._", ""]
    return [f"![{md_inline(chart.title)}]({path})", "", f"_{md_inline(chart.note)}_", ""]


def render_markdown(m: ReportModel, images: dict[str, str] | None = None) -> str:
    """`images`: chart div id -> the relative path of its PNG."""
    images = images or {}
    out: list[str] = [f"# {md_inline(m.title)}", ""]
    if m.header:
        out += [md_table(kv_table(m.header)), ""]
    if m.environment is not None:
        out += ["## Environment", "", md_table(m.environment), ""]
    if m.feasibility is not None:
        out += ["## Feasibility", ""]
        for g in m.feasibility:
            out += [
                f"### {md_inline(g.deployment_id)} · {md_inline(g.placement)}",
                "",
                f"**{md_inline(g.verdict)}**",
                "",
                md_table(g.instances),
                "",
            ]
        if not m.feasibility:
            out += ["No deployments recorded.", ""]
    if m.throughput is not None:
        out += ["## Throughput", "", md_table(m.throughput.configurations), ""]
        if m.throughput.chart is not None:
            out += md_chart(m.throughput.chart, images)
        out += ["### Who wins", ""]
        if m.throughput.comparisons:
            out += [f"- {md_inline(c.shape)}: {md_inline(c.verdict)}" for c in m.throughput.comparisons]
            out += ["", md_table(m.throughput.comparison_table), ""]
        else:
            out += ["No comparable pair: no two configurations ran the same model, workload and load shape.", ""]
    if m.latency is not None:
        out += ["## Latency", "", md_table(m.latency.table), ""]
        for c in m.latency.charts:
            out += md_chart(c, images)
    if m.stability is not None:
        out += ["## Stability", "", md_table(m.stability.table), "", "### The tail, explained", ""]
        out += [f"- {md_inline(t.sentence)}" for t in m.stability.tails] or ["No configuration has enough requests."]
        out += [""]
    if m.colocation is not None:
        c = m.colocation
        out += ["## Co-location", "", f"_Rule: {md_inline(c.rule)}._", ""]
        out += [f"- {md_inline(s.shape)}: {md_inline(s.verdict)}" for s in c.slowdowns] or [
            "No co-located instance has an alone twin in this run."
        ]
        out += [""]
        if c.slowdowns:
            out += [md_table(c.table), ""]
        if c.unmatched:
            out += ["Co-located without an alone twin: " + md_inline("; ".join(c.unmatched)), ""]
    if m.workloads is not None:
        out += ["## Workloads", ""]
    if m.workloads is not None and m.workloads.multi_turn is not None:
        out += ["### Multi-turn sessions", "", md_table(m.workloads.multi_turn), ""]
    if m.workloads is not None and m.workloads.trace is not None:
        out += ["### Trace replay", "", md_table(m.workloads.trace), ""]
    if m.workloads is not None and m.workloads.cancellation is not None:
        ca = m.workloads.cancellation
        out += ["### Cancellation", ""]
        out += [f"- {md_inline(s)}" for s in ca.effects] or ["No cell with cancellations has a no-cancel twin."]
        out += ["", md_table(ca.cells), ""]
    if m.workloads is not None and m.workloads.reasoning is not None:
        out += ["### Reasoning", "", md_table(m.workloads.reasoning), ""]
    if m.workloads is not None and m.workloads.structured is not None:
        st = m.workloads.structured
        out += ["### Structured output", ""]
        out += [f"- {md_inline(s)}" for s in st.costs] or ["No structured cell has an unconstrained twin in this run."]
        out += ["", md_table(st.cells), "", md_table(st.schemas), ""]
    if m.characteristics is not None:
        ch = m.characteristics
        out += ["## Flags and characteristics", "", md_table(ch.flags), "", md_table(ch.table), ""]
    if m.recommendations is not None:
        out += ["## Recommendations", ""]
        out += [
            f"- **{md_inline(r.use_case)}**"
            + (f" ({md_inline(r.scope)})" if r.scope else "")
            + f": {md_inline(r.verdict)}"
            for r in m.recommendations.items
        ]
        out += ["", md_table(m.recommendations.table), ""]
    if m.deployment is not None:
        d = m.deployment
        out += ["## The deployment to copy", "", f"_Rule: {md_inline(d.rule)}._", ""]
        if d.deployment_id is not None:
            out += [f"Group: **{md_inline(d.deployment_id)}** ({md_inline(d.note)}).", ""]
        else:
            out += [md_inline(d.note) + ".", ""]
        if d.compose is not None:
            out += [md_fence(d.compose, "yaml"), ""]
        if d.command:
            out += ["To reproduce it:", "", md_fence(d.command, "sh"), ""]
    if m.trend is not None:
        out += ["## Nightly trend", ""]
        out += [
            f"- **{md_inline(r.configuration)}** {md_inline(r.metric)}: regressed since {md_inline(r.night)} "
            f"({r.change:+.0%})"
            for r in m.trend.regressions
        ] or ["No regression flagged on the latest night."]
        out += ["", md_table(m.trend.table), "", md_table(m.trend.versions), ""]
    if m.baseline is not None:
        b = m.baseline
        out += [
            "## Against the baseline",
            "",
            f"_Baseline run {md_inline(b.run_id)}; matched by {md_inline(b.rule)}._",
            "",
        ]
        out += [f"- {md_inline(v)}" for v in b.verdicts] or [
            "No configuration of this run was measured by the baseline."
        ]
        out += [""]
        if b.verdicts:
            out += [md_table(b.table), ""]
        if b.unmatched:
            out += ["Not in the baseline: " + md_inline("; ".join(b.unmatched)), ""]
    if m.method is not None:
        me = m.method
        out += [
            "## Method",
            "",
            md_table(me.workloads),
            "",
            md_table(me.shapes),
            "",
            "The metric formulas are under Metric definitions below.",
            "",
            md_table(me.overhead),
            "",
        ]
        out += [md_table(me.care), ""] if me.care is not None else ["No cell needs reading with care.", ""]
    out += ["## Overview", "", md_table(m.overview), "", md_table(m.status), ""]
    if m.notes is not None:
        out += ["### Notes", "", md_table(m.notes), ""]
    if m.charts:
        out += ["## Charts", ""]
        for c in m.charts:
            out += md_chart(c, images)
    for s in m.deployments:
        out += [
            f"## Deployment {md_inline(s.deployment_id)}",
            "",
            f"engine: {md_inline(s.engines or MISSING)} · model: {md_inline(s.models or MISSING)}",
            "",
            "### Throughput",
            "",
            md_table(s.throughput),
            "",
            "### Latency",
            "",
            md_table(s.latency),
            "",
        ]
    out += ["## Metric definitions", ""]
    out += [f"- **{md_inline(name)}**: `{d}`" for name, d in m.definitions]
    out += [
        "",
        "Latencies are in milliseconds. “—” means not defined or not measured "
        "(e.g. no successful request, or no SLO set for goodput).",
        "",
    ]
    return "\n".join(out)
