"""Deploy one instance of a deployment group: resolve the model, start the engine, wait for health.

Returns a row for the `deployments` table whatever happens; a failed start is a result
(started = false, failure class, log excerpt), never an exception that ends the night.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tasks import telemetry
from tasks.engine_metrics import scrape
from tasks.engines import LaunchSpec, adapter_for
from tasks.images import docker_client, image_spec
from tasks.launchers.docker import DockerApiError, DockerInstance
from tasks.launchers.process import DeploymentFailed, ProcessInstance, free_port, log_tail
from tasks.loadgen import Target
from tasks.matrix import Cell, Group, Matrix, MatrixError, Model, PlannedInstance, plan
from tasks.planner import MemoryPlan, plan_group, sglang_fraction_for

log = logging.getLogger("bakeoff.deploy")

# Failure classes worth a second try (the machine was slow or the engine flaked); the others
# (model not found, port in use, out of memory) fail the same way every time.
RETRYABLE_FAILURES = {"health_timeout", "exited_at_start"}


def resolve_model_path(model: Model, base_dir: Path) -> Path:
    """A path relative to the matrix file, or pkg:MODULE/FILE for a model shipped in a Python package."""
    if model.path.startswith("pkg:"):
        module, _, filename = model.path[4:].partition("/")
        spec = importlib.util.find_spec(module) if module else None
        if spec is None or spec.origin is None:
            raise MatrixError(f"models.path: package {module!r} of {model.path!r} is not installed")
        path = Path(spec.origin).parent / filename
    else:
        path = Path(model.path).expanduser()
        if not path.is_absolute():
            path = base_dir / path
    if not path.is_file():
        raise MatrixError(f"models.path: {model.path!r} resolves to {path}, which does not exist")
    return path


@dataclass
class InstanceHandle:
    """A started instance: its warehouse row and how to reach and stop it."""

    row: dict
    target: Target | None = None
    process: ProcessInstance | DockerInstance | None = None
    metrics_path: str | None = None  # the engine's Prometheus endpoint, if it has one

    @property
    def started(self) -> bool:
        return bool(self.row["started"])

    def pid(self) -> int | None:
        return self.process.pid() if self.process is not None else None

    def scrape_metrics(self, run_id: str, cell_id: str, phase: str) -> list[dict]:
        return scrape(self.target.base_url, self.metrics_path, run_id=run_id, cell_id=cell_id,
                      instance_id=self.target.instance_id, phase=phase)

    def check_alive(self) -> bool:
        """After a cell: an engine that died under load is recorded as crashed_mid_run (its requests
        are already rows with their own failure status)."""
        try:
            if self.process is None or self.process.is_running():
                return True
        except DockerApiError as exc:  # the daemon did not answer: a different outcome from an exit
            if self.row.get("failure_class") is None:
                self.row.update(failure_class="docker_api_error", failure_message=f"Docker API: {exc}"[:1000])
            log.error("%s: cannot tell whether the engine runs: Docker API: %s", self.row["instance_id"], exc)
            return False
        if self.row.get("failure_class") is None:
            excerpt = log_tail(self.process.log_path) if isinstance(self.process, ProcessInstance) else ""
            if isinstance(self.process, DockerInstance):
                self.process.save_log()
                excerpt = log_tail(self.process.log_path)
            self.row.update(failure_class="crashed_mid_run", failure_message="the engine exited during the benchmark",
                            log_excerpt=excerpt[-4000:])
            log.error("%s: the engine exited during the benchmark", self.row["instance_id"])
        return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def launch_instance(
    matrix: Matrix, planned: PlannedInstance, *, start_order: int, run_id: str, run_dir: Path, base_dir: Path,
    images: dict[str, str] | None = None, memory: MemoryPlan | None = None,
) -> InstanceHandle:
    """Start one instance and wait until it is healthy. Raises DeploymentFailed (after stopping what
    it started) so a caller with retries can try again; `failed_row` turns the last failure into a row.

    images: engine name -> the image tag the build step produced. memory: the planner's plan for
    this instance (its flag is re-computed from the live free memory for SGLang shares)."""
    engine = matrix.engines[planned.engine_name]
    model = matrix.models[planned.model_name]
    adapter = adapter_for(engine.kind)
    served_name = model.served_name or planned.model_name
    row = _row(matrix, planned, start_order, run_id, memory)

    if engine.kind == "external":
        row.update(started=True, launcher="none", startup_s=0.0)
        return InstanceHandle(row=row, target=_target(planned, served_name, engine.url.rstrip("/")),
                              metrics_path=adapter.metrics_path)

    port = planned.spec.port or free_port()
    memory_args = _memory_args(matrix, planned, memory)
    log_path = run_dir / "logs" / f"{planned.instance_id}.log"
    if engine.launcher == "docker":
        model_arg, volumes = container_model(model, base_dir)
        spec = adapter.launch_spec(engine, planned.spec, model_arg, served_name, port, memory_args=memory_args)
        spec = LaunchSpec(argv=spec.argv, env={**spec.env, **_secrets(engine)}, port=spec.port)
        image = (images or {}).get(planned.engine_name) or engine.image
        if not image:
            raise MatrixError(f"engines.{planned.engine_name}: a docker engine needs `image` or `build`")
        wants_gpu = engine.use_gpu if engine.use_gpu is not None else engine.kind in ("vllm", "sglang")
        gpu = (matrix.gpu.index if matrix.gpu else 0) if wants_gpu else None
        instance = DockerInstance(
            docker_client(), adapter, spec, image, name=f"bakeoff-{run_id}-{planned.instance_id}"[:120],
            log_path=log_path, labels={"bakeoff.run_id": run_id, "bakeoff.instance_id": planned.instance_id},
            gpu_index=gpu, volumes=volumes, network=engine.network,
        )
        row.update(image=image, model_path=str(model_arg))
    else:
        model_path = resolve_model_path(model, base_dir)
        spec = adapter.launch_spec(engine, planned.spec, model_path, served_name, port, memory_args=memory_args)
        spec = LaunchSpec(argv=spec.argv, env={**spec.env, **_secrets(engine)}, port=spec.port)
        instance = ProcessInstance(adapter, spec, log_path)
        row.update(model_path=str(model_path))
    # Flags are stored; environment values never are (they may hold secrets).
    row.update(flags=spec.argv[1:] if engine.launcher == "process" else spec.argv,
               memory_flag=" ".join(memory_args) or None)
    instance.start()
    try:
        startup_s = instance.wait_healthy(engine.startup_timeout_s)
    except DeploymentFailed:
        instance.stop()
        raise
    row.update(started=True, startup_s=startup_s, measured_memory_bytes=_measured_memory(matrix, instance, engine.kind))
    log.info("%s is healthy at %s after %.1f s", planned.instance_id, instance.base_url, startup_s)
    return InstanceHandle(row=row, target=_target(planned, served_name, instance.base_url), process=instance,
                          metrics_path=adapter.metrics_path)


def _target(planned: PlannedInstance, served_name: str, base_url: str) -> Target:
    return Target(base_url=base_url, served_model=served_name, engine=planned.engine_name, model=planned.model_name,
                  deployment_id=planned.deployment_id, instance_id=planned.instance_id, extra_body={})


def _memory_args(matrix: Matrix, planned: PlannedInstance, memory: MemoryPlan | None) -> list[str]:
    """The planner's flag; for an SGLang share, re-computed from the memory free right now (the
    previous instances are up, so this is exact where the plan was a prediction)."""
    if memory is None or memory.flag is None:
        return []
    if memory.engine_kind == "sglang" and planned.spec.memory_share is not None:
        try:
            card = telemetry.gpu_info(matrix.gpu.index if matrix.gpu else 0)
        except telemetry.NvmlUnavailable:
            return memory.flag_args()
        value = sglang_fraction_for(planned.spec.memory_share, card.memory_total_bytes, card.memory_free_bytes)
        return [memory.flag, f"{value:.4f}".rstrip("0")]
    return memory.flag_args()


def _measured_memory(matrix: Matrix, instance, kind: str) -> int | None:
    """GPU engines: the card's used memory after the instance came up (NVML); CPU: the process RSS."""
    if kind in ("vllm", "sglang"):
        try:
            return telemetry.gpu_info(matrix.gpu.index if matrix.gpu else 0).memory_used_bytes
        except telemetry.NvmlUnavailable:
            return None
    return instance.rss_bytes()


