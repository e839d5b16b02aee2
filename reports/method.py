"""Method: how the run measured, from the `cells` table (what ran) and the matrix file where it is still
there (what was asked: prompts, limit_prompts, output lengths); the client's own overhead per cell; and
every cell to read with care, each with its reason."""

from __future__ import annotations

from dataclasses import dataclass

from reports.tables import MISSING, Column, Table, fmt_value

# A cell's figures need care when the client fell behind, a sweep stopped there, requests failed, or
# the validation gate dropped rows: each reason is a rule over the cells columns.
CARE_RULES = (
    ("client_kept_up", "the load generator did not keep up: its timings may be skewed"),
    ("sweep_stop_reason", "the rate sweep stopped after this cell"),
    ("failed", "requests failed"),
    ("rejected", "the validation gate rejected rows: they are in no metric"),
    ("short", "fewer requests recorded than planned"),
    ("prefix_hit_share", "a warm prefix cache on a workload meant to be cold: TTFT and throughput read faster"),
    ("ended_early", "replies ended before max_tokens although ignore_eos was asked: the engine dropped it"),
    ("other_cpu_pct_mean", "the machine was busy with other work while it measured"),
    ("ok", "too few ok requests for its tail: P95 is (nearly) the slowest single request"),
    ("cache_state", "the engine's prefix cache could not be emptied before it: earlier cells' prompts may be cached"),
    ("cache_state", "the prefix cache was neither emptied before it nor reported by the engine: it may have been warm"),
    ("steal_pct_mean", "the hypervisor gave this VM's CPU to others while it measured (steal time)"),
    (
        "usage_short",
        "replies streamed more content chunks than their usage's completion_tokens: the server's token count "
        "is short, and so every per-token figure",
    ),
    (
        "lockstep_share",
        "the closed loop ran in lock-step: its TTFT and TPOT are a synchronised burst's (prompts prefilled "
        "together, replies decoded together); E2E and throughput stand",
    ),
)
LOCKSTEP_SHARE = 0.75  # of the requests sent in waves of exactly the concurrency
LOCKSTEP_WAVES = 3  # at least: the first wave of any closed loop is one
MIN_OK_FOR_P95 = 20  # below 20 samples the linear P95 sits within the top two values
BUSY_MACHINE_PCT = 25.0  # mean CPU of everything but the engines (the load generator included), % of the machine
STEAL_PCT = 5.0  # mean steal time, % of the machine: a noisy neighbour on the VM's host
COLD_WORKLOADS = ("prompts", "random", "structured")  # kinds whose prompts are not meant to share a cached prefix
PREFIX_HIT_LIMIT = 0.5  # above this share of prompt tokens served from the cache, a cold workload was warm


@dataclass(frozen=True)
class Method:
    workloads: Table
    shapes: Table
    overhead: Table
    care: Table | None
    matrix_note: str


WORKLOAD_COLUMNS = (
    Column("workload_id", "Workload", numeric=False),
    Column("kind", "Kind", numeric=False),
    Column("prompts", "Prompts", numeric=False),
    Column("limit_prompts", "limit_prompts", numeric=False),
    Column("output_lengths", "Output lengths", numeric=False),
    Column("ignore_eos", "ignore_eos", numeric=False),
    Column("cells", "Cells"),
    Column("planned", "Requests planned per cell", numeric=False),
    Column("warmup", "Warm-up requests per cell", numeric=False),
    Column("repeats", "Repeats"),
)
SHAPE_COLUMNS = (
    Column("workload_id", "Workload", numeric=False),
    Column("load", "Load shape", numeric=False),
    Column("configurations", "Instances"),
    Column("cells", "Cells"),
)
OVERHEAD_COLUMNS = (
    Column("cell_id", "Cell", numeric=False),
    Column("deployment_id", "Deployment", numeric=False),
    Column("send_lateness_p50_ms", "Send lateness P50 ms"),
    Column("send_lateness_p99_ms", "Send lateness P99 ms"),
    Column("loop_lag_p99_ms", "Loop lag P99 ms"),
    Column("loop_lag_max_ms", "Loop lag max ms"),
    Column("kept_up_text", "Client kept up", numeric=False),
    Column("cache_text", "Prefix cache at start", numeric=False),
    Column("engine_cpu_pct_mean", "Engine CPU % mean"),
    Column("other_cpu_pct_mean", "Others' CPU % mean"),
    Column("other_cpu_pct_max", "Others' CPU % max"),
    Column("engine_rss_max_mib", "Engine RSS max MiB"),
)
# cells.cache_state as the report says it (tasks/engines/cache.py)
CACHE_TEXT = {
    "reset": "emptied",
    "not_cached": "off per request",
    "reset_failed": "not emptied (reset failed)",
    "not_reset": "as earlier cells left it",
}
CARE_COLUMNS = (
    Column("cell_id", "Cell", numeric=False),
    Column("deployment_id", "Deployment", numeric=False),
    Column("reason", "Why", numeric=False),
)


