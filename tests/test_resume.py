"""Resumable nights: each finished piece staged as a part; `bakeoff run --resume RUN_ID` goes on from
them. The parts are real files; the night test SIGKILLs a real `bakeoff run` on the real llama-server
mid-cell and resumes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tasks.records import records_to_arrow
from tasks.runs import matrix_differences, measured_too_little, night_status
from tests.builders import cell_row, cpu_engine_matrix, deployment_row, record, run_row
from warehouse import store

ROOT = Path(__file__).resolve().parent.parent


def _part(run_dir: Path, name: str, cell: str, n: int, *, complete: bool = True) -> None:
    store.stage_part(
        run_dir,
        name,
        complete=complete,
        cells=[cell_row(cell)],
        requests=records_to_arrow([record(i, cell_id=cell) for i in range(n)]),
    )


def test_the_run_level_files_hold_every_part_once(tmp_path):
    run_dir = tmp_path / "run-1"
    _part(run_dir, "cell-a", "cell-a", 3)
    _part(run_dir, "cell-b", "cell-b", 2)
    store.stage_part(run_dir, "group-dep", complete=True, deployments=[deployment_row()])
    counts = store.stage_parts(run_dir)
    store.seal_staged(run_dir, run_row())
    requests = pq.read_table(run_dir / "requests.parquet").to_pylist()
    assert sorted(r["request_id"] for r in requests) == sorted(
        [f"cell-a#{i}" for i in range(3)] + [f"cell-b#{i}" for i in range(2)]
    )
    assert sorted(c["cell_id"] for c in pq.read_table(run_dir / "cells.parquet").to_pylist()) == ["cell-a", "cell-b"]
    assert (counts.instances, counts.instances_started, counts.requests, counts.requests_ok) == (1, 1, 5, 5)
    store.read_staged_run(run_dir)  # a staged run, in staged form 2


def test_a_part_measured_again_replaces_the_old_one(tmp_path):
    run_dir = tmp_path / "run-1"
    _part(run_dir, "cell-a", "cell-a", 3)
    _part(run_dir, "cell-a", "cell-a", 1)
    store.stage_parts(run_dir)
    assert pq.read_metadata(run_dir / "requests.parquet").num_rows == 1


def test_a_resume_keeps_complete_parts_and_drops_cut_short_ones(tmp_path):
    run_dir = tmp_path / "run-1"
    _part(run_dir, "cell-a", "cell-a", 3)
    _part(run_dir, "cut-short-cell-b", "cell-b", 2, complete=False)
    (run_dir / "parts" / ".tmp-cell-c").mkdir()  # a part being written when the night died
    store.stage_parts(run_dir)
    store.seal_staged(run_dir, run_row())
    assert pq.read_metadata(run_dir / "requests.parquet").num_rows == 5  # not resumed: everything kept

    assert store.resume_parts(run_dir) == {"cell-a"}
    assert not (run_dir / "run.json").exists()  # no longer looks staged
    assert sorted(p.name for p in (run_dir / "parts").iterdir()) == ["cell-a"]
    store.stage_parts(run_dir)
    assert pq.read_metadata(run_dir / "requests.parquet").num_rows == 3


def test_a_run_staged_whole_is_never_measured_over(tmp_path):
    from tests.builders import stage

    run_dir = stage(tmp_path, [record(i) for i in range(3)], [cell_row()])  # run.json, no parts
    with pytest.raises(store.WarehouseError, match=r"staged whole .* `bakeoff load"):
        store.resume_parts(run_dir)
    assert pq.read_metadata(run_dir / "requests.parquet").num_rows == 3 and (run_dir / "run.json").exists()


def test_a_changed_matrix_is_named():
    before = {"load": {"concurrency": [2]}, "workloads": [{"id": "w", "limit_prompts": 4}]}
    after = {"load": {"concurrency": [2, 4]}, "workloads": [{"id": "w", "limit_prompts": 8}], "repeats": 2}
    assert matrix_differences(before, after) == [
        "load.concurrency: [2] -> [2, 4]",
        "repeats added",
        "workloads[0].limit_prompts: 4 -> 8",
    ]
    assert matrix_differences(before, before) == []


def test_the_night_verdict_reads_what_was_measured():
    assert night_status(2, 2) == "completed" and night_status(2, 1) == "partial" and night_status(0, 0) == "partial"
    assert measured_too_little(2, 2, 100, 60, 0.5) is None
    assert "40 of 100 requests failed" in (measured_too_little(2, 2, 100, 60, 0.3) or "")
    assert "75 of 100" in (measured_too_little(1, 1, 100, 25, 0.5) or "")
    assert "no instance started" in (measured_too_little(2, 0, 0, 0, 0.5) or "")
    assert "no request" in (measured_too_little(1, 1, 0, 0, 0.5) or "")


# ---------------------------------------------------------------- the real night


def _night_matrix(tmp_path: Path, llama_server: Path, smollm2: Path, *, prompts: int) -> Path:
    matrix = cpu_engine_matrix(
        "resume-test",
        llama_server,
        smollm2,
        workloads=[{"id": "w", "prompts": "study", "limit_prompts": prompts, "output_lengths": [16]}],
        load={"concurrency": [1, 2], "warmup_requests": 1, "request_timeout_s": 60},
    )
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(matrix))
    return path


def _bakeoff(tmp_path: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )


@pytest.mark.engine
@pytest.mark.prefect
def test_a_night_killed_mid_cell_resumes_with_one_copy_of_everything(tmp_path, llama_server, smollm2, prefect_server):
    """SIGKILL of `bakeoff run` in its second cell (the first staged): the engine dies with it; the
    resumed night measures only the killed cell again, loads the run once, and a second resume is a no-op."""
    from prefect.settings import PREFECT_API_URL

    from tests.test_engine_llamacpp import engine_processes

    matrix = _night_matrix(tmp_path, llama_server, smollm2, prompts=4)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", str(matrix)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    runs = tmp_path / ".bakeoff" / "runs"
    try:
        deadline = time.monotonic() + 540
        for line in proc.stdout:  # the second cell has started: the first is staged as a part
            if "cell 2/2" in line or time.monotonic() > deadline:
                break
        assert "cell 2/2" in line, "the night never reached its second cell"
        (run_dir,) = runs.iterdir()
        parts = sorted(p.name for p in (run_dir / "parts").iterdir())
        assert any(".c1." in p for p in parts), parts  # the first cell, staged before the second began
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.time()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(1)  # PR_SET_PDEATHSIG: the kernel kills the engine with its parent
    assert engine_processes(llama_server, smollm2) == []
    assert not (run_dir / "run.json").exists()  # died before staging: nothing looks staged

    resumed = _bakeoff(tmp_path, "run", str(matrix), "--resume", run_dir.name)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "2 pieces already measured are kept" in resumed.stderr + resumed.stdout  # builds + the first cell
    assert engine_processes(llama_server, smollm2) == []
    with store.opened(tmp_path / ".bakeoff" / "bakeoff.duckdb", read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]
        cells = dict(con.execute("SELECT cell_id, requests_planned FROM cells").fetchall())
        assert len(cells) == 2, cells
        per_cell = dict(con.execute("SELECT cell_id, count(*) FROM requests GROUP BY cell_id").fetchall())
        assert per_cell == cells  # every planned request once, none twice
        assert con.execute("SELECT count(DISTINCT request_id) = count(*) FROM requests").fetchall() == [(True,)]
        (status,) = con.execute("SELECT status FROM runs").fetchone()
        assert status == "completed"
        started = {
            ("c1" if ".c1." in cell else "c2"): at
            for cell, at in con.execute("SELECT cell_id, epoch(started_at) FROM cells").fetchall()
        }
    assert started["c1"] < killed_at < started["c2"]  # the first cell kept, the killed one measured again
    assert not (run_dir / "parts").exists()  # loaded: the run-level files are the staged copy

    again = _bakeoff(tmp_path, "run", str(matrix), "--resume", run_dir.name)
    assert again.returncode == 0 and "nothing to resume" in again.stdout, again.stderr[-2000:]


@pytest.mark.engine
@pytest.mark.prefect
def test_a_resume_is_refused_for_a_changed_matrix_or_an_unknown_run(tmp_path, llama_server, smollm2, prefect_server):
    matrix = _night_matrix(tmp_path, llama_server, smollm2, prompts=2)
    run_dir = tmp_path / ".bakeoff" / "runs" / "r-1"
    run_dir.mkdir(parents=True)
    from tasks.matrix import load_matrix
    from tasks.runs import write_night_file

    loaded, sha = load_matrix(matrix)
    write_night_file(run_dir, {**run_row("r-1"), "matrix_sha256": sha}, loaded)
    data = yaml.safe_load(matrix.read_text())
    data["workloads"][0]["limit_prompts"] = 3
    matrix.write_text(yaml.safe_dump(data))

    changed = _bakeoff(tmp_path, "run", str(matrix), "--resume", "r-1")
    assert changed.returncode == 2, changed.stderr
    assert changed.stderr.strip().splitlines() == [
        "bakeoff: --resume r-1: the matrix changed since the night started (workloads[0].limit_prompts: 2 -> 3); "
        "resume with the same matrix, or start a new night"
    ]
    unknown = _bakeoff(tmp_path, "run", str(matrix), "--resume", "no-such-run")
    assert unknown.returncode == 2 and "no such night" in unknown.stderr and "Traceback" not in unknown.stderr
    assert json.loads((run_dir / "night.json").read_text())["run"]["run_id"] == "r-1"


KILLED_STAGER = """
import json, sys
from pathlib import Path
from flows.environment import sigterm_exits
from warehouse import store
sigterm_exits()  # as the CLI and the flow do
run_dir = Path(sys.argv[1])
print("staging", flush=True)
while True:  # stage again and again until killed: the kill lands anywhere inside it
    store.stage_parts(run_dir)
    store.seal_staged(run_dir, json.loads(sys.argv[2]))
