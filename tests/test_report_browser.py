"""Open the rendered report in headless Chromium and check that every chart really renders (offline).

Needs Debian's ``chromium`` package (``apt-get install -y chromium``). Without it the test is
skipped, unless ``BAKEOFF_REQUIRE_BROWSER=1`` is set (CI), in which case it fails (the
``chromium`` fixture of conftest.py).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import pytest

from reports import render_report
from reports.charts import CHART_IDS
from reports.latency import CHART_IDS as LATENCY_CHART_IDS
from tests.test_report import RUN_INFO, make_frames

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--virtual-time-budget=10000",
)


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-3000:]}"
    return proc


class _ChartDom(HTMLParser):
    """For each chart div: the tags and classes found inside it, and its text."""

    VOID: ClassVar[set[str]] = {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    }

    def __init__(self, ids: set[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.ids = ids
        self.stack: list[tuple[str, str | None]] = []  # (tag, chart id that this tag opens)
        self.current: str | None = None
        self.found: dict[str, dict] = {}
        self.error_nodes = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if "chart-error" in classes:
            self.error_nodes += 1
        opens = None
        if self.current is None and a.get("id") in self.ids:
            opens = self.current = a["id"]
            self.found[opens] = {"tags": [], "classes": [], "text": []}
        elif self.current is not None:
            self.found[self.current]["tags"].append(tag)
            self.found[self.current]["classes"] += classes
        if tag not in self.VOID:
            self.stack.append((tag, opens))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        while self.stack:
            open_tag, opens = self.stack.pop()
            if opens is not None:
                self.current = None
            if open_tag == tag:
                break

    def handle_data(self, data):
        if self.current is not None:
            self.found[self.current]["text"].append(data)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_report_renders_in_headless_chromium(chromium, tmp_path):
    binary = chromium
    summary, requests = make_frames()
    out = tmp_path / "report"
    paths = render_report(summary, requests, out, title="Browser check", run_info=RUN_INFO)
    url = paths["html"].resolve().as_uri()

    dom = _run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url).stdout
    assert "Metric definitions" in dom, "page did not load"
    visible = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S | re.I)
    assert "Chart failed to render" not in visible
    assert "embedded Vega JavaScript did not load" not in visible

    parser = _ChartDom(set(CHART_IDS.values()))
    parser.feed(dom)
    assert parser.error_nodes == 0
    assert set(parser.found) == set(CHART_IDS.values()), "chart divs missing from the page"
    for div_id, seen in parser.found.items():
        assert "svg" in seen["tags"], f"{div_id}: no <svg> rendered"
        assert "marks" in seen["classes"], f"{div_id}: svg has no class 'marks'"
        mark_groups = [c for c in seen["classes"] if c.startswith("mark-")]
        assert any(c in mark_groups for c in ("mark-rect", "mark-rule", "mark-symbol")), f"{div_id}: {mark_groups}"
        assert seen["tags"].count("path") >= 10, f"{div_id}: too few drawn paths"
        text = " ".join(seen["text"])
        assert "error" not in text.lower(), f"{div_id}: {text[:300]}"

    shot = tmp_path / "report.png"
    _run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2400", url)
    assert shot.is_file()
    assert _png_size(shot) == (1280, 2400)
    assert shot.stat().st_size > 60_000, "screenshot is (nearly) blank"
    keep = os.environ.get("BAKEOFF_REPORT_SCREENSHOT")
    if keep:  # to look at it: BAKEOFF_REPORT_SCREENSHOT=/tmp/report.png pytest -m browser
        shutil.copyfile(shot, keep)


def test_warehouse_report_renders_in_headless_chromium(chromium, tmp_path, warehouse):
    """The full report (render_run, every section) from staged and loaded rows: it loads, every chart draws."""
    from reports import render_run
    from tests.test_report import _stage_known_run

    _stage_known_run(tmp_path, warehouse)
    url = render_run(warehouse, "run-1", tmp_path / "report")["html"].resolve().as_uri()
    proc = _run_chromium(chromium, tmp_path / "profile-dom", "--enable-logging=stderr", "--v=0", "--dump-dom", url)
    dom = proc.stdout
    # the page's console: Chromium logs every message (console.error, an uncaught exception, a Vega warning)
    # as ":CONSOLE:" on stderr, without its level; a clean page logs none
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    visible = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S | re.I)
    assert "Metric definitions" in visible and 'id="feasibility"' in visible and 'id="stability"' in visible
    assert "Chart failed to render" not in visible and "embedded Vega JavaScript did not load" not in visible
    # every chart the page holds (each section's own and the Charts section's), found by its div
    ids = set(re.findall(r'<div class="chart[^"]*" id="([^"]+)"', visible))
    assert ids >= set(LATENCY_CHART_IDS.values()) - {LATENCY_CHART_IDS["vs_load"]}  # one load level: no curve
    parser = _ChartDom(ids)
    parser.feed(dom)
    assert parser.error_nodes == 0 and set(parser.found) == ids
    # the sections' own charts (throughput, latency ECDF) are on the page beside the Charts section's
    assert {LATENCY_CHART_IDS["ecdf"], LATENCY_CHART_IDS["throughput"]} <= set(parser.found), parser.found.keys()
    for div_id, seen in parser.found.items():
        assert "svg" in seen["tags"] and "marks" in seen["classes"], f"{div_id}: nothing drawn"
        assert seen["tags"].count("path") >= 5, f"{div_id}: an empty chart"
