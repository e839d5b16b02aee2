"""Open the warehouse, stage a run on disk, load a staged run (one transaction, idempotent), query.

A run is first staged as files under its run folder (run.json + Parquet per table), so a failed
load can be retried from disk without re-running the benchmark. Loading deletes the run's rows and
inserts them again inside one transaction: loading twice leaves the same rows, and a crash mid-load
leaves the previous state.

The load takes the validation gate's verdict (warehouse/validate.py, a ValidationReport): with
outcome "failed_rows", the rejected request rows go to `rejected_requests` (with the expectations
they failed and the whole staged row as JSON) instead of `requests`, and the run is marked
`runs.validation_status = 'failed_rows'`, in the same transaction. A refused run is not loaded.
`gate_and_load` is the one place that runs the gate on a staged run and loads it with the verdict
(the nightly flow and `bakeoff load`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.errors import BadInput, Busy
from tasks.records import CLIENT_CANCEL, CellRow, DeploymentRow, records_to_arrow, rows_to_arrow
from warehouse import chunks
from warehouse.schema import check_not_newer, migrate

if TYPE_CHECKING:
    from warehouse.verdict import ValidationReport

log = logging.getLogger("bakeoff.warehouse")
STAGED_ROW_GROUP = 128 * 1024
ROW_TYPES = {"deployments": DeploymentRow, "cells": CellRow}
TABLES_IN_LOAD_ORDER = (
    "runs",
    "builds",
    "deployments",
    "cells",
    "requests",
    "gpu_samples",
    "host_samples",
    "engine_metrics",
)
# Filled by the load from the validation verdict, not from a staged file of its own.
REJECTED = "rejected_requests"
VALIDATION_STATUSES = ("passed", "failed_rows")  # runs.validation_status; NULL: no verdict
_REJECTED_FRAME = "_bakeoff_rejected_ids"  # a registered frame, never named like a table


class WarehouseBusy(Busy, RuntimeError):
    """Another process holds the warehouse for writing."""


class WarehouseError(BadInput, RuntimeError):
    """A warehouse that cannot be opened or a run that cannot be loaded (one-line message)."""


class NoSuchRun(WarehouseError):
    """A run id the warehouse does not hold (bad input: the user named it)."""

    def __init__(self, run_ids: list[str] | str) -> None:
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        super().__init__(f'no run {", ".join(ids)} in the warehouse (see `bakeoff sql "select run_id from runs"`)')
        self.run_ids = ids


def _busy_message(path: Path, exc: Exception) -> str:
    text = str(exc)
    holder = "another process"
    m = re.search(r"PID (\d+)", text)
    if m:
        pid = m.group(1)
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            cmd = ""
        holder = f"PID {pid}" + (f" ({cmd[:120]})" if cmd else "")
    # DuckDB's lock error does not say whether the holder reads or writes: a reader (`bakeoff sql`, a
    # notebook) holds the file as a writer does, so the message names the holder, not what it does.
    return f"warehouse {path} is busy: {holder} has it open; try again when it closes it"


def _load_wait_s() -> float:
    """How long a load waits for another process to close the warehouse ($BAKEOFF_LOAD_WAIT_S, 600 s)."""
    try:
        return max(0.0, float(os.environ.get("BAKEOFF_LOAD_WAIT_S", "600")))
    except ValueError:
        raise BadInput(f"BAKEOFF_LOAD_WAIT_S={os.environ['BAKEOFF_LOAD_WAIT_S']!r}: a number of seconds") from None


def connect_waiting(path: str | os.PathLike[str], wait_s: float) -> duckdb.DuckDBPyConnection:
    """Open for writing, waiting up to wait_s for a process that has the file open (a reader holding it
    for a query, another load) to close it; WarehouseBusy (exit 75) naming it when it does not."""
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            return connect(path)
        except WarehouseBusy as busy:
            if time.monotonic() >= deadline:
                raise
            if not told:
                log.warning("%s; waiting up to %.0f s", busy, wait_s)
                told = True
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def connect(path: str | os.PathLike[str], *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and for writers, create and migrate) the warehouse file."""
    path = Path(path)
    if read_only and not path.exists():
        raise WarehouseError(f"warehouse {path} does not exist yet: run `bakeoff run` first")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseBusy(_busy_message(path, exc)) from None
        raise WarehouseError(f"warehouse {path}: {str(exc).splitlines()[0]}") from None
    try:
        if read_only:
            check_not_newer(con)  # a reader of a newer schema would misread it
        else:
            migrate(con)
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def opened(path: str | os.PathLike[str], *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(path, read_only=read_only)
    try:
        yield con
    finally:
        con.close()


def holds_run(path: str | os.PathLike[str], run_id: str) -> bool:
    """Whether the warehouse file holds a run (False when there is no file yet)."""
    if not Path(path).exists():
        return False
    with opened(path, read_only=True) as con:
        return con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone() != (0,)


# ---------------------------------------------------------------- staging

PARTS = "parts"  # a run folder's staged parts: one folder per finished cell, group, sweep or build
_PART_FILE = "part.json"


@dataclass(frozen=True)
class StagedRun:
    run_dir: Path

    @property
    def run_file(self) -> Path:
        return self.run_dir / "run.json"

    def table_file(self, table: str) -> Path:
        return self.run_dir / f"{table}.parquet"


@dataclass(frozen=True)
class StagedCounts:
    """What the staged tables of a run hold, for the night's status and its verdict."""

    instances: int
    instances_started: int
    instances_clean: int  # started, and no failure class since (crashed, unhealthy, ...)
    requests: int  # the requests the night measured, less those its workloads cancelled on purpose
    requests_ok: int


def stage_part(
    run_dir: Path,
    name: str,
    *,
    complete: bool,
    deployments: Sequence[DeploymentRow | dict[str, Any]] = (),
    cells: Sequence[CellRow | dict[str, Any]] = (),
    requests: pa.Table | None = None,
    gpu_samples: Sequence[dict[str, Any]] = (),
    host_samples: Sequence[dict[str, Any]] = (),
    builds: Sequence[dict[str, Any]] = (),
    engine_metrics: Sequence[dict[str, Any]] = (),
) -> Path:
    """Stage one piece of a night as it finishes (a cell, a sweep, a group's deployment rows, the
    builds) under run_dir/parts/NAME, so a crash loses at most the piece in flight. The part is
    written in a temporary folder and renamed into place; `complete` False marks a piece cut short
    (an interrupted cell), which a resumed night measures again. A part of the same name is replaced."""
    parts = run_dir / PARTS
    parts.mkdir(parents=True, exist_ok=True)
    final = parts / quote(name, safe="")
    tmp = parts / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tables = (
        ("builds", builds),
        ("deployments", deployments),
        ("cells", cells),
        ("gpu_samples", gpu_samples),
        ("host_samples", host_samples),
        ("engine_metrics", engine_metrics),
    )
    for table, rows in tables:
        if rows:
            _write_parquet(_rows_table(table, rows), tmp / f"{table}.parquet")
    if requests is not None and requests.num_rows:
        write_staged_requests(requests, tmp / "requests.parquet")
    (tmp / _PART_FILE).write_text(json.dumps({"name": name, "complete": complete}))
    if final.exists():  # a part measured again (a resumed night): the old one goes
        old = parts / f".old-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        final.replace(old)
        tmp.replace(final)
        shutil.rmtree(old)
    else:
        tmp.replace(final)
    return final


def _parts(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    folder = run_dir / PARTS
    if not folder.is_dir():
        return []
    found = []
    for part in sorted(folder.iterdir()):
        if part.name.startswith(".") or not (part / _PART_FILE).is_file():
            continue  # a part being written when the night died
        found.append((part, json.loads((part / _PART_FILE).read_text())))
    return found


def stage_parts(run_dir: Path) -> StagedCounts:
    """The run-level staged files (one Parquet per table) from every part of the run, cut-short parts
    included (a night that is not resumed keeps what it measured). Written then renamed, as each part."""
    staged = StagedRun(run_dir)
    parts = [p for p, _ in _parts(run_dir)]
    for table in TABLES_IN_LOAD_ORDER[1:]:
        pieces = [pq.read_table(p / f"{table}.parquet") for p in parts if (p / f"{table}.parquet").exists()]
        if table == "requests":
            empty = chunks.to_staged(records_to_arrow([]))
        else:
            empty = _rows_table(table, [])
        if not pieces:
            whole = empty
        else:
            whole = pa.concat_tables(pieces, promote_options="permissive")
            whole = whole.replace_schema_metadata(pieces[0].schema.metadata)  # keeps the staged-form mark
        _write_parquet(whole, staged.table_file(table))
    deployments = pq.read_table(staged.table_file("deployments")).to_pylist()
    rows = pq.read_table(staged.table_file("requests"), columns=["status", "error_class"])
    # a request the workload itself cancelled (cancellation) is the workload, not a failure
    statuses = [
        st
        for st, ec in zip(rows.column("status").to_pylist(), rows.column("error_class").to_pylist(), strict=True)
        if ec != CLIENT_CANCEL
    ]
    return StagedCounts(
        instances=len(deployments),
        instances_started=sum(1 for d in deployments if d["started"]),
        instances_clean=sum(1 for d in deployments if d["started"] and not d["failure_class"]),
        requests=len(statuses),
        requests_ok=statuses.count("ok"),
    )


def seal_staged(run_dir: Path, run: dict[str, Any]) -> StagedRun:
    """Write run.json, last: a run folder without it never looks staged."""
    staged = StagedRun(run_dir)
    tmp = staged.run_file.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(run, indent=2, default=str))
        tmp.replace(staged.run_file)
    finally:
        tmp.unlink(missing_ok=True)  # stopped (Ctrl-C, SIGTERM) between the write and the rename
    return staged


def stage_run(
    run_dir: Path,
    run: dict[str, Any],
    deployments: Sequence[DeploymentRow | dict[str, Any]],
    cells: Sequence[CellRow | dict[str, Any]],
    requests: pa.Table,
    gpu_samples: Sequence[dict[str, Any]] = (),
    host_samples: Sequence[dict[str, Any]] = (),
    builds: Sequence[dict[str, Any]] = (),
    engine_metrics: Sequence[dict[str, Any]] = (),
) -> StagedRun:
    """Stage a whole run at once (one part, then the run-level files and run.json), as the night does
    piece by piece.

    requests: the records in memory (tasks/records.records_to_arrow, ns offsets); written in staged
    form 2 (chunk_times as µs gaps, marked in the file's schema metadata: warehouse/chunks.py), the
    form the gate judges and the load stores."""
    stage_part(
        run_dir,
        "all",
        complete=True,
        deployments=deployments,
        cells=cells,
        requests=requests,
        gpu_samples=gpu_samples,
        host_samples=host_samples,
        builds=builds,
        engine_metrics=engine_metrics,
    )
    stage_parts(run_dir)
    clear_parts(run_dir)  # the run-level files hold it all
    return seal_staged(run_dir, run)


def resume_parts(run_dir: Path) -> set[str]:
    """Make a stopped night's run folder ready to go on: its cut-short parts (and any part being
    written) are removed, and the run-level files too (they are rebuilt from the parts at the end).
    Returns the names of the complete parts, which the resumed night does not measure again. A folder
    staged whole without parts (its parts went when it was loaded, into a warehouse that no longer holds
    it) is left as it is: WarehouseError naming `bakeoff load`, never a night measured again over it."""
    folder = run_dir / PARTS
    if not has_parts(run_dir) and StagedRun(run_dir).run_file.exists():
        raise WarehouseError(
            f"{run_dir} is staged whole (run.json, no parts) but not in this warehouse: nothing to measure again; "
            f"load it with `bakeoff load {run_dir}`"
        )
    if folder.is_dir():
        for part in folder.iterdir():
            if part.name.startswith("."):
                shutil.rmtree(part, ignore_errors=True)
    done = set()
    for part, meta in _parts(run_dir):
        if meta.get("complete"):
            done.add(str(meta["name"]))
        else:
            shutil.rmtree(part)
    staged = StagedRun(run_dir)
    staged.run_file.unlink(missing_ok=True)  # first: the folder no longer looks staged
    for table in TABLES_IN_LOAD_ORDER[1:]:
        staged.table_file(table).unlink(missing_ok=True)
    return done


def has_parts(run_dir: Path) -> bool:
    return bool(_parts(run_dir))


def clear_parts(run_dir: Path) -> None:
    """Once the run is loaded its run-level files are the staged copy; the parts go."""
    shutil.rmtree(run_dir / PARTS, ignore_errors=True)


def _rows_table(table: str, rows: Sequence[Any]) -> pa.Table:
    """Rows as Arrow: the contract's dataclasses (tasks/records.py) with their own types, even when
    there are none; dict rows (the telemetry tables) as they are."""
    row_type = ROW_TYPES.get(table)
    if row_type is not None and all(dataclasses.is_dataclass(r) for r in rows):
        return rows_to_arrow(list(rows), row_type)
    return pa.Table.from_pylist(list(rows)) if rows else pa.table({"run_id": pa.array([], pa.string())})


def write_staged_requests(requests: pa.Table, path: Path) -> None:
    """The stager's writer of requests.parquet: staged form 2 (chunk_times as µs gaps, marked)."""
    _write_parquet(chunks.to_staged(requests), path)


def _write_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    # Row groups of 128 Ki rows: DuckDB reads a Parquet file one row group per thread, and pyarrow's
    # default (1 Mi rows) would make the load of a big run single-threaded.
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=STAGED_ROW_GROUP)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # a write cut short (a full disk, Ctrl-C, SIGTERM) leaves no half file


