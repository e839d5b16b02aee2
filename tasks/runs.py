"""A run's identity and metadata (the `runs` row), and what it collects as it goes."""

from __future__ import annotations

import getpass
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tasks import telemetry
from tasks.errors import BadInput
from tasks.launch import masked_document
from tasks.matrix import Matrix
from tasks.records import CellRow, DeploymentRow, RequestRecord, records_to_arrow

ENV_WAREHOUSE = "BAKEOFF_WAREHOUSE"
ENV_RUNS_DIR = "BAKEOFF_RUNS_DIR"


def run_paths(matrix: Matrix, warehouse: str | None = None, runs_dir: str | None = None) -> tuple[str, str]:
    """(warehouse file, runs folder) of a night, in one precedence for every way a night starts (`bakeoff
    run`, a deployment run by a Prefect worker, a test): the value passed (a CLI option, a flow parameter),
    then $BAKEOFF_WAREHOUSE / $BAKEOFF_RUNS_DIR, then the matrix's `warehouse` / `runs_dir` when the file
    sets them, then the defaults (.bakeoff/bakeoff.duckdb, .bakeoff/runs; relative to the working folder)."""

    def pick(given: str | None, env: str, field_name: str) -> str:
        if given:
            return given
        if os.environ.get(env):
            return os.environ[env]
        return str(getattr(matrix, field_name))  # the file's value, else the field's default

    return pick(warehouse, ENV_WAREHOUSE, "warehouse"), pick(runs_dir, ENV_RUNS_DIR, "runs_dir")


def new_run(matrix: Matrix, matrix_path: str, matrix_sha: str) -> dict:
    started = datetime.now(UTC)
    gpu = telemetry.card_or_none(matrix.gpu_index)  # a CPU box: the run simply has no GPU
    return {
        "run_id": f"{started:%Y%m%dT%H%M%SZ}-{matrix.name}-{secrets.token_hex(2)}",
        "matrix_name": matrix.name,
        "matrix_path": str(matrix_path),
        "matrix_sha256": matrix_sha,
        "started_at": started.isoformat(),
        "finished_at": None,
        "status": "failed",  # until the night says otherwise
        "bakeoff_version": bakeoff_version(),
        "git_sha": git_sha(),
        "host": f"{_user()}@{socket.gethostname()} ({platform.platform()})",
        "gpu_name": gpu.name if gpu else (matrix.gpu.name if matrix.gpu else None),
        "gpu_driver": gpu.driver if gpu else None,
        "gpu_memory_total_mib": gpu.memory_total_bytes // 2**20 if gpu else None,
        "cuda_version": gpu.cuda_version if gpu else None,
        **telemetry.host_facts(),
        "slo_ttft_ms": matrix.slo.ttft_ms,
        "slo_tpot_ms": matrix.slo.tpot_ms,
        "slo_e2e_ms": matrix.slo.e2e_ms,
        "validation": None,
    }


@dataclass
class Collected:
    """Everything a night (or one of its groups) gathers before it is staged: rows per table, raw records."""

    deployments: list[DeploymentRow] = field(default_factory=list)
    cells: list[CellRow] = field(default_factory=list)
    records: list[RequestRecord] = field(default_factory=list)
    gpu_samples: list[dict] = field(default_factory=list)
    host_samples: list[dict] = field(default_factory=list)
    builds: list[dict] = field(default_factory=list)
    engine_metrics: list[dict] = field(default_factory=list)

    def add_cell(self, outcome) -> None:
        self.cells.append(outcome.row)
        self.records.extend(outcome.records)
        self.gpu_samples.extend(outcome.gpu_samples)
        self.host_samples.extend(outcome.host_samples)

    def merge(self, other: Collected) -> None:
        for name in _FIELDS:
            getattr(self, name).extend(getattr(other, name))

    def take_measured(self) -> Collected:
        """What was measured since the last call (cells, records, samples, scrapes), moved out: the
        night stages it as one part and keeps only the deployment rows in memory."""
        taken = Collected()
        for name in _MEASURED:
            getattr(taken, name).extend(getattr(self, name))
            getattr(self, name).clear()
        return taken

    def tables(self) -> dict:
        """The keyword arguments of warehouse/store.stage_part."""
        rows = {name: getattr(self, name) for name in _FIELDS if name != "records"}
        return {**rows, "requests": records_to_arrow(self.records)}


_FIELDS = ("deployments", "cells", "records", "gpu_samples", "host_samples", "builds", "engine_metrics")
_MEASURED = ("cells", "records", "gpu_samples", "host_samples", "engine_metrics")


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def bakeoff_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bakeoff")
    except PackageNotFoundError:
        return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "unknown"


def night_status(instances: int, instances_clean: int) -> str:
    """runs.status of a night that ran to its end: every instance started and stayed up, or not."""
    return "completed" if instances and instances_clean == instances else "partial"


