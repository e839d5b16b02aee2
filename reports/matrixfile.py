"""The run's matrix file read as plain YAML (reports/ does not import tasks/): what the warehouse does
not hold (workload kinds, warm-up, limit_prompts as written). None when the file is gone or unreadable:
the report then says so and works from the warehouse alone."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_matrix(path: str | None) -> dict | None:
    if not path:
        return None
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def workload_kinds(matrix: dict | None) -> dict[str, str]:
    """workload id -> kind ("prompts" when unset, as tasks.matrix.Workload)."""
    out = {}
    for w in (matrix or {}).get("workloads") or ():
        if isinstance(w, dict) and "id" in w:
            out[str(w["id"])] = str(w.get("kind") or "prompts")
    return out