def read_staged_run(run_dir: Path) -> dict[str, Any]:
    staged = StagedRun(Path(run_dir))
    missing = [
        p.name for p in [staged.run_file, *(staged.table_file(t) for t in TABLES_IN_LOAD_ORDER[1:])] if not p.exists()
    ]
    if missing:
        raise WarehouseError(f"{run_dir}: not a staged run (missing {', '.join(missing)})")
    if not chunks.is_us_gaps(pq.read_schema(staged.table_file("requests"))):
        raise WarehouseError(
            f"{run_dir}: staged by an older bakeoff (chunk_times as ns offsets, before staged "
            "form 2); this bakeoff does not load it"
        )
    run: dict[str, Any] = json.loads(staged.run_file.read_text())
    return run


# ---------------------------------------------------------------- the gate, then the load


def gate_and_load(
    warehouse: duckdb.DuckDBPyConnection | str | os.PathLike[str], run_dir: Path
) -> tuple[ValidationReport, dict[str, int]]:
    """Run the validation gate on a staged run's rows and load the run with its verdict.

    The verdict is saved in run.json (`validation`); a refused run loads nothing (counts {}), and a
    warehouse given as a path is then not even opened. A path is opened only after the gate (seconds
    of Great Expectations), so the warehouse is not held meanwhile. Returns (verdict, rows per table)."""
    from warehouse.validate import validate_run  # imports Great Expectations: seconds

    staged = StagedRun(Path(run_dir))
    run = read_staged_run(staged.run_dir)
    verdict = validate_run(
        pq.read_table(staged.table_file("requests")),
        pq.read_table(staged.table_file("deployments")).to_pylist(),
        pq.read_table(staged.table_file("cells")).to_pylist(),
    )
    seal_staged(staged.run_dir, {**run, "validation": verdict.to_json()})
    if verdict.outcome not in VALIDATION_STATUSES:
        return verdict, {}
    if isinstance(warehouse, duckdb.DuckDBPyConnection):
        return verdict, load_run(warehouse, staged.run_dir, verdict)
    con = connect_waiting(warehouse, _load_wait_s())
    try:
        return verdict, load_run(con, staged.run_dir, verdict)
    finally:
        con.close()


