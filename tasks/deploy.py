"""Deploy one instance of a deployment group: resolve the model, start the engine, wait for health.

Returns a row for the `deployments` table whatever happens; a failed start is a result
(started = false, failure class, log excerpt), never an exception that ends the night.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tasks.engines import adapter_for
from tasks.launchers.process import DeploymentFailed, ProcessInstance, free_port
from tasks.loadgen import Target
from tasks.matrix import Matrix, MatrixError, Model, PlannedInstance, Workload, plan

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
    """A started (or failed) instance: its warehouse row and, when up, how to reach and stop it."""

    row: dict
    target: Target | None = None
    process: ProcessInstance | None = None
    workload_extras: dict = field(default_factory=dict)

    @property
    def started(self) -> bool:
        return bool(self.row["started"])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def launch_instance(
    matrix: Matrix, planned: PlannedInstance, *, start_order: int, run_id: str, run_dir: Path, base_dir: Path
) -> InstanceHandle:
    """Start one instance and wait until it is healthy. Raises DeploymentFailed (after stopping what
    it started) so a caller with retries can try again; `failed_row` turns the last failure into a row."""
    engine = matrix.engines[planned.engine_name]
    model = matrix.models[planned.model_name]
    adapter = adapter_for(engine.kind)
    served_name = model.served_name or planned.model_name
    row = _row(matrix, planned, start_order, run_id)

    if engine.kind == "external":
        proc = None
        base_url = engine.url.rstrip("/")
        row.update(started=True, launcher="none", startup_s=0.0)
    else:
        model_path = resolve_model_path(model, base_dir)
        port = planned.spec.port or free_port()
        spec = adapter.launch_spec(engine, planned.spec, model_path, served_name, port)
        proc = ProcessInstance(adapter, spec, run_dir / "logs" / f"{planned.instance_id}.log")
        row.update(model_path=str(model_path), flags=spec.argv[1:])
        proc.start()
        try:
            startup_s = proc.wait_healthy(engine.startup_timeout_s)
        except DeploymentFailed:
            proc.stop()
            raise
        row.update(started=True, startup_s=startup_s, measured_memory_bytes=proc.rss_bytes())
        base_url = proc.base_url
        log.info("%s is healthy at %s after %.1f s", planned.instance_id, base_url, startup_s)

    target = Target(
        base_url=base_url,
        served_model=served_name,
        engine=planned.engine_name,
        model=planned.model_name,
        deployment_id=planned.deployment_id,
        instance_id=planned.instance_id,
        extra_body={},
    )
    return InstanceHandle(row=row, target=target, process=proc)


def failed_row(matrix: Matrix, planned: PlannedInstance, *, start_order: int, run_id: str, exc: Exception) -> dict:
    row = _row(matrix, planned, start_order, run_id)
    if isinstance(exc, DeploymentFailed):
        row.update(failure_class=exc.failure_class, failure_message=str(exc), log_excerpt=exc.log_excerpt[-4000:])
    else:
        row.update(failure_class="launch_error", failure_message=f"{type(exc).__name__}: {exc}"[:1000])
    return row


def request_extras(matrix: Matrix, planned: PlannedInstance, workload: Workload) -> dict:
    return adapter_for(matrix.engines[planned.engine_name].kind).request_extras(workload)


def _row(matrix: Matrix, planned: PlannedInstance, start_order: int, run_id: str) -> dict:
    engine = matrix.engines[planned.engine_name]
    return {
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
    files, prompt sets, engine binaries. Raises MatrixError (one line) on the first problem."""
    from tasks.workloads import build_requests

    for workload in matrix.workloads:
        build_requests(workload, seed=0, base_dir=base_dir)
    for group in plan(matrix):
        for planned in group.instances:
            engine = matrix.engines[planned.engine_name]
            adapter = adapter_for(engine.kind)
            if engine.kind == "external":
                continue
            model_path = resolve_model_path(matrix.models[planned.model_name], base_dir)
            adapter.launch_spec(engine, planned.spec, model_path, "preflight", planned.spec.port or 1)