def _span(values) -> str:
    vals = sorted({v for v in values if v is not None})
    if not vals:
        return MISSING
    return fmt_value(vals[0]) if len(vals) == 1 else f"{fmt_value(vals[0])}–{fmt_value(vals[-1])}"


def care_reasons(c: dict, workload: dict | None = None) -> list[str]:
    """`workload`: the cell's workload as the matrix file has it (None: the file is gone; the rules that need
    its kind or ignore_eos then say nothing)."""
    out = []
    if c.get("client_kept_up") is False:
        out.append(
            f"{CARE_RULES[0][1]} (P99 send lateness {fmt_value(c.get('send_lateness_p99_ms'))} ms, P99 loop lag "
            f"{fmt_value(c.get('loop_lag_p99_ms'))} ms)"
        )
    if c.get("sweep_stop_reason"):
        out.append(f"{CARE_RULES[1][1]}: {c['sweep_stop_reason']}")
    cancelled = c.get("cancelled_by_client") or 0  # closed on purpose by the workload: not a failure
    if (c.get("failed") or 0) > cancelled:
        besides = f" (besides {cancelled} cancelled on purpose)" if cancelled else ""
        out.append(f"{c['failed'] - cancelled} of {c['requests']} {CARE_RULES[2][1]}{besides}")
    if c.get("rejected"):
        out.append(f"{c['rejected']} rows: {CARE_RULES[3][1]}")
    if c.get("requests_planned") and (c.get("requests") or 0) < c["requests_planned"]:
        out.append(f"{CARE_RULES[4][1]} ({c.get('requests') or 0} of {c['requests_planned']} recorded)")
    if c.get("ok") is not None and 0 < c["ok"] < MIN_OK_FOR_P95:
        out.append(f"{CARE_RULES[8][1]} ({c['ok']} ok, fewer than {MIN_OK_FOR_P95})")
    other = c.get("other_cpu_pct_mean")
    if other is not None and other > BUSY_MACHINE_PCT:
        out.append(
            f"{CARE_RULES[7][1]} (everything but the engines used {other:.0f}% of the machine's CPU on average, "
            f"above {BUSY_MACHINE_PCT:.0f}%; the engines {fmt_value(c.get('engine_cpu_pct_mean'))}%)"
        )
    if c.get("cache_state") == "reset_failed":
        out.append(CARE_RULES[9][1])
    steal = c.get("steal_pct_mean")
    if steal is not None and steal > STEAL_PCT:
        out.append(f"{CARE_RULES[11][1]} ({steal:.1f}% of the machine on average, above {STEAL_PCT:g}%)")
    if c.get("usage_short"):
        out.append(f"{c['usage_short']} of {c.get('ok')} ok {CARE_RULES[12][1]}")
    share, waves = c.get("lockstep_share"), c.get("lockstep_waves") or 0
    if share is not None and share >= LOCKSTEP_SHARE and waves >= LOCKSTEP_WAVES:
        out.append(
            f"{CARE_RULES[13][1]} ({share:.0%} of its requests sent in {waves} waves of {c.get('concurrency')}; an "
            "open loop or mixed lengths spread them)"
        )
    if workload is not None:
        hit = c.get("prefix_hit_share")
        cold = (workload.get("kind") or "prompts") in COLD_WORKLOADS
        if c.get("cache_state") == "not_reset" and hit is None and cold:
            out.append(CARE_RULES[10][1])
        if hit is not None and hit > PREFIX_HIT_LIMIT and cold:
            out.append(f"{CARE_RULES[5][1]} ({hit:.0%} of prompt tokens cached, above {PREFIX_HIT_LIMIT:.0%})")
        # a structured workload never sends ignore_eos (tasks/matrix.py: its reply ends with its JSON)
        asked_ignore_eos = workload.get("ignore_eos", True) and workload.get("kind") != "structured"
        if c.get("ended_early") and asked_ignore_eos:
            out.append(f"{c['ended_early']} of {c.get('ok')} ok {CARE_RULES[6][1]}")
    return out