# ---------------------------------------------------------------- loading


def load_run(con: duckdb.DuckDBPyConnection, run_dir: Path, verdict: ValidationReport | None = None) -> dict[str, int]:
    """Load one staged run in one transaction; replaces any earlier load of the same run_id.
    Returns the number of rows loaded per table (rejected_requests included).

    verdict: the validation gate's report on these staged rows (validate.validate_run). Its outcome
    "passed" or "failed_rows" becomes runs.validation_status and its JSON runs.validation; with
    "failed_rows" its rejected rows go to rejected_requests instead of requests. A refused verdict
    loads nothing (WarehouseError). Without a verdict every staged row is loaded and runs.validation
    is run.json's; the run is marked 'passed' when that saved report says it passed, NULL when there is
    none, and a saved report that did not pass is refused: only a verdict says which rows to set apart
    (`bakeoff load RUN_DIR` validates again and passes its verdict)."""
    # Rows of a run need no particular order in the table (every query groups or sorts), and letting
    # DuckDB insert out of order measured 30 % faster on a 1 M-request run; the setting is restored.
    previous = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = false")
    try:
        return _load_run(con, run_dir, verdict)
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if previous else 'false'}")


def _verdict(
    run: dict[str, Any], run_dir: Path, verdict: ValidationReport | None
) -> tuple[dict[str, Any] | None, str | None, dict[str, tuple[str, ...]]]:
    """(validation JSON for runs.validation, runs.validation_status, rejected request_id -> expectations)."""
    if verdict is not None:
        if verdict.outcome not in VALIDATION_STATUSES:
            raise WarehouseError(
                f"run {run['run_id']} was refused by the validation gate, nothing loaded: {verdict.summary_line()}"
            )
        return verdict.to_json(), verdict.outcome, dict(verdict.rejected)
    saved = run.get("validation")
    if saved is None:
        return None, None, {}
    if isinstance(saved, dict) and saved.get("success") is True:
        return saved, "passed", {}
    raise WarehouseError(
        f"run {run['run_id']}: its saved validation did not pass; load it with "
        f"`bakeoff load {run_dir}`, which validates it again and keeps the failing rows apart"
    )


