"""Tests of the report: the HTML and Markdown report built from summary + request frames.

The frames are built here with the shapes warehouse.transforms produces: raw per-request rows
first, then the per-cell summary aggregated from them (so the two agree, as in a real run).
"""

from __future__ import annotations

import html
import json
import math
import random
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from reports import render_report
from reports.charts import CHART_IDS
from reports.model import METRIC_DEFINITIONS

DEPLOYMENTS = (
    # deployment_id, engine, model, base decode tokens/s, base ttft ms, has SLO
    ("vllm-tinyllama", "vllm", "TinyLlama-1.1B-Chat", 180.0, 40.0, True),
    ("sglang-tinyllama", "sglang", "TinyLlama-1.1B-Chat", 80.0, 25.0, False),
)
WORKLOADS = {"chat-mixed": (64, 128, 256, 512), "fixed-128": (128,)}
CONCURRENCY = (1, 4)
REPEATS = (0, 1)
RUN_ID = "run-2025-09-18T15-09"
SLO_TTFT_MS = 200.0
FAILED_STATUSES = ("http_error", "timeout", "disconnected", "bad_stream", "cancelled")


def _quantile(values: list[float], q: float) -> float | None:
    return pl.Series(values, dtype=pl.Float64).quantile(q, interpolation="linear") if values else None


def make_frames(seed: int = 7, requests_per_cell: int = 24) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Realistic small (summary, requests) frames: 2 deployments x 2 workloads x 2 concurrencies x 2 repeats.

    Includes failed requests with null latencies, one cell where every request failed (null
    percentiles), and a deployment without an SLO (null goodput).
    """
    rng = random.Random(seed)
    req_rows: list[dict] = []
    cell_rows: list[dict] = []
    for dep_id, engine, model, tps, ttft0, has_slo in DEPLOYMENTS:
        for workload, lengths in WORKLOADS.items():
            for conc in CONCURRENCY:
                for rep in REPEATS:
                    cell_id = f"{dep_id}/{workload}/c{conc}/r{rep}"
                    all_fail = dep_id == "sglang-tinyllama" and workload == "fixed-128" and conc == 4 and rep == 1
                    cell_reqs = []
                    itls: list[float] = []
                    for i in range(requests_per_cell):
                        max_tokens = lengths[i % len(lengths)]
                        if all_fail:
                            status = "timeout" if i % 2 else "http_error"
                        elif i in (5, 17) and rep == 0:
                            status = FAILED_STATUSES[(i + conc + len(workload)) % len(FAILED_STATUSES)]
                        else:
                            status = "ok"
                        queue = rng.uniform(0.05, 2.0) * conc
                        if status == "ok":
                            ttft = ttft0 * conc * rng.lognormvariate(0, 0.5)
                            if rng.random() < 0.05:
                                ttft *= 30  # the occasional heavy tail
                            tokens = max_tokens if rng.random() < 0.8 else rng.randint(2, max_tokens)
                            per_tok = 1000.0 / (tps / math.sqrt(conc)) * rng.uniform(0.8, 1.25)
                            e2e = ttft + per_tok * (tokens - 1)
                            tpot = (e2e - ttft) / (tokens - 1)
                            rate = tokens / (e2e / 1000.0)
                            itls += [per_tok * rng.uniform(0.5, 1.5) for _ in range(3)]
                        elif status == "timeout" and not all_fail:
                            # streamed a while, then timed out: first token known, nothing else
                            ttft, e2e, tpot, rate, tokens = ttft0 * 3, None, None, None, None
                        else:
                            ttft = e2e = tpot = rate = None
                            tokens = None
                        cell_reqs.append(
                            {
                                "run_id": RUN_ID,
                                "cell_id": cell_id,
                                "request_id": f"{cell_id}#{i}",
                                "deployment_id": dep_id,
                                "engine": engine,
                                "model": model,
                                "max_tokens": max_tokens,
                                "status": status,
                                "ttft_ms": ttft,
                                "tpot_ms": tpot,
                                "e2e_ms": e2e,
                                "queue_ms": queue,
                                "tokens_per_s": rate,
                                "completion_tokens": tokens,
                            }
                        )
                    req_rows += cell_reqs
                    ok = [r for r in cell_reqs if r["status"] == "ok"]
                    wall_s = sum(r["e2e_ms"] for r in ok) / 1000.0 / conc + rng.uniform(0.5, 2.0)
                    out_tokens = sum(r["completion_tokens"] for r in ok)
                    row = {
                        "run_id": RUN_ID,
                        "cell_id": cell_id,
                        "deployment_id": dep_id,
                        "engine": engine,
                        "model": model,
                        "workload_id": workload,
                        "concurrency": conc,
                        "repeat": rep,
                        "requests": len(cell_reqs),
                        "ok": len(ok),
                        "failed": len(cell_reqs) - len(ok),
                        "wall_s": wall_s,
                        "output_tokens": out_tokens,
                        "output_throughput_tps": out_tokens / wall_s,
                        "request_throughput_rps": len(ok) / wall_s,
                        "goodput_rps": (
                            sum(1 for r in ok if r["ttft_ms"] <= SLO_TTFT_MS) / wall_s if has_slo else None
                        ),
                    }
                    for metric in ("ttft_ms", "tpot_ms", "e2e_ms"):
                        vals = [r[metric] for r in ok if r[metric] is not None]
                        row[f"{metric}_mean"] = sum(vals) / len(vals) if vals else None
                        for q in (50, 95, 99):
                            row[f"{metric}_p{q}"] = _quantile(vals, q / 100)
                    for q in (50, 95, 99):
                        row[f"itl_ms_p{q}"] = _quantile(itls, q / 100)
                    cell_rows.append(row)
    float_cols = ("ttft_ms", "tpot_ms", "e2e_ms", "queue_ms", "tokens_per_s")
    requests = pl.DataFrame(
        req_rows,
        schema_overrides={
            **dict.fromkeys(float_cols, pl.Float64),
            "max_tokens": pl.Int64,
            "completion_tokens": pl.Int64,
        },
    )
    summary = pl.DataFrame(cell_rows, infer_schema_length=None).with_columns(
        pl.col(c).cast(pl.Float64) for c in ("wall_s", "goodput_rps")
    )
    return summary, requests


RUN_INFO = {
    "run_id": RUN_ID,
    "started_at": "2025-09-18T15:09:00+00:00",
    "matrix": "configs/rtx5090-seed.yaml",
    "host": "bench-01",
    "git_sha": "0123abcd",
}


# ------------------------------------------------------------------ independent readers / formatters


def expected_fmt(v) -> str:
    """The report's number format, restated: ints with separators, floats by magnitude, null as —."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.1f}" if abs(v) >= 100 else (f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}")


THROUGHPUT_KEYS = (
    "workload_id", "concurrency", "repeat", "requests", "ok", "failed", "wall_s", "output_tokens",
    "output_throughput_tps", "request_throughput_rps", "goodput_rps",
)  # fmt: skip
LATENCY_KEYS = (
    "workload_id", "concurrency", "repeat",
    *(f"{m}_{s}" for m in ("ttft_ms", "tpot_ms", "e2e_ms") for s in ("mean", "p50", "p95", "p99")),
    "itl_ms_p50", "itl_ms_p95", "itl_ms_p99",
)  # fmt: skip


def expected_rows(summary: pl.DataFrame, keys) -> dict[str, list[tuple[str, ...]]]:
    """Per deployment, the table rows computed straight from the summary frame."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for rec in summary.iter_rows(named=True):
        out.setdefault(rec["deployment_id"], []).append(tuple(expected_fmt(rec[k]) for k in keys))
    return out


class _Tables(HTMLParser):
    """Collects every <table> as a list of rows of <td> texts, plus element ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[tuple[str, ...]]] = []
        self.ids: dict[str, str] = {}
        self.script_srcs: list[str] = []
        self.links: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] = tag
        if tag == "script" and a.get("src"):
            self.script_srcs.append(a["src"])
        if tag == "link" and a.get("href"):
            self.links.append(a["href"])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.tables[-1].append(tuple(self._row))
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_html(text: str) -> _Tables:
    p = _Tables()
    p.feed(text)
    return p


