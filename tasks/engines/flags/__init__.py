"""The flags each engine version accepts (ENGINE-VERSION.txt here, written by refresh.py from the engine's
own argument definitions), and what bakeoff does with them: check a command line against its pinned
version, diff two versions (`bakeoff flags diff`), and warn at `bakeoff plan` about a configured flag the
version lacks or calls deprecated."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import BadInput

FLAGS_DIR = Path(__file__).parent
UNKNOWN_DEFAULT = "?"


@dataclass(frozen=True)
class Flag:
    name: str
    default: str  # as the source writes it; "?" where it gives none
    deprecated: str | None = None  # "deprecated: use ..." where the engine says so


@dataclass(frozen=True)
class FlagList:
    kind: str
    version: str
    path: Path
    flags: dict[str, Flag]

    def lookup(self, flag: str) -> Flag | None:
        """The flag a command-line word names: `--x=1` is `--x`; vLLM also reads `--x_y` as `--x-y` and
        takes `--no-x` for a boolean `--x` (argparse.BooleanOptionalAction)."""
        name = flag.split("=", 1)[0]
        if self.kind == "vllm" and name.startswith("--"):
            name = "--" + name[2:].replace("_", "-")
        found = self.flags.get(name)
        if found is None and self.kind == "vllm" and name.startswith("--no-"):
            positive = self.flags.get("--" + name[5:])
            if positive is not None and positive.default in ("True", "False"):
                return positive
        return found


class UnknownFlagList(BadInput):
    """An engine or version bakeoff has no flag list for (exit 2)."""


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


def listed_versions(kind: str) -> list[str]:
    """The versions of `kind` with a flag list, oldest first."""
    versions = [p.stem.split("-", 1)[1] for p in FLAGS_DIR.glob(f"{kind}-*.txt")]
    return sorted(versions, key=version_key)


def listed_kinds() -> list[str]:
    return sorted({p.stem.split("-", 1)[0] for p in FLAGS_DIR.glob("*-*.txt")})


def parse(text: str) -> dict[str, Flag]:
    flags = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, default, deprecated = ([*line.split("\t"), "", ""])[:3]
        flags[name] = Flag(name, default or UNKNOWN_DEFAULT, deprecated or None)
    return flags


def flag_list(kind: str, version: str) -> FlagList | None:
    path = FLAGS_DIR / f"{kind}-{version}.txt"
    if not path.is_file():
        return None
    return FlagList(kind, version, path, parse(path.read_text()))


def load(kind: str, version: str) -> FlagList:
    """The list, or one line saying which engines and versions have one."""
    kinds = listed_kinds()
    if kind not in kinds:
        raise UnknownFlagList(f"no flag lists for engine {kind!r}; engines with flag lists: {', '.join(kinds)}")
    found = flag_list(kind, version)
    if found is None:
        raise UnknownFlagList(
            f"no flag list for {kind} {version}; listed: {', '.join(listed_versions(kind))} "
            f"(python -m tasks.engines.flags.refresh {kind} {version} writes one)"
        )
    return found


def argv_flags(argv: list[str]) -> list[str]:
    """The option words of a command line (`--x`, `--x=1`), not their values."""
    return [a for a in argv if a.startswith("--") and len(a) > 2]


@dataclass(frozen=True)
class FlagDiff:
    kind: str
    old: str
    new: str
    added: list[Flag]
    removed: list[Flag]
    changed: list[tuple[str, str, str]]  # flag, old default, new default: both literals, unequal
    deprecated: list[Flag]  # deprecated in new, not in old
    # flags in both whose default text differs but is an expression on one side (a refactor or a value
    # chosen at start, e.g. `get_field(LoadConfig, ...)`): not called a change, only counted
    not_compared: int = 0

    def lines(self) -> list[str]:
        out = [
            f"{self.kind} {self.old} -> {self.new}: {len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.changed)} changed default, {len(self.deprecated)} newly deprecated"
            + (f" ({self.not_compared} defaults written as expressions not compared)" if self.not_compared else "")
        ]
        out += [f"+ {f.name}  (default {f.default})" for f in self.added]
        out += [f"- {f.name}" for f in self.removed]
        out += [f"~ {name}  {old} -> {new}" for name, old, new in self.changed]
        out += [f"! {f.name}  {f.deprecated}" for f in self.deprecated]
        return out


def _literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def diff(kind: str, old: str, new: str) -> FlagDiff:
    a, b = load(kind, old).flags, load(kind, new).flags
    differing = [n for n in sorted(a.keys() & b.keys()) if a[n].default != b[n].default]
    changed = [(n, a[n].default, b[n].default) for n in differing if _literal(a[n].default) and _literal(b[n].default)]
    return FlagDiff(
        kind,
        old,
        new,
        added=[b[n] for n in sorted(b.keys() - a.keys())],
        removed=[a[n] for n in sorted(a.keys() - b.keys())],
        changed=changed,
        deprecated=[b[n] for n in sorted(b.keys() & a.keys()) if b[n].deprecated and not a[n].deprecated],
        not_compared=len(differing) - len(changed),
    )
