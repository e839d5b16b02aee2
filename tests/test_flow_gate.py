"""The validation gate inside the nightly flow, on a real (test) Prefect server and a real DuckDB file:
a night with a few bad request rows is loaded without them, marked, reported, and ends Failed; a night
with a table-level failure loads nothing.

The engine is an `external` one served by the mock OpenAI-style server (tests/mock_faulty_server.py,
model "mock-ok": a normal stream), since the point here is the flow around the gate, not an engine.
A real engine does not produce bad rows on demand, so the flow's records are corrupted on their way to
the gate (tasks.runs.records_to_arrow, which turns each staged part's records into Arrow, is
wrapped): the gate, the load and the report are the real ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.mock_faulty_server import MockFaultyServer
from warehouse import chunks, store

pytestmark = pytest.mark.prefect


def _matrix(tmp_path: Path, url: str) -> Path:
    data = {
        "name": "gate",
        "engines": {
            "ext": {"kind": "external", "version": "1", "url": url, "launcher": "none", "accepts": ["ignore_eos"]}
        },
        "models": {"m": {"path": "unused", "served_name": "mock-ok"}},
        "deployments": [{"id": "ext", "instances": [{"engine": "ext", "model": "m"}]}],
        "workloads": [{"id": "w", "limit_prompts": 3, "output_lengths": [3, 4]}],
        "load": {"concurrency": [2], "warmup_requests": 0, "request_timeout_s": 30},
    }
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run_night(tmp_path, monkeypatch, corrupt):
    """Run the flow with `corrupt(records)` applied to copies of the records before the gate; returns
    (the exception the flow raised, the corrupted request_ids, the warehouse path, the flow run)."""
    from prefect.client.orchestration import get_client

    import flows.nightly as nightly_module
    import tasks.runs as runs_module

    real = runs_module.records_to_arrow
    touched: list[str] = []

    def corrupted(records):
        if not records:  # a part without requests (the builds, a group's deployment rows)
            return real(records)
        records = [dataclasses.replace(r) for r in records]
        touched.extend(corrupt(records))
        return real(records)

    monkeypatch.setattr(runs_module, "records_to_arrow", corrupted)
    warehouse = tmp_path / "wh.duckdb"
    with MockFaultyServer() as server:
        matrix = _matrix(tmp_path, server.url)
        with pytest.raises(nightly_module.ValidationFailed) as err:
            nightly_module.nightly(matrix_path=str(matrix), warehouse=str(warehouse), runs_dir=str(tmp_path / "runs"))

    async def flow_run_and_artifacts():
        async with get_client() as client:
            runs = [f for f in await client.read_flow_runs() if f.parameters.get("matrix_path") == str(matrix)]
            return runs, await client.read_artifacts()

    runs, artifacts = asyncio.run(flow_run_and_artifacts())
    assert len(runs) == 1
    mine = {a.key: a.data for a in artifacts if a.flow_run_id == runs[0].id}
    return err.value, touched, warehouse, runs[0], mine


def test_a_night_with_bad_rows_is_loaded_without_them_marked_and_ends_failed(tmp_path, monkeypatch, prefect_server):
    from flows.nightly import RowsRejected

    def two_bad_rows(records):
        records[1].chunk_times = records[1].chunk_times[::-1]  # out of order (the stream had 3+ chunks)
        records[4].status = "exploded"
        return [records[1].request_id, records[4].request_id]

    exc, (unordered, exploded), warehouse, flow_run, artifacts = _run_night(tmp_path, monkeypatch, two_bad_rows)

    assert isinstance(exc, RowsRejected)
    message = str(exc)
    assert "\n" not in message
    assert message.startswith("validation failed: 2 of 6 request rows rejected, 4 kept: ")
    assert f"expect_column_values_to_be_in_set(status): 1 row, e.g. {exploded}" in message
    assert f"expect_column_values_to_be_in_set(chunk_times_ordered): 1 row, e.g. {unordered}" in message
    assert "marked validation_status = 'failed_rows'" in message
    assert flow_run.state.is_failed()  # the night is not clean in the Prefect UI
    assert artifacts["bakeoff-validation"].startswith("**FAILED**: 6 rows of requests")
    assert "**2 of 6 request rows rejected, 4 kept.**" in artifacts["bakeoff-validation"]
    assert "failed_rows" in artifacts["bakeoff-report"]  # the report says the run is marked

    # the data is loaded all the same: the kept rows, the rejected ones apart, the run marked
    result = exc.result
    assert result["rows"]["requests"] == 4 and result["rows"]["rejected_requests"] == 2
    assert Path(result["report"]).is_file() and "failed_rows" in Path(result["report"]).read_text()
    # staged (and validated) in staged form 2: chunk times as µs gaps, marked in the file
    assert chunks.is_us_gaps(pq.read_schema(Path(result["run_dir"]) / "requests.parquet"))
    with store.opened(warehouse, read_only=True) as con:
        assert con.execute("SELECT validation_status FROM runs").fetchall() == [("failed_rows",)]
        assert con.execute(
            "SELECT count(*) FROM requests WHERE request_id IN (?, ?)", [unordered, exploded]
        ).fetchall() == [(0,)]
        rejected = dict(con.execute("SELECT request_id, failed_expectations FROM rejected_requests").fetchall())
        assert rejected == {
            unordered: ["expect_column_values_to_be_in_set(chunk_times_ordered)"],
            exploded: ["expect_column_values_to_be_in_set(status)"],
        }
        saved = json.loads(con.execute("SELECT validation FROM runs").fetchall()[0][0])
        assert (saved["outcome"], saved["kept_rows"], saved["rejected_rows"]) == ("failed_rows", 4, 2)
        assert con.execute("SELECT count(*) FROM v_nightly").fetchall() == [(0,)]
        assert con.execute("SELECT sum(requests), sum(rejected) FROM v_cells").fetchall() == [(4, 2)]


def test_a_night_with_a_duplicated_request_id_loads_nothing(tmp_path, monkeypatch, prefect_server):
    from flows.nightly import RowsRejected

    def duplicate(records):
        records[3].request_id = records[0].request_id
        return [records[0].request_id]

    exc, _, warehouse, flow_run, artifacts = _run_night(tmp_path, monkeypatch, duplicate)
    assert not isinstance(exc, RowsRejected)
    assert "expect_column_values_to_be_unique(request_id): 2 rows" in str(exc)
    assert "nothing loaded" in str(exc)
    assert flow_run.state.is_failed()
    assert "**The whole run is refused: nothing is loaded.**" in artifacts["bakeoff-validation"]
    if warehouse.exists():
        with store.opened(warehouse, read_only=True) as con:
            assert con.execute("SELECT count(*) FROM runs").fetchall() == [(0,)]


def test_bakeoff_run_prints_the_summary_then_the_one_line_and_exits_1(tmp_path, monkeypatch, capsys, prefect_server):
    """`bakeoff run` on such a night: the cell summary and where the run went, as on a clean night, then
    the gate's one line on stderr; exit code 1."""
    import tasks.runs as runs_module
    from flows import cli

    real = runs_module.records_to_arrow

    def corrupted(records):
        if not records:  # a part without requests
            return real(records)
        records = [dataclasses.replace(r) for r in records]
        records[2].max_tokens = 0
        return real(records)

    monkeypatch.setattr(runs_module, "records_to_arrow", corrupted)
    with MockFaultyServer() as server:
        matrix = _matrix(tmp_path, server.url)
        code = cli.main(
            ["run", str(matrix), "--warehouse", str(tmp_path / "wh.duckdb"), "--runs-dir", str(tmp_path / "runs")]
        )
    out, err = capsys.readouterr()
    assert code == 1
    assert "requests loaded into" in out and ", 1 rejected (rejected_requests)" in out and "report:" in out
    line = [ln for ln in err.splitlines() if ln.startswith("bakeoff: ")]
    assert len(line) == 1
    assert line[0].startswith(
        "bakeoff: validation failed: 1 of 6 request rows rejected, 5 kept: "
        "expect_column_values_to_be_between(max_tokens): 1 row"
    )