def md_rows(text: str) -> list[tuple[str, ...]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and line.endswith(" |"):
            cells = re.split(r"(?<!\\) \| ", line[2:-2])
            rows.append(tuple(c.replace("\\|", "|").strip() for c in cells))
    return rows


def section(text: str, start: str, end: str | None) -> str:
    i = text.index(start)
    j = text.index(end, i + len(start)) if end else len(text)
    return text[i:j]


# ------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def frames():
    return make_frames()


@pytest.fixture(scope="module")
def rendered(frames, tmp_path_factory):
    summary, requests = frames
    out = tmp_path_factory.mktemp("report")
    paths = render_report(summary, requests, out, title="Nightly bake-off <RTX 5090> & co", run_info=RUN_INFO)
    return paths, paths["html"].read_text(encoding="utf-8"), paths["markdown"].read_text(encoding="utf-8")


def test_fixture_is_realistic(frames):
    summary, requests = frames
    assert summary.height == 16 and requests.height == 16 * 24
    assert requests.filter(pl.col("status") != "ok").height >= 10
    assert requests["ttft_ms"].null_count() > 0 and requests["tokens_per_s"].null_count() > 0
    assert summary["ttft_ms_p50"].null_count() == 1  # the all-failed cell
    assert summary["goodput_rps"].null_count() == 8  # sglang: no SLO


def test_returns_paths_of_written_files(rendered, tmp_path):
    paths, page, md = rendered
    assert set(paths) == {"html", "markdown", "charts", "key_metrics"}
    # one row per configuration, as the report prints it (Prefect's table artifact reads this file)
    key = json.loads(paths["key_metrics"].read_text(encoding="utf-8"))
    assert key == [] or {"Configuration", "Cell output tok/s", "Wins"} <= set(key[0])
    assert paths["html"].name == "report.html" and paths["markdown"].name == "report.md"
    assert paths["html"].parent == paths["markdown"].parent == paths["charts"].parent
    # every chart as a PNG the Markdown shows, and no temporary file left behind
    pngs = sorted(paths["charts"].glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    for p in pngs:
        assert f"](charts/{p.name})" in md
    assert not list(paths["html"].parent.rglob(".*.tmp"))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # both files hold the report, not a stub: every deployment's heading and the definitions
    for dep_id, *_ in DEPLOYMENTS:
        assert f">Deployment {dep_id}</h2>" in page and f"## Deployment {dep_id}" in md
    assert md.count("## ") >= 2 + len(DEPLOYMENTS) and "## Metric definitions" in md


def test_html_is_offline(rendered):
    _, page, _ = rendered
    parsed = parse_html(page)
    assert parsed.script_srcs == []  # everything inline
    assert not [h for h in parsed.links if re.match(r"(https?:)?//", h)]
    assert not re.search(r"<script[^>]+src\s*=", page, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", page)
    # the vega bundle is embedded exactly once
    assert page.count("window.vegaEmbed=") == 1
    assert page.count("<script") == 2
    # ... and verbatim (rewriting it, e.g. "</" -> "<\\/", breaks regex literals like /</g in it)
    import vl_convert
    from altair.utils._importers import vl_version_for_vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=vl_version_for_vl_convert())
    assert "</script" not in bundle.lower() and bundle in page


def test_each_chart_div_exists_with_svg_renderer(rendered):
    _, page, _ = rendered
    parsed = parse_html(page)
    for div_id in CHART_IDS.values():
        assert parsed.ids.get(div_id) == "div", div_id
        assert f'"{div_id}":{{' in page  # its spec is passed to vegaEmbed
    assert 'renderer: "svg"' in page


def test_chart_data_is_aggregated(rendered):
    """Specs carry small aggregates, never the raw request rows."""
    _, page, _ = rendered
    assert "request_id" not in page
    datasets = re.findall(r'"datasets":\{"data-[0-9a-f]+":\[(.*?)\]\}', page)
    assert datasets and all(d.count("{") < 5000 for d in datasets)


def test_html_tables_show_summary_numbers(frames, rendered):
    summary, _ = frames
    _, page, _ = rendered
    all_rows = {row for table in parse_html(page).tables for row in table}
    for keys in (THROUGHPUT_KEYS, LATENCY_KEYS):
        for dep, rows in expected_rows(summary, keys).items():
            for row in rows:
                assert row in all_rows, (dep, row)
    # and each deployment's rows sit under that deployment's heading, in input order
    for dep, rows in expected_rows(summary, THROUGHPUT_KEYS).items():
        part = section(page, f">Deployment {html.escape(dep)}</h2>", "<h2")
        got = [r for t in parse_html(part).tables for r in t if len(r) == len(THROUGHPUT_KEYS)]
        assert sorted(got) == sorted(rows)


def test_null_values_render_as_dash(frames, rendered):
    summary, _ = frames
    _, page, md = rendered
    dead = summary.filter(pl.col("ok") == 0).row(0, named=True)
    row = tuple(expected_fmt(dead[k]) for k in LATENCY_KEYS)
    assert row.count("—") == 15  # all latency stats null
    assert row in {r for t in parse_html(page).tables for r in t}
    assert row in md_rows(md)
    cells = [c for t in parse_html(page).tables for r in t for c in r] + [c for r in md_rows(md) for c in r]
    assert not {"None", "nan", "NaN", "null", ""} & set(cells)


def test_overview_and_status_tables(frames, rendered):
    summary, requests = frames
    _, page, md = rendered
    html_rows = {r for t in parse_html(page).tables for r in t}
    mdr = set(md_rows(md))
    for dep_id, engine, model, *_ in DEPLOYMENTS:
        cells = summary.filter(pl.col("deployment_id") == dep_id)
        overview = (
            dep_id,
            engine,
            model,
            expected_fmt(cells.height),
            expected_fmt(cells["requests"].sum()),
            expected_fmt(cells["ok"].sum()),
            expected_fmt(cells["failed"].sum()),
            expected_fmt(cells["output_throughput_tps"].mean()),
            expected_fmt(cells["output_throughput_tps"].max()),
            expected_fmt(cells["goodput_rps"].mean()),
        )
        assert overview in html_rows and overview in mdr, overview
        reqs = requests.filter(pl.col("deployment_id") == dep_id)
        statuses = ("ok", *FAILED_STATUSES)
        status_row = (
            dep_id,
            *(expected_fmt(reqs.filter(pl.col("status") == s).height) for s in statuses),
            expected_fmt(reqs.height),
        )
        assert status_row in html_rows and status_row in mdr, status_row


def test_markdown_has_the_same_table_rows(frames, rendered):
    summary, _ = frames
    _, page, md = rendered
    mdr = md_rows(md)
    for keys in (THROUGHPUT_KEYS, LATENCY_KEYS):
        for rows in expected_rows(summary, keys).values():
            for row in rows:
                assert row in mdr, row
    # every data row of every HTML table is in the Markdown too
    html_rows = [r for t in parse_html(page).tables for r in t]
    assert set(html_rows) <= set(mdr)
    assert "<svg" not in md and "<script" not in md


def test_run_info_header(rendered):
    _, page, md = rendered
    rows = {r for t in parse_html(page).tables for r in t}
    mdr = set(md_rows(md))
    for k, v in RUN_INFO.items():
        assert (k, v) in rows and (k, v) in mdr


def test_metric_definitions_stated_exactly(rendered):
    _, page, md = rendered
    required = [
        "TTFT = first_token_at − sent_at (first chunk with non-empty content)",
        "E2E = last_token_at − sent_at",
        "queue delay = sent_at − scheduled_at",
        "TPOT = (E2E − TTFT)/(completion_tokens − 1) for completion_tokens > 1",
        "ITL = gaps between consecutive content chunks pooled over requests",
        "output throughput = Σ completion_tokens / cell wall time",
        "goodput = requests meeting every SLO / cell wall time",
    ]
    assert set(required) <= {d for _, d in METRIC_DEFINITIONS}
    defs_html = section(page, 'id="definitions"', "</dl>")
    defs_md = section(md, "## Metric definitions", None)
    for d in required:
        assert html.escape(d) in defs_html, d
        assert d in defs_md, d


def test_text_is_escaped(tmp_path):
    summary, requests = make_frames(requests_per_cell=6)
    evil = '<img src=x onerror="alert(1)">|dep'
    summary = summary.with_columns(pl.col("deployment_id").replace("vllm-tinyllama", evil))
    requests = requests.with_columns(pl.col("deployment_id").replace("vllm-tinyllama", evil))
    paths = render_report(
        summary,
        requests,
        tmp_path,
        title="<script>alert('t')</script>",
        run_info={"note": "</script><b>x</b>", "host": "a & b"},
    )
    page = paths["html"].read_text(encoding="utf-8")
    assert "<img src=x" not in page and "<b>x</b>" not in page
    assert "<script>alert" not in page
    assert "a &amp; b" in page
    cells = {c for t in parse_html(page).tables for r in t for c in r}
    assert evil in cells and "</script><b>x</b>" in cells  # escaped, so they read back as the same text
    # inside the chart specs the deployment name cannot close the script element
    assert page.count("</script>") == 2
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "\\|dep" in md  # pipes escaped in Markdown table cells
    assert "<img" not in md and "<b>x</b>" not in md  # no raw HTML: GitHub and Prefect render it
    assert any(r[0] == evil.replace("<", "&lt;") for r in md_rows(md))


def test_null_heavy_and_empty_inputs_do_not_crash(tmp_path):
    summary, requests = make_frames(requests_per_cell=4)
    nullable = [c for c, t in summary.schema.items() if t == pl.Float64]
    summary = summary.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in nullable)
    requests = requests.with_columns(
        pl.lit(None, dtype=pl.Float64).alias(c) for c in ("ttft_ms", "tpot_ms", "e2e_ms", "queue_ms", "tokens_per_s")
    ).with_columns(pl.lit(None, dtype=pl.Int64).alias("completion_tokens"))
    paths = render_report(summary, requests, tmp_path / "nulls", title="all null", run_info={})
    page = paths["html"].read_text(encoding="utf-8")
    assert "—" in page and parse_html(page).tables
    assert CHART_IDS["latency_hist"] not in page  # nothing to chart: no empty chart div

    empty_s, empty_r = summary.clear(), requests.clear()
    paths = render_report(empty_s, empty_r, tmp_path / "empty", title="empty", run_info={"run_id": "x"})
    page = paths["html"].read_text(encoding="utf-8")
    assert "No data to chart." in page and "<script" not in page
    assert "Metric definitions" in paths["markdown"].read_text(encoding="utf-8")


def test_nan_is_treated_as_null(frames, tmp_path):
    summary, requests = frames
    nan = pl.lit(float("nan"))
    summary = summary.with_columns(nan.alias("goodput_rps"), nan.alias("ttft_ms_p99"))  # p99 is charted too
    requests = requests.with_columns(
        pl.when(pl.col("max_tokens") == 64).then(nan).otherwise(pl.col("tokens_per_s")).alias("tokens_per_s"),
        pl.when(pl.col("max_tokens") == 512).then(nan).otherwise(pl.col("ttft_ms")).alias("ttft_ms"),
    )
    paths = render_report(summary, requests, tmp_path, title="NaN goodput", run_info={})  # JSON has no NaN
    page = paths["html"].read_text(encoding="utf-8")
    cells = [c for t in parse_html(page).tables for r in t for c in r]
    assert "NaN" not in cells and "nan" not in cells and "—" in cells
    assert "NaN" not in page.rsplit("<script", 1)[1]  # the chart specs (the vega bundle itself says NaN)


def test_missing_columns_are_named(frames, tmp_path):
    summary, requests = frames
    with pytest.raises(ValueError, match="ttft_ms_p95"):
        render_report(summary.drop("ttft_ms_p95"), requests, tmp_path, title="x", run_info={})
    with pytest.raises(ValueError, match="queue_ms"):
        render_report(summary, requests.drop("queue_ms"), tmp_path, title="x", run_info={})


def test_mixed_length_cells_only(frames, tmp_path):
    """When every cell mixes output lengths, the throughput chart still renders (per-request panel)."""
    summary, requests = frames
    summary = summary.filter(pl.col("workload_id") == "chat-mixed")
    requests = requests.filter(pl.col("cell_id").is_in(summary["cell_id"].implode()))
    page = render_report(summary, requests, tmp_path, title="mixed", run_info={})["html"].read_text(encoding="utf-8")
    assert f'id="{CHART_IDS["throughput_by_length"]}"' in page
    assert "cannot be split by max_tokens" in page


def test_reports_does_not_import_flows_or_tasks():
    root = Path(__file__).resolve().parents[1] / "reports"
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import)\s+(flows|tasks)\b", text, re.M), path


