"""`bakeoff`: run the nightly flow once, re-render a report, load a staged run, query the warehouse.

Bad input (matrix file, SQL, paths) is one line on stderr and exit code 2, never a traceback.
Prefect is imported only by `run`, so `sql` and `report` start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_MATRIX = "configs/cpu-smoke.yaml"
EXIT_BAD_INPUT = 2


def _prefect_defaults() -> None:
    # Set before prefect is imported: quiet, offline, patient ephemeral server, and our loggers
    # forwarded to the Prefect run log (that is where the UI shows progress).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "bakeoff")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def _warehouse_path(args: argparse.Namespace) -> str:
    return args.warehouse or os.environ.get("BAKEOFF_WAREHOUSE") or ".bakeoff/bakeoff.duckdb"


def cmd_run(args: argparse.Namespace) -> int:
    from tasks.deploy import preflight
    from tasks.matrix import load_matrix

    # Fail fast (exit 2, one line) before Prefect starts its server or any engine starts.
    matrix, _ = load_matrix(args.matrix)
    preflight(matrix, Path(args.matrix).resolve().parent)
    _prefect_defaults()
    from flows.nightly import RowsRejected, ValidationFailed, nightly

    try:
        result = nightly(
            matrix_path=args.matrix,
            warehouse=args.warehouse or os.environ.get("BAKEOFF_WAREHOUSE"),
            runs_dir=args.runs_dir,
        )
    except RowsRejected as exc:  # loaded and reported without the rejected rows; the night is not clean
        _print_run(exc.result)
        print(f"bakeoff: {exc}", file=sys.stderr)
        return 1
    except ValidationFailed as exc:
        print(f"bakeoff: {exc}", file=sys.stderr)
        return 1
    _print_run(result)
    return 0


def _print_run(result: dict) -> None:
    from flows.summary import print_summary

    print_summary(result["summary"], result["deployments"])
    rejected = result["rows"].get("rejected_requests", 0)
    print(f"\nrun {result['run_id']}: {result['rows'].get('requests', 0)} requests loaded into {result['warehouse']}"
          + (f", {rejected} rejected (rejected_requests)" if rejected else ""))
    print(f"report: {result['report']}")


def cmd_report(args: argparse.Namespace) -> int:
    from reports.render import render_report
    from warehouse import store
    from warehouse.transforms import summarize_run

    with store.opened(_warehouse_path(args), read_only=True) as con:
        run_id = args.run or _latest_run(con)
        try:
            run, _deployments, summary, metrics = summarize_run(con, run_id)
        except KeyError:
            raise BadInput(f"--run: no run {run_id!r} in the warehouse (see `bakeoff sql \"select run_id from runs\"`)")
    out = Path(args.out or Path(".bakeoff/reports") / run_id)
    from tasks.runs import run_info

    paths = render_report(summary, metrics, out, title=f"bakeoff: {run['matrix_name']}", run_info=run_info(run))
    print(paths["html"])
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from warehouse import store

    with store.opened(_warehouse_path(args), read_only=True) as con:
        try:
            relation = con.sql(args.query)
            if relation is None:  # a statement without a result
                return 0
            import polars as pl

            frame = pl.from_arrow(relation.to_arrow_table())
        except duckdb.Error as exc:
            raise BadInput(f"sql: {str(exc).splitlines()[0]}")
    with pl.Config(tbl_rows=args.max_rows, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=60,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(frame)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from warehouse import store
    from warehouse.verdict import FAILED_ROWS, REFUSED

    # The same gate as the nightly flow: staged files may have been edited or come from elsewhere.
    # Its fresh verdict is what the load uses (and stores), not the one saved in run.json.
    report, counts = store.gate_and_load(_warehouse_path(args), Path(args.run_dir))
    if report.outcome == REFUSED:
        print(f"bakeoff: {report.summary_line()} (nothing loaded)", file=sys.stderr)
        return 1
    print(", ".join(f"{table}: {n}" for table, n in counts.items()))
    if report.outcome == FAILED_ROWS:
        print(f"bakeoff: {report.summary_line()} (loaded without them; run marked validation_status = "
              "'failed_rows', rejected rows in rejected_requests)", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from warehouse import store
    from warehouse.export import export_parquet

    with store.opened(_warehouse_path(args), read_only=True) as con:
        try:
            counts = export_parquet(con, args.out, runs=args.run or None)
        except KeyError as exc:
            raise BadInput(f"--run: no run {exc.args[0]} in the warehouse (see `bakeoff sql \"select run_id from runs\"`)")
    print(", ".join(f"{table}: {n}" for table, n in counts.items()))
    print(f"exported to {args.out} (TABLE/run_id=RUN/*.parquet)")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the deployment groups, start order, flags and predicted memory; start nothing."""
    from tasks import telemetry
    from tasks.engines import adapter_for
    from tasks.matrix import load_matrix, plan
    from tasks.planner import GIB, plan_group

    matrix, _ = load_matrix(args.matrix)
    total = free = None
    source = f"matrix gpu.memory_total_mib = {matrix.gpu.memory_total_mib}" if matrix.gpu and matrix.gpu.memory_total_mib else "unknown"
    try:
        card = telemetry.gpu_info(matrix.gpu.index if matrix.gpu else 0)
        total, free = card.memory_total_bytes, card.memory_free_bytes
        source = f"this machine's {card.name} (NVML: {total / GIB:.1f} GiB total, {free / GIB:.1f} GiB free now)"
    except telemetry.NvmlUnavailable:
        pass
    print(f"matrix {args.matrix}: {len(matrix.deployments)} deployment groups; GPU memory: {source}")
    not_fitting = 0
    for group in plan(matrix):
        plans = plan_group(matrix, group, total_bytes=total, free_bytes=free)
        verdicts = {p.fits for p in plans}
        verdict = "does NOT fit" if False in verdicts else ("fits" if verdicts == {True} else "cannot tell")
        not_fitting += False in verdicts
        print(f"\n{group.deployment_id}: {len(plans)} instance(s), {len(group.cells)} bench cell(s): {verdict}")
        by_id = {p.instance_id: p for p in group.instances}
        for mp in plans:
            planned = by_id[mp.instance_id]
            engine = matrix.engines[planned.engine_name]
            gib = lambda b: "?" if b is None else f"{b / GIB:.2f}"  # noqa: E731
            mark = {True: "ok  ", False: "FAIL", None: "?   "}[mp.fits]
            print(f"  {mp.start_order + 1}. [{mark}] {mp.instance_id}: {engine.kind} {engine.version} / {planned.model_name}"
                  f"  budget {gib(mp.budget_bytes)} GiB, weights {gib(mp.weights_bytes)} GiB, KV {gib(mp.kv_bytes)} GiB,"
                  f" free before {gib(mp.free_before_bytes)} GiB")
            print(f"     {mp.reason}")
            if engine.kind in ("vllm", "sglang"):  # the command line a GPU engine will get
                model = matrix.models[planned.model_name]
                spec = adapter_for(engine.kind).launch_spec(
                    engine, planned.spec, model.path, model.served_name or planned.model_name,
                    planned.spec.port or 8000, memory_args=mp.flag_args())
                print(f"     {engine.image or engine.kind} {' '.join(spec.argv)}")
    print(f"\n{not_fitting} group(s) predicted not to fit.")
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    from tasks.compose import compose_file
    from tasks.matrix import load_matrix

    matrix, _ = load_matrix(args.matrix)
    text = compose_file(matrix, args.deployment, Path(args.matrix).resolve().parent)
    if args.out:
        Path(args.out).write_text(text)
        print(args.out)
    else:
        print(text, end="")
    return 0


