"""Flags and characteristics: the flags each configuration set, and the study's characteristics table
side by side per engine, every cell from data.

A configuration's **flags** are its engine command line without bakeoff's own plumbing (BAKEOFF_FLAGS:
the model path, the served name, host, port and the metrics switch, which every instance gets): what a
person would have to choose and type to reproduce it, the planner's memory flag included. The engine's
defaults are not known per version here, so a flag counts even when its value equals the default.

The characteristics, per engine name of the matrix (CHARACTERISTICS states each one's formula):
throughput, latency consistency, memory efficiency, configuration complexity, stability tonight and
over the last N nights.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from reports.tables import MISSING, Column, Table, fmt_value

#: value flags bakeoff sets for every instance (their value is plumbing), and switches it always adds
BAKEOFF_VALUE_FLAGS = ("--model", "-m", "--model-path", "--alias", "--served-model-name", "--host", "--port")
BAKEOFF_SWITCHES = ("--metrics", "--enable-metrics")

CHARACTERISTICS = (
    ("throughput", "Throughput", "the highest cell output tok/s among the engine's configurations (which one)"),
    (
        "consistency",
        "Latency consistency",
        "the median over its configurations of the E2E coefficient of variation (sample std / mean); lower is steadier",
    ),
    (
        "memory",
        "Memory efficiency",
        "the most instances of the engine in one co-located group that started whole (models co-located on one machine)",
    ),
    ("complexity", "Configuration complexity", "flags set per instance beyond bakeoff's plumbing (min–max)"),
    (
        "stability",
        "Stability tonight",
        "failed requests / requests, and instances that did not start or did not last / instances",
    ),
    ("history", "Stability over nights", "the same failure shares over the last N nights of this matrix"),
)


def configuration_flags(flags: Sequence[str] | None) -> tuple[str, ...]:
    """The flags a person chose: the command line without BAKEOFF_VALUE_FLAGS (and their values) and
    BAKEOFF_SWITCHES. A positional argument (a model path given bare) is plumbing too."""
    out: list[str] = []
    items = list(flags or ())
    i = 0
    while i < len(items):
        f = items[i]
        name = f.split("=", 1)[0]
        if name in BAKEOFF_VALUE_FLAGS:
            i += 1 if "=" in f else 2
            continue
        if name in BAKEOFF_SWITCHES:
            i += 1
            continue
        if f.startswith("-"):
            value = items[i + 1] if i + 1 < len(items) and not items[i + 1].startswith("--") else None
            out.append(f if value is None else f"{f} {shlex.quote(value)}")
            i += 1 if value is None else 2
            continue
        i += 1  # a bare positional: the model, as vLLM takes it
    return tuple(out)


FLAG_COLUMNS = (
    Column("deployment_id", "Group", numeric=False),
    Column("instance_id", "Instance", numeric=False),
    Column("engine", "Engine", numeric=False),
    Column("model", "Model", numeric=False),
    Column("flags", "Flags it set", numeric=False),
    Column("count", "Flags"),
    Column("memory_flag", "Memory flag (planner)", numeric=False),
)
CHAR_COLUMNS = (
    Column("engine", "Engine", numeric=False),
    *(Column(key, label, numeric=False) for key, label, _ in CHARACTERISTICS),
)


@dataclass(frozen=True)
class Characteristics:
    flags: Table
    table: Table


def _share(num: int, den: int) -> str:
    return MISSING if den == 0 else f"{num / den:.0%} ({num:,}/{den:,})"


def _history(con, run_id: str, nights: int) -> dict[str, tuple[int, int, int, int, int]]:
    """engine -> (nights, failed requests, requests, instances down, instances) over the last N runs of
    this run's matrix, ending with it."""
    rows = con.execute(
        """
        WITH mine AS (
            SELECT run_id FROM runs
            WHERE matrix_name = (SELECT matrix_name FROM runs WHERE run_id = $1)
              AND started_at <= (SELECT started_at FROM runs WHERE run_id = $1)
            ORDER BY started_at DESC LIMIT $2
        ),
        req AS (
            SELECT engine, count(DISTINCT run_id) AS nights, sum(requests - ok) AS failed, sum(requests) AS requests
            FROM v_cells WHERE run_id IN (SELECT run_id FROM mine) GROUP BY engine
        ),
        dep AS (
            SELECT engine, count(*) FILTER (WHERE NOT started OR failure_class IS NOT NULL) AS down, count(*) AS n
            FROM deployments WHERE run_id IN (SELECT run_id FROM mine) GROUP BY engine
        )
        SELECT dep.engine, coalesce(req.nights, 0), coalesce(req.failed, 0), coalesce(req.requests, 0), dep.down, dep.n
        FROM dep LEFT JOIN req USING (engine)
        """,
        [run_id, nights],
    ).fetchall()
    return {e: (int(n), int(f), int(r), int(d), int(t)) for e, n, f, r, d, t in rows}


