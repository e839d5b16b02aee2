"""A run's identity and metadata (the `runs` row), and what it collects as it goes."""

from __future__ import annotations

import getpass
import platform
import secrets
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tasks import telemetry
from tasks.matrix import Matrix
from tasks.records import CellRow, DeploymentRow, RequestRecord


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
        for name in ("deployments", "cells", "records", "gpu_samples", "host_samples", "builds", "engine_metrics"):
            getattr(self, name).extend(getattr(other, name))


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
