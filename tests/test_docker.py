"""Engines in containers on a real dockerd: the image build task, the docker launcher through the
flow (llama.cpp CPU image serving SmolLM2), failure classification from a container's log, and
teardown that leaves no bakeoff container behind."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml

from tasks import images
from tasks.launchers.docker import LABEL, OWNER_HOST, OWNER_PID, remove_leftovers
from tests.builders import require

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.docker

# MOCK: an image that only prints SGLang's real out-of-memory line and exits, as SGLang does when
# --mem-fraction-static leaves no room for the KV cache. Provoking it for real needs a GPU.
MOCK_SGLANG_OOM = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ENTRYPOINT ["/bin/sh", "-c", "echo 'loading model...'; echo 'RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.' >&2; exit 1", "--"]
"""


def bakeoff_containers(client, run_id: str | None = None) -> list[str]:
    label = f"bakeoff.run_id={run_id}" if run_id else f"{LABEL}=true"
    return [c.name for c in client.containers.list(all=True, filters={"label": label})]


def test_build_is_skipped_when_the_content_hash_tag_exists(docker_client, base_image, tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY hello.txt /hello.txt\n")
    (tmp_path / "hello.txt").write_text(f"hello {tmp_path.name}\n")  # unique content: a fresh tag
    spec = images.ImageSpec(
        "bakeoff/test-hello", dockerfile, {"BASE_IMAGE": base_image}, {"hello.txt": tmp_path / "hello.txt"}
    )
    first = images.build_image(docker_client, spec, run_id="r", log_dir=tmp_path / "logs")
    second = images.build_image(docker_client, spec, run_id="r", log_dir=tmp_path / "logs")
    try:
        assert first["status"] == "built" and first["attempts"] == 1
        assert second["status"] == "cached" and second["image"] == first["image"]
        assert first["image"] == images.image_tag(spec)
        assert "COPY hello.txt" in Path(first["log_path"]).read_text()
        (tmp_path / "hello.txt").write_text("changed\n")
        assert images.image_tag(spec) != first["image"]  # any input change is a new tag
    finally:
        docker_client.images.remove(first["image"], force=True)


def test_a_dockerfile_error_fails_at_once_without_retry(docker_client, base_image, tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {base_image}\nRUN exit 3\n")
    spec = images.ImageSpec("bakeoff/test-broken", dockerfile)
    with pytest.raises(images.BuildFailed) as err:
        images.build_image(docker_client, spec, run_id="r", log_dir=tmp_path, retries=3, backoff_s=0.01)
    assert err.value.error_class == "build_error"
    assert err.value.row["attempts"] == 1 and err.value.row["status"] == "failed"
    assert "non-zero code" in err.value.row["error_message"]


def test_leftovers_of_a_crashed_run_are_removed(docker_client, base_image):
    import os
    import socket
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the owner of a crashed run
    host = socket.gethostname()
    owners = {"bakeoff-test-leftover": str(gone.pid), "bakeoff-test-live": str(os.getpid())}
    for name, pid in owners.items():
        docker_client.containers.run(
            base_image,
            ["sleep", "300"],
            detach=True,
            name=name,
            network_mode="host",
            labels={LABEL: "true", OWNER_HOST: host, OWNER_PID: pid, "bakeoff.run_id": name},
        )
    try:
        removed = remove_leftovers(docker_client)
        assert "bakeoff-test-leftover" in removed
        assert "bakeoff-test-leftover" not in bakeoff_containers(docker_client)
        assert "bakeoff-test-live" in bakeoff_containers(docker_client)  # its owner (this test) still runs
    finally:
        for name in owners:
            with contextlib.suppress(Exception):
                docker_client.containers.get(name).remove(force=True)


def test_the_night_in_containers(docker_client, base_image, llama_server, smollm2, tmp_path, prefect_server):
    from flows.nightly import nightly
    from warehouse import store

    mock_dir = tmp_path / "mock"
    mock_dir.mkdir()
    (mock_dir / "Dockerfile").write_text(MOCK_SGLANG_OOM)
    matrix = {
        "name": "docker-test",
        "engines": {
            "llamacpp-docker": {
                "kind": "llamacpp",
                "launcher": "docker",
                "version": "0.3.36",
                "args": ["--threads", "2"],
                "startup_timeout_s": 90,
                "build": {
                    "name": "bakeoff/llamacpp-cpu",
                    "dockerfile": str(ROOT / "docker" / "llamacpp-cpu.Dockerfile"),
                    "args": {"BASE_IMAGE": base_image},
                    "files": {"llama-server": str(llama_server)},
                },
            },
            "sglang-oom": {
                "kind": "sglang",
                "launcher": "docker",
                "version": "0.5.2",
                "use_gpu": False,
                "startup_timeout_s": 60,
                "build": {
                    "name": "bakeoff/mock-sglang-oom",
                    "dockerfile": str(mock_dir / "Dockerfile"),
                    "args": {"BASE_IMAGE": base_image},
                },
            },
        },
        "models": {"smollm2": {"path": str(smollm2), "served_name": "smollm2"}},
        "deployments": [
            {"id": "sglang-oom", "instances": [{"engine": "sglang-oom", "model": "smollm2", "memory_flag": 0.25}]},
            {
                "id": "llamacpp-docker",
                "instances": [{"engine": "llamacpp-docker", "model": "smollm2", "parallel": 2, "context_length": 512}],
            },
        ],
        "workloads": [{"id": "mini", "limit_prompts": 3, "output_lengths": [8]}],
        "load": {"concurrency": [2], "warmup_requests": 1, "request_timeout_s": 60},
    }
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(matrix))
    warehouse = tmp_path / "wh.duckdb"
    result = nightly(matrix_path=str(path), warehouse=str(warehouse), runs_dir=str(tmp_path / "runs"))

    assert bakeoff_containers(docker_client, result["run_id"]) == [], "teardown must leave no bakeoff container"
    with store.opened(warehouse, read_only=True) as con:
        deps = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT deployment_id, started, failure_class, log_excerpt, image, memory_flag FROM deployments"
            ).fetchall()
        }
        assert deps["llamacpp-docker"][0] is True and deps["llamacpp-docker"][3].startswith("bakeoff/llamacpp-cpu:")
        oom = deps["sglang-oom"]
        assert oom[0] is False and oom[1] == "out_of_memory_at_start"
        assert "Not enough memory" in oom[2]
        assert oom[4] == "--mem-fraction-static 0.25"
        statuses = con.execute("SELECT status, count(*) FROM requests GROUP BY ALL").fetchall()
        assert statuses == [("ok", 3)]
        builds = {r[0].split(":")[0]: r[1] for r in con.execute("SELECT image, status FROM builds").fetchall()}
        assert set(builds) == {"bakeoff/llamacpp-cpu", "bakeoff/mock-sglang-oom"}
        assert set(builds.values()) <= {"built", "cached"}
    assert (Path(result["run_dir"]) / "logs" / "sglang-oom-0.log").read_text().count("Not enough memory") == 1


