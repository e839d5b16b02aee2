"""Deploy one instance of a deployment group: resolve the model, start the engine, wait for health.

Returns a row for the `deployments` table whatever happens; a failed start is a result
(started = false, failure class, log excerpt), never an exception that ends the night.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tasks import telemetry
from tasks.engine_metrics import scrape
from tasks.engines import adapter_for
from tasks.engines.cache import prepare_cache
from tasks.gpu_memory import MemoryPlan, plan_group, sglang_fraction_for
from tasks.images import docker_client, image_spec
from tasks.launch import instance_launch, literal_secrets
from tasks.launchers.docker import DockerApiError, DockerInstance
from tasks.launchers.process import DeploymentFailed, ProcessInstance, free_port, log_tail
from tasks.loadgen import Target
from tasks.matrix import Engine, Matrix, MatrixError, Workload
from tasks.plan import Group, PlannedInstance, plan
from tasks.records import DeploymentRow

log = logging.getLogger("bakeoff.deploy")

# Failure classes worth a second try (the machine was slow or the engine flaked); the others
# (model not found, port in use, out of memory) fail the same way every time.
RETRYABLE_FAILURES = {"health_timeout", "exited_at_start"}


@dataclass
class InstanceHandle:
    """A started instance: its warehouse row and how to reach and stop it. The handle owns its row:
    an update (a crash seen after a cell) replaces it, and the group's rows are read from the handles
    at the end of the group (DeployedGroup.rows), so no copy can miss it."""

    row: DeploymentRow
    target: Target | None = None
    process: ProcessInstance | DockerInstance | None = None
    metrics_path: str | None = None  # the engine's Prometheus endpoint, if it has one
    engine_kind: str = "external"
    engine: Engine | None = None  # the matrix's engine (what an external one accepts)

    @property
    def started(self) -> bool:
        return self.row.started

    def pid(self) -> int | None:
        return self.process.pid() if self.process is not None else None

    def request_extras(self, workload: Workload) -> dict:
        """The engine-specific fields every request of `workload` carries (e.g. ignore_eos)."""
        return adapter_for(self.engine_kind).request_extras(workload, self.engine)

    def prepare_cache(self, workload: Workload) -> str:
        """Empties the engine's prefix cache before a cell where it can; returns the cell's cache_state."""
        got = prepare_cache(adapter_for(self.engine_kind), self.engine, workload, self.target.base_url)
        if got.state == "reset_failed":
            log.warning("%s: the prefix cache was not emptied before the cell: %s", self.row.instance_id, got.detail)
        elif got.detail:
            log.info("%s: prefix cache %s: %s", self.row.instance_id, got.state, got.detail)
        return got.state

    def scrape_metrics(self, run_id: str, cell_id: str, phase: str) -> list[dict]:
        return scrape(
            self.target.base_url,
            self.metrics_path,
            run_id=run_id,
            cell_id=cell_id,
            instance_id=self.target.instance_id,
            phase=phase,
        )

    def check_alive(self) -> bool:
        """After a cell: an engine that died under load is recorded as crashed_mid_run (its requests
        are already rows with their own failure status); one the Docker daemon cannot tell about, as
        docker_api_error. The first failure seen is the one kept."""
        try:
            if self.process is None or self.process.is_running():
                return True
        except DockerApiError as exc:  # the daemon did not answer: a different outcome from an exit
            log.error("%s: cannot tell whether the engine runs: Docker API: %s", self.row.instance_id, exc)
            self._failed("docker_api_error", f"Docker API: {exc}"[:1000])
            return False
        if isinstance(self.process, DockerInstance):
            self.process.save_log()
        log.error("%s: the engine exited during the benchmark", self.row.instance_id)
        self._failed(
            "crashed_mid_run", "the engine exited during the benchmark", log_tail(self.process.log_path)[-4000:]
        )
        return False

    def _failed(self, failure_class: str, message: str, excerpt: str | None = None) -> None:
        if self.row.failure_class is None:
            self.row = dataclasses.replace(
                self.row, failure_class=failure_class, failure_message=message, log_excerpt=excerpt
            )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def launch_instance(
    matrix: Matrix,
    planned: PlannedInstance,
    *,
    start_order: int,
    run_id: str,
    run_dir: Path,
    base_dir: Path,
    images: dict[str, str] | None = None,
    memory: MemoryPlan | None = None,
) -> InstanceHandle:
    """Start one instance and wait until it is healthy. Raises DeploymentFailed (after stopping what
    it started) so a caller with retries can try again; `failed_row` turns the last failure into a row.

    images: engine name -> the image tag the build step produced. memory: the planner's plan for
    this instance (its flag is re-computed from the live free memory for SGLang shares)."""
    engine = matrix.engines[planned.engine_name]
    adapter = adapter_for(engine.kind)
    row = _row(matrix, planned, start_order, run_id, memory)
    if engine.kind == "external":
        base_url = engine.url.rstrip("/")
        startup_s = wait_external_healthy(base_url + adapter.health_path, engine.startup_timeout_s)
        row = dataclasses.replace(row, started=True, launcher="none", startup_s=startup_s)
        model = matrix.models[planned.model_name]
        return InstanceHandle(
            row=row,
            target=_target(planned, model.served_name or planned.model_name, base_url),
            metrics_path=adapter.metrics_path,
            engine_kind=engine.kind,
            engine=engine,
        )

    launch = instance_launch(
        matrix,
        planned,
        base_dir=base_dir,
        port=planned.spec.port or free_port(),
        memory_args=_memory_args(matrix, planned, memory),
        images=images,
    )
    log_path = run_dir / "logs" / f"{planned.instance_id}.log"
    instance: ProcessInstance | DockerInstance
    if launch.launcher == "docker":
        instance = DockerInstance(
            docker_client(),
            adapter,
            launch.spec,
            launch.image,
            name=f"bakeoff-{run_id}-{planned.instance_id}"[:120],
            log_path=log_path,
            labels={"bakeoff.run_id": run_id, "bakeoff.instance_id": planned.instance_id},
            gpu_index=launch.gpu_index,
            volumes=launch.volumes,
            network=engine.network,
        )
    else:
        instance = ProcessInstance(adapter, launch.spec, log_path)
    # Flags are stored; environment values never are (they may hold secrets).
    row = dataclasses.replace(
        row,
        image=launch.image or row.image,
        model_path=launch.model_arg,
        flags=launch.flags,
        memory_flag=" ".join(launch.memory_args) or None,
    )
    instance.start()
    try:
        startup_s = instance.wait_healthy(engine.startup_timeout_s)
    except DeploymentFailed:
        instance.stop()
        raise
    row = dataclasses.replace(
        row,
        started=True,
        engine_artifact=engine_artifact(instance, launch),
        startup_s=startup_s,
        measured_memory_bytes=_measured_memory(launch.gpu_index, instance),
        engine_version=running_version(adapter, engine, instance.base_url),
    )
    log.info("%s is healthy at %s after %.1f s", planned.instance_id, instance.base_url, startup_s)
    return InstanceHandle(
        row=row,
        target=_target(planned, launch.served_name, instance.base_url),
        process=instance,
        metrics_path=adapter.metrics_path,
        engine_kind=engine.kind,
        engine=engine,
    )


def engine_artifact(instance, launch) -> str | None:
    """What ran, exactly: the image id of a container, the sha256 of a process engine's binary (a few MB,
    read once per start). None when it cannot be read; a record, never a gate."""
    try:
        if launch.launcher == "docker":
            return instance.container.image.id
        binary = shutil.which(launch.spec.argv[0]) or launch.spec.argv[0]
        with open(binary, "rb") as f:
            return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    except Exception as exc:  # a record only: the docker SDK's errors, OSError
        log.info("the engine's artifact was not read: %s", exc)
        return None


def running_version(adapter, engine: Engine, base_url: str) -> str:
    """The matrix's version, with what the running server reports when it differs (llama.cpp's build,
    e.g. "0.3.36 (server: b1-0c1e570)"; vLLM's /version; SGLang's /get_server_info). A server that does not
    answer keeps the matrix's version: the version check is a record, not a gate."""
    if adapter.version_path is None:
        return engine.version
    try:
        response = httpx.get(base_url + adapter.version_path, timeout=5.0)
        reported = adapter.reported_version(response.json()) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        reported = None
    if reported is None or engine.version in reported:
        return reported or engine.version
    return f"{engine.version} (server: {reported})"


