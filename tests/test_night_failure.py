"""A night's final state says what it measured: `bakeoff run` on a real (test) Prefect server, against the
MOCK faulty server (a 500 on every completion, which no real engine gives on demand), into a real
DuckDB file. And one night per host: a second `bakeoff run` beside a night holding the host is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.builders import external_engine_matrix
from tests.mock_faulty_server import MockFaultyServer
from warehouse import store

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.prefect


def _matrix(tmp_path: Path, url: str, served_name: str, **top) -> Path:
    data = external_engine_matrix(
        "night-failure",
        url,
        served_name,
        workloads=[{"id": "w", "limit_prompts": 4, "output_lengths": [3]}],
        **top,
    )
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(tmp_path: Path, matrix: Path, **env_extra: str) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT), **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(matrix)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _run_row(tmp_path: Path) -> tuple:
    with store.opened(tmp_path / ".bakeoff" / "bakeoff.duckdb", read_only=True) as con:
        return con.execute("SELECT run_id, status, failure FROM runs").fetchone()


def test_a_night_whose_requests_all_failed_ends_failed_and_says_why(tmp_path, prefect_server):
    with MockFaultyServer() as server:
        night = _run(tmp_path, _matrix(tmp_path, server.url, "mock-500"))
    assert night.returncode == 1, night.stderr[-3000:]
    last = night.stderr.strip().splitlines()[-1]
    assert last.startswith("bakeoff: the night measured too little: 4 of 4 requests failed (100%"), last
    # (above it, Prefect's own log of the failed flow run, as it shows in the run's log in the UI)
    run_id, status, failure = _run_row(tmp_path)
    assert status == "failed" and failure.startswith("4 of 4 requests failed"), (status, failure)
    # loaded and reported all the same, the report's header saying so
    report = (tmp_path / ".bakeoff" / "runs" / run_id / "report" / "report.md").read_text()
    assert "the night measured too little: 4 of 4 requests failed" in report


def test_the_threshold_is_the_matrix_s(tmp_path, prefect_server):
    with MockFaultyServer() as server:
        night = _run(tmp_path, _matrix(tmp_path, server.url, "mock-500", max_failed_share=1.0))
    assert night.returncode == 0, night.stderr[-3000:]
    _run_id, status, failure = _run_row(tmp_path)
    assert (status, failure) == ("completed", None)


def test_a_night_where_no_instance_started_ends_failed(tmp_path, prefect_server):
    from tests.test_external_engine import closed_port

    night = _run(tmp_path, _matrix(tmp_path, f"http://127.0.0.1:{closed_port()}", "mock-ok"))
    assert night.returncode == 1, night.stderr[-3000:]
    assert "no instance started (1 planned)" in night.stderr.strip().splitlines()[-1]
    _run_id, status, failure = _run_row(tmp_path)
    assert status == "failed" and failure.startswith("no instance started")


def test_a_second_night_on_a_busy_host_is_refused_naming_the_first(tmp_path, prefect_server, monkeypatch):
    from tasks.hostlock import night_on_this_host

    monkeypatch.setenv("BAKEOFF_LOCK_DIR", str(tmp_path / "locks"))  # this test's host, held here
    with MockFaultyServer() as server:
        matrix = _matrix(tmp_path, server.url, "mock-ok")
        with night_on_this_host("20261203T020000Z-first-night-abcd", "first"):
            second = _run(tmp_path, matrix)
        assert server.bodies == []  # nothing was sent: refused before any cell
    assert second.returncode == 75, second.stderr[-3000:]
    (line,) = [ln for ln in second.stderr.strip().splitlines() if ln.startswith("bakeoff:")]
    assert "another night is running on this host: run 20261203T020000Z-first-night-abcd" in line
    assert not (tmp_path / ".bakeoff" / "runs").exists() or not any((tmp_path / ".bakeoff" / "runs").iterdir())
