"""The nightly deployment proven the way the GPU box runs it: a real `prefect server start` (SQLite,
its own PREFECT_HOME), the process work pool and `prefect deploy --all` from prefect.yaml, a real
`prefect worker start`, and `prefect deployment run` on a CPU matrix cut from configs/cpu-smoke.yaml
(the real llama-server). Everything is read back from the server's API and the DuckDB file: the run
completed, its log holds every cell's progress lines, the report, key-metrics table and HTML link
artifacts are attached, the warehouse holds the run, and a second trigger while it runs is cancelled
by the deployment's concurrency limit.

The worker is given none of the environment `bakeoff run` sets (flows/environment.RUN_ENVIRONMENT):
what its flow run gets must come from prefect.yaml's job_variables, as on the GPU box.

BAKEOFF_PREFECT_UI_SCREENSHOT=PATH also screenshots the UI's page of the run (docs/prefect-ui.sh).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
import yaml

from flows.environment import RUN_ENVIRONMENT

ROOT = Path(__file__).resolve().parent.parent
PREFECT = Path(sys.executable).with_name("prefect")
pytestmark = [pytest.mark.engine, pytest.mark.prefect]

PREFECT_YAML = yaml.safe_load((ROOT / "prefect.yaml").read_text())
(DEPLOYMENT,) = PREFECT_YAML["deployments"]
POOL = DEPLOYMENT["work_pool"]["name"]
FLOW_NAME = "bakeoff-nightly"  # @flow(name=...) in flows/nightly.py
FULL_NAME = f"{FLOW_NAME}/{DEPLOYMENT['name']}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Prefect setting (the session's test server, the
    conftest's defaults) nor RUN_ENVIRONMENT's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k not in RUN_ENVIRONMENT}
    env.update(extra)
    return env


def started_at(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None once it is gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid (the worker's flow-run process runs in a session of its own, so a
    process-group kill would miss it)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Processes:
    """The subprocesses of the test, each with its output in a file; all of them and their
    descendants stopped on exit (SIGTERM, then SIGKILL), whatever happened."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[subprocess.Popen, Path]] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = self.logs / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append((proc, log))
        return proc

    def tail(self, proc: subprocess.Popen, n: int = 4000) -> str:
        log = next(log for p, log in self.started if p is proc)
        return log.read_text(errors="replace")[-n:]

    def stop_all(self) -> None:
        """The last started first (the worker and its flow run before the server they talk to)."""
        for proc, _ in reversed(self.started):
            if proc.poll() is not None:
                continue
            pids = {pid: started_at(pid) for pid in [proc.pid, *descendants(proc.pid)]}
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            for pid, since in pids.items():  # what did not go on SIGTERM (a flow-run process is not ours to wait for)
                if since is not None and started_at(pid) == since:  # the same process, not a reused pid
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@contextlib.contextmanager
def prefect_server(procs: Processes, home: Path, *, ui: bool) -> Iterator[str]:
    """`prefect server start` on a free port with its own home and SQLite file; yields the API URL
    once /api/health answers."""
    import httpx

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = base_env(
        PREFECT_HOME=str(home),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",  # no 02:00 runs of the real matrix from the schedule
        PREFECT_UI_ENABLED="true" if ui else "false",
        PREFECT_UI_API_URL=api,
    )
    server = procs.start("server", [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env)
    deadline = time.monotonic() + 240
    while True:
        assert server.poll() is None, f"prefect server exited {server.returncode}:\n{procs.tail(server)}"
        assert time.monotonic() < deadline, f"prefect server not healthy in 240 s:\n{procs.tail(server)}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api}/health", timeout=5).status_code == 200:
                break
        time.sleep(0.5)
    yield api


def prefect_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(
        [str(PREFECT), "--no-prompt", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout


def trigger(parameters: dict, env: dict[str, str]) -> UUID:
    """`prefect deployment run`, as a person would; the new flow run's id."""
    out = prefect_cli(["deployment", "run", FULL_NAME, "--params", json.dumps(parameters)], env)
    match = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert match, out
    return UUID(match.group(1))


def tiny_matrix(tmp_path: Path, llama_server: Path) -> Path:
    """configs/cpu-smoke.yaml cut to one instance and one workload of 3 prompts of 8 tokens, at two
    concurrencies: two cells of 3 requests each."""
    matrix = yaml.safe_load((ROOT / "configs" / "cpu-smoke.yaml").read_text())
    matrix["name"] = "worker-test"
    for key in ("warehouse", "runs_dir"):  # the flow parameters say where; nothing relative to the checkout
        matrix.pop(key, None)
    (engine,) = matrix["engines"].values()
    # One thread: llama.cpp's threads spin at a barrier per token, which a shared 2-core box turns into
    # seconds per token; one thread keeps the night short there.
    engine.update(binary=str(llama_server), startup_timeout_s=90, args=["--threads", "1"])
    matrix["deployments"] = [{"id": "p4", "instances": [matrix["deployments"][0]["instances"][0]]}]
    matrix["workloads"] = [{**matrix["workloads"][0], "limit_prompts": 3, "output_lengths": [8]}]
    matrix["load"].update(concurrency=[2, 4], warmup_requests=1, request_timeout_s=60)
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(matrix))
    return path


def wait_for(client, run_id: UUID, done, timeout: float, procs: Processes, worker) -> object:
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(run_id)
        if done(run.state):
            return run
        assert worker.poll() is None, f"the worker exited {worker.returncode}:\n{procs.tail(worker)}"
        assert time.monotonic() < deadline, (
            f"flow run {run_id} still {run.state.type.value} ({run.state.message}) after {timeout:.0f} s; "
            f"worker log:\n{procs.tail(worker)}"
        )
        time.sleep(0.5)


def all_logs(client, run_id: UUID) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs, page = [], 200
    while True:
        got = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=page, offset=len(logs))
        logs += got
        if len(got) < page:
            return logs


