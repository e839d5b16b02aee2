"""Co-location: each instance that shared its machine with others (a deployment group of 2+ instances),
measured against the same configuration run alone in the same night.

The match rule (stated in the section's caption, MATCH_RULE): same engine name, same model, and the
same flags once the values of --port and --host and the planner's memory flag are removed (ports and
memory shares are what co-location changes; everything else, slots and context included, must agree);
and the same workload and load shape. Ratios are co-located / alone, with percentile-bootstrap
intervals (warehouse/stats.bootstrap_ratio_ci); an interval that includes 1 is "no measurable difference".
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

import polars as pl

from reports.tables import MISSING, Column, Table, fmt_ratio

MATCH_RULE = (
    "an instance of a co-located group (2+ instances) is matched with an instance that ran alone (a group "
    "of 1) with the same engine, model, workload and load shape, and the same flags once the values of "
    "--port and --host and the memory flag are removed"
)
VALUE_FLAGS_IGNORED = ("--port", "--host")


def comparable_flags(flags, memory_flag: str | None) -> tuple[str, ...]:
    """The instance settings that must agree: flags without the values of --port/--host (and
    --port=N forms) and without the planner's memory flag tokens."""
    out: list[str] = []
    skip = False
    memory = tuple(shlex.split(memory_flag)) if memory_flag else ()
    items = list(flags or ())
    i = 0
    while i < len(items):
        f = items[i]
        if memory and tuple(items[i : i + len(memory)]) == memory:
            i += len(memory)
            continue
        if skip:
            skip = False
        elif f in VALUE_FLAGS_IGNORED:
            skip = True
        elif not f.startswith(tuple(f"{p}=" for p in VALUE_FLAGS_IGNORED)):
            out.append(f)
        i += 1
    return tuple(out)


@dataclass(frozen=True)
class RatioCI:
    ratio: float
    low: float
    high: float

    @property
    def measurable(self) -> bool:
        return not any(math.isnan(x) for x in (self.ratio, self.low, self.high)) and (self.low > 1 or self.high < 1)

    def text(self) -> str:
        if math.isnan(self.ratio):
            return MISSING
        if math.isnan(self.low):
            return fmt_ratio(self.ratio)
        return f"{self.ratio:.2f}× [{self.low:.2f}–{self.high:.2f}]"


@dataclass(frozen=True)
class Slowdown:
    colocated: str  # the co-located instance's name
    group: str  # its deployment group
    alone: str  # the matched alone configuration
    shape: str
    n_colocated: int
    n_alone: int
    throughput: RatioCI  # per-request tokens/s mean, co-located / alone (< 1: slower)
    e2e_p95: RatioCI  # co-located / alone (> 1: slower)
    ttft_p95: RatioCI
    slo_colocated: float | None  # share of requests meeting every SLO; None when the run set none
    slo_alone: float | None
    verdict: str


@dataclass(frozen=True)
class Colocation:
    slowdowns: tuple[Slowdown, ...]
    table: Table
    unmatched: tuple[str, ...]  # co-located instances with no alone twin: said so, not silently dropped
    rule: str = MATCH_RULE


COLUMNS = (
    Column("colocated", "Co-located instance", numeric=False),
    Column("group", "Group", numeric=False),
    Column("alone", "Alone", numeric=False),
    Column("shape", "Model · workload · load", numeric=False),
    Column("n_text", "Requests (co-located / alone)", numeric=False),
    Column("tps_text", "Per-request tok/s ratio", numeric=False),
    Column("e2e_text", "E2E P95 ratio", numeric=False),
    Column("ttft_text", "TTFT P95 ratio", numeric=False),
    Column("slo_text", "Met SLOs (co-located / alone)", numeric=False),
    Column("verdict", "Verdict", numeric=False),
)


def _ci(a: pl.Series, b: pl.Series, stat) -> RatioCI:
    from warehouse.stats import bootstrap_ratio_ci

    ci = bootstrap_ratio_ci(a, b, stat)
    return RatioCI(ci.estimate, ci.low, ci.high)


def _share(frame: pl.DataFrame) -> float | None:
    s = frame["meets_slo"]
    return None if s.is_null().all() else float(s.fill_null(False).sum()) / frame.height


def _pct(x: float | None) -> str:
    return "no SLO set" if x is None else f"{x:.0%}"


