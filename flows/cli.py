"""`bakeoff`: run the nightly flow once, re-render a report, load a staged run, query the warehouse.

Any BakeoffError (tasks/errors.py) is one line on stderr, `bakeoff: MESSAGE`, and its exit code
(2 bad input, 75 busy, 1 a failed night), never a traceback; so is a usage error (exit 2).
Prefect is imported only by `run`, so `sql` and `report` start fast. The commands hand their work
to library functions; this module parses, prints and maps errors.
"""

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.environment import sigterm_exits
from tasks.errors import BadInput, BakeoffError

DEFAULT_MATRIX = "configs/cpu-smoke.yaml"
EXIT_BAD_INPUT = BadInput.exit_code

app = typer.Typer(
    name="bakeoff",
    help="Nightly bake-off of LLM serving engines.",
    add_completion=False,
    pretty_exceptions_enable=False,
)

WarehouseOpt = Annotated[
    str | None, typer.Option("--warehouse", help="DuckDB file (default: $BAKEOFF_WAREHOUSE or .bakeoff/bakeoff.duckdb)")
]


def _warehouse_path(warehouse: str | None) -> str:
    return warehouse or os.environ.get("BAKEOFF_WAREHOUSE") or ".bakeoff/bakeoff.duckdb"


@app.command("run")
def cmd_run(
    matrix: Annotated[str, typer.Argument(help=f"matrix file (default {DEFAULT_MATRIX})")] = DEFAULT_MATRIX,
    warehouse: Annotated[
        str | None, typer.Option(help="DuckDB file (default: $BAKEOFF_WAREHOUSE, else the matrix's `warehouse`)")
    ] = None,
    runs_dir: Annotated[
        str | None, typer.Option(help="where run folders go (default: $BAKEOFF_RUNS_DIR, else the matrix's `runs_dir`)")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="go on with a stopped night (its run id): measured cells kept, the rest measured, then loaded"
        ),
    ] = None,
) -> int:
    """Run the nightly flow once on a matrix file."""
    from tasks.matrix import load_matrix

    # Fail fast (exit 2, one line) before Prefect starts its server or any engine starts; a bad matrix
    # before the engine and Prefect modules are even imported (seconds).
    loaded, sha = load_matrix(matrix)
    from flows.environment import prefect_defaults
    from tasks import progress
    from tasks.deploy import preflight
    from tasks.plan import plan
    from tasks.runs import resumed_run, run_paths

    paths = run_paths(loaded, warehouse, runs_dir)
    preflight(loaded, Path(matrix).resolve().parent, paths)
    if resume:  # a night that is not there, or a changed matrix: refused before Prefect starts
        resumed_run(Path(paths[1]), resume, loaded, sha)
    prefect_defaults()
    from flows.nightly import MeasuredTooLittle, RowsRejected, nightly

    with progress.terminal_display(cells=sum(len(g.cells) for g in plan(loaded))):
        try:
            # warehouse and runs folder: tasks.runs.run_paths
            result = nightly(matrix_path=matrix, warehouse=warehouse, runs_dir=runs_dir, resume=resume)
        except (RowsRejected, MeasuredTooLittle) as exc:  # loaded and reported, but the night is not clean
            _print_run(exc.result)
            raise
    if "nothing_to_do" in result:
        print(f"{result['nothing_to_do']}: nothing to resume")
        return 0
    _print_run(result)
    return 0


def _print_run(result: dict) -> None:
    from flows.summary import print_summary

    print_summary(result["summary"], result["deployments"])
    rejected = result["rows"].get("rejected_requests", 0)
    print(
        f"\nrun {result['run_id']}: {result['rows'].get('requests', 0)} requests loaded into {result['warehouse']}"
        + (f", {rejected} rejected (rejected_requests)" if rejected else "")
    )
    print(f"report: {result['report']}")


@app.command("plan")
def cmd_plan(matrix: Annotated[str, typer.Argument()] = DEFAULT_MATRIX) -> int:
    """Print deployment groups, start order, flags and predicted memory; start nothing."""
    from tasks.gpu_memory import plan_text, planning_card
    from tasks.matrix import load_matrix
    from tasks.runs import check_paths, run_paths
    from tasks.workloads import check_prompt_files

    loaded, _ = load_matrix(matrix)
    check_prompt_files(loaded, Path(matrix).resolve().parent)  # a bad prompts file: exit 2, as `run` says
    check_paths(*run_paths(loaded))  # where the night would write: writable, with room (nothing made)
    from tasks.engines.flagcheck import flag_warnings, profile_notes

    for line in flag_warnings(loaded) + profile_notes(loaded):  # a flag the pinned version lacks: one line each
        print(line, file=sys.stderr)
    print(
        "\n".join(plan_text(loaded, planning_card(loaded), matrix_name=matrix, base_dir=Path(matrix).resolve().parent))
    )
    return 0


