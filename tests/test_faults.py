"""Faults provoked for real, one test each (docs/reliability.md has the table): an engine killed or
hung in the middle of a cell, a port already taken, a health endpoint that never turns healthy or
does only after a while, and a cell that outlives its deadline. Each ends as rows with the right
status, the cell and the group go on, and no engine process is left.

The engines are real where a real one can be made to fail on demand: the built llama-server, killed
(SIGKILL) or frozen (SIGSTOP: its sockets stay open, no byte comes) mid-cell, or refused its port; a
stand-in program where llama-server cannot be made to misbehave (a /health that answers 503 forever);
tests/mock_faulty_server.py for what only a scripted server does (503 for a while, a hang per request).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

from tasks import deploy, night
from tasks.loadgen import Target, run_load
from tasks.matrix import load_matrix
from tasks.plan import LoadShape, plan
from tasks.workloads import RequestSpec
from tests.builders import cpu_engine_matrix, external_engine_matrix
from tests.mock_faulty_server import MockFaultyServer
from tests.test_engine_llamacpp import engine_processes


def load(tmp_path: Path, data: dict):
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    matrix, _ = load_matrix(path)
    return matrix, plan(matrix)[0]


def external(tmp_path: Path, url: str, served_name: str = "mock-ok", *, startup_timeout_s: float = 5, **load_):
    return load(
        tmp_path,
        external_engine_matrix(
            "faults",
            url,
            served_name,
            startup_timeout_s=startup_timeout_s,
            workloads=[{"id": "w", "limit_prompts": 6, "output_lengths": [3]}],
            load={"concurrency": [2], "warmup_requests": 0, **load_},
        ),
    )


def bench(tmp_path: Path, matrix, group):
    return night.bench_group(
        matrix, group, run_id="run-1", run_dir=tmp_path / "run", base_dir=tmp_path, images={}, where="test"
    )


# ---------------------------------------------------------------- without an engine


def test_the_matrix_cell_deadline_cuts_off_a_cell_and_the_night_goes_on(tmp_path):
    """Every request hangs (5 s, inside its 30 s deadline); the matrix's cell_timeout_s (1 s) cuts the
    cell off: the two requests in flight are timeouts (cell_timeout) with their 200 kept, the other
    four are not sent, the cell row is there and the group ends normally."""
    with MockFaultyServer() as server:
        matrix, group = external(tmp_path, server.url, "mock-hang", request_timeout_s=30, cell_timeout_s=1)
        t0 = time.monotonic()
        got = bench(tmp_path, matrix, group)
        took = time.monotonic() - t0
    (row,) = got.deployments
    (cell,) = got.cells
    assert row.started and row.failure_class is None
    assert cell.requests_planned == 6 and 1e9 <= cell.wall_ns < 2e9
    assert [(r.status, r.error_class, r.http_status) for r in got.records] == [("timeout", "cell_timeout", 200)] * 2
    assert took < 4


def test_a_health_endpoint_unavailable_for_a_while_then_healthy(tmp_path):
    """/v1/models answers 503 three times (an engine still loading behind a proxy), then the list:
    the instance starts and is measured."""
    with MockFaultyServer(health_unavailable=3) as server:
        matrix, group = external(tmp_path, server.url)
        got = bench(tmp_path, matrix, group)
        assert server.health_calls >= 4
    (row,) = got.deployments
    assert row.started and row.startup_s >= 1.0  # three polls half a second apart
    assert {r.status for r in got.records} == {"ok"}


def test_a_health_endpoint_that_never_turns_healthy_is_a_failed_start(tmp_path):
    with MockFaultyServer(health_unavailable=10**9) as server:
        matrix, group = external(tmp_path, server.url, startup_timeout_s=1.5)
        t0 = time.monotonic()
        got = bench(tmp_path, matrix, group)
    (row,) = got.deployments
    assert not row.started and row.failure_class == "health_timeout"
    assert "answered 503" in row.failure_message
    assert got.cells == [] and time.monotonic() - t0 < 5


# A stand-in for llama-server that listens on its --port and answers 503 to everything, forever (a
# model that never finishes loading).
NEVER_HEALTHY = """\
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
print("loading model, forever", flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_a_process_engine_that_never_turns_healthy_is_stopped_and_recorded(tmp_path):
    binary = tmp_path / "never-healthy-server"
    binary.write_text(f"#!{sys.executable}\n{NEVER_HEALTHY}")
    binary.chmod(0o755)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    data = cpu_engine_matrix("faults", binary, model, workloads=[{"id": "w", "limit_prompts": 2}])
    data["engines"]["cpu"]["startup_timeout_s"] = 1.5
    matrix, group = load(tmp_path, data)
    got = bench(tmp_path, matrix, group)
    (row,) = got.deployments
    assert not row.started and row.failure_class == "health_timeout"
    assert "loading model, forever" in row.log_excerpt
    assert got.cells == [] and got.records == []
    assert engine_processes(binary, model) == []  # stopped, not left listening


def test_a_full_disk_while_staging_leaves_no_run_that_looks_staged(tmp_path):
    """A real full disk: a 256 KiB tmpfs (root only) cannot hold the run's requests. Staging fails with
    ENOSPC, run.json (written last) is not there, and loading the folder is refused in one line rather
    than reading a truncated file."""
    import errno
    import random

    from tasks.records import records_to_arrow
    from tests.builders import cell_row, deployment_row, record, run_row, tmpfs
    from warehouse import store

    rng = random.Random(0)
    records = [record(i, chunks_ms=sorted(rng.uniform(1, 5000) for _ in range(100))) for i in range(3000)]
    with tmpfs(tmp_path / "tiny", "size=256k") as tiny:
        with pytest.raises(OSError) as err:
            store.stage_run(tiny / "run-1", run_row(), [deployment_row()], [cell_row()], records_to_arrow(records))
        assert err.value.errno == errno.ENOSPC
        assert not (tiny / "run-1" / "run.json").exists()
        with pytest.raises(store.WarehouseError, match="not a staged run"):
            store.read_staged_run(tiny / "run-1")


# ---------------------------------------------------------------- the real engine


def start_engine(tmp_path: Path, llama_server: Path, smollm2: Path, *, port: int | None = None):
    data = cpu_engine_matrix("faults", llama_server, smollm2, workloads=[{"id": "w", "limit_prompts": 2}])
    if port is not None:
        data["deployments"][0]["instances"][0]["port"] = port
    matrix, group = load(tmp_path, data)
    return (
        matrix,
        group,
        deploy.deploy_group(matrix, group, run_id="r", run_dir=tmp_path / "run", base_dir=tmp_path, images={}),
    )


def load_on(handle, lengths: list[int], *, concurrency: int, request_timeout_s: float = 60, **kw):
    specs = [RequestSpec(f"p{i}", f"Count from one to fifty, request {i}.", n) for i, n in enumerate(lengths)]
    target = handle.target
    return asyncio.run(
        run_load(
            Target(target.base_url, target.served_model, "cpu", "smollm2", "d", "d-0", {"ignore_eos": True}),
            specs,
            LoadShape("closed", concurrency=concurrency),
            run_id="r",
            cell_id="c",
            request_timeout_s=request_timeout_s,
            **kw,
        )
    )


@pytest.mark.engine
def test_an_engine_killed_mid_cell(tmp_path, llama_server, smollm2):
    """llama-server SIGKILLed as the cell's first request (8 tokens) completes: the one in flight
    beside it (64 tokens) is cut mid-stream (disconnected, never ok, its tokens so far kept), the rest
    fail to connect, the cell still returns every row, the instance is found crashed, and teardown
    leaves no process."""
    _, _, deployed = start_engine(tmp_path, llama_server, smollm2)
    (handle,) = deployed.handles.values()
    killed: dict[str, int] = {}

    def kill_at_first_done(done: int, total: int) -> None:
        if done == 1:
            killed["at"] = time.monotonic_ns() - killed["t0"]
            os.kill(handle.pid(), signal.SIGKILL)

    try:
        result = load_on(
            handle,
            [8] + [64] * 5,
            concurrency=2,
            progress=kill_at_first_done,
            on_start=lambda records, started_at, t0: killed.update(t0=t0),
        )
        handle.process.proc.wait(timeout=10)
        assert handle.check_alive() is False and handle.row.failure_class == "crashed_mid_run"
    finally:
        deployed.stop()
    assert engine_processes(llama_server, smollm2) == []
    records = result.records
    assert len(records) == 6
    assert all(r.done_at is not None for r in records)
    after = [r for r in records if r.done_at > killed["at"]]
    assert len(after) >= 4 and {r.status for r in after} == {"disconnected"}, [(r.status, r.error_class) for r in after]
    assert any(r.error_class == "ConnectError" for r in after)  # sent after the engine was gone
    cut = records[1]  # in flight when the engine died, mid-stream
    assert cut.status == "disconnected" and cut.http_status == 200 and 1 <= len(cut.chunk_times) < 64
    assert [r.status for r in records if r.done_at <= killed["at"]].count("ok") >= 1


@pytest.mark.engine
def test_an_engine_that_hangs_is_cut_off_at_the_request_deadline(tmp_path, llama_server, smollm2):
    """llama-server frozen (SIGSTOP) before the cell: the kernel still accepts connections, no byte
    comes back. Each request is a timeout at its 1.5 s deadline, without an HTTP status; the cell ends
    in about two deadlines; teardown stops the frozen engine (SIGKILL after the grace period)."""
    _, _, deployed = start_engine(tmp_path, llama_server, smollm2)
    (handle,) = deployed.handles.values()
    try:
        os.kill(handle.pid(), signal.SIGSTOP)
        t0 = time.monotonic()
        result = load_on(handle, [8] * 4, concurrency=2, request_timeout_s=1.5)
        took = time.monotonic() - t0
    finally:
        deployed.stop()
    assert engine_processes(llama_server, smollm2) == []
    for r in result.records:
        assert (r.status, r.error_class, r.http_status) == ("timeout", "request_timeout", None), r.error_message
        assert 1.5e9 <= r.done_at - r.sent_at < 2.5e9
    assert len(result.records) == 4 and took < 5


@pytest.mark.engine
def test_a_port_already_in_use_is_a_failed_start(tmp_path, llama_server, smollm2):
    """Something already listens on the instance's port: llama-server cannot bind and exits; the row
    is port_in_use from its own log line, and nothing is left running."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        _, _, deployed = start_engine(tmp_path, llama_server, smollm2, port=port)
        took = time.monotonic() - t0
    deployed.stop()
    assert deployed.handles == {}
    (row,) = deployed.rows()
    assert not row.started and row.failure_class == "port_in_use", (row.failure_class, row.failure_message)
    assert "couldn't bind" in row.log_excerpt
    assert engine_processes(llama_server, smollm2) == [] and took < 30