def _load_run(con: duckdb.DuckDBPyConnection, run_dir: Path, verdict: ValidationReport | None) -> dict[str, int]:
    staged = StagedRun(Path(run_dir))
    run = read_staged_run(staged.run_dir)
    run_id = run["run_id"]
    validation, status, rejected = _verdict(run, staged.run_dir, verdict)
    run = {**run, "validation": validation, "validation_status": status}
    counts: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {REJECTED} WHERE run_id = ?", [run_id])
        for table in reversed(TABLES_IN_LOAD_ORDER):
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        columns = [c for c in run if c in _table_columns(con, "runs")]
        con.execute(
            f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
            [json.dumps(run[c]) if c == "validation" and run[c] is not None else run[c] for c in columns],
        )
        counts["runs"] = 1
        for table in TABLES_IN_LOAD_ORDER[1:]:
            path = staged.table_file(table)
            if pq.read_metadata(path).num_rows == 0:
                counts[table] = 0
                continue
            if table == "requests" and rejected:
                _insert_requests_apart(con, path, run_id, rejected)
            else:
                _check_run_id(con, path, run_id)
                if table == "requests":
                    _insert_requests(con, path)
                else:
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet(?)", [str(path)])
            counts[table] = con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]).fetchall()[0][0]
        if rejected and pq.read_metadata(staged.table_file("requests")).num_rows == 0:
            raise WarehouseError(
                f"run {run_id}: the verdict rejects {len(rejected)} request rows, the staged run has none"
            )
        counts[REJECTED] = con.execute(f"SELECT count(*) FROM {REJECTED} WHERE run_id = ?", [run_id]).fetchall()[0][0]
        con.execute("COMMIT")
    except duckdb.ConstraintException as exc:
        con.execute("ROLLBACK")
        raise WarehouseError(f"run {run_id} violates a warehouse constraint: {str(exc).splitlines()[0]}") from None
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return counts