def test_cells_to_read_with_care_are_noted(frames, tmp_path):
    summary, requests = frames
    cells = summary["cell_id"].to_list()
    slow, stopped = cells[1], cells[2]
    summary = summary.with_columns(
        client_kept_up=pl.when(pl.col("cell_id") == slow).then(False).otherwise(True),
        send_lateness_p99_ms=pl.when(pl.col("cell_id") == slow).then(7.25).otherwise(0.5),
        loop_lag_p99_ms=pl.lit(3.5),
        sweep_stop_reason=pl.when(pl.col("cell_id") == stopped).then(
            pl.lit("error rate 5/5 = 100% > stop_error_rate 0.1")
        ),
    )
    paths = render_report(summary, requests, tmp_path, title="t", run_info={})
    md = paths["markdown"].read_text(encoding="utf-8")
    notes = {(r[1], r[2]) for r in md_rows(section(md, "### Notes", "## Deployment"))} - {("Cell", "Note")}
    assert len(notes) == 2
    note = dict(notes)
    assert "did not keep up" in note[slow] and "7.25 ms" in note[slow] and "3.50 ms" in note[slow]
    assert note[stopped] == "the rate sweep stopped after this cell: error rate 5/5 = 100% > stop_error_rate 0.1"
    page = paths["html"].read_text(encoding="utf-8")
    assert 'id="notes"' in page and html.escape(note[stopped]) in page


def test_no_notes_section_when_every_cell_is_clean(rendered):
    _, page, md = rendered
    assert "### Notes" not in md and 'id="notes"' not in page


# ------------------------------------------------------------------ the report from the warehouse
# Known rows go through the real path: builders.stage -> store.load_run -> reports.render_run, which
# reads only the warehouse. Expected figures are worked out here from the rows as written.

EVIL = "<script>alert('x')</script>"
FAST_MS = [95.0, 100.0, 105.0, 110.0] * 5  # 20 requests of 10 tokens each
SLOW_MS = [2 * d for d in FAST_MS]
SAME_MS = list(reversed(FAST_MS))  # the same speeds in another order: no difference from "fast"
STEADY_MS = [100.0] * 19 + [130.0, 130.0] + [100.0] * 19  # a tail in mid-cell, like the rest in every other way


def _cell_requests(dep: str, durations_ms, *, tokens=10, model="m", start=0, cell=None):
    from tests.builders import record

    cell = cell or f"{dep}/c"
    out = []
    for i, dur in enumerate(durations_ms):
        toks = tokens[i] if isinstance(tokens, list) else tokens
        chunks = [dur * (k + 1) / toks for k in range(toks)]
        out.append(
            record(
                start + i,
                run_id="run-1",
                cell_id=cell,
                deployment_id=dep,
                model=model,
                tokens=toks,
                max_tokens=max(toks, 8),
                sent_ms=0.0,
                chunks_ms=chunks,
            )
        )
    return out


def _stage_known_run(tmp_path, warehouse, *, slow_ms=SLOW_MS, **run_extra):
    from tests.builders import cell_row, deployment_row, run_row, stage
    from warehouse import store

    tail_tokens = [10] * 40
    tail_tokens[20] = tail_tokens[31] = 60  # the two slowest: six times the output
    tail_ms = [100.0 * t / 10 for t in tail_tokens]
    records = (
        _cell_requests("fast", FAST_MS)
        + _cell_requests("slow", slow_ms)
        + _cell_requests("same", SAME_MS)
        + _cell_requests("tailed", tail_ms, tokens=tail_tokens, model="m2")
        + _cell_requests("steady", STEADY_MS, model="m3")
    )
    cells = [
        cell_row("fast/c", deployment_id="fast", wall_ms=1000.0),
        cell_row("slow/c", deployment_id="slow", wall_ms=2000.0 * sum(slow_ms) / sum(SLOW_MS)),
        cell_row("same/c", deployment_id="same", wall_ms=1000.0),
        cell_row("tailed/c", deployment_id="tailed", wall_ms=5000.0, model="m2"),
        cell_row("steady/c", deployment_id="steady", wall_ms=2000.0, model="m3"),
    ]
    deps = [deployment_row(deployment_id=d) for d in ("fast", "slow", "same", "tailed", "steady")]
    duo = [  # a co-located group: b starts second and fails first; a, started third, fails too
        {
            **deployment_row(deployment_id="duo"),
            "instance_id": "duo-c",
            "start_order": 0,
            "memory_share": 0.45,
            "memory_flag": "--mem-fraction-static 0.45",
        },
        {
            **deployment_row(deployment_id="duo", started=False, failure_class="oom"),
            "instance_id": "duo-b",
            "start_order": 1,
            "memory_share": 0.45,
            "memory_flag": "--mem-fraction-static 0.45",
            "failure_message": "CUDA out of memory " + EVIL,
            "log_excerpt": "loading model\n" + EVIL + "\nOOM at layer 3",
        },
        {
            **deployment_row(deployment_id="duo", started=False, failure_class="timeout"),
            "instance_id": "duo-a",
            "start_order": 2,
            "failure_message": "no health in 60 s",
        },
    ]
    run = {
        **run_row(ttft_ms=50.0),
        "host": "bench-01 " + EVIL,
        "gpu_name": "RTX 5090",
        "gpu_driver": "575.1",
        "gpu_memory_total_mib": 32607,
        "cuda_version": "12.8",
        "cpu_model": "AMD Ryzen 9 9950X",
        "cpu_count": 32,
        "memory_total_mib": 96 * 1024,
        "git_sha": "abc123",
        "bakeoff_version": "0.1.0",
        **run_extra,
    }
    keys = {k: None for d in deps + duo for k in d}  # Arrow takes a dict table's columns from its first row
    store.load_run(warehouse, stage(tmp_path, records, cells, run, [{**keys, **d} for d in deps + duo]))


@pytest.fixture
def known_report(tmp_path, warehouse):
    from reports import render_run

    _stage_known_run(tmp_path, warehouse)
    paths = render_run(warehouse, "run-1", tmp_path / "report")
    return paths["html"].read_text(encoding="utf-8"), paths["markdown"].read_text(encoding="utf-8")


def _mean_tps(durations_ms, tokens=10):
    return sum(tokens / (d / 1000) for d in durations_ms) / len(durations_ms)


def test_winner_with_ratio_and_interval(known_report):
    page, md = known_report
    ratio = (200 / 1.0) / (200 / 2.0)  # cells' output tok/s: 20 requests x 10 tokens in 1 s, and in 2 s
    verdicts = [
        line.replace("\\", "")
        for line in md.splitlines()  # Markdown's escapes of [ and ] dropped
        if line.startswith("- m · w · closed, concurrency 2: ")
    ]
    fast_slow = [v for v in verdicts if "fast is" in v and " slow [" in v]
    assert len(fast_slow) == 1, verdicts
    got = re.search(r"fast is ([0-9.]+)× slow \[([0-9.]+)–([0-9.]+)\] on output tokens/s$", fast_slow[0])
    assert got, fast_slow
    assert got.group(1) == f"{ratio:.2f}"
    assert 1.0 < float(got.group(2)) <= ratio <= float(got.group(3))
    assert "same is" in " ".join(verdicts) and " slow [" in " ".join(verdicts)  # "same" beats "slow" too
    row = next(r for r in md_rows(md) if r[:3] == ("m · w · closed, concurrency 2", "fast", "slow"))
    assert row[3] == "2.00×" and row[4] == f"{got.group(2)}–{got.group(3)}"
    assert "fast is" in html.unescape(page) and "no measurable difference" in page


def test_no_measurable_difference_names_no_winner(known_report):
    _, md = known_report
    verdicts = [line for line in md.splitlines() if line.startswith("- m · w")]
    pair = [v for v in verdicts if "fast" in v and "same" in v]
    assert len(pair) == 1 and "no measurable difference between" in pair[0] and "includes 1" in pair[0]
    assert " is " not in pair[0].split(":", 1)[1]  # no winner is named


def test_winner_flips_when_the_data_flips(tmp_path, warehouse):
    from reports import render_run

    _stage_known_run(tmp_path, warehouse, slow_ms=[d / 2 for d in FAST_MS])  # "slow" is now twice as fast
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    assert re.search(r"slow is 2\.00× fast \\\[", md) and not re.search(r"fast is [0-9.]+× slow", md)


def test_configuration_throughput_figures(known_report):
    _, md = known_report
    rows = {r[0]: r for r in md_rows(section(md, "## Throughput", "### Who wins")) if len(r) == 9}
    # cell: 200 tokens / 1 s; per request: mean and max of 10 tokens / duration; req/s 20 / 1 s
    assert rows["fast"][4:] == (
        expected_fmt(200.0),
        expected_fmt(_mean_tps(FAST_MS)),
        expected_fmt(10 / 0.095),
        expected_fmt(20.0),
        rows["fast"][8],
    )
    assert rows["slow"][4] == expected_fmt(100.0) and rows["slow"][7] == expected_fmt(10.0)
    # goodput: SLO TTFT <= 50 ms; a request's first token comes at duration / 10 (<= 22 ms): all meet it
    assert rows["fast"][8] == expected_fmt(20.0) and rows["tailed"][8] == expected_fmt(40 / 5.0)


