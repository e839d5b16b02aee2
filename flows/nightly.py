"""The nightly flow: a readable page of task calls. The work is in tasks/, warehouse/ and reports/."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from reports import render_run
from tasks import bench, deploy, images, night
from tasks.compose import compose_from_path
from tasks.errors import NightFailed
from tasks.matrix import load_matrix
from tasks.plan import plan
from tasks.records import records_to_arrow
from tasks.runs import Collected, new_run, run_paths
from warehouse import store
from warehouse.transforms import summarize_run
from warehouse.verdict import FAILED_ROWS, REFUSED, ValidationReport

# The work modules log to "bakeoff.*"; PREFECT_LOGGING_EXTRA_LOGGERS=bakeoff gives that logger Prefect's
# handlers (console + the run's log in the UI) but not a level, so progress needs INFO here.
logging.getLogger("bakeoff").setLevel(logging.INFO)


class ValidationFailed(NightFailed, RuntimeError):
    """The raw records failed the validation gate; nothing was loaded."""


class RowsRejected(ValidationFailed):
    """Some request rows failed the validation gate: the run was loaded without them (they are in
    rejected_requests) and marked failed_rows; the night ends failed. `result` is what the flow would
    have returned (an attribute, so the exception pickles with it)."""

    result: dict


def _retry_if_flaky(task, task_run, state) -> bool:
    exc = state.data if isinstance(state.data, BaseException) else None
    return getattr(exc, "failure_class", None) in deploy.RETRYABLE_FAILURES


def _retry_if_busy(task, task_run, state) -> bool:
    # Only a warehouse held by another writer is worth waiting for; a retry runs the gate again.
    return isinstance(state.data, store.WarehouseBusy)


# Plain functions wrapped as Prefect tasks: the logic stays testable without a server, and no task
# caches its result (engine handles and records are not cacheable inputs).
check_before_start = task(deploy.preflight, name="preflight", cache_policy=NO_CACHE)
build_images = task(images.build_engine_images, name="build-images", cache_policy=NO_CACHE)
start_instance = task(
    deploy.launch_instance,
    name="start-instance",
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=_retry_if_flaky,
    cache_policy=NO_CACHE,
)
run_cell = task(bench.run_cell, name="bench-cell", cache_policy=NO_CACHE)
bench_group = task(night.bench_group, name="bench-group", cache_policy=NO_CACHE)
stage = task(store.stage_run, name="stage-raw-records", cache_policy=NO_CACHE)
summarize = task(summarize_run, name="summarize", cache_policy=NO_CACHE)
report = task(render_run, name="render-report", cache_policy=NO_CACHE)


@task(name="gate-and-load", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10, retry_condition_fn=_retry_if_busy)
def gate_and_load(warehouse_path: str, run_dir: Path) -> tuple[ValidationReport, dict[str, int]]:
    return store.gate_and_load(warehouse_path, run_dir)


@flow(name="bakeoff-nightly")
def nightly(
    matrix_path: str = "configs/cpu-smoke.yaml", warehouse: str | None = None, runs_dir: str | None = None
) -> dict:
    _teardown_on_sigterm()
    matrix, matrix_sha = load_matrix(matrix_path)
    base_dir = Path(matrix_path).resolve().parent
    check_before_start(matrix, base_dir)  # `bakeoff run` did too; a deployment run by a worker gets it here
    warehouse, runs_root = run_paths(matrix, warehouse, runs_dir)
    run = new_run(matrix, matrix_path, matrix_sha)
    run_id, run_dir = run["run_id"], Path(runs_root) / run["run_id"]
    got = Collected()
    try:
        tags, got.builds = build_images(matrix, run_id=run_id, log_dir=run_dir / "logs", base_dir=base_dir)
        groups = plan(matrix)
        for g_i, group in enumerate(groups, 1):
            try:
                got.merge(
                    bench_group(
                        matrix,
                        group,
                        run_id=run_id,
                        run_dir=run_dir,
                        base_dir=base_dir,
                        images=tags,
                        where=f"group {g_i}/{len(groups)} {group.deployment_id}",
                        start=start_instance,
                        run_cell=run_cell,
                    )
                )
            except night.GroupStopped as stopped:
                got.merge(stopped.collected)  # keep what the group measured, then stop as asked
                raise stopped.cause from None
        run["status"] = "completed" if all(d.started and not d.failure_class for d in got.deployments) else "partial"
    finally:
        # Whatever happened, what was measured is staged on disk (a crash leaves status "failed").
        run["finished_at"] = datetime.now(UTC).isoformat()
        staged = stage(
            run_dir,
            run,
            got.deployments,
            got.cells,
            records_to_arrow(got.records),
            got.gpu_samples,
            got.host_samples,
            got.builds,
            got.engine_metrics,
        )
    # The gate judges the rows as staged, as `bakeoff load RUN_DIR` does.
    validation, counts = gate_and_load(warehouse, staged.run_dir)
    create_markdown_artifact(
        key="bakeoff-validation", markdown=validation.markdown(), description=f"validation gate of run {run_id}"
    )
    if validation.outcome == REFUSED:
        raise ValidationFailed(f"{validation.summary_line()} (nothing loaded; raw records kept in {run_dir})")

    with store.opened(warehouse, read_only=True) as con:
        _run_row, deployment_rows, summary, _metrics = summarize(con, run_id)
        paths = report(con, run_id, run_dir / "report", compose=compose_from_path)
    publish_report(run_id, paths)
    result = {
        "run_id": run_id,
        "run_dir": str(run_dir),
        "warehouse": warehouse,
        "rows": counts,
        "report": str(paths["html"]),
        "summary": summary,
        "deployments": deployment_rows,
    }
    if validation.outcome == FAILED_ROWS:
        # Loaded and reported, but the night is not clean: the flow run ends Failed, saying so.
        rejected = RowsRejected(
            f"{validation.summary_line()} (run loaded without them and marked validation_status = 'failed_rows'; "
            f"rejected rows in rejected_requests; raw records kept in {run_dir})"
        )
        rejected.result = result
        raise rejected
    return result


def publish_report(run_id: str, paths: dict[str, Path]) -> None:
    """The night's result in the Prefect UI's run history: the Markdown report, a table of the key
    metrics per configuration (with the verdicts naming it a winner), and a link to the HTML file."""
    create_markdown_artifact(
        key="bakeoff-report", markdown=paths["markdown"].read_text(), description=f"bakeoff run {run_id}"
    )
    create_table_artifact(
        key="bakeoff-key-metrics",
        table=json.loads(paths["key_metrics"].read_text()),
        description=f"key metrics per configuration, run {run_id}",
    )
    html = paths["html"].resolve()
    create_link_artifact(
        key="bakeoff-report-html", link=html.as_uri(), link_text=str(html), description=f"HTML report of run {run_id}"
    )


def _teardown_on_sigterm() -> None:
    """Prefect cancels a flow run with SIGTERM, whose default action skips `finally` and atexit:
    turn it into SystemExit so every engine is stopped (the launchers' atexit sweep included)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