"""


@pytest.mark.parametrize(
    ("stop_signal", "delay_s"),
    [("SIGKILL", 0.0), ("SIGKILL", 0.05), ("SIGKILL", 0.3), ("SIGTERM", 0.05), ("SIGINT", 0.05)],
)
def test_a_kill_while_staging_leaves_nothing_that_looks_staged_and_wrong(tmp_path, stop_signal, delay_s):
    """SIGKILL, SIGTERM or Ctrl-C of a real process in the middle of staging: what is left is either a
    whole staged run or a folder whose parts resume whole; never a run-level file cut short. Stopped
    (not killed), it also leaves no temporary file behind."""
    import pyarrow.parquet as pq

    run_dir = tmp_path / "run-1"
    for c in range(12):
        _part(run_dir, f"cell-{c}", f"cell-{c}", 400)
    staging = subprocess.Popen(
        [sys.executable, "-c", KILLED_STAGER, str(run_dir), json.dumps(run_row())],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert staging.stdout is not None and staging.stdout.readline() == "staging\n"
    time.sleep(delay_s)
    staging.send_signal(getattr(signal, stop_signal))
    staging.wait()
    if stop_signal != "SIGKILL":
        assert staging.returncode != 0 and not list(run_dir.glob("*.tmp")), "a stopped stager cleans up"
    for table in ("requests", "cells"):  # any run-level file there is whole (written, then renamed)
        if (run_dir / f"{table}.parquet").exists():
            pq.read_table(run_dir / f"{table}.parquet")
    if (run_dir / "run.json").exists():  # sealed: a whole staged run (a temporary file left never counts)
        store.read_staged_run(run_dir)
    done = store.resume_parts(run_dir)
    assert done == {f"cell-{c}" for c in range(12)}
    counts = store.stage_parts(run_dir)
    assert counts.requests == 12 * 400


def test_requests_the_workload_cancelled_on_purpose_are_not_failures(tmp_path):
    run_dir = tmp_path / "run-1"
    records = [record(i, cell_id="c") for i in range(3)]
    records += [record(3 + i, cell_id="c", status="cancelled", error_class="client_cancel") for i in range(5)]
    store.stage_part(run_dir, "c", complete=True, cells=[cell_row("c")], requests=records_to_arrow(records))
    counts = store.stage_parts(run_dir)
    assert (counts.requests, counts.requests_ok) == (3, 3)
    assert measured_too_little(1, 1, counts.requests, counts.requests_ok, 0.5) is None  # 5 of 8 not ok, on purpose
