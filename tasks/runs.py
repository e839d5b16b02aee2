"""A run's identity and metadata (the `runs` row), and what it collects as it goes."""

from __future__ import annotations

import getpass
import json
import platform
import secrets
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tasks import telemetry
from tasks.matrix import Matrix


def new_run(matrix: Matrix, matrix_path: str, matrix_sha: str) -> dict:
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
        "status": "failed",  # until the night says otherwise
        "bakeoff_version": bakeoff_version(),
        "git_sha": git_sha(),
        "host": f"{_user()}@{socket.gethostname()} ({platform.platform()})",
        "gpu_name": gpu.name if gpu else (matrix.gpu.name if matrix.gpu else None),
        "gpu_driver": gpu.driver if gpu else None,
        "slo_ttft_ms": matrix.slo.ttft_ms,
        "slo_tpot_ms": matrix.slo.tpot_ms,
        "slo_e2e_ms": matrix.slo.e2e_ms,
        "validation": None,
    }


def run_info(run: dict) -> dict:
    """The report header: what ran, when, where, from which code."""
    keys = ("run_id", "matrix_name", "matrix_path", "started_at", "finished_at", "status", "host", "gpu_name",
            "git_sha", "bakeoff_version")
    info = {k: str(run.get(k)) for k in keys if run.get(k) is not None}
    if run.get("validation_status") is not None:
        info["validation"] = _validation_text(run)
    return info


def _validation_text(run: dict) -> str:
    """The validation verdict for the report header (runs.validation_status, counts from runs.validation)."""
    status = run["validation_status"]
    if status != "failed_rows":
        return str(status)
    saved = run.get("validation")
    if isinstance(saved, str):
        saved = json.loads(saved)
    saved = saved if isinstance(saved, dict) else {}
    return (f"failed_rows: {saved.get('rejected_rows', '?')} of {saved.get('row_count', '?')} request rows rejected by "
            "the validation gate and left out of every figure here (table rejected_requests); the run is marked "
            "and is not in v_nightly / v_comparison")


@dataclass
class Collected:
    """Everything a night gathers before it is staged: rows per table, raw records."""

    deployments: list[dict] = field(default_factory=list)
    cells: list = field(default_factory=list)  # tasks.records.CellRow
    records: list = field(default_factory=list)
    gpu_samples: list[dict] = field(default_factory=list)
    host_samples: list[dict] = field(default_factory=list)
    builds: list[dict] = field(default_factory=list)
    engine_metrics: list[dict] = field(default_factory=list)

    def add_cell(self, outcome) -> None:
        self.cells.append(outcome.row)
        self.records.extend(outcome.records)
        self.gpu_samples.extend(outcome.gpu_samples)
        self.host_samples.extend(outcome.host_samples)

    def replace_cells(self, outcomes) -> None:
        """Rows returned after their cell was collected (run_sweep sets the stop reason on a new row)
        take the collected rows' places, by cell_id."""
        rows = {o.row.cell_id: o.row for o in outcomes}
        self.cells = [rows.get(c.cell_id, c) for c in self.cells]


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
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
