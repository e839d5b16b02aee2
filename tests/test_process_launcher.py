"""No process engine outlives bakeoff: the kernel kills it when bakeoff is SIGKILLed (no Python code
runs then), and the next night's sweep kills one a dead bakeoff left behind, never a reused pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tasks.launchers.process import remove_leftovers, start_time, write_pid_file

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# A stand-in for bakeoff: it starts the real llama-server through the process launcher, waits until
# it is healthy, prints its pid and then sleeps until it is killed.
BAKEOFF_STAND_IN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tasks.engines import adapter_for
    from tasks.engines.base import LaunchSpec
    from tasks.launchers.process import ProcessInstance, free_port

    binary, model, log_path = sys.argv[1:4]
    port = free_port()
    argv = [binary, "--model", model, "--port", str(port), "--host", "127.0.0.1",
            "--ctx-size", "512", "--parallel", "1", "--threads", "1"]
    inst = ProcessInstance(adapter_for("llamacpp"), LaunchSpec(argv=argv, env={}, port=port), Path(log_path))
    inst.start()
    inst.wait_healthy(60)
    print(inst.pid(), flush=True)
    time.sleep(600)
    """
)


@pytest.mark.engine
def test_sigkill_of_bakeoff_kills_its_engine(tmp_path, llama_server, smollm2):
    engines = tmp_path / "engines"
    owner = subprocess.Popen(
        [sys.executable, "-c", BAKEOFF_STAND_IN, str(llama_server), str(smollm2), str(tmp_path / "engine.log")],
        cwd=ROOT,
        env={**os.environ, "BAKEOFF_ENGINES_DIR": str(engines), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    engine_pid = None
    try:
        line = owner.stdout.readline()  # the engine is healthy by then
        assert line.strip().isdigit(), f"the stand-in printed {line!r}; log: {(tmp_path / 'engine.log').read_text()}"
        engine_pid = int(line)
        assert start_time(engine_pid) is not None
        assert (engines / f"{engine_pid}.json").is_file(), "the launcher records each engine it starts"

        owner.send_signal(signal.SIGKILL)  # no atexit, no finally: only the kernel can stop the engine now
        owner.wait(timeout=10)
        assert wait_until(lambda: start_time(engine_pid) is None, timeout_s=5), "llama-server outlived bakeoff"
    finally:
        owner.kill()
        owner.wait()
        if engine_pid and start_time(engine_pid) is not None:  # the test failed: leave no engine behind
            os.killpg(engine_pid, signal.SIGKILL)
    # Its pid file is left behind (SIGKILL); the next night's sweep finds nothing to kill and tidies it.
    assert remove_leftovers(engines) == []
    assert list(engines.iterdir()) == []


def test_the_sweep_kills_a_leftover_once_its_owner_is_gone(tmp_path):
    owner = subprocess.Popen(["sleep", "30"])  # a bakeoff that is still running
    leftover = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        pid_file = write_pid_file(leftover.pid, ["sleep", "300"], owner_pid=owner.pid, directory=tmp_path)
        assert json.loads(pid_file.read_text())["start_time"] == start_time(leftover.pid)

        assert remove_leftovers(tmp_path) == [], "the engine of a live bakeoff is its own"
        assert leftover.poll() is None and pid_file.is_file()

        owner.kill()
        owner.wait()
        assert remove_leftovers(tmp_path) == [leftover.pid]
        assert leftover.wait(timeout=5) == -signal.SIGKILL
        assert not pid_file.exists()
    finally:
        for p in (owner, leftover):
            p.kill()
            p.wait()


@pytest.mark.parametrize("field", ["start_time", "cmdline"])
def test_the_sweep_never_kills_a_reused_pid(tmp_path, field):
    """A pid file whose pid now names another process (another start time or command line) is
    removed, and that process is left alone."""
    owner = subprocess.Popen(["true"])
    owner.wait()  # gone: its engines are fair game
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        pid_file = write_pid_file(other.pid, ["sleep", "300"], owner_pid=owner.pid, directory=tmp_path)
        entry = json.loads(pid_file.read_text())
        entry[field] = entry[field] - 1 if field == "start_time" else ["llama-server", "--port", "1"]
        entry["owner_start_time"] = 1  # the owner's pid is gone (or reused): either way not alive
        pid_file.write_text(json.dumps(entry))

        assert remove_leftovers(tmp_path) == []
        assert other.poll() is None
        assert not pid_file.exists()
    finally:
        other.kill()
        other.wait()