def method(cells: list[dict], matrix: dict | None, matrix_path: str | None, load_shape) -> Method:
    """`cells`: v_cells rows of the run; `matrix`: the matrix file as YAML (reports.matrixfile) or None."""
    asked = {str(w.get("id")): w for w in (matrix or {}).get("workloads") or () if isinstance(w, dict)}
    by_wl: dict[str, list[dict]] = {}
    for c in cells:
        by_wl.setdefault(c["workload_id"], []).append(c)
    wl_rows = []
    for wid, cs in sorted(by_wl.items()):
        w = asked.get(wid, {})
        lengths = w.get("output_lengths")
        wl_rows.append(
            {
                "workload_id": wid,
                "kind": (w.get("kind") or "prompts") if w else MISSING,
                "prompts": str(w.get("prompts", MISSING)) if w else MISSING,
                "limit_prompts": str(w["limit_prompts"])
                if w.get("limit_prompts") is not None
                else ("all" if w else MISSING),
                "output_lengths": ", ".join(str(x) for x in lengths) if isinstance(lengths, list) else MISSING,
                "ignore_eos": str(w["ignore_eos"]).lower() if "ignore_eos" in w else MISSING,
                "cells": len(cs),
                "planned": _span(c["requests_planned"] for c in cs),
                "warmup": _span(c["warmup_requests"] for c in cs),
                "repeats": len({c["repeat"] for c in cs}),
            }
        )
    shapes: dict[tuple, dict] = {}
    for c in cells:
        s = shapes.setdefault((c["workload_id"], load_shape(c)), {"inst": set(), "cells": 0})
        s["inst"].add((c["deployment_id"], c["instance_id"]))
        s["cells"] += 1
    shape_rows = [
        {"workload_id": w, "load": ld, "configurations": len(v["inst"]), "cells": v["cells"]}
        for (w, ld), v in sorted(shapes.items())
    ]
    ordered = sorted(cells, key=lambda c: (c["deployment_id"], c["cell_id"]))
    overhead = [
        {
            **c,
            "kept_up_text": MISSING if c.get("client_kept_up") is None else ("yes" if c["client_kept_up"] else "no"),
            "cache_text": CACHE_TEXT.get(c.get("cache_state") or "", MISSING),
            "engine_rss_max_mib": None if c.get("engine_rss_max_bytes") is None else c["engine_rss_max_bytes"] / 2**20,
        }
        for c in ordered
    ]
    care = [
        {"cell_id": c["cell_id"], "deployment_id": c["deployment_id"], "reason": r}
        for c in ordered
        for r in care_reasons(c, asked.get(c["workload_id"]) if matrix is not None else None)
    ]
    if matrix is not None:
        note = f"prompts, limit_prompts and output lengths from the matrix file {matrix_path} as it is now"
    else:
        note = (
            f"the matrix file {matrix_path or '(not recorded)'} is not there: what the warehouse holds only "
            "(prompts, limit_prompts and output lengths unknown)"
        )
    return Method(
        Table.from_records(wl_rows, WORKLOAD_COLUMNS, caption=f"Workloads: {note}."),
        Table.from_records(shape_rows, SHAPE_COLUMNS, caption="Load shapes, as each cell ran."),
        Table.from_records(
            overhead,
            OVERHEAD_COLUMNS,
            caption=(
                "The client's own overhead per cell: send lateness (how late requests left against their schedule) and "
                "event-loop lag; the client kept up when both P99s stay under its limits (cells.client_kept_up). "
                "And what the engine's prefix cache held as the cell began (cells.cache_state), and the machine "
                "during the cell from host_samples: the engines' CPU and that of everything else (the load "
                "generator included), as % of the whole machine, and the engines' resident memory at its highest."
            ),
        ),
        Table.from_records(care, CARE_COLUMNS, caption="Every cell to read with care, and why.") if care else None,
        note,
    )