def wait_external_healthy(url: str, timeout_s: float) -> float:
    """Wait until a server bakeoff does not start answers `url` (its /v1/models) with 200 and a JSON
    object; returns the seconds it took. Raises DeploymentFailed: `unreachable` at once when nothing
    listens (connection refused, no such host, the connect timed out), `health_timeout` when it did
    not answer within `timeout_s`, or answered all that time with something else (503, an HTML page)."""
    t0 = time.monotonic()
    last = "no answer"
    with httpx.Client(follow_redirects=False) as client:
        while True:
            left = timeout_s - (time.monotonic() - t0)
            if left <= 0:
                raise DeploymentFailed("health_timeout", f"{url} not healthy after {timeout_s:g} s: {last}", last)
            try:
                response = client.get(url, timeout=httpx.Timeout(left, connect=min(left, 10.0)))
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
                raise DeploymentFailed("unreachable", f"{url}: {type(exc).__name__}: {exc}"[:1000]) from exc
            except httpx.TimeoutException:
                last = f"no answer within {timeout_s:g} s"
                continue
            except httpx.TransportError as exc:  # it listens but cut the connection: it may be starting
                last = f"{type(exc).__name__}: {exc}"[:500]
            else:
                if response.status_code == 200 and _is_json_object(response):
                    return time.monotonic() - t0
                kind = response.headers.get("content-type", "no content type")
                last = f"answered {response.status_code} ({kind}): {response.text[:300]!r}"
            time.sleep(min(0.5, max(0.0, timeout_s - (time.monotonic() - t0))))