def test_the_deployment_runs_a_night_through_a_real_server_and_worker(tmp_path, llama_server, smollm2):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tests.test_engine_llamacpp import engine_processes
    from warehouse import store

    started = time.monotonic()
    screenshot = os.environ.get("BAKEOFF_PREFECT_UI_SCREENSHOT")
    matrix = tiny_matrix(tmp_path, llama_server)
    warehouse, runs_dir = tmp_path / "warehouse.duckdb", tmp_path / "runs"
    parameters = {"matrix_path": str(matrix), "warehouse": str(warehouse), "runs_dir": str(runs_dir)}
    home = tmp_path / "prefect-home"
    procs = Processes(tmp_path / "logs")
    timings: dict[str, float] = {}
    try:
        with prefect_server(procs, home, ui=bool(screenshot)) as api:
            timings["server healthy"] = time.monotonic() - started
            env = base_env(PREFECT_HOME=str(home), PREFECT_API_URL=api, BAKEOFF_HOME=str(ROOT))
            client = SyncPrefectClient(api)
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
            # The worker polls every 2 s (default 10) so the test does not wait on it.
            worker = procs.start(
                "worker",
                [str(PREFECT), "worker", "start", "--pool", POOL],
                {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"},
            )
            prefect_cli(["deploy", "--all"], env)
            timings["deployed"] = time.monotonic() - started

            first = trigger(parameters, env)
            running = wait_for(client, first, lambda s: s.is_running() or s.is_final(), 300, procs, worker)
            assert running.state.is_running(), f"first run ended {running.state.type.value}: {running.state.message}"
            timings["first running"] = time.monotonic() - started

            # One night at a time: a second trigger while the first runs is cancelled, not queued. (Through
            # the API, not a second CLI start: on a fast box the first night is over in some 10 s.)
            deployment = client.read_deployment_by_name(FULL_NAME)
            second = client.create_flow_run_from_deployment(deployment.id, parameters=parameters).id
            refused = wait_for(client, second, lambda s: s.is_final(), 120, procs, worker)
            assert refused.state.is_cancelled(), (refused.state.type.value, refused.state.message)
            assert "concurrency limit" in (refused.state.message or ""), refused.state.message
            assert not client.read_flow_run(first).state.is_final(), "the second was refused only once the first ended"
            timings["second cancelled"] = time.monotonic() - started

            done = wait_for(client, first, lambda s: s.is_final(), 600, procs, worker)
            timings["first done"] = time.monotonic() - started
            assert done.state.is_completed(), (
                f"{done.state.type.value}: {done.state.message}\nworker log:\n{procs.tail(worker, 8000)}"
            )
            assert done.deployment_id is not None and done.parameters == parameters

            # The run's log, as the UI shows it: both cells' start and progress lines, from bakeoff's loggers.
            logs = all_logs(client, first)
            messages = [log.message for log in logs if log.name.startswith("bakeoff")]
            for c_i in (1, 2):
                where = rf"group 1/1 p4, cell {c_i}/2 \S+"
                assert any(
                    re.fullmatch(rf"{where}: 3 requests at concurrency [24] \(1 warmup\)", m) for m in messages
                ), (
                    c_i,
                    messages,
                )
                assert any(re.fullmatch(rf"{where}: 3/3 requests done", m) for m in messages), (c_i, messages)
            assert any("is healthy at" in m for m in messages), messages

            # The artifacts of publish_report (and the gate's), on this run.
            artifacts = {
                a.key: a
                for a in client.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[first]))
                )
            }
            assert {"bakeoff-validation", "bakeoff-report", "bakeoff-key-metrics", "bakeoff-report-html"} <= set(
                artifacts
            ), sorted(artifacts)
            assert artifacts["bakeoff-validation"].data.startswith("**passed**: 6 rows")
            assert artifacts["bakeoff-report"].type == "markdown" and "llamacpp-p4" in artifacts["bakeoff-report"].data
            table = artifacts["bakeoff-key-metrics"]
            rows = json.loads(table.data) if isinstance(table.data, str) else table.data
            assert table.type == "table" and [(r["Configuration"], r["OK"]) for r in rows] == [("p4", "3")] * 2, rows
            (run_dir,) = runs_dir.iterdir()  # the refused run made nothing
            html = (run_dir / "report" / "report.html").resolve()
            # a link artifact is stored as Markdown: [text](link)
            assert html.is_file() and artifacts["bakeoff-report-html"].data == f"[{html}]({html.as_uri()})"

            # The warehouse holds the run, every request answered.
            with store.opened(str(warehouse), read_only=True) as con:
                runs = con.execute("SELECT run_id, status, validation_status FROM runs").fetchall()
                assert runs == [(run_dir.name, "completed", "passed")], runs
                statuses = con.execute("SELECT status, count(*) FROM requests GROUP BY status").fetchall()
                assert statuses == [("ok", 6)], statuses

            if screenshot:
                subprocess.run(
                    [str(ROOT / "docs" / "prefect-ui.sh"), api.removesuffix("/api"), str(first), screenshot],
                    check=True,
                    timeout=180,
                )
    finally:
        procs.stop_all()
        print(f"\ntimings (s): {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
    assert engine_processes(llama_server, smollm2) == [], "an engine outlived the worker"