def test_the_flow_runs_the_preflight_itself(tmp_path, monkeypatch, prefect_server):
    """A deployment run by a worker calls the flow directly, not `bakeoff run`: the flow's own preflight
    refuses a prompts file that is not there before anything starts or any run folder is made."""
    from prefect.client.orchestration import get_client

    from flows.nightly import nightly
    from tasks.matrix import MatrixError

    data = yaml.safe_load(_matrix(tmp_path, "http://127.0.0.1:9/v1").read_text())
    data["workloads"][0]["prompts"] = "missing-prompts.yaml"
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(yaml.safe_dump(data))
    with pytest.raises(MatrixError, match=r"missing-prompts\.yaml"):
        nightly(matrix_path=str(matrix), warehouse=str(tmp_path / "wh.duckdb"), runs_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "wh.duckdb").exists()

    async def task_runs():
        async with get_client() as client:
            flow_runs = [f for f in await client.read_flow_runs() if f.parameters.get("matrix_path") == str(matrix)]
            return flow_runs, await client.read_task_runs()

    flow_runs, tasks = asyncio.run(task_runs())
    assert len(flow_runs) == 1 and flow_runs[0].state.is_failed()
    mine = [t for t in tasks if t.flow_run_id == flow_runs[0].id]
    assert [t.name.rsplit("-", 1)[0] for t in mine] == ["preflight"] and mine[0].state.is_failed()


