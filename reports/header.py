"""What the report says about the run itself: its header line-up and its environment, from the `runs` row.

Moved here from tasks/runs.py (`run_info`): formatting belongs with the report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

HEADER_KEYS = (
    "run_id",
    "matrix_name",
    "matrix_path",
    "started_at",
    "finished_at",
    "status",
    "host",
    "gpu_name",
    "git_sha",
    "bakeoff_version",
)


def run_info(run: dict) -> dict[str, str]:
    """The report header: what ran, when, where, from which code."""
    info = {k: str(run.get(k)) for k in HEADER_KEYS if run.get(k) is not None}
    if run.get("status") is not None:
        info["status"] = status_text(run)
    if run.get("validation_status") is not None:
        info["validation"] = validation_text(run)
    return info


def status_text(run: dict) -> str:
    """runs.status, with the reason when a night that ran to its end measured too little (runs.failure)."""
    if run.get("failure"):
        return f"{run['status']}: the night measured too little: {run['failure']}"
    return str(run.get("status"))


def validation_text(run: dict) -> str:
    """The validation verdict (runs.validation_status, counts from runs.validation)."""
    status = run.get("validation_status")
    if status is None:
        return "no verdict recorded"
    if status != "failed_rows":
        return str(status)
    saved = run.get("validation")
    if isinstance(saved, str):
        saved = json.loads(saved)
    saved = saved if isinstance(saved, dict) else {}
    return (
        f"failed_rows: {saved.get('rejected_rows', '?')} of {saved.get('row_count', '?')} request rows rejected by "
        "the validation gate and left out of every figure here (table rejected_requests); the run is marked "
        "and is not in v_nightly / v_comparison"
    )


def _engine_line(d: dict) -> str:
    parts = [f"{d['engine_kind']} {d.get('engine_version') or 'version unknown'}"]
    if d.get("image"):
        parts.append(f"image {d['image']}")
    if d.get("engine_artifact"):  # migration 0012: the image id, or the sha256 of the binary
        what = "image id" if d.get("launcher") == "docker" else "binary"
        parts.append(f"{what} {d['engine_artifact'][:19]}")  # sha256: and 12 hex digits, as docker shows it
    return ", ".join(parts)


def _cpu_line(run: dict) -> str:
    if run.get("cpu_model") is None and run.get("cpu_count") is None:
        return "—"
    parts = [str(run.get("cpu_model") or "model unknown")]
    if run.get("cpu_count") is not None:
        parts.append(f"{run['cpu_count']} logical CPUs")
    if run.get("memory_total_mib") is not None:
        parts.append(f"{run['memory_total_mib'] / 1024:.1f} GiB memory")
    return ", ".join(parts)


def _gpu_line(run: dict) -> str:
    if run.get("gpu_name") is None:
        return "none recorded (a CPU run)"
    parts = [str(run["gpu_name"]), f"driver {run.get('gpu_driver') or '—'}"]
    if run.get("gpu_memory_total_mib") is not None:
        parts.append(f"{run['gpu_memory_total_mib']:,} MiB")
    if run.get("cuda_version"):
        parts.append(f"CUDA {run['cuda_version']}")
    return ", ".join(parts)


def environment_rows(run: dict, deployments: Sequence[dict]) -> list[tuple[str, str]]:
    """(what, value) rows: host, CPU, GPU, engines with versions, images and what ran (image id or the
    binary's hash), code, matrix, times, verdict."""

    def val(key: str) -> str:
        v = run.get(key)
        return "—" if v is None or v == "" else str(v)

    rows = [("Host", val("host")), ("CPU", _cpu_line(run)), ("GPU", _gpu_line(run))]
    seen: dict[str, str] = {}
    for d in sorted(deployments, key=lambda d: not d.get("engine_artifact")):  # one that ran says the most
        seen.setdefault(str(d["engine"]), _engine_line(d))
    rows += [(f"Engine {name}", line) for name, line in sorted(seen.items())]
    rows += [
        ("bakeoff version", val("bakeoff_version")),
        ("git sha", val("git_sha")),
        ("Matrix", f"{val('matrix_name')} ({val('matrix_path')})"),
        ("Matrix sha256", val("matrix_sha256")),
        ("Started", val("started_at")),
        ("Finished", val("finished_at")),
        ("Run status", status_text(run) if run.get("status") else "—"),
        ("Validation", validation_text(run)),
    ]
    slos = [
        f"{name} ≤ {run[k]:g} ms"
        for k, name in (("slo_ttft_ms", "TTFT"), ("slo_tpot_ms", "TPOT"), ("slo_e2e_ms", "E2E"))
        if run.get(k) is not None
    ]
    rows.append(("SLOs", ", ".join(slos) if slos else "none set (no goodput)"))
    return rows