def test_feasibility_names_the_first_failed_instance(known_report):
    page, md = known_report
    part = section(md, "## Feasibility", "## Throughput")
    assert "### duo · co-located (3 instances)" in part and "### fast · alone" in part
    assert "**started whole (1 instance)**" in part
    verdict = next(line for line in part.splitlines() if line.startswith("**did not start whole"))
    assert verdict.startswith(
        "**did not start whole: duo-b (start order 1) did not start first: oom: CUDA out of memory"
    )
    rows = {r[0]: r for r in md_rows(part)}
    assert rows["duo-b"][6:9] == (
        "no",
        "oom",
        "CUDA out of memory &lt;script>alert('x')&lt;/script> — loading model "
        "&lt;script>alert('x')&lt;/script> OOM at layer 3",
    )
    assert rows["duo-b"][4:6] == ("45%", "--mem-fraction-static 0.45") and rows["duo-c"][6] == "yes"
    assert rows["duo-a"][7] == "timeout"
    html_rows = {r[0]: r for r in parse_html(section(page, 'id="feasibility"', 'id="throughput"')).tables[0]}
    assert html_rows["duo-c"][6] == "yes"
    cells = {c for t in parse_html(page).tables for r in t for c in r}
    assert "CUDA out of memory " + EVIL + " — loading model\n" + EVIL + "\nOOM at layer 3" in cells


def test_warehouse_strings_are_escaped(known_report):
    page, md = known_report
    assert EVIL not in page and EVIL not in md
    assert "<script>alert" not in page and "<script" not in md
    assert page.count("<script") == 2  # the bundle and the embedding, nothing from the data
    assert html.escape(EVIL, quote=False) in page.replace("&#39;", "'")


def test_environment_section(known_report):
    _, md = known_report
    rows = dict(r for r in md_rows(section(md, "## Environment", "## Feasibility")) if len(r) == 2)
    assert rows["GPU"] == "RTX 5090, driver 575.1, 32,607 MiB, CUDA 12.8" and rows["git sha"] == "abc123"
    assert rows["CPU"] == "AMD Ryzen 9 9950X, 32 logical CPUs, 96.0 GiB memory"
    assert rows["Engine llamacpp"] == "llamacpp 0.3.36" and rows["SLOs"] == "TTFT ≤ 50 ms"
    assert rows["Validation"] == "no verdict recorded" and rows["Matrix"] == "test (m.yaml)"
    assert rows["Host"] == "bench-01 &lt;script>alert('x')&lt;/script>"


def test_stability_and_the_tail_explained(known_report):
    _, md = known_report
    part = section(md, "## Stability", "## Overview")
    rows = {r[0]: r for r in md_rows(part) if len(r) == 14}
    # E2E = last_token_at - sent_at = the duration; fast: min 95, max 110
    assert rows["fast"][7:9] == (expected_fmt(95.0), expected_fmt(110.0))
    mean = sum(FAST_MS) / 20
    sd = math.sqrt(sum((d - mean) ** 2 for d in FAST_MS) / 19)
    assert rows["fast"][10] == expected_fmt(sd / mean)
    tails = {line.split(" on ", 1)[0][2:]: line for line in part.splitlines() if line.startswith("- ")}
    assert "the slowest 5% (2 of 40 requests, from 600.0 ms" in tails["tailed"]
    assert "they generated longer outputs (median 60 tokens, the others 10)." in tails["tailed"]
    assert "too few requests (20)" in tails["fast"]  # one slowest request has nothing "in common"
    assert tails["steady"].split(": ", 2)[2].startswith("the data cannot explain them.")


# ------------------------------------------------------------------ co-location
# "solo" ran alone with 4 slots; "pair" ran two 4-slot instances together: pair-a at half solo's speed,
# pair-b at solo's speed; "one" ran alone with 1 slot (different flags: no twin for anybody).


def _stage_colocation(tmp_path, warehouse, *, a_ms=SLOW_MS, model="m", **run_extra):
    from dataclasses import replace as dc_replace

    from tests.builders import cell_row, deployment_row, run_row, stage
    from warehouse import store

    def inst(dep, iid, order, port, parallel):
        return {
            **deployment_row(deployment_id=dep),
            "instance_id": iid,
            "start_order": order,
            "model": model,
            "flags": ["--model", "/m.gguf", "--host", "127.0.0.1", "--port", str(port), "--parallel", str(parallel)],
        }

    def reqs(dep, iid, durations, start=0):
        return [
            dc_replace(r, instance_id=iid)
            for r in _cell_requests(dep, durations, start=start, cell=f"{iid}/c", model=model)
        ]

    records = (
        reqs("solo", "solo-0", FAST_MS)
        + reqs("pair", "pair-a", a_ms)
        + reqs("pair", "pair-b", SAME_MS)
        + reqs("one", "one-0", FAST_MS)
    )
    cells = [
        {**cell_row(f"{iid}/c", deployment_id=dep, wall_ms=1000.0, model=model), "instance_id": iid}
        for dep, iid in (("solo", "solo-0"), ("pair", "pair-a"), ("pair", "pair-b"), ("one", "one-0"))
    ]
    deps = [
        inst("solo", "solo-0", 0, 8001, 4),
        inst("pair", "pair-a", 0, 8002, 4),
        inst("pair", "pair-b", 1, 8003, 4),
        inst("one", "one-0", 0, 8004, 1),
    ]
    # TTFT SLO 15 ms: a request's first token comes at duration / 10, so solo's (9.5-11 ms) all meet it and
    # pair-a's (19-22 ms) none
    store.load_run(warehouse, stage(tmp_path, records, cells, {**run_row(ttft_ms=15.0), **run_extra}, deps))


def test_colocation_slowdown_against_the_alone_twin(tmp_path, warehouse):
    from reports import render_run

    _stage_colocation(tmp_path, warehouse)
    paths = render_run(warehouse, "run-1", tmp_path / "r")
    md, page = paths["markdown"].read_text(encoding="utf-8"), paths["html"].read_text(encoding="utf-8")
    part = section(md, "## Co-location", "## Recommendations")
    rows = {r[0]: r for r in md_rows(part) if len(r) == 10}
    assert set(rows) == {"Co-located instance", "pair-a", "pair-b"}  # "one" has 1 slot: no twin of anybody
    a = rows["pair-a"]
    assert a[1:3] == ("pair", "solo") and a[4] == "20 / 20"
    # every pair-a request took twice solo's: tok/s mean 0.50x, E2E P95 220 / 110, TTFT P95 22 / 11
    tps = re.fullmatch(r"([0-9.]+)× \[([0-9.]+)–([0-9.]+)\]", a[5])
    assert tps and tps.group(1) == f"{_mean_tps(SLOW_MS) / _mean_tps(FAST_MS):.2f}" == "0.50"
    assert float(tps.group(3)) < 1.0
    assert a[6].startswith("2.00× [") and a[7].startswith("2.00× [")
    assert a[8] == "0% / 100%"
    assert a[9].startswith("pair-a co-located runs at 0.50× the per-request tokens/s [")
    assert "2.00× the E2E P95" in a[9] and a[9].endswith("of solo alone")
    b = rows["pair-b"]  # the same speeds in another order
    assert b[5].startswith("1.00× [") and b[8] == "100% / 100%"
    assert b[9] == "pair-b co-located vs solo alone: no measurable difference (every interval includes 1)"
    assert "--port and --host" in part and 'id="colocation"' in page


def test_colocation_slowdown_flips_when_the_data_flips(tmp_path, warehouse):
    from reports import render_run

    _stage_colocation(tmp_path, warehouse, a_ms=[d / 2 for d in FAST_MS])  # pair-a now twice as fast as solo
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    a = next(r for r in md_rows(section(md, "## Co-location", "## Recommendations")) if r[0] == "pair-a")
    assert a[5].startswith("2.00× [") and a[6].startswith("0.50× [") and a[8] == "100% / 100%"


def test_comparable_flags_drop_port_host_and_memory():
    from reports.colocation import comparable_flags

    assert comparable_flags(["--host", "0.0.0.0", "--port", "9", "--parallel", "4", "--port=7"], None) == (
        "--parallel",
        "4",
    )
    assert comparable_flags(["--gpu-memory-utilization", "0.45", "--x"], "--gpu-memory-utilization 0.45") == ("--x",)


# ------------------------------------------------------------------ recommendations


def _recommendations(md: str) -> dict[tuple[str, str], tuple[str, ...]]:
    rows = md_rows(section(md, "## Recommendations", "## The deployment to copy"))
    return {(r[0], r[1]): r for r in rows if len(r) == 5 and r[0] != "Use case"}


def test_recommendation_not_enough_evidence_when_the_best_two_tie(known_report):
    _, md = known_report
    recs = _recommendations(md)
    tp = recs[("Highest throughput", "m · w · closed, concurrency 2")]
    # fast and same have the same durations in another order and the same wall time: a tie the rule cannot decide
    assert tp[3].startswith(
        f"fast {expected_fmt(200.0)} tok/s, runner-up same {expected_fmt(200.0)} tok/s: ratio 1.00× ["
    )
    assert tp[4] == "not enough evidence: the interval includes 1"
    assert recs[("Highest throughput", "m2 · w · closed, concurrency 2")][4] == (
        "not enough evidence: nothing to compare it with"
    )
    # duo (3 instances) did not start whole; every other group is alone
    assert recs[("Multi-model serving", "")][4] == "not enough evidence: no co-located group started whole"