def test_warehouse_and_runs_folder_in_one_precedence(tmp_path, monkeypatch):
    from tasks.matrix import load_matrix
    from tasks.runs import run_paths

    data = yaml.safe_load(_matrix(tmp_path, "http://127.0.0.1:9/v1").read_text())
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(data))
    own = tmp_path / "own.yaml"
    own.write_text(yaml.safe_dump({**data, "warehouse": "file.duckdb", "runs_dir": "file-runs"}))
    monkeypatch.delenv("BAKEOFF_WAREHOUSE", raising=False)
    monkeypatch.delenv("BAKEOFF_RUNS_DIR", raising=False)
    assert run_paths(load_matrix(bare)[0]) == (".bakeoff/bakeoff.duckdb", ".bakeoff/runs")  # the defaults
    assert run_paths(load_matrix(own)[0]) == ("file.duckdb", "file-runs")  # the file
    monkeypatch.setenv("BAKEOFF_WAREHOUSE", "env.duckdb")
    monkeypatch.setenv("BAKEOFF_RUNS_DIR", "env-runs")
    assert run_paths(load_matrix(own)[0]) == ("env.duckdb", "env-runs")  # the environment over the file
    assert run_paths(load_matrix(own)[0], "given.duckdb", "given-runs") == ("given.duckdb", "given-runs")


def test_a_report_that_overruns_its_deadline_fails_the_night_without_hanging(tmp_path, monkeypatch, prefect_server):
    """The flow's render-report task has a deadline (REPORT_TIMEOUT_S): with it cut to 0.5 s and the render
    made to hang, the night ends with Prefect's TaskRunTimeoutError instead of waiting, the run loaded."""
    import time

    from prefect.task_engine import TaskRunTimeoutError

    import flows.nightly as nightly_module
    import reports
    from warehouse import store

    assert nightly_module.report.timeout_seconds == nightly_module.REPORT_TIMEOUT_S
    assert nightly_module.build_images.timeout_seconds == nightly_module.BUILD_TIMEOUT_S
    real = reports.build_model

    def hung_render(*args, **kwargs):
        time.sleep(600)  # a render that hangs (a stuck chart conversion, a blocked disk)
        return real(*args, **kwargs)

    monkeypatch.setattr(reports, "build_model", hung_render)
    monkeypatch.setattr(nightly_module, "report", nightly_module.report.with_options(timeout_seconds=0.5))
    warehouse = tmp_path / "wh.duckdb"
    with MockFaultyServer() as server, pytest.raises(TaskRunTimeoutError):
        nightly_module.nightly(
            matrix_path=str(_matrix(tmp_path, server.url)), warehouse=str(warehouse), runs_dir=str(tmp_path / "runs")
        )
    with store.opened(warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]