def container_model(model: Model, base_dir: Path) -> tuple[str, dict]:
    """A model file on this machine is mounted read-only at /models; a hub id is read from the
    mounted Hugging Face cache (nothing is downloaded by bakeoff itself)."""
    try:
        path = resolve_model_path(model, base_dir)
    except MatrixError:
        if model.path.startswith("pkg:") or model.path.startswith((".", "/")):
            raise
        hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
        return model.path, {str(hf_home): {"bind": "/root/.cache/huggingface", "mode": "rw"}}
    return f"/models/{path.name}", {str(path.parent): {"bind": "/models", "mode": "ro"}}


def _secrets(engine) -> dict[str, str]:
    """Secrets by env var name only: the value goes to the engine, never into a row or a log."""
    return {name: os.environ[name] for name in engine.secret_env if name in os.environ}


def deploy_group(matrix: Matrix, group: Group, *, run_id: str, run_dir: Path, base_dir: Path,
                 images: dict[str, str], start=None) -> tuple[dict[str, InstanceHandle], list[dict]]:
    """Start a group's instances one at a time in the planner's order, each after the previous one is
    healthy. Returns the handles of those that started and a deployments row for every instance.
    `start` is how to launch one (the flow passes its Prefect task, with retries)."""
    start = start or launch_instance
    total = free = None
    try:  # plan against the real card when there is one
        card = telemetry.gpu_info(matrix.gpu.index if matrix.gpu else 0)
        total, free = card.memory_total_bytes, card.memory_free_bytes
    except telemetry.NvmlUnavailable:
        pass
    memory = {m.instance_id: m for m in plan_group(matrix, group, total_bytes=total, free_bytes=free)}
    handles: dict[str, InstanceHandle] = {}
    rows: list[dict] = []
    for position, planned in enumerate(sorted(group.instances, key=lambda p: memory[p.instance_id].start_order)):
        mem = memory[planned.instance_id]
        try:
            if matrix.engines[planned.engine_name].build is not None and planned.engine_name not in images:
                raise DeploymentFailed("image_build_failed", f"the image of engine {planned.engine_name} did not build")
            handle = start(matrix, planned, start_order=position, run_id=run_id, run_dir=run_dir,
                           base_dir=base_dir, images=images, memory=mem)
        except Exception as exc:  # a failed start is a result: record it, go on with the night
            rows.append(failed_row(matrix, planned, start_order=position, run_id=run_id, exc=exc, memory=mem))
            continue
        handles[planned.instance_id] = handle
        rows.append(handle.row)
    return handles, rows


