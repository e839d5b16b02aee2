"""The nightly flow: a readable page of task calls. The work is in tasks/, warehouse/ and reports/."""

from __future__ import annotations

import getpass
import logging
import platform
import secrets
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from reports.render import render_report
from tasks import bench, deploy, telemetry
from tasks import images as images_mod
from tasks.engine_metrics import scrape
from tasks.launchers.docker import remove_leftovers
from tasks.launchers.process import DeploymentFailed
from tasks.planner import plan_group
from tasks.matrix import Group, Matrix, load_matrix, plan
from tasks.records import records_to_arrow
from warehouse import store
from warehouse.transforms import summarize_run
from warehouse.validate import validate_requests


# The work modules log to "bakeoff.*"; PREFECT_LOGGING_EXTRA_LOGGERS=bakeoff gives that logger Prefect's
# handlers (console + the run's log in the UI) but not a level, so progress needs INFO here.
logging.getLogger("bakeoff").setLevel(logging.INFO)


class ValidationFailed(RuntimeError):
    """The raw records failed the validation gate; nothing was loaded."""


def _retry_if_flaky(task, task_run, state) -> bool:
    exc = state.data if isinstance(state.data, BaseException) else None
    return getattr(exc, "failure_class", None) in deploy.RETRYABLE_FAILURES


# Plain functions wrapped as Prefect tasks: the logic stays testable without a server, and no task
# caches its result (engine handles and records are not cacheable inputs).
start_instance = task(
    deploy.launch_instance, name="start-instance", retries=1, retry_delay_seconds=5,
    retry_condition_fn=_retry_if_flaky, cache_policy=NO_CACHE,
)
run_cell = task(bench.run_cell, name="bench-cell", cache_policy=NO_CACHE)
stage = task(store.stage_run, name="stage-raw-records", cache_policy=NO_CACHE)
validate = task(validate_requests, name="validate", cache_policy=NO_CACHE)
summarize = task(summarize_run, name="summarize", cache_policy=NO_CACHE)
report = task(render_report, name="render-report", cache_policy=NO_CACHE)