def test_recommendation_flips_when_the_data_flips(tmp_path, warehouse):
    from reports import render_run

    _stage_known_run(tmp_path, warehouse, slow_ms=[d / 2 for d in FAST_MS])  # "slow" is now twice as fast
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    recs = _recommendations(md)
    shape = "m · w · closed, concurrency 2"
    tp = recs[("Highest throughput", shape)]
    assert tp[4] == "slow" and "runner-up fast" in tp[3] and "ratio 2.00× [" in tp[3]
    # half the durations: half the TTFT (first token at duration / 10) and half the E2E P95 (110 -> 55 ms)
    assert recs[("Lowest latency (first token)", shape)][4] == "slow"
    e2e = recs[("Lowest latency (under load)", shape)]
    assert e2e[4] == "slow" and e2e[3].startswith(f"slow {expected_fmt(55.0)} ms") and "ratio 0.50×" in e2e[3]
    # the CV does not change when every duration is halved: consistency stays undecided
    assert recs[("Latency consistency", shape)][4].startswith("not enough evidence")


def test_multi_model_rule():
    from reports.recommend import multi_model
    from reports.tables import Column, Table

    def group(dep, n, whole):
        from types import SimpleNamespace

        return SimpleNamespace(
            deployment_id=dep,
            started_whole=whole,
            instances=Table((Column("i", "i"),), tuple((str(i),) for i in range(n))),
        )

    assert multi_model([group("a", 1, True), group("pair", 2, True), group("trio", 3, False)]).verdict == "pair"
    assert multi_model([group("pair", 2, True), group("trio", 3, True)]).verdict == "trio"
    assert multi_model([group("p", 2, True), group("q", 2, True)]).verdict == "not enough evidence: a tie between p, q"


def test_shared_prefix_rule_reads_the_matrix_file(tmp_path, warehouse):
    from reports import render_run

    matrix = tmp_path / "matrix.yaml"
    matrix.write_text("name: t\nworkloads:\n  - id: w\n    kind: shared_prefix\n", encoding="utf-8")
    _stage_known_run(tmp_path, warehouse, slow_ms=[d / 2 for d in FAST_MS], matrix_path=str(matrix))
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    recs = _recommendations(md)
    assert recs[("Shared prefix", "m · w · closed, concurrency 2")][4] == "slow"
    assert ("Shared prefix", "m2 · w · closed, concurrency 2") in recs  # m2's workload is w too
    matrix.unlink()  # the file gone: the rule does not apply, nothing is guessed
    md = render_run(warehouse, "run-1", tmp_path / "r2")["markdown"].read_text(encoding="utf-8")
    assert not any(k[0] == "Shared prefix" for k in _recommendations(md))


# ------------------------------------------------------------------ the deployment to copy

PAIR_MATRIX = """name: t
engines:
  cpu: {kind: llamacpp, version: "0.3.36", launcher: docker, image: "ghcr.io/ggml-org/llama.cpp:server"}
models:
  m: {path: MODEL, served_name: m}
deployments:
  - id: solo
    instances: [{id: solo-0, engine: cpu, model: m, parallel: 4}]
  - id: pair
    instances: [{id: pair-a, engine: cpu, model: m, parallel: 4}, {id: pair-b, engine: cpu, model: m, parallel: 4}]
workloads:
  - {id: w, prompts: study}
"""


def test_deployment_to_copy_embeds_the_compose_file(tmp_path, warehouse):
    from reports import render_run
    from tasks.compose import compose_from_path

    (tmp_path / "m.gguf").write_bytes(b"")
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(PAIR_MATRIX.replace("MODEL", str(tmp_path / "m.gguf")), encoding="utf-8")
    _stage_colocation(tmp_path, warehouse, matrix_path=str(matrix))
    paths = render_run(warehouse, "run-1", tmp_path / "r", compose=compose_from_path)
    md, page = paths["markdown"].read_text(encoding="utf-8"), paths["html"].read_text(encoding="utf-8")
    part = section(md, "## The deployment to copy", "## Overview")
    assert "Group: **pair** (regenerated from" in part  # the only co-located group; it started whole
    expected = compose_from_path(str(matrix), "pair")
    assert "pair-b:" in expected and "condition: service_healthy" in expected
    assert f"```yaml\n{expected.rstrip()}\n```" in part
    assert f"bakeoff compose {matrix} pair --out compose.yaml" in part
    assert html.escape(expected.rstrip(), quote=False) in page.replace("&#39;", "'")
    matrix.unlink()  # gone: the command, and the reason there is no file
    md = render_run(warehouse, "run-1", tmp_path / "r2", compose=compose_from_path)["markdown"].read_text("utf-8")
    part = section(md, "## The deployment to copy", "## Overview")
    assert "```yaml" not in part and "is no longer there: the compose file cannot be regenerated" in part
    assert f"bakeoff compose {matrix} pair --out compose.yaml" in part


def test_deployment_to_copy_is_escaped_and_says_why_not(tmp_path, warehouse):
    from reports import render_run

    matrix = tmp_path / "matrix.yaml"
    matrix.write_text("name: t\n", encoding="utf-8")
    _stage_colocation(tmp_path, warehouse, matrix_path=str(matrix))
    paths = render_run(warehouse, "run-1", tmp_path / "r", compose=lambda path, dep: f"image: {EVIL}\n```\n{EVIL}")
    md, page = paths["markdown"].read_text(encoding="utf-8"), paths["html"].read_text(encoding="utf-8")
    assert EVIL not in page and page.count("<script") == 2
    assert f"````yaml\nimage: {EVIL}\n```\n{EVIL}\n````" in md  # a longer fence: the text cannot close it

    def broken(path, dep):
        raise ValueError("engines.cpu: a docker engine needs `image` or `build`")

    md = render_run(warehouse, "run-1", tmp_path / "r2", compose=broken)["markdown"].read_text(encoding="utf-8")
    assert "the compose file cannot be generated: engines.cpu: a docker engine needs \\`image\\`" in md


def test_no_deployment_to_copy_when_no_group_started_whole(known_report):
    _, md = known_report  # duo, the only co-located group there, did not start whole
    assert "no co-location group started whole: nothing to copy." in section(md, "## The deployment", "## Overview")


# ------------------------------------------------------------------ method


def test_method_workloads_overhead_and_cells_to_read_with_care(tmp_path, warehouse):
    from reports import render_run
    from tests.builders import cell_row, deployment_row, host_sample, run_row, stage
    from warehouse import store

    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        "name: t\nworkloads:\n  - {id: w, prompts: study, limit_prompts: 6, output_lengths: [32, 64], "
        "ignore_eos: true}\n",
        encoding="utf-8",
    )
    records = _cell_requests("fast", FAST_MS) + _cell_requests("lag", FAST_MS[:18])
    records += _cell_requests("lag", FAST_MS[:2], start=18)
    records[-1].status, records[-1].completion_tokens = "timeout", None  # one of lag's 20 failed
    cells = [
        {
            **cell_row("fast/c", deployment_id="fast", wall_ms=1000.0, planned=20),
            "warmup_requests": 4,
            "send_lateness_p50_ms": 0.25,
            "send_lateness_p99_ms": 0.75,
            "loop_lag_p99_ms": 1.5,
            "loop_lag_max_ms": 2.5,
            "client_kept_up": True,
            "cache_state": "reset",
        },
        {
            **cell_row("lag/c", deployment_id="lag", wall_ms=1000.0, planned=24),
            "warmup_requests": 4,
            "send_lateness_p50_ms": 3.0,
            "send_lateness_p99_ms": 41.5,
            "loop_lag_p99_ms": 12.5,
            "loop_lag_max_ms": 80.0,
            "client_kept_up": False,
            "cache_state": "reset_failed",
        },
    ]
    deps = [deployment_row(deployment_id=d) for d in ("fast", "lag")]
    # the machine during fast/c: the engine at 40% then 50% of it, the whole machine at 60% then 80%
    host = [
        host_sample(cell_id="fast/c", at_s=t, cpu=cpu, engine_cpu=engine, rss=rss * 2**20)
        for t, cpu, engine, rss in ((0.0, 60.0, 40.0, 100), (0.5, 80.0, 50.0, 200))
    ]
    staged = stage(tmp_path, records, cells, {**run_row(), "matrix_path": str(matrix)}, deps, host_samples=host)
    store.load_run(warehouse, staged)
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    part = section(md, "## Method", "## Overview")
    rows = md_rows(part)
    assert ("w", "prompts", "study", "6", "32, 64", "true", "2", "20–24", "4", "1") in rows
    assert ("w", "closed, concurrency 2", "2", "2") in rows
    # engine CPU mean 45%, everything else (60-40, 80-50) 25% mean and 30% max, engine RSS 200 MiB at most
    assert (
        "fast/c",
        "fast",
        "0.250",
        "0.750",
        "1.50",
        "2.50",
        "yes",
        "emptied",
        "45.00",
        "25.00",
        "30.00",
        "200.0",
    ) in rows
    assert ("lag/c", "lag", "3.00", "41.50", "12.50", "80.00", "no", "not emptied (reset failed)", *["—"] * 4) in rows
    care = {r[2] for r in rows if len(r) == 3 and r[0] == "lag/c"}
    assert care == {
        "the load generator did not keep up: its timings may be skewed (P99 send lateness 41.50 ms, "
        "P99 loop lag 12.50 ms)",
        "1 of 20 requests failed",
        "fewer requests recorded than planned (20 of 24 recorded)",
        "too few ok requests for its tail: P95 is (nearly) the slowest single request (19 ok, fewer than 20)",
        "the engine's prefix cache could not be emptied before it: earlier cells' prompts may be cached",
    }
    assert not any(r[0] == "fast/c" for r in rows if len(r) == 3)  # fast ran as planned, all ok, client kept up


# ------------------------------------------------------------------ nightly trend