@app.command("compose")
def cmd_compose(
    matrix: Annotated[str, typer.Argument()],
    deployment: Annotated[str, typer.Argument(help="deployment id")],
    out: Annotated[str | None, typer.Option(help="file to write (default: print)")] = None,
) -> int:
    """Write the docker-compose file of one deployment group."""
    from tasks.compose import compose_file
    from tasks.matrix import load_matrix

    loaded, _ = load_matrix(matrix)
    text = compose_file(loaded, deployment, Path(matrix).resolve().parent)
    if out:
        Path(out).write_text(text)
        print(out)
    else:
        print(text, end="")
    return 0


@app.command("report")
def cmd_report(
    run: Annotated[str | None, typer.Option(help="run id (default: the latest run)")] = None,
    out: Annotated[str | None, typer.Option(help="output folder (default .bakeoff/reports/RUN_ID)")] = None,
    nights: Annotated[int, typer.Option(min=1, help="nights the trend section shows, ending with the run")] = 14,
    baseline: Annotated[
        str | None, typer.Option(help="a run id to set this run against, configuration by configuration")
    ] = None,
    warehouse: WarehouseOpt = None,
) -> int:
    """Re-render a run's report from the warehouse."""
    from reports import render_run
    from tasks.compose import compose_from_path
    from warehouse import store

    with store.opened(_warehouse_path(warehouse), read_only=True) as con:
        run_id = run or _latest_run(con)
        out_dir = Path(out or Path(".bakeoff/reports") / run_id)
        # NoSuchRun (the run or the baseline): exit 2
        paths = render_run(con, run_id, out_dir, compose=compose_from_path, nights=nights, baseline=baseline)
    print(paths["html"])
    return 0


# What `bakeoff sql` sets on its connection before the query, unless --write: DuckDB may then touch no
# file but the warehouse it opened read-only (no ATTACH, COPY TO/FROM, EXPORT DATABASE, read_csv/glob,
# INSTALL/LOAD, persistent secrets), and the query cannot SET its way back (lock_configuration: no
# SET/RESET/PRAGMA of any setting, temp_directory and profiling_output included).
READ_ONLY_SETTINGS = ("SET enable_external_access = false", "SET lock_configuration = true")


@app.command("sql")
def cmd_sql(
    query: Annotated[str, typer.Argument()],
    warehouse: WarehouseOpt = None,
    max_rows: Annotated[int, typer.Option(help="rows to print at most")] = 50,
    write: Annotated[
        bool,
        typer.Option("--write", help="allow statements that write: to the warehouse and to any file DuckDB can reach"),
    ] = False,
) -> int:
    """Run a SQL query on the warehouse and print the result. Read-only: nothing is written anywhere
    (the warehouse or any other file) and no file outside the warehouse is read, unless --write."""
    import duckdb

    from warehouse import store

    with store.opened(_warehouse_path(warehouse), read_only=not write) as con:
        if not write:
            for setting in READ_ONLY_SETTINGS:
                con.execute(setting)
        try:
            relation = con.sql(query)
            if relation is None:  # a statement without a result
                return 0
            import polars as pl

            frame = pl.from_arrow(relation.to_arrow_table())
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            hint = ""
            if not write and (
                isinstance(exc, duckdb.PermissionException)
                or "read-only mode" in first
                or "configuration has been locked" in first
            ):
                hint = " (bakeoff sql is read-only: it writes nothing and reads no file outside the warehouse; --write allows it)"
            raise BadInput(f"sql: {first}{hint}") from None
    with pl.Config(
        tbl_rows=max_rows,
        tbl_cols=-1,
        tbl_width_chars=200,
        fmt_str_lengths=60,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    ):
        print(frame)
    return 0