def _is_json_object(response: httpx.Response) -> bool:
    try:
        return isinstance(response.json(), dict)
    except ValueError:
        return False


def _target(planned: PlannedInstance, served_name: str, base_url: str) -> Target:
    return Target(
        base_url=base_url,
        served_model=served_name,
        engine=planned.engine_name,
        model=planned.model_name,
        deployment_id=planned.deployment_id,
        instance_id=planned.instance_id,
        extra_body={},
    )


def _memory_args(matrix: Matrix, planned: PlannedInstance, memory: MemoryPlan | None) -> list[str]:
    """The planner's flag; for an SGLang share, re-computed from the memory free right now (the
    previous instances are up, so this is exact where the plan was a prediction)."""
    if memory is None or memory.flag is None:
        return []
    if adapter_for(memory.engine_kind).memory_fraction_of == "free_at_start" and planned.spec.memory_share is not None:
        card = telemetry.card_or_none(matrix.gpu_index)
        if card is None:
            return memory.flag_args()
        value = sglang_fraction_for(planned.spec.memory_share, card.memory_total_bytes, card.memory_free_bytes)
        return [memory.flag, f"{value:.4f}".rstrip("0")]
    return memory.flag_args()


def _measured_memory(gpu_index: int | None, instance: ProcessInstance | DockerInstance) -> int | None:
    """An instance with the GPU: the card's used memory after it came up (NVML); else its RSS."""
    if gpu_index is not None:
        card = telemetry.card_or_none(gpu_index)
        return card.memory_used_bytes if card else None
    return instance.rss_bytes()


@dataclass
class DeployedGroup:
    """A deployment group as started: the handles of the instances that came up, and every
    instance's deployments row. `rows()` is read when the group is over (its handles' rows then carry
    what check_alive found)."""

    handles: dict[str, InstanceHandle]  # instance id -> started instance
    order: list[str]  # instance ids in start order
    failed: dict[str, DeploymentRow]  # instance id -> the row of one that did not start

    def rows(self) -> list[DeploymentRow]:
        return [self.handles[i].row if i in self.handles else self.failed[i] for i in self.order]

    def stop(self) -> None:
        """Stop every started instance, the last started first; always safe to call again."""
        for handle in reversed(list(self.handles.values())):
            handle.stop()