def test_nightly_trend_flags_the_regression_on_the_right_night(tmp_path, warehouse):
    from datetime import timedelta

    from reports import render_run
    from tests.builders import T0, cell_row, deployment_row, record, run_row, stage
    from warehouse import store

    # five nights of "fast": the same 20 requests in 1 s (200 tok/s); night 5 takes twice as long (100 tok/s),
    # on a new engine version; flat history: MAD 0, so any move past 2% is flagged (detect_regressions)
    for n in range(1, 6):
        run_id, scale = f"run-{n}", 2.0 if n == 5 else 1.0
        records = [
            record(
                i,
                run_id=run_id,
                cell_id="fast/c",
                deployment_id="fast",
                chunks_ms=[d * scale * (k + 1) / 10 for k in range(10)],
                tokens=10,
                max_tokens=10,
            )
            for i, d in enumerate(FAST_MS)
        ]
        run = {**run_row(run_id), "started_at": (T0 + timedelta(days=n)).isoformat()}
        dep = {**deployment_row(run_id, deployment_id="fast"), "engine_version": "0.3.40" if n == 5 else "0.3.36"}
        store.load_run(
            warehouse,
            stage(
                tmp_path / f"n{n}",
                records,
                [cell_row("fast/c", run_id=run_id, deployment_id="fast", wall_ms=1000 * scale)],
                run,
                [dep],
            ),
        )
    # another matrix's night between them (nothing of "fast" measured): not a night of this trend
    other = {**run_row("run-other"), "started_at": (T0 + timedelta(days=2, hours=12)).isoformat()}
    store.load_run(
        warehouse,
        stage(
            tmp_path / "other",
            [record(0, run_id="run-other", cell_id="other/c", deployment_id="other")],
            [cell_row("other/c", run_id="run-other", deployment_id="other")],
            other,
            [deployment_row("run-other", deployment_id="other")],
        ),
    )
    md = render_run(warehouse, "run-5", tmp_path / "r", nights=14)["markdown"].read_text(encoding="utf-8")
    part = section(md, "## Nightly trend", "## Method")
    assert "run-other" not in part
    assert "- **fast** Output tok/s: regressed since 2026-11-06 (-50%)" in part
    assert "- **fast** E2E P95 ms: regressed since 2026-11-06 (+100%)" in part
    rows = {r[2]: r for r in md_rows(part) if len(r) == 9 and r[0] == "fast"}
    assert rows["Output tok/s"][3:] == (
        "200.0",
        "200.0",
        "200.0",
        "200.0",
        "100.0 ▼ regressed",
        "regressed since 2026-11-06 (-50%)",
    )
    versions = [r for r in md_rows(part) if len(r) == 4 and r[1].startswith("run-")]
    assert [v[2] for v in versions] == ["llamacpp 0.3.36"] * 4 + ["llamacpp 0.3.40"] and versions[4][3] == "changed"
    # re-rendered for night 4: that night ends the trend, nothing regressed yet
    md4 = render_run(warehouse, "run-4", tmp_path / "r4", nights=3)["markdown"].read_text(encoding="utf-8")
    part4 = section(md4, "## Nightly trend", "## Method")
    assert "No regression flagged on the latest night." in part4
    rows4 = {r[2]: r for r in md_rows(part4) if len(r) == 7 and r[0] == "fast"}
    assert rows4["Output tok/s"][3:] == ("200.0", "200.0", "200.0", "no verdict (too few earlier nights)")


def test_the_demo_pair_matches_the_four_slot_server_alone():
    from reports.colocation import comparable_flags
    from tasks.launch import instance_launch
    from tasks.matrix import load_matrix
    from tasks.plan import plan

    matrix, _ = load_matrix(Path(__file__).resolve().parents[1] / "configs" / "cpu-smoke.yaml")
    flags = {}
    for port, p in enumerate((p for g in plan(matrix) for p in g.instances), start=8000):
        # as a container: the same command line without needing the built llama-server binary
        launch = instance_launch(
            matrix, p, base_dir=Path("."), port=port, launcher="docker", images={p.engine_name: "image"}
        )
        flags[p.instance_id] = comparable_flags(launch.flags, " ".join(launch.memory_args) or None)
    assert flags["pair-a"] == flags["pair-b"] == flags["llamacpp-p4"] != flags["llamacpp-p1"]


def test_a_model_name_is_escaped_in_the_new_sections(tmp_path, warehouse):
    from reports import render_run

    _stage_colocation(tmp_path, warehouse, model=EVIL)
    paths = render_run(warehouse, "run-1", tmp_path / "r")
    md, page = paths["markdown"].read_text(encoding="utf-8"), paths["html"].read_text(encoding="utf-8")
    assert EVIL not in md and "<script" not in md and EVIL not in page and page.count("<script") == 2
    shape = "&lt;script>alert('x')&lt;/script> · w · closed, concurrency 2"
    assert any(r[0] == "pair-a" and r[3] == shape for r in md_rows(section(md, "## Co-location", "## Recommendations")))
    for start, end in (
        ('id="colocation"', 'id="recommendations"'),
        ('id="recommendations"', 'id="deployment"'),
        ('id="trend"', 'id="method"'),
    ):
        assert html.escape(EVIL, quote=False) in section(page, start, end).replace("&#39;", "'")


def _latency_rows(md: str) -> dict[tuple[str, str, str], tuple[str, ...]]:
    rows = md_rows(md.split("## Latency", 1)[1].split("\n## ", 1)[0])
    return {r[:3]: r for r in rows if len(r) == 11}


def test_latency_percentiles_with_intervals(known_report):
    import statistics

    page, md = known_report
    rows = _latency_rows(md)
    shape = "m · w · closed, concurrency 2"
    e2e = rows[("fast", shape, "E2E")]
    # 20 ok requests of 95/100/105/110 ms: the mean, P50 and P95 as the formula gives them
    assert e2e[3] == "20" and e2e[4] == expected_fmt(statistics.mean(FAST_MS))
    assert e2e[5] == expected_fmt(float(np.quantile(FAST_MS, 0.5))) and e2e[7] == expected_fmt(
        float(np.quantile(FAST_MS, 0.95))
    )
    low, high = (float(x) for x in e2e[6].split("–"))
    assert 95.0 <= low <= float(np.quantile(FAST_MS, 0.5)) <= high <= 110.0
    # 20 samples: enough for a P95, not for a P99, which says so beside its interval
    assert "near the slowest" not in e2e[8] and e2e[10].endswith("; under 100 samples: near the slowest")
    # TTFT is the first of 10 evenly spaced chunks: a tenth of the duration; the slow twin's is twice it
    assert rows[("fast", shape, "TTFT")][5] == expected_fmt(float(np.quantile([d / 10 for d in FAST_MS], 0.5)))
    assert rows[("slow", shape, "TTFT")][5] == expected_fmt(float(np.quantile([d / 5 for d in FAST_MS], 0.5)))
    itl = rows[("fast", shape, "ITL")]
    assert itl[3] == str(20 * 9) and itl[6] == "pooled gaps: none"  # 9 gaps per 10-chunk request
    # the ECDF is drawn; one load level per configuration: no latency-vs-load chart
    assert 'id="chart-latency-ecdf"' in page and 'id="chart-latency-vs-load"' not in page


def test_latency_against_load_where_a_configuration_ran_at_several(tmp_path, warehouse):
    from reports import render_run
    from tests.builders import cell_row, deployment_row, run_row, stage
    from warehouse import store

    records = _cell_requests("dep", FAST_MS, cell="dep/c2") + _cell_requests(
        "dep", SLOW_MS, cell="dep/c8", start=len(FAST_MS)
    )
    cells = [
        cell_row("dep/c2", deployment_id="dep", wall_ms=1000.0, concurrency=2),
        cell_row("dep/c8", deployment_id="dep", wall_ms=1000.0, concurrency=8),
    ]
    store.load_run(warehouse, stage(tmp_path, records, cells, run_row(), [deployment_row(deployment_id="dep")]))
    page = render_run(warehouse, "run-1", tmp_path / "r")["html"].read_text(encoding="utf-8")
    spec = json.loads(re.search(r"var specs = (\{.*?\});\n", page, re.S).group(1))["chart-latency-vs-load"]
    points = [v for panel in spec["hconcat"] for v in panel["data"]["values"]]
    e2e_p50 = {p["load"]: p["ms"] for p in points if p["metric"] == "E2E" and p["stat"] == "P50"}
    assert e2e_p50 == {2.0: float(np.quantile(FAST_MS, 0.5)), 8.0: float(np.quantile(SLOW_MS, 0.5))}


def test_configuration_flags_drop_bakeoff_plumbing():
    from reports.characteristics import configuration_flags

    argv = ["--model", "/m.gguf", "--alias", "s", "--host", "0.0.0.0", "--port=8001", "--ctx-size", "4096"]
    argv += ["--metrics", "--flash-attn", "--gpu-memory-utilization", "0.45", "--api-key", "x y"]
    assert configuration_flags(argv) == (
        "--ctx-size 4096",
        "--flash-attn",
        "--gpu-memory-utilization 0.45",
        "--api-key 'x y'",
    )
    assert configuration_flags(["serve", "org/model", "--port", "1"]) == ()  # vLLM's positionals are plumbing
    assert configuration_flags(None) == ()


def _characteristics(md: str) -> tuple[dict, dict]:
    part = section(md, "## Flags and characteristics", "## Recommendations")
    flag_part, char_part = part.split("_Per engine", 1)
    flags = {r[1]: r for r in md_rows(flag_part) if r[0] != "Group"}
    chars = {r[0]: r for r in md_rows(char_part) if r[0] != "Engine"}
    return flags, chars


def test_flags_and_characteristics_from_the_run(tmp_path, warehouse):
    from reports import render_run

    _stage_colocation(tmp_path, warehouse)
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    flags, chars = _characteristics(md)
    # every instance's command line without --model/--host/--port: the one flag each set
    assert flags["pair-a"][4] == "--parallel 4" and flags["one-0"][4] == "--parallel 1" and flags["one-0"][5] == "1"
    row = chars["llamacpp"]
    # solo, pair-b and one-0 all did 200 tok/s in their 1 s cells, pair-a (twice as slow) 100: the best is named
    assert row[1].startswith(f"{expected_fmt(200.0)} tok/s (")
    assert row[3] == "2 co-located, started whole"  # the pair group started both instances
    assert row[4] == "1–1 flags"
    assert row[5] == "requests failed 0% (0/80); instances down 0% (0/4)"
    assert row[6].startswith("1 night: requests failed 0% (0/80)")


