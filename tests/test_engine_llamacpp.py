"""The whole night against the real CPU engine: llama.cpp's llama-server serving SmolLM2, driven
through the Prefect flow on a real (test) Prefect server, into a real DuckDB file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.records import records_to_arrow
from tests.builders import cpu_engine_matrix

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.engine, pytest.mark.prefect]


def small_matrix(tmp_path: Path, llama_server: Path, smollm2: Path, *, broken_model: bool = False) -> Path:
    matrix = cpu_engine_matrix(
        "engine-test",
        llama_server,
        smollm2,
        workloads=[{"id": "study-mini", "prompts": "study", "limit_prompts": 4, "output_lengths": [8, 16]}],
        load={"concurrency": [2], "warmup_requests": 1, "request_timeout_s": 60},
        slo={"ttft_ms": 10_000},
    )
    matrix["deployments"][0]["id"] = "llamacpp-smollm2"
    if broken_model:
        garbage = tmp_path / "broken.gguf"
        garbage.write_bytes(b"this is not a gguf file" * 100)
        matrix["models"]["broken"] = {"path": str(garbage)}
        # The broken one first: the night must go on to the healthy group after it.
        matrix["deployments"].insert(0, {"id": "broken-model", "instances": [{"engine": "cpu", "model": "broken"}]})
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(matrix))
    return path


def engine_processes(binary: Path, model: Path) -> list[int]:
    """Live processes running this binary (argv[0]; a shell that merely names it does not count) on
    this checkout's model file (another checkout's test run may be serving its own at the same time)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if argv[0] == str(binary) and str(model) in argv and state != "Z":
                pids.append(int(proc.name))
    return pids


def test_flow_end_to_end_on_the_real_engine(tmp_path, llama_server, smollm2, prefect_server):
    from prefect.client.orchestration import get_client

    from flows.nightly import nightly
    from warehouse import store

    matrix = small_matrix(tmp_path, llama_server, smollm2, broken_model=True)
    warehouse = tmp_path / "wh.duckdb"
    result = nightly(matrix_path=str(matrix), warehouse=str(warehouse), runs_dir=str(tmp_path / "runs"))

    assert engine_processes(llama_server, smollm2) == [], "teardown must leave no engine process"
    with store.opened(warehouse, read_only=True) as con:
        rows = con.execute(
            "SELECT status, max_tokens, completion_tokens, prompt_tokens, len(chunk_times), engine "
            "FROM requests WHERE run_id = ?",
            [result["run_id"]],
        ).fetchall()
        assert len(rows) == 4 * 2
        assert {r[0] for r in rows} == {"ok"}
        # ignore_eos: the server produced exactly max_tokens tokens, and said so in usage.
        assert all(r[2] == r[1] for r in rows), rows
        assert all(r[3] > 0 for r in rows)
        assert all(r[4] >= 1 for r in rows)
        deps = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT deployment_id, started, failure_class, log_excerpt, startup_s, engine_version FROM deployments"
            ).fetchall()
        }
        assert deps["llamacpp-smollm2"][0] is True and deps["llamacpp-smollm2"][3] > 0
        # the version the running server reports (its /props build), beside the matrix's
        assert re.fullmatch(r"\S+ \(server: b\d+-[0-9a-f]+\)", deps["llamacpp-smollm2"][4]), deps["llamacpp-smollm2"][4]
        assert deps["broken-model"][0] is False
        assert deps["broken-model"][1] == "model_load_failed"
        assert "gguf" in deps["broken-model"][2].lower()
        run_status = con.execute("SELECT status FROM runs WHERE run_id = ?", [result["run_id"]]).fetchone()[0]
        assert run_status == "partial"
        # The engine's own counter moved by at least what the client counted (plus the warmup).
        before, after = (
            con.execute(
                "SELECT value FROM engine_metrics WHERE metric = 'llamacpp:tokens_predicted_total' AND phase = ?",
                [phase],
            ).fetchone()[0]
            for phase in ("before", "after")
        )
        assert after - before >= sum(r[2] for r in rows)
        cell = con.execute("SELECT ok, output_tokens, ttft_ms_p50, tpot_ms_p50 FROM v_cells").fetchone()
        assert cell[0] == 8 and cell[1] == 4 * (8 + 16) and cell[2] > 0 and cell[3] > 0
        # what ran, exactly, and on what (migration 0012), each against what this test reads itself
        (artifact,) = con.execute(
            "SELECT engine_artifact FROM deployments WHERE deployment_id = 'llamacpp-smollm2'"
        ).fetchone()
        assert artifact == "sha256:" + hashlib.sha256(llama_server.read_bytes()).hexdigest()
        cpus, memory_mib = con.execute("SELECT cpu_count, memory_total_mib FROM runs").fetchone()
        assert cpus == os.cpu_count()
        assert abs(memory_mib - os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20) < 2
    report = Path(result["report"])
    assert report.is_file() and "llamacpp-smollm2" in report.read_text()
    assert f"binary {artifact[:19]}" in report.read_text() and f"{os.cpu_count()} logical CPUs" in report.read_text()

    async def flow_and_task_runs():
        async with get_client() as client:
            return await client.read_flow_runs(), await client.read_task_runs(), await client.read_artifacts()

    import asyncio

    flow_runs, task_runs, artifacts = asyncio.run(flow_and_task_runs())
    ours = [f for f in flow_runs if f.parameters.get("matrix_path") == str(matrix)]
    assert ours and ours[0].state.is_completed()
    names = {t.name.rsplit("-", 1)[0] for t in task_runs if t.flow_run_id == ours[0].id}
    mine = {a.key: a.data for a in artifacts if a.flow_run_id == ours[0].id}
    assert mine["bakeoff-validation"].startswith("**passed**: 8 rows")
    assert "llamacpp-smollm2" in mine["bakeoff-report"]
    # the run history shows the key metrics per configuration and links the HTML file
    table = mine["bakeoff-key-metrics"]
    rows = json.loads(table) if isinstance(table, str) else table
    assert [r["Configuration"] for r in rows] == ["llamacpp-smollm2"] and rows[0]["OK"] == "8"
    assert report.resolve().as_uri() in mine["bakeoff-report-html"]
    assert {"start-instance", "bench-cell", "gate-and-load", "render-report"} <= names