def characteristics(
    con,
    run_id: str,
    deps: Sequence[dict],
    configs: Sequence[dict],
    requests: pl.DataFrame,
    nights: int,
) -> Characteristics:
    """`deps`: this run's deployments rows; `configs`: reports.model's configuration rows; `requests`:
    reports.model._requests_frame; `nights`: how far back the history column reads."""
    flag_rows = []
    per_engine_flags: dict[str, list[int]] = {}
    for d in deps:
        chosen = configuration_flags(d.get("flags"))
        flag_rows.append(
            {
                "deployment_id": d["deployment_id"],
                "instance_id": d["instance_id"],
                "engine": d["engine"],
                "model": d["model"],
                "flags": " ".join(chosen) if chosen else "(none)",
                "count": len(chosen),
                "memory_flag": d.get("memory_flag") or MISSING,
            }
        )
        per_engine_flags.setdefault(d["engine"], []).append(len(chosen))
    flags = Table.from_records(
        flag_rows,
        FLAG_COLUMNS,
        caption=(
            "The flags each instance set: its command line without bakeoff's own plumbing ("
            + ", ".join((*BAKEOFF_VALUE_FLAGS, *BAKEOFF_SWITCHES))
            + "). Engine defaults are not known per version here: a flag counts even when its value is the default."
        ),
    )

    ok = requests.filter(pl.col("status") == "ok")
    by_group: dict[str, list[dict]] = {}
    for d in deps:
        by_group.setdefault(d["deployment_id"], []).append(d)
    history = _history(con, run_id, nights)
    rows = []
    for engine in sorted({d["engine"] for d in deps} | {c["engine"] for c in configs}):
        mine = [c for c in configs if c["engine"] == engine and c.get("output_tps") is not None]
        best = max(mine, key=lambda c: c["output_tps"], default=None)
        cvs = []
        for c in mine:
            e2e = ok.filter(
                (pl.col("deployment_id") == c["deployment_id"])
                & (pl.col("instance_id") == c["instance_id"])
                & (pl.col("workload_id") == c["workload_id"])
            )["e2e_ms"].drop_nulls()
            if e2e.len() >= 2 and e2e.mean():
                cvs.append(float(e2e.std()) / float(e2e.mean()))  # type: ignore[arg-type]
        cv = sorted(cvs)[len(cvs) // 2] if cvs else math.nan
        colocated = [
            sum(1 for d in members if d["engine"] == engine)
            for members in by_group.values()
            if len(members) >= 2 and all(d["started"] and not d.get("failure_class") for d in members)
        ]
        colocated = [n for n in colocated if n]
        counts = per_engine_flags.get(engine, [])
        mine_req = requests.filter(pl.col("engine") == engine)
        mine_deps = [d for d in deps if d["engine"] == engine]
        down = sum(1 for d in mine_deps if not d["started"] or d.get("failure_class"))
        n_hist, f_hist, r_hist, d_hist, t_hist = history.get(engine, (0, 0, 0, 0, 0))
        rows.append(
            {
                "engine": engine,
                "throughput": (
                    f"{fmt_value(best['output_tps'])} tok/s ({best['name']}, {best['shape']})" if best else MISSING
                ),
                "consistency": MISSING if math.isnan(cv) else f"CV {cv:.2f} (median of {len(cvs)})",
                "memory": (
                    f"{max(colocated)} co-located, started whole" if colocated else "no co-located group started whole"
                ),
                "complexity": MISSING if not counts else f"{min(counts)}–{max(counts)} flags",
                "stability": (
                    f"requests failed {_share(int((mine_req['status'] != 'ok').sum()), mine_req.height)}; "
                    f"instances down {_share(down, len(mine_deps))}"
                ),
                "history": (
                    f"{n_hist} night{'s' if n_hist != 1 else ''}: requests failed {_share(f_hist, r_hist)}; "
                    f"instances down {_share(d_hist, t_hist)}"
                    if t_hist
                    else MISSING
                ),
            }
        )
    table = Table.from_records(
        rows,
        CHAR_COLUMNS,
        caption="Per engine, from this run's data: "
        + "; ".join(f"{label}: {text}" for _, label, text in CHARACTERISTICS)
        + f" (N = {nights}).",
    )
    return Characteristics(flags, table)
