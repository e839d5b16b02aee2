"""The nightly flow: a readable page of task calls. The work is in tasks/, warehouse/ and reports/."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.environment import sigterm_exits
from reports import render_run
from tasks import bench, deploy, images, night
from tasks.compose import compose_from_path
from tasks.errors import NightFailed
from tasks.hostlock import night_on_this_host
from tasks.matrix import Matrix, load_matrix
from tasks.plan import plan
from tasks.runs import Collected, measured_too_little, new_run, night_status, resumed_run, run_paths, write_night_file
from warehouse import store
from warehouse.transforms import summarize_run
from warehouse.verdict import FAILED_ROWS, REFUSED, ValidationReport

# The work modules log to "bakeoff.*"; PREFECT_LOGGING_EXTRA_LOGGERS=bakeoff gives that logger Prefect's
# handlers (console + the run's log in the UI) but not a level, so progress needs INFO here.
logging.getLogger("bakeoff").setLevel(logging.INFO)
log = logging.getLogger("bakeoff.night")


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


# Plain functions wrapped as Prefect tasks: the logic stays testable without a server, and no task
# caches its result (engine handles and records are not cacheable inputs).
check_before_start = task(deploy.preflight, name="preflight", cache_policy=NO_CACHE)
# Every step that can hang has a deadline: engine start and health (startup_timeout_s), each request and
# cell (request_timeout_s, cell_timeout_s), the load's wait for the warehouse ($BAKEOFF_LOAD_WAIT_S), and
# these two (Prefect's task timeout: the task fails with TaskRunTimeoutError, the night with it).
BUILD_TIMEOUT_S = 3 * 3600  # a CUDA image built from source takes an hour or more
REPORT_TIMEOUT_S = 900
build_images = task(
    images.build_engine_images, name="build-images", cache_policy=NO_CACHE, timeout_seconds=BUILD_TIMEOUT_S
)
# The retry policy (docs/reliability.md "Retries"): a transient start failure is tried twice more,
# after 5 s and 30 s, each ±50% jitter; a deterministic one is recorded at once.
start_instance = task(
    deploy.launch_instance,
    name="start-instance",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_if_flaky,
    cache_policy=NO_CACHE,
)
run_cell = task(bench.run_cell, name="bench-cell", cache_policy=NO_CACHE)
bench_group = task(night.bench_group, name="bench-group", cache_policy=NO_CACHE)
summarize = task(summarize_run, name="summarize", cache_policy=NO_CACHE)
report = task(render_run, name="render-report", cache_policy=NO_CACHE, timeout_seconds=REPORT_TIMEOUT_S)


@task(name="gate-and-load", cache_policy=NO_CACHE)
def gate_and_load(warehouse_path: str, run_dir: Path) -> tuple[ValidationReport, dict[str, int]]:
    # A warehouse another process has open is waited for inside (store.connect_waiting), not retried:
    # a retry would run the gate again.
    return store.gate_and_load(warehouse_path, run_dir)


class MeasuredTooLittle(NightFailed, RuntimeError):
    """The night ran to its end but measured too little to be green (runs.failure says why: no
    instance started, or more than the matrix's max_failed_share of requests failed). It is loaded and
    reported all the same; `result` is what the flow would have returned."""

    result: dict


@flow(name="bakeoff-nightly")
def nightly(
    matrix_path: str = "configs/cpu-smoke.yaml",
    warehouse: str | None = None,
    runs_dir: str | None = None,
    resume: str | None = None,
) -> dict:
    """One night: measure the matrix, stage each piece as it ends, gate and load, report. `resume`: the
    run id of a stopped night to go on with (its complete cells are kept, the rest measured)."""
    sigterm_exits()  # a Prefect cancel stops every engine (the launchers' atexit sweep included)
    matrix, matrix_sha = load_matrix(matrix_path)
    base_dir = Path(matrix_path).resolve().parent
    warehouse, runs_root = run_paths(matrix, warehouse, runs_dir)
    run = (
        resumed_run(Path(runs_root), resume, matrix, matrix_sha) if resume else new_run(matrix, matrix_path, matrix_sha)
    )
    run_id, run_dir = run["run_id"], Path(runs_root) / run["run_id"]
    with night_on_this_host(run_id, matrix.name):
        # `bakeoff run` did too; a deployment run by a worker gets it here
        check_before_start(matrix, base_dir, (warehouse, runs_root))
        if resume and store.holds_run(warehouse, run_id):
            log.info("run %s has finished and is loaded in %s: nothing to resume", run_id, warehouse)
            return {
                "run_id": run_id,
                "nothing_to_do": f"run {run_id} has finished and is loaded in {warehouse} "
                f"(`bakeoff report --run {run_id}` renders its report again)",
            }
        done = _measured_before(run_dir, run, matrix, resume)

        def keep(name: str, part: Collected, complete: bool) -> None:
            store.stage_part(run_dir, name, complete=complete, **part.tables())

        finished = False
        try:
            tags, builds = build_images(matrix, run_id=run_id, log_dir=run_dir / "logs", base_dir=base_dir)
            keep("builds", Collected(builds=builds), True)
            groups = plan(matrix)
            for g_i, group in enumerate(groups, 1):
                if night.group_part(group) in done:
                    continue  # measured whole before the night was stopped
                try:
                    bench_group(  # each piece is staged by `keep` as it ends
                        matrix,
                        group,
                        run_id=run_id,
                        run_dir=run_dir,
                        base_dir=base_dir,
                        images=tags,
                        where=f"group {g_i}/{len(groups)} {group.deployment_id}",
                        start=start_instance,
                        run_cell=run_cell,
                        keep=keep,
                        done=frozenset(done),
                    )
                except night.GroupStopped as stopped:
                    raise stopped.cause from None  # what it measured is staged already; stop as asked
            finished = True
        finally:
            # Whatever happened, what was measured is staged on disk (a crash leaves status "failed").
            run["finished_at"] = datetime.now(UTC).isoformat()
            staged = stage(run_dir, run, max_failed_share=matrix.max_failed_share, finished=finished)
    # The gate judges the rows as staged, as `bakeoff load RUN_DIR` does.
    validation, rows = gate_and_load(warehouse, staged.run_dir)
    create_markdown_artifact(
        key="bakeoff-validation", markdown=validation.markdown(), description=f"validation gate of run {run_id}"
    )
    if validation.outcome == REFUSED:
        raise ValidationFailed(f"{validation.summary_line()} (nothing loaded; raw records kept in {run_dir})")
    store.clear_parts(run_dir)  # loaded: the run-level staged files are the copy on disk

    with store.opened(warehouse, read_only=True) as con:
        _run_row, deployment_rows, summary, _metrics = summarize(con, run_id)
        paths = report(con, run_id, run_dir / "report", compose=compose_from_path)
    publish_report(run_id, paths)
    result = {
        "run_id": run_id,
        "run_dir": str(run_dir),
        "warehouse": warehouse,
        "rows": rows,
        "report": str(paths["html"]),
        "summary": summary,
        "deployments": deployment_rows,
    }
    failure: RowsRejected | MeasuredTooLittle | None = None
    if validation.outcome == FAILED_ROWS:
        # Loaded and reported, but the night is not clean: the flow run ends Failed, saying so.
        failure = RowsRejected(
            f"{validation.summary_line()} (run loaded without them and marked validation_status = 'failed_rows'; "
            f"rejected rows in rejected_requests; raw records kept in {run_dir})"
        )
    elif run.get("failure"):
        failure = MeasuredTooLittle(f"the night measured too little: {run['failure']} (loaded and reported)")
    if failure is not None:
        failure.result = result
        raise failure
    return result


def _measured_before(run_dir: Path, run: dict, matrix: Matrix, resume: str | None) -> set[str]:
    """The complete parts a resumed night keeps (its cut-short ones dropped); a new night writes
    night.json, what a later --resume goes on from."""
    if not resume:
        write_night_file(run_dir, run, matrix)
        return set()
    done = store.resume_parts(run_dir)
    log.info("resuming run %s: %d pieces already measured are kept", run["run_id"], len(done))
    return done


@task(name="stage-raw-records", cache_policy=NO_CACHE)
def stage(run_dir: Path, run: dict, *, max_failed_share: float, finished: bool) -> store.StagedRun:
    """The run-level staged files from the night's parts, then run.json with the night's status: a
    night that ran to its end is completed or partial, and says when it measured too little."""
    counts = store.stage_parts(run_dir)
    if finished:
        run["status"] = night_status(counts.instances, counts.instances_clean)
        run["failure"] = measured_too_little(
            counts.instances, counts.instances_started, counts.requests, counts.requests_ok, max_failed_share
        )
        if run["failure"]:
            run["status"] = "failed"
    return store.seal_staged(run_dir, run)


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