def test_cli_run_then_sql(tmp_path, llama_server, smollm2, prefect_server):
    """What a user types: `bakeoff run MATRIX`, then `bakeoff sql` on the file it wrote."""
    from prefect.settings import PREFECT_API_URL

    matrix = small_matrix(tmp_path, llama_server, smollm2)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
    bakeoff = [sys.executable, "-m", "flows.cli"]
    run = subprocess.run(
        [*bakeoff, "run", str(matrix)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "report:" in run.stdout and "llamacpp-smollm2" in run.stdout
    assert (tmp_path / ".bakeoff" / "bakeoff.duckdb").is_file()  # the matrix's default, relative to cwd
    assert "requests done" in run.stderr + run.stdout  # progress was visible
    sql = subprocess.run(
        [*bakeoff, "sql", "select count(*) as n from requests where status = 'ok'"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sql.returncode == 0, sql.stderr
    assert "│ 8 " in sql.stdout or "| 8 " in sql.stdout, sql.stdout
    bad = subprocess.run(
        [*bakeoff, "sql", "select * from no_such_table"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "no_such_table" in bad.stderr and "Traceback" not in bad.stderr
    again = subprocess.run([*bakeoff, "report"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / again.stdout.strip()).is_file()


def test_an_engine_that_dies_under_load_is_recorded_as_crashed(tmp_path, llama_server, smollm2):
    """A real llama-server, killed after it came up: the deployment row says crashed_mid_run."""
    import signal

    from tasks.deploy import launch_instance
    from tasks.matrix import load_matrix
    from tasks.plan import plan

    matrix, _ = load_matrix(small_matrix(tmp_path, llama_server, smollm2))
    (group,) = plan(matrix)
    handle = launch_instance(
        matrix, group.instances[0], start_order=0, run_id="r", run_dir=tmp_path / "run", base_dir=tmp_path
    )
    try:
        assert handle.started and handle.check_alive()
        os.kill(handle.pid(), signal.SIGKILL)
        handle.process.proc.wait(timeout=10)
        assert handle.check_alive() is False
        assert handle.row.failure_class == "crashed_mid_run"
        assert "llama" in handle.row.log_excerpt.lower()
    finally:
        handle.stop()


@pytest.mark.parametrize("stop_signal", ["SIGTERM", "SIGINT"])
def test_a_cancelled_night_keeps_what_it_measured(tmp_path, llama_server, smollm2, prefect_server, stop_signal):
    """SIGTERM (what a Prefect cancel sends) or SIGINT (Ctrl-C) in the middle of a cell on the real
    engine: the engine is stopped, the run is staged as failed, and the cell's requests are kept:
    finished ones as ok, the ones in flight as cancelled."""
    import json
    import signal
    import time

    import pyarrow.parquet as pq
    from prefect.settings import PREFECT_API_URL

    matrix = small_matrix(tmp_path, llama_server, smollm2)
    data = yaml.safe_load(matrix.read_text())
    data["workloads"][0].update(limit_prompts=20, output_lengths=[96])  # ~25 s: long enough to interrupt
    data["load"]["request_timeout_s"] = 600  # a machine busy with other work is slow, not failing
    matrix.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", str(matrix)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:  # wait until the measured part of the cell has finished a request
            if "requests done" in line or time.monotonic() > deadline:
                break
        assert "requests done" in line, "the cell never reported progress"
        proc.send_signal(getattr(signal, stop_signal))
        rest = proc.stdout.read()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, rest[-2000:]
    assert engine_processes(llama_server, smollm2) == []
    (run_dir,) = (tmp_path / ".bakeoff" / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    requests = pq.read_table(run_dir / "requests.parquet").to_pylist()
    statuses = {r["status"] for r in requests}
    assert "ok" in statuses and "cancelled" in statuses, [
        (r["status"], r["error_class"], r["error_message"]) for r in requests
    ]
    assert all(r["done_at"] is not None for r in requests)
    cells = pq.read_table(run_dir / "cells.parquet").to_pylist()
    assert len(cells) == 1 and cells[0]["client_kept_up"] is None  # unknown for an interrupted cell


def test_a_crash_seen_after_a_cell_reaches_the_staged_deployments_row(tmp_path, llama_server, smollm2):
    """bench_group on the real engine, SIGKILLed right after its first cell: the group's row says
    crashed_mid_run (the handle's updated row, not a shared dict), the second cell is not run, and the
    staged deployments file carries the crash."""
    import signal

    import pyarrow.parquet as pq

    from tasks import bench
    from tasks.matrix import load_matrix
    from tasks.night import bench_group
    from tasks.plan import plan
    from warehouse import store

    path = small_matrix(tmp_path, llama_server, smollm2)
    data = yaml.safe_load(path.read_text())
    data["load"]["concurrency"] = [1, 2]
    path.write_text(yaml.safe_dump(data))
    matrix, _ = load_matrix(path)
    (group,) = plan(matrix)

    def run_then_kill(*args, engine_pids, **kw):
        outcome = bench.run_cell(*args, engine_pids=engine_pids, **kw)
        for pid in engine_pids.values():
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        return outcome

    got = bench_group(
        matrix,
        group,
        run_id="r",
        run_dir=tmp_path / "run",
        base_dir=tmp_path,
        images={},
        where="group 1/1",
        run_cell=run_then_kill,
    )
    assert [c["cell_id"] if isinstance(c, dict) else c.cell_id for c in got.cells] == [group.cells[0].cell_id]
    (row,) = got.deployments
    assert row.started and row.failure_class == "crashed_mid_run"
    run = {
        "run_id": "r",
        "matrix_name": "m",
        "matrix_path": str(path),
        "matrix_sha256": "0" * 64,
        "started_at": "2026-12-02T00:00:00+00:00",
        "status": "partial",
    }
    staged = store.stage_run(tmp_path / "staged", run, got.deployments, got.cells, records_to_arrow(got.records))
    (staged_row,) = pq.read_table(staged.table_file("deployments")).to_pylist()
    assert staged_row["failure_class"] == "crashed_mid_run" and staged_row["started"] is True


def _start_attempts(tmp_path: Path, matrix: Path, monkeypatch) -> tuple[int, str]:
    """One night in-process with the flow's own start policy (its retry delays cut to 0 s, the rest as
    configured); returns how many times start-instance ran, and the instance's failure class."""
    import asyncio

    from prefect.client.orchestration import get_client

    import flows.nightly as nightly_module
    from warehouse import store

    monkeypatch.setattr(
        nightly_module, "start_instance", nightly_module.start_instance.with_options(retry_delay_seconds=0)
    )
    warehouse = tmp_path / "wh.duckdb"
    with pytest.raises(nightly_module.MeasuredTooLittle):  # nothing started: the night ends failed
        nightly_module.nightly(matrix_path=str(matrix), warehouse=str(warehouse), runs_dir=str(tmp_path / "runs"))

    async def start_runs():
        async with get_client() as client:
            flows = [f for f in await client.read_flow_runs() if f.parameters.get("matrix_path") == str(matrix)]
            return [
                t
                for t in await client.read_task_runs()
                if t.flow_run_id == flows[0].id and t.name.startswith("start-instance")
            ]

    (start,) = asyncio.run(start_runs())
    with store.opened(warehouse, read_only=True) as con:
        (failure_class,) = con.execute("SELECT failure_class FROM deployments").fetchone()
    return start.run_count, failure_class


def test_a_transient_start_failure_is_retried_and_a_deterministic_one_is_not(
    tmp_path, llama_server, smollm2, prefect_server, monkeypatch
):
    """The retry policy with a real llama-server: a health timeout (the engine cannot be up within
    0.05 s) is tried three times; a model that is not a GGUF file fails the same way every time, once."""
    slow = tmp_path / "slow"
    slow.mkdir()
    matrix = small_matrix(slow, llama_server, smollm2)
    data = yaml.safe_load(matrix.read_text())
    data["engines"]["cpu"]["startup_timeout_s"] = 0.05
    matrix.write_text(yaml.safe_dump(data))
    assert _start_attempts(slow, matrix, monkeypatch) == (3, "health_timeout")

    broken = tmp_path / "broken"
    broken.mkdir()
    matrix = small_matrix(broken, llama_server, smollm2, broken_model=True)
    data = yaml.safe_load(matrix.read_text())
    data["deployments"] = data["deployments"][:1]  # the broken model alone
    matrix.write_text(yaml.safe_dump(data))
    assert _start_attempts(broken, matrix, monkeypatch) == (1, "model_load_failed")
    assert engine_processes(llama_server, smollm2) == []


def test_a_flag_the_engine_does_not_know_is_a_bad_flag_not_a_flake(tmp_path, llama_server, smollm2):
    """A real llama-server refusing an unknown flag: `bad_flag` (never retried), not `exited_at_start`."""
    from tasks import deploy
    from tasks.matrix import load_matrix
    from tasks.plan import plan

    matrix_path = small_matrix(tmp_path, llama_server, smollm2)
    data = yaml.safe_load(matrix_path.read_text())
    data["engines"]["cpu"]["args"] = ["--threads", "2", "--no-such-flag"]
    matrix_path.write_text(yaml.safe_dump(data))
    matrix, _ = load_matrix(matrix_path)
    (group,) = plan(matrix)
    with pytest.raises(deploy.DeploymentFailed) as failed:
        deploy.launch_instance(
            matrix, group.instances[0], start_order=0, run_id="r", run_dir=tmp_path / "run", base_dir=tmp_path
        )
    assert failed.value.failure_class == "bad_flag"
    assert "bad_flag" not in deploy.RETRYABLE_FAILURES
    assert "--no-such-flag" in failed.value.log_excerpt