def slowdown_verdict(name: str, alone: str, tps: RatioCI, e2e: RatioCI, ttft: RatioCI) -> str:
    """One sentence per pair: each measurable ratio said in words, or "no measurable difference"."""
    parts = []
    if tps.measurable:
        parts.append(f"{tps.ratio:.2f}× the per-request tokens/s [{tps.low:.2f}–{tps.high:.2f}]")
    for label, r in (("E2E P95", e2e), ("TTFT P95", ttft)):
        if r.measurable:
            parts.append(f"{r.ratio:.2f}× the {label} [{r.low:.2f}–{r.high:.2f}]")
    if any(math.isnan(r.ratio) for r in (tps, e2e, ttft)) and not parts:
        return f"{name} co-located vs {alone} alone: not enough data"
    if not parts:
        return f"{name} co-located vs {alone} alone: no measurable difference (every interval includes 1)"
    return f"{name} co-located runs at " + ", ".join(parts) + f" of {alone} alone"


def colocation(requests: pl.DataFrame, deps: list[dict], names: dict, config_columns, shape_text) -> Colocation:
    """`requests`: the run's requests with their configuration columns and meets_slo; `deps`: the
    run's deployments rows."""
    size: dict[str, int] = {}
    for d in deps:
        size[d["deployment_id"]] = size.get(d["deployment_id"], 0) + 1
    key = {
        (d["deployment_id"], d["instance_id"]): (
            d["engine"],
            d["model"],
            comparable_flags(d.get("flags"), d.get("memory_flag")),
        )
        for d in deps
    }
    shape_cols = [c for c in config_columns if c not in ("deployment_id", "instance_id", "engine")]
    by_config = requests.partition_by(["deployment_id", "instance_id", *shape_cols], as_dict=True, maintain_order=True)
    alone = [k for k in by_config if size.get(k[0]) == 1]
    out, unmatched = [], []
    for k, frame in sorted(by_config.items(), key=lambda kv: tuple(str(v) for v in kv[0])):
        if size.get(k[0], 0) < 2:
            continue
        twins = [a for a in alone if a[2:] == k[2:] and key.get(a[:2]) == key.get(k[:2]) and key.get(k[:2])]
        name = names.get(k[:2], k[1])
        shape = shape_text(dict(zip(shape_cols, k[2:], strict=True)))
        if not twins:
            unmatched.append(f"{name} on {shape}")
            continue
        for t in twins:
            a_frame = by_config[t]
            mine, theirs = frame.filter(pl.col("status") == "ok"), a_frame.filter(pl.col("status") == "ok")
            tps = _ci(mine["tokens_per_s"], theirs["tokens_per_s"], "mean")
            e2e = _ci(mine["e2e_ms"], theirs["e2e_ms"], 0.95)
            ttft = _ci(mine["ttft_ms"], theirs["ttft_ms"], 0.95)
            a_name = names.get(t[:2], t[1])
            out.append(
                Slowdown(
                    name,
                    k[0],
                    a_name,
                    shape,
                    mine.height,
                    theirs.height,
                    tps,
                    e2e,
                    ttft,
                    _share(frame),
                    _share(a_frame),
                    slowdown_verdict(name, a_name, tps, e2e, ttft),
                )
            )
    rows = [
        {
            "colocated": s.colocated,
            "group": s.group,
            "alone": s.alone,
            "shape": s.shape,
            "n_text": f"{s.n_colocated:,} / {s.n_alone:,}",
            "tps_text": s.throughput.text(),
            "e2e_text": s.e2e_p95.text(),
            "ttft_text": s.ttft_p95.text(),
            "slo_text": f"{_pct(s.slo_colocated)} / {_pct(s.slo_alone)}",
            "verdict": s.verdict,
        }
        for s in out
    ]
    table = Table.from_records(
        rows,
        COLUMNS,
        caption=(
            f"Matched so: {MATCH_RULE}. Ratios are co-located / alone over ok requests with 95% percentile-bootstrap "
            "intervals (warehouse/stats.bootstrap_ratio_ci); tok/s below 1 and latency above 1 mean slower co-located. "
            "Met SLOs: the share of all requests meeting every SLO the run set. A co-located group's cells run one "
            "instance at a time: its neighbours are up (holding memory, threads and caches) but idle, so this is the "
            "cost of sharing the machine, not of serving every model at once."
        ),
    )
    return Colocation(tuple(out), table, tuple(unmatched))