def test_bridge_network_publishes_the_port(docker_client, base_image, llama_server, smollm2, tmp_path):
    """network: bridge -- the engine listens inside its own network namespace and its port is published
    on 127.0.0.1. Needs a dockerd with a bridge network (docker/start-dockerd.sh makes one where it can)."""
    if not docker_client.networks.list(names=["bridge"]):
        require("BAKEOFF_REQUIRE_DOCKER_BRIDGE", "this dockerd has no bridge network (started with --bridge=none)")
    import httpx

    from tasks.deploy import launch_instance
    from tasks.matrix import load_matrix
    from tasks.plan import plan

    matrix_file = tmp_path / "matrix.yaml"
    matrix_file.write_text(
        yaml.safe_dump(
            {
                "name": "bridge-test",
                "engines": {
                    "cpu": {
                        "kind": "llamacpp",
                        "launcher": "docker",
                        "network": "bridge",
                        "version": "0.3.36",
                        "build": {
                            "name": "bakeoff/llamacpp-cpu",
                            "dockerfile": str(ROOT / "docker" / "llamacpp-cpu.Dockerfile"),
                            "args": {"BASE_IMAGE": base_image},
                            "files": {"llama-server": str(llama_server)},
                        },
                    }
                },
                "models": {"smollm2": {"path": str(smollm2)}},
                "deployments": [
                    {"id": "bridged", "instances": [{"engine": "cpu", "model": "smollm2", "context_length": 256}]}
                ],
                "workloads": [{"id": "w"}],
            }
        )
    )
    matrix, _ = load_matrix(matrix_file)
    tag = images.build_image(
        docker_client, images.image_spec(matrix.engines["cpu"].build, tmp_path), run_id="r", log_dir=tmp_path
    )["image"]
    (group,) = plan(matrix)
    handle = launch_instance(
        matrix,
        group.instances[0],
        start_order=0,
        run_id="bridge",
        run_dir=tmp_path,
        base_dir=tmp_path,
        images={"cpu": tag},
    )
    try:
        assert httpx.get(handle.target.base_url + "/health", timeout=5).status_code == 200
        assert handle.process.container.attrs["HostConfig"]["NetworkMode"] == "bridge"
    finally:
        handle.stop()