def _latest_run(con) -> str:
    row = con.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
    if row is None:
        raise BadInput("the warehouse holds no runs yet: run `bakeoff run` first")
    return row[0]


class BadInput(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bakeoff", description="Nightly bake-off of LLM serving engines.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the nightly flow once on a matrix file")
    p.add_argument("matrix", nargs="?", default=DEFAULT_MATRIX, help=f"matrix file (default {DEFAULT_MATRIX})")
    p.add_argument("--warehouse", help="DuckDB file (default: the matrix's `warehouse`, or $BAKEOFF_WAREHOUSE)")
    p.add_argument("--runs-dir", help="where run folders go (default: the matrix's `runs_dir`)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plan", help="print deployment groups, start order, flags and predicted memory; start nothing")
    p.add_argument("matrix", nargs="?", default=DEFAULT_MATRIX)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("compose", help="write the docker-compose file of one deployment group")
    p.add_argument("matrix")
    p.add_argument("deployment", help="deployment id")
    p.add_argument("--out", help="file to write (default: print)")
    p.set_defaults(func=cmd_compose)

    p = sub.add_parser("report", help="re-render a run's report from the warehouse")
    p.add_argument("--run", help="run id (default: the latest run)")
    p.add_argument("--out", help="output folder (default .bakeoff/reports/RUN_ID)")
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("sql", help="run a SQL query on the warehouse (read-only) and print the result")
    p.add_argument("query")
    p.add_argument("--warehouse")
    p.add_argument("--max-rows", type=int, default=50)
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("load", help="load a staged run folder into the warehouse (retry a failed load)")
    p.add_argument("run_dir")
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("export", help="write the warehouse's tables as Parquet partitioned by run (read-only)")
    p.add_argument("out", help="output folder: OUT/TABLE/run_id=RUN/*.parquet")
    p.add_argument("--run", action="append", help="export only this run (repeatable; default: every run)")
    p.add_argument("--warehouse")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tasks.matrix import MatrixError
    from warehouse.store import WarehouseBusy, WarehouseError

    try:
        return args.func(args)
    except (MatrixError, BadInput, WarehouseError) as exc:
        print(f"bakeoff: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except WarehouseBusy as exc:
        print(f"bakeoff: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: try again later
    except KeyboardInterrupt:
        print("bakeoff: interrupted; engines were stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
