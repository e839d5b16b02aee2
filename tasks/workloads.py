"""Workloads: which requests a bench cell sends (prompts x output lengths), as plain data."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks.matrix import MatrixError, Workload

DATA_DIR = Path(__file__).parent / "data"


@dataclass(frozen=True)
class RequestSpec:
    prompt_id: str
    text: str
    max_tokens: int


def prompt_file(name_or_path: str, base_dir: Path | None = None) -> Path:
    """A built-in prompt set by name (tasks/data/prompts_<name>.yaml) or a file path."""
    builtin = DATA_DIR / f"prompts_{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    path = Path(name_or_path)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        known = sorted(p.stem.removeprefix("prompts_") for p in DATA_DIR.glob("prompts_*.yaml"))
        raise MatrixError(f"workloads.prompts: {name_or_path!r} is neither a built-in prompt set {known} nor a file")
    return path


def load_prompts(path: Path) -> list[tuple[str, str]]:
    data = yaml.safe_load(path.read_text())
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not prompts or not all(isinstance(p, dict) and p.get("id") and p.get("text") for p in prompts):
        raise MatrixError(f"{path}: prompts must be a list of entries with 'id' and 'text'")
    ids = [p["id"] for p in prompts]
    if len(set(ids)) != len(ids):
        raise MatrixError(f"{path}: prompt ids must be unique")
    return [(str(p["id"]), str(p["text"]).strip()) for p in prompts]


def build_requests(workload: Workload, *, seed: int, base_dir: Path | None = None) -> list[RequestSpec]:
    """Every prompt at every output length, in a seeded shuffled order so that lengths interleave
    under concurrency (a sorted order would run all the long requests together at the end)."""
    prompts = load_prompts(prompt_file(workload.prompts, base_dir))
    if workload.limit_prompts:
        prompts = prompts[: workload.limit_prompts]
    specs = [RequestSpec(pid, text, n) for n in workload.output_lengths for pid, text in prompts]
    random.Random(seed).shuffle(specs)
    return specs