def test_a_container_killed_mid_cell_is_recorded_and_the_cell_goes_on(
    docker_client, base_image, llama_server, smollm2, tmp_path
):
    """`docker kill` of the engine's container while a cell streams from it: the requests in flight and
    after are failure rows (a cut stream is never ok), the cell ends, the handle says crashed_mid_run, and
    no container is left."""
    import threading
    import time

    from tasks import bench, deploy, images
    from tasks.matrix import load_matrix
    from tasks.plan import plan

    matrix_data = {
        "name": "docker-kill",
        "engines": {
            "llamacpp-docker": {
                "kind": "llamacpp",
                "launcher": "docker",
                "version": "0.3.36",
                "args": ["--threads", "2"],
                "startup_timeout_s": 90,
                "build": {
                    "name": "bakeoff/llamacpp-cpu",
                    "dockerfile": str(ROOT / "docker" / "llamacpp-cpu.Dockerfile"),
                    "args": {"BASE_IMAGE": base_image},
                    "files": {"llama-server": str(llama_server)},
                },
            }
        },
        "models": {"smollm2": {"path": str(smollm2), "served_name": "smollm2"}},
        "deployments": [
            {
                "id": "killed",
                "instances": [{"engine": "llamacpp-docker", "model": "smollm2", "parallel": 2, "context_length": 512}],
            }
        ],
        "workloads": [{"id": "long", "limit_prompts": 6, "output_lengths": [96]}],
        "load": {"concurrency": [2], "warmup_requests": 0, "request_timeout_s": 120},
    }
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(matrix_data))
    matrix, _ = load_matrix(path)
    tags, _builds = images.build_engine_images(matrix, run_id="r", log_dir=tmp_path / "logs", base_dir=tmp_path)
    (group,) = plan(matrix)
    handle = deploy.launch_instance(
        matrix, group.instances[0], start_order=0, run_id="r", run_dir=tmp_path / "run", base_dir=tmp_path, images=tags
    )
    try:
        assert handle.started and handle.check_alive()
        container = handle.process.container

        def kill_when_streaming() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (tmp_path / "streaming").exists():
                time.sleep(0.05)
            time.sleep(0.5)
            container.kill()

        killer = threading.Thread(target=kill_when_streaming)
        killer.start()
        (tmp_path / "streaming").touch()  # the cell starts now; the kill lands within its first requests
        outcome = bench.run_cell(
            matrix,
            group.cells[0],
            handle.target,
            handle.request_extras(matrix.workloads[0]),
            run_id="r",
            base_dir=tmp_path,
            label="killed",
        )
        killer.join()
        statuses = [r.status for r in outcome.records]
        assert len(statuses) == 6 and statuses.count("ok") < 6, statuses
        assert all(r.status != "ok" or r.completion_tokens == 96 for r in outcome.records)  # no cut stream is ok
        assert handle.check_alive() is False and handle.row.failure_class == "crashed_mid_run"
    finally:
        handle.stop()
    assert bakeoff_containers(docker_client, "r") == []
