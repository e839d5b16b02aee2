"""The cell validity guards provoked for real on llama-server (SmolLM2), each through a small night
(tasks.night.bench_group -> stage -> load -> report) and read in the report's "read with care" table:
a warm prefix cache on a cold workload, replies that ended at EOS although ignore_eos was asked, a
machine made busy by a competing process, and a cell with too few requests for its tail."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pytest
import yaml

from reports import render_run
from tasks import deploy
from tasks.matrix import load_matrix
from tasks.night import bench_group
from tasks.plan import plan
from tasks.records import records_to_arrow
from tasks.runs import Collected
from tests.builders import cpu_engine_matrix
from tests.test_report import md_rows, section
from warehouse import store

pytestmark = pytest.mark.engine

STUDY = Path(__file__).resolve().parent.parent / "tasks" / "data" / "prompts_study.yaml"


@pytest.fixture(scope="module")
def server(tmp_path_factory, llama_server, smollm2):
    """One llama-server (2 slots) that the external-kind nights point at: bakeoff neither starts nor
    resets it, so it keeps its prompt cache between cells (llama-server's default, cache_prompt on)."""
    tmp = tmp_path_factory.mktemp("guards-server")
    path = tmp / "matrix.yaml"
    matrix = cpu_engine_matrix("guards-server", llama_server, smollm2, workloads=[{"id": "w", "limit_prompts": 1}])
    matrix["deployments"][0]["instances"][0]["context_length"] = 1024
    path.write_text(yaml.safe_dump(matrix))
    matrix, _ = load_matrix(path)
    (group,) = plan(matrix)
    handle = deploy.launch_instance(
        matrix, group.instances[0], start_order=0, run_id="s", run_dir=tmp / "run", base_dir=tmp
    )
    try:
        assert handle.started, handle.row.log_excerpt
        yield handle.target.base_url
    finally:
        handle.stop()


def external_matrix(name: str, url: str, smollm2: Path, workloads: list[dict], repeats: int = 1, **load) -> dict:
    return {
        "repeats": repeats,
        "name": name,
        "engines": {"ext": {"kind": "external", "version": "llama-server", "url": url, "accepts": ["ignore_eos"]}},
        "models": {"smollm2": {"path": str(smollm2), "served_name": "smollm2"}},
        "deployments": [{"id": "ext", "instances": [{"engine": "ext", "model": "smollm2"}]}],
        "workloads": workloads,
        "load": {"concurrency": [1], "warmup_requests": 1, "request_timeout_s": 120, **load},
    }


def night(tmp: Path, matrix: dict, run_id: str = "run-1") -> tuple[str, dict[str, dict], duckdb.DuckDBPyConnection]:
    """Runs the matrix as a night does (each group deployed, its cells measured, then stopped), loads it
    and renders its report. Returns the report's Markdown, v_cells by cell id, and the warehouse."""
    path = tmp / "matrix.yaml"
    path.write_text(yaml.safe_dump(matrix))
    m, _ = load_matrix(path)
    got = Collected()
    for g_i, group in enumerate(plan(m), 1):
        got.merge(
            bench_group(m, group, run_id=run_id, run_dir=tmp / "run", base_dir=tmp, images={}, where=f"group {g_i}")
        )
    run = {
        "run_id": run_id,
        "matrix_name": matrix["name"],
        "matrix_path": str(path),
        "matrix_sha256": "0" * 64,
        "started_at": "2026-12-03T00:00:00+00:00",
        "status": "completed",
    }
    staged = store.stage_run(
        tmp / "staged",
        run,
        got.deployments,
        got.cells,
        records_to_arrow(got.records),
        gpu_samples=got.gpu_samples,
        host_samples=got.host_samples,
    )
    con = store.connect(tmp / "wh.duckdb")
    store.load_run(con, staged.run_dir)
    cur = con.execute("SELECT * FROM v_cells")
    names = [d[0] for d in cur.description]
    cells = {r["cell_id"]: r for r in (dict(zip(names, row, strict=True)) for row in cur.fetchall())}
    md = render_run(con, run_id, tmp / "report")["markdown"].read_text(encoding="utf-8")
    return md, cells, con


def care(md: str) -> dict[str, set[str]]:
    """The report's "read with care" table: cell id -> its reasons."""
    out: dict[str, set[str]] = {}
    for r in md_rows(section(md, "## Method", "## Overview")):
        if len(r) == 3 and r[0] != "Cell":
            out.setdefault(r[0], set()).add(r[2])
    return out


def long_prompts(tmp: Path, n: int) -> Path:
    """The study's long prompts (120-300 words each, p31-p40): a chat template's shared head is a small
    share of them, so a cold pass reads little from the cache."""
    data = yaml.safe_load(STUDY.read_text())
    path = tmp / "long.yaml"
    path.write_text(yaml.safe_dump({"name": "long", "prompts": data["prompts"][30 : 30 + n]}))
    return path


def test_a_warm_prefix_cache_on_a_cold_workload_is_read_with_care(tmp_path, server, smollm2):
    """The same cold `prompts` workload twice (repeats 2) through an external engine, which sends no
    cache_prompt: false: the second pass reads its prompts from llama-server's cache."""
    prompts = long_prompts(tmp_path, 3)
    matrix = external_matrix(
        "warm-cache",
        server,
        smollm2,
        [{"id": "cold", "prompts": str(prompts), "output_lengths": [4]}],
        repeats=2,
    )
    md, cells, _ = night(tmp_path, matrix)
    first, second = cells["ext-0.cold.c1.r0"], cells["ext-0.cold.c1.r1"]
    print(f"prefix hit share: first pass {first['prefix_hit_share']:.3f}, second {second['prefix_hit_share']:.3f}")
    assert first["prefix_hit_share"] is not None and first["prefix_hit_share"] <= 0.5
    assert second["prefix_hit_share"] > 0.9
    assert {first["cache_state"], second["cache_state"]} == {"not_reset"}, "an external engine without cache_reset"
    reasons = care(md)
    (warm,) = (r for r in reasons["ext-0.cold.c1.r1"] if r.startswith("a warm prefix cache"))
    assert f"({second['prefix_hit_share']:.0%} of prompt tokens cached, above 50%)" in warm
    assert not any(r.startswith("a warm prefix cache") for r in reasons.get("ext-0.cold.c1.r0", ()))


class _DropsIgnoreEos(BaseHTTPRequestHandler):
    """A proxy in front of llama-server that forwards every request without ignore_eos: an engine that
    silently drops a field it was said to accept (what an external server does with a field it lacks)."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int]

    def log_message(self, *args) -> None:
        pass

    def _forward(self, body: bytes | None) -> None:
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        conn.request(self.command, self.path, body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.getheader("Content-Type") or "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while chunk := resp.read1(65536):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        conn.close()

    def do_GET(self) -> None:
        self._forward(None)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body.pop("ignore_eos", None)
        self._forward(json.dumps(body).encode())


@pytest.fixture
def dropping_proxy(server):
    parts = urlsplit(server)
    handler = type("Handler", (_DropsIgnoreEos,), {"upstream": (parts.hostname, parts.port)})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


SHORT_ANSWERS = {
    "name": "short",
    "prompts": [
        {"id": f"s{i}", "text": text}
        for i, text in enumerate(
            (
                "Reply with the single word yes.",
                "What is two plus two? Answer with the number only.",
                "Name the colour of a clear daytime sky in one word.",
                "Say hello.",
            )
        )
    ],
}


def test_replies_that_stop_at_eos_although_ignore_eos_was_asked_are_read_with_care(tmp_path, dropping_proxy, smollm2):
    """An external engine said to accept ignore_eos that drops it (llama-server behind a proxy that removes
    the field): short questions end at EOS long before max_tokens, and the report says the engine dropped it."""
    prompts = tmp_path / "short.yaml"
    prompts.write_text(yaml.safe_dump(SHORT_ANSWERS))
    matrix = external_matrix(
        "dropped-ignore-eos",
        dropping_proxy,
        smollm2,
        [{"id": "asked", "prompts": str(prompts), "output_lengths": [48], "ignore_eos": True}],
    )
    md, cells, con = night(tmp_path, matrix)
    cell = cells["ext-0.asked.c1.r0"]
    tokens = [t for (t,) in con.execute("SELECT completion_tokens FROM requests ORDER BY request_id").fetchall()]
    print(f"ended_early {cell['ended_early']} of {cell['ok']} ok; completion_tokens {tokens} (max_tokens 48)")
    assert cell["ok"] == 4 and cell["ended_early"] >= 2  # 3 here (6, 24, 37 of 48 tokens; one ran to 48)
    assert (
        f"{cell['ended_early']} of 4 ok replies ended before max_tokens although ignore_eos was asked: the engine "
        "dropped it"
    ) in care(md)["ext-0.asked.c1.r0"]


def _spin(until: float) -> None:
    while time.monotonic() < until:
        pass


def test_a_cell_measured_beside_a_competing_process_is_read_with_care(tmp_path, llama_server, smollm2):
    """A CPU spinner started by the test runs through the cell: the CPU of everything but the engine (from
    /proc, per sample) shows it, and the report names the cell."""
    matrix = cpu_engine_matrix(
        "busy-machine",
        llama_server,
        smollm2,
        workloads=[{"id": "w", "limit_prompts": 3, "output_lengths": [24]}],
        load={"concurrency": [1], "warmup_requests": 1, "request_timeout_s": 120},
    )
    spinner = multiprocessing.get_context("spawn").Process(target=_spin, args=(time.monotonic() + 600,), daemon=True)
    spinner.start()
    try:
        md, cells, _ = night(tmp_path, matrix)
    finally:
        spinner.kill()
        spinner.join(10)
    cell = cells["cpu-0.w.c1.r0"]
    print(
        f"other CPU {cell['other_cpu_pct_mean']:.1f}% mean, {cell['other_cpu_pct_max']:.1f}% max; engine {cell['engine_cpu_pct_mean']:.1f}%"
    )
    assert cell["other_cpu_pct_mean"] > 25
    assert cell["cache_state"] == "not_cached", "llama-server's cold workload is sent with cache_prompt off"
    (busy,) = (r for r in care(md)["cpu-0.w.c1.r0"] if r.startswith("the machine was busy"))
    assert f"everything but the engines used {cell['other_cpu_pct_mean']:.0f}% of the machine's CPU" in busy


def test_a_cell_with_too_few_requests_for_its_tail_is_read_with_care(tmp_path, server, smollm2):
    matrix = external_matrix(
        "few", server, smollm2, [{"id": "w", "limit_prompts": 3, "output_lengths": [4]}], warmup_requests=0
    )
    md, cells, _ = night(tmp_path, matrix)
    assert cells["ext-0.w.c1.r0"]["ok"] == 3
    assert (
        "too few ok requests for its tail: P95 is (nearly) the slowest single request (3 ok, fewer than 20)"
        in care(md)["ext-0.w.c1.r0"]
    )
