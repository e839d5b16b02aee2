"""The `bakeoff` CLI: every error a user can meet is one line `bakeoff: ...` on stderr with its exit code
(2 bad input, 75 busy, 1 a failed night or a broken install), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from tests.builders import cell_row, record, stage
from warehouse import schema, store

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "cpu-smoke.yaml"
BAKEOFF = Path(sys.executable).with_name("bakeoff")


def one_line(capsys) -> tuple[str, str]:
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("bakeoff: "), err
    return out, err


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BAKEOFF), *args], cwd=cwd, capture_output=True, text=True, timeout=180, env={**os.environ, **env}
    )


def test_a_warehouse_of_a_newer_bakeoff_says_upgrade(warehouse_path, capsys):
    con = store.connect(warehouse_path)
    con.execute("INSERT INTO schema_version (version) VALUES (?)", [schema.LATEST + 1])
    con.close()
    assert main(["sql", "select 1", "--warehouse", str(warehouse_path)]) == 2
    _, err = one_line(capsys)
    assert (
        f"schema version {schema.LATEST + 1}, newer than this bakeoff knows ({schema.LATEST}); upgrade bakeoff" in err
    )


def test_a_badly_named_migration_is_a_broken_install(tmp_path, monkeypatch, capsys):
    run_dir = stage(tmp_path, [record(i) for i in range(2)], [cell_row()])
    bad = tmp_path / "migrations"
    bad.mkdir()
    (bad / "0001_initial.sql").write_text(schema.migrations()[0][1].read_text())
    (bad / "2-oops.sql").write_text("SELECT 1;")
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", bad)  # a real misnamed file, in a folder of the test's
    assert main(["load", str(run_dir), "--warehouse", str(tmp_path / "new.duckdb")]) == 1
    _, err = one_line(capsys)
    assert "2-oops.sql: migration files are named NNNN_name.sql" in err


def test_no_such_run_is_bad_input(warehouse_path, capsys):
    store.connect(warehouse_path).close()
    assert main(["report", "--run", "nope", "--warehouse", str(warehouse_path)]) == 2
    _, err = one_line(capsys)
    assert "no run nope in the warehouse" in err


def test_no_such_baseline_is_bad_input(tmp_path, warehouse_path, capsys):
    from tests.builders import record, stage

    with store.opened(warehouse_path) as con:
        store.load_run(con, stage(tmp_path, [record(0)], [cell_row()]))
    assert main(["report", "--run", "run-1", "--baseline", "gone", "--warehouse", str(warehouse_path)]) == 2
    _, err = one_line(capsys)
    assert "no run gone in the warehouse" in err


def test_duplicate_instance_ids_are_refused_by_plan(tmp_path, capsys):
    data = yaml.safe_load(SMOKE.read_text())
    inst = data["deployments"][0]["instances"][0]
    inst["id"] = "twin"
    data["deployments"].append({"id": "again", "instances": [dict(inst)]})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["plan", str(path)]) == 2
    _, err = one_line(capsys)
    assert (
        f"{path}: deployments.3.instances.0.id: instance id 'twin' is already the id of deployments.0.instances.0"
        in err
    )


def test_unreachable_docker_daemon_is_one_line_before_the_night(tmp_path):
    data = yaml.safe_load(SMOKE.read_text())
    data["engines"]["llamacpp-cpu"].update(launcher="docker", image="bakeoff/llamacpp-cpu:test")
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    result = cli("run", str(path), cwd=tmp_path, DOCKER_HOST="unix:///nonexistent.sock")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("bakeoff: no Docker engine reachable (unix:///nonexistent.sock)")
    assert not (tmp_path / ".bakeoff").exists()  # preflight: nothing started


def test_a_docker_api_error_is_not_a_crash(tmp_path):
    """The daemon gone (a real client on a socket nobody serves): docker_api_error, not crashed_mid_run."""
    import docker
    from tasks.deploy import InstanceHandle
    from tasks.engines import adapter_for
    from tasks.engines.base import LaunchSpec
    from tasks.launchers.docker import DockerApiError, DockerInstance
    from tasks.records import DeploymentRow

    client = docker.DockerClient(base_url="unix:///nonexistent.sock", version="1.41", timeout=5)
    instance = DockerInstance(
        client,
        adapter_for("llamacpp"),
        LaunchSpec(argv=["x"], env={}, port=1),
        "img",
        "c",
        tmp_path / "c.log",
        container=client.containers.prepare_model({"Id": "0" * 64}),
    )
    with pytest.raises(DockerApiError, match="ConnectionError"):
        instance.is_running()
    row = DeploymentRow(
        run_id="r",
        instance_id="i",
        deployment_id="d",
        start_order=0,
        engine="e",
        engine_kind="llamacpp",
        model="m",
        launcher="docker",
        started=True,
    )
    handle = InstanceHandle(row=row, process=instance)
    assert handle.check_alive() is False
    assert handle.row.failure_class == "docker_api_error"
    assert handle.row.failure_message.startswith("Docker API: ConnectionError")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["plan", "--bogus"], "bakeoff: No such option: --bogus (see `bakeoff plan --help`)"),
        (["sql"], "bakeoff: Missing argument 'query'. (see `bakeoff sql --help`)"),
        (["sql", "select 1", "--max-rows", "many"], "bakeoff: Invalid value for '--max-rows'"),
        ([], "bakeoff: Missing command."),
    ],
)
def test_usage_errors_are_one_line_exit_2(argv, expected, capsys):
    assert main(argv) == 2
    _, err = one_line(capsys)
    assert err.startswith(expected), err


def test_help_lists_the_commands_and_their_options(tmp_path):
    top = cli("--help", cwd=tmp_path)
    assert top.returncode == 0
    for command in ("run", "plan", "compose", "report", "sql", "load", "export"):
        assert f" {command} " in top.stdout, command
    run = cli("run", "--help", cwd=tmp_path)
    assert run.returncode == 0
    assert "--warehouse" in run.stdout and "--runs-dir" in run.stdout and "configs/cpu-smoke.yaml" in run.stdout
    export = cli("export", "--help", cwd=tmp_path)
    assert "--run" in export.stdout and "repeatable" in export.stdout


def test_sql_does_not_import_prefect(warehouse_path):
    store.connect(warehouse_path).close()
    code = (
        "import sys; from flows.cli import main; "
        f"rc = main(['sql', 'select 41 + 1 as n', '--warehouse', {str(warehouse_path)!r}]); "
        "main(['sql', '--help']); print('prefect' in sys.modules, 'great_expectations' in sys.modules, rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "42" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "False False 0"
