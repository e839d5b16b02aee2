"""Credentials: never stored or logged in the clear, and an engine gets only the secrets it names.

The real llama-server is started through the process launcher with a token in bakeoff's environment
that its engine does not name, and one that it names (secret_env): /proc/PID/environ of the running
engine shows which reached it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.engines import adapter_for
from tasks.engines.base import LaunchSpec
from tasks.launch import MASK, literal_secrets, masked
from tasks.launchers.process import ProcessInstance, engine_base_environment, free_port
from tasks.matrix import Matrix

FAKE = "hf_FAKEtokenFAKEtokenFAKEtoken1234"


def test_credentials_in_a_command_line_are_masked():
    argv = ["--model", "/models/Qwen2.5-3B-Instruct-Q4_K_M.gguf", "--alias", "qwen2.5-3b-instruct-q4-k-m-2025-v2"]
    argv += ["--api-key", "abc", "--hf-token=xyz", "--port", "8000", "--extra", FAKE, "--key=" + "a1" * 20]
    assert masked(argv) == [
        "--model",
        "/models/Qwen2.5-3B-Instruct-Q4_K_M.gguf",
        "--alias",
        "qwen2.5-3b-instruct-q4-k-m-2025-v2",  # a long model name is not a token
        "--api-key",
        MASK,  # the value of a credential flag, whatever it looks like
        f"--hf-token={MASK}",
        "--port",
        "8000",
        "--extra",
        MASK,  # shaped like a token, wherever it stands
        f"--key={MASK}",
    ]


def test_a_literal_credential_in_the_matrix_is_named():
    matrix = Matrix.model_validate(
        {
            "name": "s",
            "engines": {
                "e": {
                    "kind": "vllm",
                    "version": "0.10.2",
                    "launcher": "docker",
                    "image": "i",
                    "args": ["--api-key", "x"],
                },
                "x": {"kind": "external", "version": "1", "url": "http://u:p@host:8000", "launcher": "none"},
            },
            "models": {"m": {"path": "org/m"}},
            "deployments": [{"id": "d", "instances": [{"engine": "e", "model": "m", "args": [FAKE]}]}],
            "workloads": [{"id": "w", "output_lengths": [4]}],
        }
    )
    assert literal_secrets(matrix) == ["engines.e.args", "engines.x.url", "deployments.0.instances.0.args"]


def test_an_engine_inherits_only_what_a_program_needs(monkeypatch):
    monkeypatch.setenv("SOME_OTHER_TOKEN", FAKE)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    env = engine_base_environment()
    assert "SOME_OTHER_TOKEN" not in env and env["CUDA_VISIBLE_DEVICES"] == "0" and "PATH" in env


@pytest.mark.engine
def test_the_running_engine_sees_the_secret_it_names_and_no_other(tmp_path, monkeypatch, llama_server, smollm2):
    monkeypatch.setenv("UNNAMED_TOKEN", FAKE)
    port = free_port()
    argv = [str(llama_server), "--model", str(smollm2), "--port", str(port), "--host", "127.0.0.1"]
    argv += ["--ctx-size", "512", "--parallel", "1", "--threads", "1"]
    named = {"NAMED_TOKEN": "named-value"}  # as tasks/launch.instance_launch passes a secret_env variable
    inst = ProcessInstance(adapter_for("llamacpp"), LaunchSpec(argv=argv, env=named, port=port), tmp_path / "e.log")
    inst.start()
    try:
        inst.wait_healthy(60)
        environ = Path(f"/proc/{inst.pid()}/environ").read_bytes().split(b"\0")
    finally:
        inst.stop()
    assert b"NAMED_TOKEN=named-value" in environ
    assert not [e for e in environ if e.startswith(b"UNNAMED_TOKEN=")]
    assert FAKE.encode() not in (tmp_path / "e.log").read_bytes()


def test_the_stored_command_line_is_masked_but_the_engine_gets_the_value(tmp_path):
    from tasks.launch import instance_launch
    from tasks.plan import plan

    matrix = Matrix.model_validate(
        {
            "name": "s",
            "engines": {
                "e": {
                    "kind": "vllm",
                    "version": "0.10.2",
                    "launcher": "docker",
                    "image": "i",
                    "args": ["--api-key", FAKE],
                }
            },
            "models": {"m": {"path": "org/m"}},
            "deployments": [{"id": "d", "instances": [{"engine": "e", "model": "m"}]}],
            "workloads": [{"id": "w", "output_lengths": [4]}],
        }
    )
    (group,) = plan(matrix)
    launch = instance_launch(matrix, group.instances[0], base_dir=tmp_path, port=8000)
    assert FAKE in launch.spec.argv  # what the engine is started with
    assert FAKE not in launch.flags and "--api-key" in launch.flags  # what deployments.flags stores


@pytest.mark.engine
@pytest.mark.prefect
def test_a_night_leaves_no_secret_anywhere(tmp_path, llama_server, smollm2, prefect_server):
    """A whole `bakeoff run` on the real llama-server with a token in its environment that the engine
    names (secret_env) and a literal one in its args (`--api-key`, so every request is refused 401 and
    the night ends failed, measured too little): neither appears in the warehouse (every text value of
    every table, and the file's bytes), the staged Parquet, run.json, night.json, the engine log, the
    report files, the console, or the Prefect server's database and the run's artifacts."""
    import os
    import subprocess
    import sys

    import duckdb
    import pyarrow.parquet as pq
    import yaml
    from prefect.settings import PREFECT_API_URL

    from tests.builders import cpu_engine_matrix

    literal = "sk-LITERALliteralLITERALliteral9876"
    matrix = cpu_engine_matrix(
        "secrets",
        llama_server,
        smollm2,
        workloads=[{"id": "w", "prompts": "study", "limit_prompts": 2, "output_lengths": [4]}],
        load={"concurrency": [1], "warmup_requests": 0, "request_timeout_s": 60},
    )
    matrix["engines"]["cpu"]["args"] += ["--api-key", literal]
    matrix["engines"]["cpu"]["secret_env"] = ["BAKEOFF_TEST_TOKEN"]
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(matrix))
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(root)}
    env["BAKEOFF_TEST_TOKEN"] = FAKE
    night = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert night.returncode == 1, night.stderr[-3000:]  # every request refused: measured too little
    assert "literal credential" in night.stderr or "credential" in night.stderr  # the preflight's warning
    secrets = (FAKE, literal)
    found: list[str] = [f"console has {s}" for s in secrets if s in night.stdout + night.stderr]

    warehouse = tmp_path / ".bakeoff" / "bakeoff.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        texts = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main' "
            "AND data_type IN ('VARCHAR', 'JSON', 'VARCHAR[]') AND table_name NOT LIKE 'v_%'"
        ).fetchall()
        assert len(texts) > 20  # the scan reads the real tables
        for table, column in texts:
            for s in secrets:
                (n,) = con.execute(
                    f'SELECT count(*) FROM "{table}" WHERE CAST("{column}" AS VARCHAR) LIKE ?', [f"%{s}%"]
                ).fetchone()
                if n:
                    found.append(f"{table}.{column} has {s}")
        (flags,) = con.execute("SELECT flags FROM deployments").fetchone()
        assert "--api-key" in flags  # the flag is stored, its value masked
    files = [p for p in (tmp_path / ".bakeoff").rglob("*") if p.is_file()]
    files += [p for p in Path(os.environ["PREFECT_HOME"]).rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.name == "night.json" for p in files)
    for p in files:
        data = p.read_bytes()
        if p.suffix == ".parquet":
            data += str(pq.read_table(p).to_pylist()).encode()  # zstd pages: read the values too
        found += [f"{p} has {s}" for s in secrets if s.encode() in data]
    assert found == []