def measured_too_little(
    instances: int, instances_started: int, requests: int, requests_ok: int, max_failed_share: float
) -> str | None:
    """Why a night that ran to its end still measured too little to be a green night (runs.failure),
    or None. No instance started, no request sent, or more than `max_failed_share` of the requests
    failed (the matrix's threshold)."""
    if not instances_started:
        return f"no instance started ({instances} planned): nothing was measured"
    if not requests:
        return "no request was sent: nothing was measured"
    failed = requests - requests_ok
    if failed / requests > max_failed_share:
        return (
            f"{failed} of {requests} requests failed ({failed / requests:.0%}, more than the matrix's "
            f"max_failed_share {max_failed_share:g})"
        )
    return None


# ---------------------------------------------------------------- resuming a night

NIGHT_FILE = "night.json"  # written when a night starts: what `bakeoff run --resume` goes on from


class NoSuchNight(BadInput):
    """`--resume` named a run whose folder is not there."""


class ChangedMatrix(BadInput):
    """`--resume` with a matrix that differs from the one the night started with."""


def write_night_file(run_dir: Path, run: dict, matrix: Matrix) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f"{NIGHT_FILE}.tmp"
    stored = masked_document(matrix.model_dump(mode="json"))  # never a literal credential on disk
    tmp.write_text(json.dumps({"run": run, "matrix": stored}, indent=2, default=str))
    tmp.replace(run_dir / NIGHT_FILE)


def resumed_run(runs_root: Path, run_id: str, matrix: Matrix, matrix_sha: str) -> dict:
    """The `runs` row of a stopped night, to go on with: refused (one line) when the folder is not
    there or the matrix is not the one the night started with (the differences named)."""
    path = runs_root / run_id / NIGHT_FILE
    try:
        night = json.loads(path.read_text())
    except FileNotFoundError:
        raise NoSuchNight(f"--resume {run_id}: no such night in {runs_root} ({path} is missing)") from None
    except (OSError, ValueError) as exc:
        raise NoSuchNight(f"--resume {run_id}: {path} cannot be read ({exc})") from None
    run = dict(night["run"])
    if run.get("matrix_sha256") != matrix_sha:
        changes = matrix_differences(night.get("matrix") or {}, masked_document(matrix.model_dump(mode="json")))
        shown = "; ".join(changes[:3]) + (f" (and {len(changes) - 3} more)" if len(changes) > 3 else "")
        raise ChangedMatrix(
            f"--resume {run_id}: the matrix changed since the night started ({shown or 'the file differs'}); "
            "resume with the same matrix, or start a new night"
        )
    run["status"] = "failed"  # until the night says otherwise, as a new one
    return run


def matrix_differences(before: object, after: object, where: str = "") -> list[str]:
    """Dotted paths where two matrices (as JSON) differ, with both values."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in before:
                out.append(f"{path} added")
            elif key not in after:
                out.append(f"{path} removed")
            else:
                out += matrix_differences(before[key], after[key], path)
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            d
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for d in matrix_differences(b, a, f"{where}[{i}]")
        ]
    return (
        []
        if before == after
        else [f"{where or 'matrix'}: {json.dumps(before, default=str)[:40]} -> {json.dumps(after, default=str)[:40]}"]
    )


# ---------------------------------------------------------------- the paths a night writes

MIN_FREE_MIB = 256  # what a night needs free where it writes (parts, the run-level files, the load)


def check_paths(warehouse: str, runs_dir: str) -> None:
    """Before any engine starts (preflight, `bakeoff plan`): the runs folder and the warehouse can be
    written, and their file systems have room. Nothing is created here. BadInput, one line, when not."""
    need = int(os.environ.get("BAKEOFF_MIN_FREE_MIB") or MIN_FREE_MIB)
    _writable_folder(Path(runs_dir), "runs folder", need)
    wh = Path(warehouse)
    if wh.is_dir():
        raise BadInput(f"warehouse {wh} is a folder: name the DuckDB file (e.g. {wh / 'bakeoff.duckdb'})")
    if wh.exists() and not os.access(wh, os.W_OK):
        raise BadInput(f"warehouse {wh} cannot be written ({_why_not(wh)}): the night could not load what it measures")
    _writable_folder(wh.parent, f"warehouse {wh}'s folder", need)  # DuckDB writes its .wal beside the file


def _writable_folder(folder: Path, what: str, need_mib: int) -> None:
    existing = folder
    while not existing.exists():  # the nearest existing ancestor is where the folder would be made
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise BadInput(f"{what} {folder} cannot be made: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(f"{what} {folder} cannot be written ({_why_not(existing)})")
    free_mib = shutil.disk_usage(existing).free // (1 << 20)
    if free_mib < need_mib:
        raise BadInput(
            f"{what} {folder}: {free_mib} MiB free on its file system, a night needs at least {need_mib} MiB "
            "($BAKEOFF_MIN_FREE_MIB)"
        )


def _why_not(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "a read-only file system"
    except OSError:
        pass
    return f"no write permission for {getpass.getuser() if hasattr(os, 'getuid') else 'this user'}"
