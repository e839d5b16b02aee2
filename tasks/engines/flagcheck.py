"""A matrix's configured flags against the flag lists of its pinned versions (tasks/engines/flags/):
`bakeoff plan` warns, one line a flag, about a flag the version lacks or calls deprecated, and
`bakeoff flags diff ENGINE V1 V2 --matrix FILE` says which of the matrix's flags V2 would break."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from tasks.engines import adapter_for
from tasks.engines.flags import argv_flags, flag_list, listed_kinds
from tasks.matrix import Matrix


@dataclass(frozen=True)
class ConfiguredFlag:
    engine_name: str
    kind: str
    version: str
    flag: str
    where: str  # which part of the matrix (or bakeoff's adapter) puts it on the command line


def configured_flags(matrix: Matrix) -> list[ConfiguredFlag]:
    """Every flag each engine's instances get (bakeoff's own, the profile's, engines.*.args and the
    instances' args), once per engine and flag, for the engine kinds that have flag lists."""
    kinds = set(listed_kinds())
    out: dict[tuple[str, str], ConfiguredFlag] = {}
    for d_i, dep in enumerate(matrix.deployments):
        for i_i, inst in enumerate(dep.instances):
            engine = matrix.engines[inst.engine]
            if engine.kind not in kinds:
                continue
            adapter = adapter_for(engine.kind)
            memory = [adapter.memory_flag, "0.5"] if adapter.memory_flag else []
            argv = adapter.launch_spec(engine, inst, "MODEL", "NAME", 8000, memory_args=memory).argv
            profile = getattr(adapter_module(engine.kind), "PROFILES", {}).get(engine.profile or "", [])
            for flag in argv_flags(argv):
                bare = flag.split("=", 1)[0]
                if bare in {a.split("=", 1)[0] for a in inst.args}:
                    where = f"deployments.{d_i}.instances.{i_i}.args"
                elif bare in {a.split("=", 1)[0] for a in engine.args}:
                    where = f"engines.{inst.engine}.args"
                elif bare in profile:
                    where = f"engines.{inst.engine}.profile {engine.profile}"
                else:
                    where = f"bakeoff's {engine.kind} adapter"
                out.setdefault(
                    (inst.engine, bare), ConfiguredFlag(inst.engine, engine.kind, engine.version, bare, where)
                )
    return list(out.values())


def adapter_module(kind: str) -> object:
    return importlib.import_module(f"tasks.engines.{kind}")


def flag_warnings(matrix: Matrix) -> list[str]:
    """One line per configured flag that its engine's pinned version lacks or calls deprecated, and one
    per engine version with no flag list (its flags unchecked)."""
    lines: list[str] = []
    unlisted: set[tuple[str, str]] = set()
    for c in configured_flags(matrix):
        listed = flag_list(c.kind, c.version)
        if listed is None:
            if (c.kind, c.version) not in unlisted:
                unlisted.add((c.kind, c.version))
                lines.append(
                    f"warning: engines.{c.engine_name}: no flag list for {c.kind} {c.version}, its flags are unchecked "
                    f"(python -m tasks.engines.flags.refresh {c.kind} {c.version})"
                )
            continue
        found = listed.lookup(c.flag)
        if found is None:
            lines.append(
                f"warning: engines.{c.engine_name}: {c.kind} {c.version} has no flag {c.flag} (from {c.where})"
            )
        elif found.deprecated:
            lines.append(
                f"warning: engines.{c.engine_name}: {c.kind} {c.version} calls {c.flag} {found.deprecated} "
                f"(from {c.where})"
            )
    return lines


def breaking(matrix: Matrix, kind: str, version: str) -> list[ConfiguredFlag]:
    """The matrix's configured flags for engines of `kind` that `version` does not take."""
    listed = flag_list(kind, version)
    if listed is None:
        return []
    return [c for c in configured_flags(matrix) if c.kind == kind and listed.lookup(c.flag) is None]


def deprecated_in(matrix: Matrix, kind: str, version: str) -> list[tuple[ConfiguredFlag, str]]:
    """The matrix's configured flags for engines of `kind` that `version` takes but calls deprecated."""
    listed = flag_list(kind, version)
    out = []
    for c in configured_flags(matrix) if listed is not None else []:
        found = listed.lookup(c.flag) if listed is not None else None
        if c.kind == kind and found is not None and found.deprecated:
            out.append((c, found.deprecated))
    return out


def profile_notes(matrix: Matrix) -> list[str]:
    """One line per engine whose profile passes a workaround its version no longer needs (the review
    beside the adapter's PROFILES), or whose version the profile's review does not cover."""
    lines = []
    for name, engine in matrix.engines.items():
        adapter = adapter_for(engine.kind)
        if not engine.profile or engine.profile not in adapter.profile_reviews:
            continue
        review = adapter.profile_review(engine.profile, engine.version)
        profile = getattr(adapter_module(engine.kind), "PROFILES", {}).get(engine.profile, [])
        if review is None:
            lines.append(
                f"note: engines.{name}: profile {engine.profile} has no review for {engine.kind} {engine.version} "
                "(docs/engine-versions.md)"
            )
            continue
        spare = [f for f in review.not_needed if f in profile]
        if spare:
            lines.append(
                f"note: engines.{name}: profile {engine.profile} passes {' '.join(spare)}, which {engine.kind} "
                f"{engine.version} no longer needs ({'measured' if review.basis == 'measured' else 'from its source'}; "
                "docs/engine-versions.md)"
            )
    return lines