def test_characteristics_flip_when_the_group_does_not_start_whole(known_report):
    _, md = known_report
    _, chars = _characteristics(md)
    row = chars["llamacpp"]
    assert row[3] == "no co-located group started whole"  # duo: two of its three instances failed
    assert row[5].endswith("instances down 25% (2/8)")


def _stage_night(tmp_path, warehouse, run_id: str, day: int, scales: dict[str, float], version: str = "0.3.36"):
    """One night: each deployment's 20 requests of FAST_MS x its scale, the cell's wall time scaled alike."""
    from datetime import timedelta

    from tests.builders import T0, cell_row, deployment_row, record, run_row, stage
    from warehouse import store

    records, cells, deps = [], [], []
    for dep, scale in scales.items():
        records += [
            record(
                i,
                run_id=run_id,
                cell_id=f"{dep}/c",
                deployment_id=dep,
                chunks_ms=[d * scale * (k + 1) / 10 for k in range(10)],
                tokens=10,
                max_tokens=10,
            )
            for i, d in enumerate(FAST_MS)
        ]
        cells.append(cell_row(f"{dep}/c", run_id=run_id, deployment_id=dep, wall_ms=1000 * scale))
        deps.append({**deployment_row(run_id, deployment_id=dep), "engine_version": version})
    run = {**run_row(run_id), "started_at": (T0 + timedelta(days=day)).isoformat()}
    store.load_run(warehouse, stage(tmp_path / run_id, records, cells, run, deps))


def test_baseline_sets_two_runs_side_by_side(tmp_path, warehouse):
    from reports import render_run

    _stage_night(tmp_path, warehouse, "before", 1, {"up": 1.0, "same": 1.0})
    # after the upgrade "up" takes half the time (twice the tok/s, half the latency), "same" is unchanged,
    # and "new" was not measured before
    _stage_night(tmp_path, warehouse, "after", 2, {"up": 0.5, "same": 1.0, "new": 1.0}, version="0.3.40")
    md = render_run(warehouse, "after", tmp_path / "r", baseline="before")["markdown"].read_text(encoding="utf-8")
    part = section(md, "## Against the baseline", "## Method")
    rows = {r[0]: r for r in md_rows(part) if r[0] != "Configuration"}
    assert set(rows) == {"up", "same"}
    up = rows["up"]
    assert up[2] == "0.3.40 / 0.3.36" and up[3] == "20 / 20"
    assert up[4].startswith("2.00× [") and up[5].startswith("0.50× [") and up[6].startswith("0.50× [")
    assert up[7].startswith("up against the baseline: output tok/s 2.00× [") and "(better)" in up[7]
    assert "(worse)" not in up[7]
    assert rows["same"][7] == "same: no measurable difference from the baseline"
    assert "Not in the baseline: new (m · w · closed, concurrency 2)" in part.replace("\\", "")
    # and the other way round, the same figures read as worse
    md = render_run(warehouse, "before", tmp_path / "r2", baseline="after")["markdown"].read_text(encoding="utf-8")
    rows = {r[0]: r for r in md_rows(section(md, "## Against the baseline", "## Method"))}
    assert rows["up"][4].startswith("0.50× [") and "(worse)" in rows["up"][7]


def test_report_without_baseline_has_no_baseline_section(known_report):
    page, md = known_report
    assert "## Against the baseline" not in md and 'id="baseline"' not in page


def test_a_tail_sent_into_a_crowd_is_explained_by_concurrency(tmp_path, warehouse):
    from reports import render_run
    from tests.builders import cell_row, deployment_row, record, run_row, stage
    from warehouse import store

    def req(i, sent, dur):
        return record(
            i,
            cell_id="crowd/c",
            deployment_id="crowd",
            sent_ms=sent,
            chunks_ms=[sent + dur * (k + 1) / 10 for k in range(10)],
            tokens=10,
            max_tokens=10,
        )

    # 38 requests alone in flight, one a second; mid-cell, six sent at once: two of them the slowest
    calm = [req(i, 1000.0 * i + (500.0 if i >= 19 else 0.0), 100.0) for i in range(38)]
    burst = [req(38 + j, 18_700.0, 300.0 if j < 2 else 100.0) for j in range(6)]
    cells = [cell_row("crowd/c", deployment_id="crowd", wall_ms=40_000.0)]
    store.load_run(warehouse, stage(tmp_path, calm + burst, cells, run_row(), [deployment_row(deployment_id="crowd")]))
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    tail = next(line for line in md.splitlines() if line.startswith("- crowd on ") and "the slowest 5%" in line)
    assert "they were sent while more requests were in flight (median 6, the others 1)" in tail
    assert "the data cannot explain" not in tail


def test_a_warm_cache_and_a_dropped_ignore_eos_are_read_with_care(tmp_path, warehouse):
    from dataclasses import replace as dc_replace

    from reports import render_run
    from tests.builders import cell_row, deployment_row, run_row, stage
    from warehouse import store

    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        "name: t\nworkloads:\n  - {id: w, prompts: study, ignore_eos: true}\n"
        "  - {id: sp, kind: shared_prefix, ignore_eos: false}\n",
        encoding="utf-8",
    )
    # "warm": 4 of each request's 5 prompt tokens cached, 3 replies of 10 short of max_tokens 16
    warm = [
        dc_replace(r, cached_prompt_tokens=4, max_tokens=16 if i < 3 else r.completion_tokens)
        for i, r in enumerate(_cell_requests("warm", FAST_MS[:10]))
    ]
    # "shared": the same, on a shared-prefix workload without ignore_eos: the point of the workload, no flag
    shared = [
        dc_replace(r, cached_prompt_tokens=4, max_tokens=16 if i < 3 else r.completion_tokens)
        for i, r in enumerate(_cell_requests("shared", FAST_MS[:10]))
    ]
    cells = [
        cell_row("warm/c", deployment_id="warm", wall_ms=1000.0),
        {**cell_row("shared/c", deployment_id="shared", wall_ms=1000.0), "workload_id": "sp"},
    ]
    deps = [deployment_row(deployment_id=d) for d in ("warm", "shared")]
    store.load_run(warehouse, stage(tmp_path, warm + shared, cells, {**run_row(), "matrix_path": str(matrix)}, deps))
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    rows = md_rows(section(md, "## Method", "## Overview"))
    care = {r[0]: set() for r in rows if len(r) == 3}
    for r in rows:
        if len(r) == 3:
            care[r[0]].add(r[2])
    assert care["warm/c"] == {
        "a warm prefix cache on a workload meant to be cold: TTFT and throughput read faster (80% of prompt tokens "
        "cached, above 50%)",
        "3 of 10 ok replies ended before max_tokens although ignore_eos was asked: the engine dropped it",
        "too few ok requests for its tail: P95 is (nearly) the slowest single request (10 ok, fewer than 20)",
    }
    # shared/c: a shared-prefix workload (its cache is the point) without ignore_eos: only its sample size
    assert care["shared/c"] == {
        "too few ok requests for its tail: P95 is (nearly) the slowest single request (10 ok, fewer than 20)"
    }


def test_a_verdict_on_cells_the_client_fell_behind_in_says_so(tmp_path, warehouse):
    from reports import render_run
    from tests.builders import cell_row, deployment_row, run_row, stage
    from warehouse import store

    records = _cell_requests("fast", FAST_MS) + _cell_requests("slow", SLOW_MS)
    cells = [
        {**cell_row("fast/c", deployment_id="fast", wall_ms=1000.0), "client_kept_up": True},
        {**cell_row("slow/c", deployment_id="slow", wall_ms=2000.0), "client_kept_up": False},
    ]
    deps = [deployment_row(deployment_id=d) for d in ("fast", "slow")]
    store.load_run(warehouse, stage(tmp_path, records, cells, run_row(), deps))
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8").replace("\\", "")
    winner = next(line for line in md.splitlines() if line.startswith("- m · w · closed, concurrency 2: fast is"))
    assert winner.endswith("on output tokens/s; read with care: the load generator did not keep up measuring slow")
    recs = [line for line in md.splitlines() if line.startswith("- **Highest throughput**")]
    assert recs == [
        "- **Highest throughput** (m · w · closed, concurrency 2): fast (read with care: the load generator did "
        "not keep up measuring slow)"
    ]


def test_key_metrics_file_names_each_configuration_and_its_wins(tmp_path, warehouse):
    from reports import render_run

    _stage_known_run(tmp_path, warehouse)
    paths = render_run(warehouse, "run-1", tmp_path / "r")
    rows = {r["Configuration"]: r for r in json.loads(paths["key_metrics"].read_text(encoding="utf-8"))}
    assert {"fast", "slow", "same", "tailed", "steady"} <= set(rows)
    assert rows["fast"]["Cell output tok/s"] == expected_fmt(200.0)
    assert rows["fast"]["E2E P95 (ms)"] == expected_fmt(float(np.quantile(FAST_MS, 0.95)))
    assert rows["fast"]["Wins"].startswith("fast is 2.00× slow [") and rows["slow"]["Wins"] == "—"