def deploy_group(
    matrix: Matrix,
    group: Group,
    *,
    run_id: str,
    run_dir: Path,
    base_dir: Path,
    images: dict[str, str],
    start: Callable[..., InstanceHandle] | None = None,
) -> DeployedGroup:
    """Start a group's instances one at a time in the planner's order, each after the previous one is
    healthy; one that does not start is a row with its failure, and the next is started all the same.
    `start` is how to launch one (the flow passes its Prefect task, with retries)."""
    start = start or launch_instance
    card = telemetry.card_or_none(matrix.gpu_index)  # plan against the real card when there is one
    memory = {
        m.instance_id: m
        for m in plan_group(
            matrix, group, total_bytes=card and card.memory_total_bytes, free_bytes=card and card.memory_free_bytes
        )
    }
    deployed = DeployedGroup(handles={}, order=[], failed={})
    for position, planned in enumerate(sorted(group.instances, key=lambda p: memory[p.instance_id].start_order)):
        mem = memory[planned.instance_id]
        deployed.order.append(planned.instance_id)
        try:
            if matrix.engines[planned.engine_name].build is not None and planned.engine_name not in images:
                raise DeploymentFailed("image_build_failed", f"the image of engine {planned.engine_name} did not build")
            deployed.handles[planned.instance_id] = start(
                matrix,
                planned,
                start_order=position,
                run_id=run_id,
                run_dir=run_dir,
                base_dir=base_dir,
                images=images,
                memory=mem,
            )
        except Exception as exc:  # a failed start is a result: record it, go on with the night
            deployed.failed[planned.instance_id] = failed_row(
                matrix, planned, start_order=position, run_id=run_id, exc=exc, memory=mem
            )
    return deployed


def failed_row(
    matrix: Matrix,
    planned: PlannedInstance,
    *,
    start_order: int,
    run_id: str,
    exc: Exception,
    memory: MemoryPlan | None = None,
) -> DeploymentRow:
    row = _row(matrix, planned, start_order, run_id, memory)
    if isinstance(exc, DeploymentFailed):
        return dataclasses.replace(
            row, failure_class=exc.failure_class, failure_message=str(exc), log_excerpt=exc.log_excerpt[-4000:]
        )
    return dataclasses.replace(row, failure_class="launch_error", failure_message=f"{type(exc).__name__}: {exc}"[:1000])


def engine_pids(handles: dict[str, InstanceHandle]) -> dict[str, int]:
    """instance id -> the pid whose memory and CPU the telemetry samples (process or container)."""
    return {i: pid for i, h in handles.items() if (pid := h.pid())}


def _row(
    matrix: Matrix, planned: PlannedInstance, start_order: int, run_id: str, memory: MemoryPlan | None = None
) -> DeploymentRow:
    engine = matrix.engines[planned.engine_name]
    return DeploymentRow(
        run_id=run_id,
        instance_id=planned.instance_id,
        deployment_id=planned.deployment_id,
        start_order=start_order,
        engine=planned.engine_name,
        engine_kind=engine.kind,
        engine_version=engine.version,
        model=planned.model_name,
        launcher=engine.launcher,
        started=False,
        memory_share=planned.spec.memory_share,
        memory_flag=" ".join(memory.flag_args()) if memory else None,
        predicted_budget_bytes=memory.budget_bytes if memory else None,
        predicted_kv_bytes=memory.kv_bytes if memory else None,
        predicted_fit=memory.fits if memory else None,
        prediction_note=memory.reason if memory else None,
        image=engine.image,
    )


def preflight(matrix: Matrix, base_dir: Path, paths: tuple[str, str] | None = None) -> None:
    """Check everything the night needs that a user can get wrong, before anything starts: the
    warehouse and runs folder (`paths`: writable, with room), model files, prompt sets, engine
    binaries, the Docker daemon. Raises BadInput (MatrixError) or DockerUnavailable (one line) on the
    first problem."""
    from tasks.runs import check_paths
    from tasks.workloads import build_requests

    if paths is not None:
        check_paths(*paths)

    for where in literal_secrets(matrix):  # a warning, not a refusal: the night can run, masked
        log.warning(
            "%s holds a literal credential: it is masked wherever bakeoff writes it; name it with secret_env instead",
            where,
        )
    for workload in matrix.workloads:
        build_requests(workload, seed=0, base_dir=base_dir)
    for name, engine in matrix.engines.items():
        if engine.launcher == "docker" and not (engine.image or engine.build):
            raise MatrixError(f"engines.{name}: a docker engine needs `image` or `build`")
        if engine.build:
            spec = image_spec(engine.build, base_dir)
            for path in [spec.dockerfile, *spec.files.values()]:
                if not path.is_file():
                    raise MatrixError(f"engines.{name}.build: {path} does not exist")
    for group in plan(matrix):
        for planned in group.instances:
            if matrix.engines[planned.engine_name].kind != "external":
                instance_launch(matrix, planned, base_dir=base_dir, port=planned.spec.port or 1)  # MatrixError
    if any(e.launcher == "docker" or e.build for e in matrix.engines.values()):
        docker_client()  # DockerUnavailable (one line) now, not after the night has begun