@app.command("load")
def cmd_load(run_dir: Annotated[str, typer.Argument()], warehouse: WarehouseOpt = None) -> int:
    """Load a staged run folder into the warehouse (retry a failed load)."""
    from warehouse import store
    from warehouse.verdict import FAILED_ROWS, REFUSED

    # The same gate as the nightly flow: staged files may have been edited or come from elsewhere.
    # Its fresh verdict is what the load uses (and stores), not the one saved in run.json.
    report, counts = store.gate_and_load(_warehouse_path(warehouse), Path(run_dir))
    if report.outcome == REFUSED:
        print(f"bakeoff: {report.summary_line()} (nothing loaded)", file=sys.stderr)
        return 1
    print(", ".join(f"{table}: {n}" for table, n in counts.items()))
    if report.outcome == FAILED_ROWS:
        print(
            f"bakeoff: {report.summary_line()} (loaded without them; run marked validation_status = "
            "'failed_rows', rejected rows in rejected_requests)",
            file=sys.stderr,
        )
        return 1
    return 0


@app.command("export")
def cmd_export(
    out: Annotated[str, typer.Argument(help="output folder: OUT/TABLE/run_id=RUN/*.parquet")],
    run: Annotated[list[str] | None, typer.Option(help="export only this run (repeatable; default: every run)")] = None,
    warehouse: WarehouseOpt = None,
) -> int:
    """Write the warehouse's tables as Parquet partitioned by run (read-only)."""
    from warehouse import store
    from warehouse.export import export_parquet

    with store.opened(_warehouse_path(warehouse), read_only=True) as con:
        counts = export_parquet(con, out, runs=run or None)  # NoSuchRun: exit 2
    print(", ".join(f"{table}: {n}" for table, n in counts.items()))
    print(f"exported to {out} (TABLE/run_id=RUN/*.parquet)")
    return 0


flags_app = typer.Typer(help="The flags each engine version takes (tasks/engines/flags/).", no_args_is_help=True)
app.add_typer(flags_app, name="flags")


@flags_app.command("diff")
def cmd_flags_diff(
    engine: Annotated[str, typer.Argument(help="engine kind: vllm or sglang")],
    old: Annotated[str, typer.Argument(help="the version you run")],
    new: Annotated[str, typer.Argument(help="the version you consider")],
    matrix: Annotated[str | None, typer.Option("--matrix", help="also say which of this matrix's flags break")] = None,
) -> int:
    """Flags added, removed and changed default between two versions of an engine."""
    from tasks.engines.flags import diff

    print("\n".join(diff(engine, old, new).lines()))
    if matrix:
        from tasks.engines.flagcheck import breaking, deprecated_in
        from tasks.matrix import load_matrix

        loaded = load_matrix(matrix)[0]
        broken, going = breaking(loaded, engine, new), deprecated_in(loaded, engine, new)
        print(f"{matrix}: {len(broken)} configured {engine} flag(s) that {engine} {new} does not take")
        for c in broken:
            print(f"  {c.flag}  (engines.{c.engine_name}, {c.kind} {c.version}; from {c.where})")
        for c, note in going:
            print(f"  {c.flag}  {note} in {new} (engines.{c.engine_name}; from {c.where})")
    return 0


def _latest_run(con) -> str:
    row = con.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
    if row is None:
        raise BadInput("the warehouse holds no runs yet: run `bakeoff run` first")
    return row[0]


def main(argv: list[str] | None = None) -> int:
    """The console script; returns the exit code (tests call it with argv)."""
    command = typer.main.get_command(app)
    sigterm_exits()  # `kill` or a Prefect cancel ends any command as Ctrl-C does: cleanups run
    try:
        code = command.main(args=argv, prog_name="bakeoff", standalone_mode=False)
    except typer.TyperException as exc:  # typer's click errors; a usage error has a context
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"bakeoff: {exc.format_message()}{hint}", file=sys.stderr)
        return exc.exit_code
    except typer.Abort:
        return _interrupted()
    except BakeoffError as exc:
        print(f"bakeoff: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return _interrupted()
    except SystemExit as exc:
        if exc.code == 128 + signal.SIGTERM:
            print("bakeoff: terminated (SIGTERM); engines were stopped", file=sys.stderr)
        raise
    if code == 130:  # typer turns Ctrl-C into Exit(130)
        return _interrupted()
    return code if isinstance(code, int) else 0


def _interrupted() -> int:
    print("bakeoff: interrupted; engines were stopped", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