def test_a_cell_measured_on_a_busy_machine_is_read_with_care(tmp_path, warehouse):
    from reports import render_run
    from tests.builders import cell_row, deployment_row, host_sample, run_row, stage
    from warehouse import store

    samples = [
        {**host_sample(cell_id="busy/c", cpu=90.0), "instance_id": "busy-0", "engine_cpu_pct": 40.0},
        {**host_sample(cell_id="calm/c", cpu=45.0), "instance_id": "calm-0", "engine_cpu_pct": 40.0},
    ]
    records = _cell_requests("busy", FAST_MS) + _cell_requests("calm", FAST_MS)
    cells = [cell_row(f"{d}/c", deployment_id=d, wall_ms=1000.0) for d in ("busy", "calm")]
    deps = [deployment_row(deployment_id=d) for d in ("busy", "calm")]
    store.load_run(warehouse, stage(tmp_path, records, cells, run_row(), deps, host_samples=samples))
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    care = {r[0]: r[2] for r in md_rows(section(md, "## Method", "## Overview")) if len(r) == 3 and r[0] != "Cell"}
    assert care == {
        "busy/c": "the machine was busy with other work while it measured (everything but the engines used 50% of "
        "the machine's CPU on average, above 25%; the engines 40.00%)"
    }


def test_steal_time_and_a_short_token_count_are_read_with_care(tmp_path, warehouse):
    """Two guards from known rows: a VM whose hypervisor took 15% of its CPU during a cell (steal, from
    host_samples), and a server whose usage counts fewer tokens than it streamed content chunks."""
    from reports import render_run
    from tests.builders import cell_row, deployment_row, host_sample, run_row, stage
    from warehouse import store

    samples = [
        {**host_sample(cell_id="stolen/c", at_s=t, cpu=50.0, engine_cpu=45.0), "steal_pct": steal}
        for t, steal in ((0.0, 10.0), (0.5, 20.0))
    ] + [{**host_sample(cell_id="calm/c", cpu=50.0, engine_cpu=45.0), "steal_pct": 1.0}]
    records = _cell_requests("stolen", FAST_MS) + _cell_requests("calm", FAST_MS)
    for r in records[-3:]:  # three of calm's replies: 10 content chunks, usage says 8
        r.completion_tokens = 8
    cells = [cell_row(f"{d}/c", deployment_id=d, wall_ms=1000.0) for d in ("stolen", "calm")]
    deps = [deployment_row(deployment_id=d) for d in ("stolen", "calm")]
    store.load_run(warehouse, stage(tmp_path, records, cells, run_row(), deps, host_samples=samples))
    (steal, short), *_ = warehouse.execute(
        "SELECT steal_pct_mean, usage_short FROM v_cells WHERE cell_id = 'stolen/c'"
    ).fetchall()
    assert (steal, short) == (15.0, 0)
    assert warehouse.execute("SELECT usage_short FROM v_cells WHERE cell_id = 'calm/c'").fetchone() == (3,)
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    care: dict[str, set[str]] = {}
    for r in md_rows(section(md, "## Method", "## Overview")):
        if len(r) == 3 and r[0] != "Cell":
            care.setdefault(r[0], set()).add(r[2])
    assert care == {
        "stolen/c": {
            "the hypervisor gave this VM's CPU to others while it measured (steal time) (15.0% of the machine on "
            "average, above 5%)"
        },
        "calm/c": {
            "3 of 20 ok replies streamed more content chunks than their usage's completion_tokens: the server's "
            "token count is short, and so every per-token figure"
        },
    }


def test_a_closed_loop_in_lock_step_is_read_with_care(tmp_path, warehouse):
    """Sends in waves of the concurrency (16 requests as 4 waves of 4, each wave within a millisecond), as a
    closed loop of like requests runs on a server that ends them together: read with care. The same
    requests sent apart are not."""
    from reports import render_run
    from tests.builders import cell_row, deployment_row, record, run_row, stage
    from warehouse import store

    def requests(cell: str, sent_ms) -> list:
        return [
            record(i, cell_id=cell, deployment_id=cell.split("/")[0], sent_ms=t, chunks_ms=(t + 40, t + 60, t + 80))
            for i, t in enumerate(sent_ms)
        ]

    waves = [500.0 * w + 0.1 * k for w in range(4) for k in range(4)]
    records = requests("waves/c", waves) + requests("spread/c", [37.0 * i for i in range(16)])
    cells = [cell_row(f"{d}/c", deployment_id=d, wall_ms=2000.0, concurrency=4) for d in ("waves", "spread")]
    deps = [deployment_row(deployment_id=d) for d in ("waves", "spread")]
    store.load_run(warehouse, stage(tmp_path, records, cells, run_row(), deps))
    got = {
        r[0]: r[1:] for r in warehouse.execute("SELECT cell_id, lockstep_waves, lockstep_share FROM v_cells").fetchall()
    }
    assert got == {"waves/c": (4, 1.0), "spread/c": (0, 0.0)}
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    care: dict[str, set[str]] = {}
    for r in md_rows(section(md, "## Method", "## Overview")):
        if len(r) == 3 and r[0] != "Cell":
            care.setdefault(r[0], set()).add(r[2])
    lockstep = [r for r in care.get("waves/c", ()) if r.startswith("the closed loop ran in lock-step")]
    assert lockstep == [
        "the closed loop ran in lock-step: its TTFT and TPOT are a synchronised burst's (prompts prefilled "
        "together, replies decoded together); E2E and throughput stand (100% of its requests sent in 4 waves of "
        "4; an open loop or mixed lengths spread them)"
    ]
    assert not any(r.startswith("the closed loop ran in lock-step") for r in care.get("spread/c", ()))


def test_a_full_disk_leaves_no_truncated_report(tmp_path, warehouse):
    """A real full disk: a 256 KiB tmpfs (root only) holds the charts' PNGs but not the whole report. The
    render fails with ENOSPC, and no report.html or report.md that looks like a report is left."""
    import errno

    from reports import render_run
    from tests.builders import tmpfs

    _stage_known_run(tmp_path, warehouse)
    with tmpfs(tmp_path / "tiny", "size=256k") as tiny:
        with pytest.raises(OSError) as err:
            render_run(warehouse, "run-1", tiny / "report")
        assert err.value.errno == errno.ENOSPC
        for name in ("report.html", "report.md", "key_metrics.json"):
            assert not (tiny / "report" / name).exists()
        assert not list((tiny / "report").rglob(".*.tmp"))


def test_the_gpu_energy_per_output_token_is_shown_where_power_was_sampled(tmp_path, warehouse):
    from reports import render_run
    from tests.builders import cell_row, deployment_row, gpu_sample, run_row, stage
    from warehouse import store

    records = _cell_requests("gpu", FAST_MS) + _cell_requests("cpu", FAST_MS)  # 20 requests of 10 tokens each
    cells = [cell_row(f"{d}/c", deployment_id=d, wall_ms=1000.0) for d in ("gpu", "cpu")]
    deps = [deployment_row(deployment_id=d) for d in ("gpu", "cpu")]
    samples = [gpu_sample(cell_id="gpu/c", power_w=p, at_s=k) for k, p in enumerate((300.0, 500.0))]
    store.load_run(warehouse, stage(tmp_path, records, cells, run_row(), deps, gpu_samples=samples))
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    part = section(md, "## Throughput", "### Who wins")
    header = next(r for r in md_rows(part) if r[0] == "Configuration")
    energy = header.index("GPU J / output token")
    values = {r[0]: r[energy] for r in md_rows(part) if r[0] in ("gpu", "cpu")}
    assert values == {"gpu": "2.00", "cpu": "—"}  # 400 W for 1 s over 200 tokens; nothing sampled


def test_without_gpu_power_the_report_says_energy_was_not_measured(tmp_path, warehouse):
    from reports import render_run
    from tests.builders import cell_row, deployment_row, run_row, stage
    from warehouse import store

    store.load_run(
        warehouse,
        stage(
            tmp_path,
            _cell_requests("cpu", FAST_MS),
            [cell_row("cpu/c", deployment_id="cpu")],
            run_row(),
            [deployment_row(deployment_id="cpu")],
        ),
    )
    md = render_run(warehouse, "run-1", tmp_path / "r")["markdown"].read_text(encoding="utf-8")
    part = section(md, "## Throughput", "### Who wins")
    assert "energy per token not measured" in part and "GPU J / output token" not in part


@pytest.mark.parametrize(
    ("stop_signal", "delay_s"),
    [("SIGKILL", 0.0), ("SIGKILL", 0.2), ("SIGKILL", 0.5), ("SIGTERM", 0.2), ("SIGINT", 0.2)],
)
def test_a_report_killed_while_it_renders_leaves_no_truncated_file(tmp_path, warehouse_path, stop_signal, delay_s):
    """SIGKILL of a real `bakeoff report` at three points of its render (counted from its first file
    written), and SIGTERM and Ctrl-C: every report file there is whole (each is written to a temporary
    name and renamed), a stopped (not killed) render leaves no temporary file and says so in one line,
    and the next render completes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from warehouse import store

    con = store.connect(warehouse_path)
    _stage_known_run(tmp_path, con)
    con.close()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "flows.cli", "report", "--run", "run-1", "--out", str(out)]
    cmd += ["--warehouse", str(warehouse_path)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and not (out.exists() and any(out.rglob("*"))):
        time.sleep(0.02)  # the render has begun once its first file (or temporary file) is there
    time.sleep(delay_s)
    proc.send_signal(getattr(signal, stop_signal))  # (a fast machine may be done by then: whole files too)
    _, err = proc.communicate(timeout=120)
    if stop_signal != "SIGKILL" and proc.returncode != 0:
        assert not list(out.rglob("*.tmp")), "a stopped render removes its temporary file"
        assert proc.returncode == {"SIGTERM": 143, "SIGINT": 130}[stop_signal], err
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("bakeoff: "), err
    html, md = out / "report.html", out / "report.md"
    if html.exists():
        assert html.read_text(encoding="utf-8").rstrip().endswith("</html>")
    if md.exists():
        assert "## Metric definitions" in md.read_text(encoding="utf-8")
    for chart in (out / "charts").glob("*.png") if (out / "charts").exists() else ():
        assert chart.read_bytes().startswith(b"\x89PNG") and chart.read_bytes()[-8:-4] == b"IEND"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert html.read_text(encoding="utf-8").rstrip().endswith("</html>")