def _check_run_id(con: duckdb.DuckDBPyConnection, path: Path, run_id: str, where: str = "") -> None:
    foreign = con.execute(
        f"SELECT count(*) FROM read_parquet(?) s WHERE s.run_id IS DISTINCT FROM ? {where}", [str(path), run_id]
    ).fetchall()[0][0]  # fetch all: DuckDB 2 refuses new work while a result is unfinished
    if foreign:
        raise WarehouseError(f"{path}: {foreign} rows belong to another run than {run_id}")


def _insert_requests_apart(
    con: duckdb.DuckDBPyConnection, path: Path, run_id: str, rejected: dict[str, tuple[str, ...]]
) -> None:
    """The rows the verdict rejects -> rejected_requests (run_id, request_id, the expectations they
    failed, the whole staged row as JSON); the others -> requests, as _insert_requests does. A rejected
    row keeps whatever run_id it had inside its JSON (a null run_id is one reason to reject it)."""
    ids = pa.table(
        {
            "request_id": pa.array(list(rejected), pa.string()),
            "failed_expectations": pa.array([list(v) for v in rejected.values()], pa.list_(pa.string())),
        }
    )
    con.register(_REJECTED_FRAME, ids)
    try:
        kept = f"AND s.request_id NOT IN (SELECT request_id FROM {_REJECTED_FRAME})"
        _check_run_id(con, path, run_id, kept)
        con.execute(
            f"INSERT INTO {REJECTED} (run_id, request_id, failed_expectations, record) "
            f"SELECT ?, s.request_id, r.failed_expectations, to_json(s) "
            f"FROM read_parquet(?) s JOIN {_REJECTED_FRAME} r ON s.request_id = r.request_id",
            [run_id, str(path)],
        )
        found = con.execute(f"SELECT count(*) FROM {REJECTED} WHERE run_id = ?", [run_id]).fetchall()[0][0]
        if found != len(rejected):
            raise WarehouseError(
                f"{path}: the validation verdict rejects {len(rejected)} request rows, "
                f"{found} of them are in the staged file (was it changed after validation?)"
            )
        _insert_requests(con, path, where=f"WHERE request_id NOT IN (SELECT request_id FROM {_REJECTED_FRAME})")
    finally:
        con.unregister(_REJECTED_FRAME)


def _insert_requests(con: duckdb.DuckDBPyConnection, path: Path, where: str = "") -> None:
    """Staged requests -> `requests`. Staged form 2 (µs gaps, warehouse/chunks.py) is the stored form
    already: a plain INSERT, whose cast to INTEGER[] refuses a gap over 2^31 µs."""
    try:
        con.execute(f"INSERT INTO requests BY NAME SELECT * FROM read_parquet(?) {where}", [str(path)])
    except duckdb.ConversionException as exc:
        raise WarehouseError(
            f"{path}: a chunk gap does not fit requests.chunk_times (INTEGER µs, at most 35 min): "
            f"{str(exc).splitlines()[0]}"
        ) from None


def _table_columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
        ).fetchall()
    }