@task(name="load-warehouse", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def load(warehouse_path: str, run_dir: Path) -> dict[str, int]:
    with store.opened(warehouse_path) as con:
        return store.load_run(con, run_dir)


@flow(name="bakeoff-nightly")
def nightly(matrix_path: str = "configs/cpu-smoke.yaml", warehouse: str | None = None, runs_dir: str | None = None) -> dict:
    _teardown_on_sigterm()
    matrix, matrix_sha = load_matrix(matrix_path)
    base_dir = Path(matrix_path).resolve().parent
    run = _new_run(matrix, matrix_path, matrix_sha)
    run_dir = Path(runs_dir or matrix.runs_dir) / run["run_id"]
    warehouse = warehouse or matrix.warehouse

    deployments, cells, records, gpu_samples, host_samples, builds, engine_metrics = [], [], [], [], [], [], []
    images = build_images(matrix, run["run_id"], run_dir, base_dir, builds)
    groups = plan(matrix)
    for g_i, group in enumerate(groups, 1):
        handles = _deploy_group(matrix, group, run["run_id"], run_dir, base_dir, deployments, images)
        try:
            for c_i, cell in enumerate(group.cells, 1):
                handle = handles.get(cell.instance_id)
                if handle is None or not handle.started:
                    continue  # its start failure is already a row in deployments
                if not handle.check_alive():
                    continue  # crashed in an earlier cell: recorded in its deployments row
                planned = next(p for p in group.instances if p.instance_id == cell.instance_id)
                workload = next(w for w in matrix.workloads if w.id == cell.workload_id)
                label = f"group {g_i}/{len(groups)} {group.deployment_id}, cell {c_i}/{len(group.cells)} {cell.cell_id}"
                engine_metrics += scrape_metrics(handle, run["run_id"], cell.cell_id, "before")
                outcome = run_cell(
                    matrix, cell, handle.target, deploy.request_extras(matrix, planned, workload),
                    run_id=run["run_id"], base_dir=base_dir, label=label, engine_pids=_engine_pids(handles),
                )
                engine_metrics += scrape_metrics(handle, run["run_id"], cell.cell_id, "after")
                handle.check_alive()
                cells.append(outcome.row)
                records.extend(outcome.records)
                gpu_samples.extend(outcome.gpu_samples)
                host_samples.extend(outcome.host_samples)
        finally:
            for handle in reversed(list(handles.values())):
                handle.stop()  # always, even when a cell raised

    run["status"] = "completed" if all(d["started"] for d in deployments) else "partial"
    run["finished_at"] = datetime.now(timezone.utc).isoformat()
    requests_table = records_to_arrow(records)
    validation = validate(requests_table)
    run["validation"] = validation.to_json()
    staged = stage(run_dir, run, deployments, cells, requests_table, gpu_samples, host_samples, builds, engine_metrics)
    if not validation.success:
        raise ValidationFailed(f"{validation.summary_line()} (nothing loaded; raw records kept in {run_dir})")
    counts = load(warehouse, staged.run_dir)

    with store.opened(warehouse, read_only=True) as con:
        run_row, deployment_rows, summary, metrics = summarize(con, run["run_id"])
    paths = report(summary, metrics, run_dir / "report", title=f"bakeoff: {matrix.name}", run_info=_run_info(run_row))
    create_markdown_artifact(
        key="bakeoff-report", markdown=paths["markdown"].read_text(), description=f"bakeoff run {run['run_id']}"
    )
    return {"run_id": run["run_id"], "run_dir": str(run_dir), "warehouse": warehouse, "rows": counts,
            "report": str(paths["html"]), "summary": summary, "deployments": deployment_rows}


@task(name="build-images", cache_policy=NO_CACHE)
def build_images(matrix: Matrix, run_id: str, run_dir: Path, base_dir: Path, rows: list) -> dict[str, str]:
    """Build the images of docker engines (skipped when the content-hash tag exists) and remove
    containers an earlier crashed run left behind. Returns engine name -> image tag; an engine whose
    build failed is missing, and its instances are recorded as image_build_failed."""
    docker_engines = {n: e for n, e in matrix.engines.items() if e.launcher == "docker"}
    if not docker_engines:
        return {}
    client = images_mod.docker_client()
    remove_leftovers(client)
    tags = {}
    for name, engine in docker_engines.items():
        if engine.build is None:
            continue
        try:
            row = images_mod.build_image(client, deploy.image_spec(engine.build, base_dir), run_id=run_id,
                                         log_dir=run_dir / "logs")
            tags[name] = row["image"]
        except images_mod.BuildFailed as exc:
            row = exc.row
            logging.getLogger("bakeoff.images").error("engine %s: image build failed: %s", name, exc)
        if row["image"] not in {r["image"] for r in rows}:
            rows.append(row)
    return tags


def _deploy_group(matrix: Matrix, group: Group, run_id: str, run_dir: Path, base_dir: Path, rows: list,
                  images: dict[str, str]) -> dict:
    """Start the group's instances one at a time in the planner's order, each after the previous
    one is healthy."""
    handles: dict[str, deploy.InstanceHandle] = {}
    total = free = None
    try:  # plan against the real card when there is one
        card = telemetry.gpu_info(matrix.gpu.index if matrix.gpu else 0)
        total, free = card.memory_total_bytes, card.memory_free_bytes
    except telemetry.NvmlUnavailable:
        pass
    memory = {m.instance_id: m for m in plan_group(matrix, group, total_bytes=total, free_bytes=free)}
    order = sorted(group.instances, key=lambda p: memory[p.instance_id].start_order)
    for position, planned in enumerate(order):
        mem = memory[planned.instance_id]
        try:
            engine = matrix.engines[planned.engine_name]
            if engine.build is not None and planned.engine_name not in images:
                raise DeploymentFailed("image_build_failed", f"the image of engine {planned.engine_name} did not build")
            handle = start_instance(matrix, planned, start_order=position, run_id=run_id, run_dir=run_dir,
                                    base_dir=base_dir, images=images, memory=mem)
        except Exception as exc:  # a failed start is a result: record it, go on with the night
            rows.append(deploy.failed_row(matrix, planned, start_order=position, run_id=run_id, exc=exc, memory=mem))
            continue
        handles[planned.instance_id] = handle
        rows.append(handle.row)
    return handles


def scrape_metrics(handle: deploy.InstanceHandle, run_id: str, cell_id: str, phase: str) -> list[dict]:
    return scrape(handle.target.base_url, handle.metrics_path, run_id=run_id, cell_id=cell_id,
                  instance_id=handle.target.instance_id, phase=phase)


def _teardown_on_sigterm() -> None:
    """Prefect cancels a flow run with SIGTERM, whose default action skips `finally` and atexit:
    turn it into SystemExit so every engine is stopped (the launchers' atexit sweep included)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _engine_pids(handles: dict) -> dict[str, int]:
    return {i: pid for i, h in handles.items() if (pid := h.pid())}


def _new_run(matrix: Matrix, matrix_path: str, matrix_sha: str) -> dict:
    started = datetime.now(timezone.utc)
    try:
        gpu = telemetry.gpu_info(matrix.gpu.index if matrix.gpu else 0)
    except telemetry.NvmlUnavailable:
        gpu = None  # a CPU box: the run simply has no GPU
    return {
        "run_id": f"{started:%Y%m%dT%H%M%SZ}-{matrix.name}-{secrets.token_hex(2)}",
        "matrix_name": matrix.name,
        "matrix_path": str(matrix_path),
        "matrix_sha256": matrix_sha,
        "started_at": started.isoformat(),
        "finished_at": None,
        "status": "failed",
        "bakeoff_version": _bakeoff_version(),
        "git_sha": _git_sha(),
        "host": f"{getpass.getuser()}@{socket.gethostname()} ({platform.platform()})",
        "gpu_name": gpu.name if gpu else (matrix.gpu.name if matrix.gpu else None),
        "gpu_driver": gpu.driver if gpu else None,
        "slo_ttft_ms": matrix.slo.ttft_ms,
        "slo_tpot_ms": matrix.slo.tpot_ms,
        "slo_e2e_ms": matrix.slo.e2e_ms,
        "validation": None,
    }


def _run_info(run: dict) -> dict:
    keys = ("run_id", "matrix_name", "matrix_path", "started_at", "finished_at", "status", "host", "git_sha", "bakeoff_version")
    return {k: str(run.get(k)) for k in keys if run.get(k) is not None}


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _bakeoff_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bakeoff")
    except PackageNotFoundError:
        return None
