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