def failed_row(matrix: Matrix, planned: PlannedInstance, *, start_order: int, run_id: str, exc: Exception,
               memory: MemoryPlan | None = None) -> dict:
    row = _row(matrix, planned, start_order, run_id, memory)
    if isinstance(exc, DeploymentFailed):
        row.update(failure_class=exc.failure_class, failure_message=str(exc), log_excerpt=exc.log_excerpt[-4000:])
    else:
        row.update(failure_class="launch_error", failure_message=f"{type(exc).__name__}: {exc}"[:1000])
    return row


def request_extras_for(matrix: Matrix, cell: Cell) -> dict:
    """The engine-specific request fields of a cell (its instance's engine, its workload)."""
    planned = next(p for g in plan(matrix) for p in g.instances if p.instance_id == cell.instance_id)
    engine = matrix.engines[planned.engine_name]
    workload = next(w for w in matrix.workloads if w.id == cell.workload_id)
    return adapter_for(engine.kind).request_extras(workload)


def engine_pids(handles: dict[str, InstanceHandle]) -> dict[str, int]:
    """instance id -> the pid whose memory and CPU the telemetry samples (process or container)."""
    return {i: pid for i, h in handles.items() if (pid := h.pid())}


def _row(matrix: Matrix, planned: PlannedInstance, start_order: int, run_id: str, memory: MemoryPlan | None = None) -> dict:
    engine = matrix.engines[planned.engine_name]
    return {
        "memory_flag": " ".join(memory.flag_args()) if memory else None,
        "predicted_budget_bytes": memory.budget_bytes if memory else None,
        "predicted_kv_bytes": memory.kv_bytes if memory else None,
        "predicted_fit": memory.fits if memory else None,
        "prediction_note": memory.reason if memory else None,
        "image": engine.image,
        "run_id": run_id,
        "instance_id": planned.instance_id,
        "deployment_id": planned.deployment_id,
        "start_order": start_order,
        "engine": planned.engine_name,
        "engine_kind": engine.kind,
        "engine_version": engine.version,
        "model": planned.model_name,
        "model_path": None,
        "launcher": engine.launcher,
        "flags": None,
        "memory_share": planned.spec.memory_share,
        "started": False,
        "failure_class": None,
        "failure_message": None,
        "log_excerpt": None,
        "startup_s": None,
        "measured_memory_bytes": None,
    }


def preflight(matrix: Matrix, base_dir: Path) -> None:
    """Check everything the night needs that a user can get wrong, before anything starts: model
    files, prompt sets, engine binaries, the Docker daemon. Raises MatrixError or DockerUnavailable (one
    line) on the first problem."""
    from tasks.workloads import build_requests

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
            engine = matrix.engines[planned.engine_name]
            adapter = adapter_for(engine.kind)
            if engine.kind == "external":
                continue
            model = matrix.models[planned.model_name]
            if engine.launcher == "docker":
                model_path, _ = container_model(model, base_dir)
            else:
                model_path = resolve_model_path(model, base_dir)
            adapter.launch_spec(engine, planned.spec, model_path, "preflight", planned.spec.port or 1)
    if any(e.launcher == "docker" or e.build for e in matrix.engines.values()):
        docker_client()  # DockerUnavailable (one line) now, not after the night has begun

