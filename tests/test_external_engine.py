"""An `external` engine (a URL bakeoff does not start) is health-checked before its cells run: a
server that is down, hangs, or answers an HTML page is a failed start (`unreachable`,
`health_timeout`), recorded like an engine that did not start, and its cells are skipped.

The closed port and the silent socket are real; the HTML page comes from the named fake server."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import yaml

from tasks import deploy, night
from tasks.launchers.process import DeploymentFailed
from tasks.matrix import load_matrix
from tasks.plan import plan
from tests.builders import external_engine_matrix
from tests.mock_faulty_server import MockFaultyServer


def external_matrix(tmp_path: Path, url: str, startup_timeout_s: float = 2):
    data = external_engine_matrix("external", url, startup_timeout_s=startup_timeout_s)
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    matrix, _ = load_matrix(path)
    return matrix, plan(matrix)[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on return: nothing listens there


def night_on(tmp_path: Path, url: str):
    """One group of a night against `url`: (the deployments row, the cells and records measured, seconds)."""
    matrix, group = external_matrix(tmp_path, url)
    t0 = time.monotonic()
    got = night.bench_group(
        matrix, group, run_id="run-1", run_dir=tmp_path / "run", base_dir=tmp_path, images={}, where="test"
    )
    (row,) = got.deployments
    return row, got, time.monotonic() - t0


def test_a_closed_port_is_unreachable_at_once(tmp_path):
    row, got, took = night_on(tmp_path, f"http://127.0.0.1:{closed_port()}")
    assert (row.started, row.failure_class) == (False, "unreachable")
    assert "ConnectError" in row.failure_message
    assert got.cells == [] and got.records == [], "the cells of an instance that did not start are skipped"
    assert took < 2, "nothing listens: no reason to wait for the startup timeout"


def test_a_socket_that_never_answers_is_a_health_timeout(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never reads or writes
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        row, got, took = night_on(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}")
    assert (row.started, row.failure_class) == (False, "health_timeout")
    assert "not healthy after 2 s: no answer" in row.failure_message
    assert got.cells == [] and got.records == []
    assert took < 4


def test_a_server_answering_html_is_not_healthy(tmp_path):
    with MockFaultyServer(health="html") as server:
        row, got, took = night_on(tmp_path, server.url)
        assert server.bodies == [], "no completion was sent to it"
    assert (row.started, row.failure_class) == (False, "health_timeout")
    assert "answered 200 (text/html)" in row.failure_message and "Welcome to nginx" in row.log_excerpt
    assert got.cells == [] and got.records == []
    assert took < 4


def test_a_healthy_external_server_starts_and_is_measured(tmp_path):
    with MockFaultyServer() as server:
        row, got, _ = night_on(tmp_path, server.url + "/")
    assert (row.started, row.failure_class) == (True, None)
    assert row.startup_s is not None and 0 <= row.startup_s < 2
    assert [r.status for r in got.records] == ["ok", "ok"]


def test_launch_instance_raises_so_the_flow_can_retry(tmp_path):
    matrix, group = external_matrix(tmp_path, f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(DeploymentFailed) as failed:
        deploy.launch_instance(
            matrix, group.instances[0], start_order=0, run_id="run-1", run_dir=tmp_path, base_dir=tmp_path
        )
    assert failed.value.failure_class == "unreachable"


def test_a_server_that_does_not_say_its_version_keeps_the_matrix_version():
    from tasks.deploy import running_version
    from tasks.engines import adapter_for
    from tasks.matrix import Engine

    engine = Engine(kind="vllm", version="0.10.2", launcher="docker", image="vllm/vllm-openai:v0.10.2")
    assert running_version(adapter_for("vllm"), engine, f"http://127.0.0.1:{closed_port()}") == "0.10.2"
    assert adapter_for("vllm").reported_version({"version": "0.11.0"}) == "0.11.0"
    assert adapter_for("sglang").reported_version({"version": ""}) is None
    assert adapter_for("llamacpp").reported_version({"build_info": "b1-0c1e570"}) == "b1-0c1e570"
