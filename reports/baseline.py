"""Against a baseline run (`bakeoff report --baseline RUN_ID`): the configurations both runs measured,
side by side, as this run over the baseline with intervals (warehouse/stats.run_comparison_ci), and the
engine versions of each, so an upgrade's effect reads in one line per configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass

from reports.tables import MISSING, Column, Table, fmt_ratio

MATCH_RULE = (
    "the same deployment group and instance, engine name, model, workload and load shape in both runs "
    "(warehouse/stats.RUN_COMPARISON_KEY)"
)
METRICS = (  # column prefix, words, higher is better
    ("output_tps", "output tok/s", True),
    ("ttft_p50", "TTFT P50", False),
    ("e2e_p95", "E2E P95", False),
)

COLUMNS = (
    Column("name", "Configuration", numeric=False),
    Column("shape", "Model · workload · load", numeric=False),
    Column("versions", "Engine version (this / baseline)", numeric=False),
    Column("n_text", "Requests (this / baseline)", numeric=False),
    *(Column(f"{p}_text", f"{label}, this / baseline", numeric=False) for p, label, _ in METRICS),
    Column("verdict", "Verdict", numeric=False),
)


@dataclass(frozen=True)
class Baseline:
    run_id: str
    rule: str
    verdicts: tuple[str, ...]
    table: Table
    unmatched: tuple[str, ...]  # this run's configurations the baseline did not measure


def _ci_text(r: dict, prefix: str) -> str:
    ratio, low, high = r[f"{prefix}_ratio"], r[f"{prefix}_ci_low"], r[f"{prefix}_ci_high"]
    if ratio is None or math.isnan(ratio):
        return MISSING
    return f"{fmt_ratio(ratio)} [{low:.2f}–{high:.2f}]"


def verdict(name: str, r: dict) -> str:
    """The moves whose interval excludes 1, in words; or no measurable difference."""
    moves = []
    for prefix, label, higher_better in METRICS:
        low, high = r[f"{prefix}_ci_low"], r[f"{prefix}_ci_high"]
        if low is None or math.isnan(low) or low <= 1 <= high:
            continue
        better = (low > 1) == higher_better
        moves.append(f"{label} {_ci_text(r, prefix)} ({'better' if better else 'worse'})")
    if not moves:
        return f"{name}: no measurable difference from the baseline"
    return f"{name} against the baseline: " + ", ".join(moves)


def baseline(con, run_id: str, baseline_run: str, names: dict, shape_text) -> Baseline:
    from warehouse.stats import RUN_COMPARISON_KEY, run_comparison_ci

    cmp = run_comparison_ci(con, run_id, baseline_run)
    rows, verdicts = [], []
    matched = set()
    for r in cmp.iter_rows(named=True) if cmp.height else ():
        name = names.get((r["deployment_id"], r["instance_id"]), r["instance_id"])
        matched.add(tuple(r[k] for k in RUN_COMPARISON_KEY))
        v = verdict(name, r)
        verdicts.append(v)
        rows.append(
            {
                "name": name,
                "shape": shape_text(r),
                "versions": f"{r['version'] or MISSING} / {r['version_baseline'] or MISSING}",
                "n_text": f"{r['n']:,} / {r['n_baseline']:,}",
                **{f"{p}_text": _ci_text(r, p) for p, _, _ in METRICS},
                "verdict": v,
            }
        )
    mine = con.execute(
        f"SELECT DISTINCT {', '.join(RUN_COMPARISON_KEY)} FROM cells WHERE run_id = ?", [run_id]
    ).fetchall()
    unmatched = tuple(
        sorted(
            f"{names.get((k[0], k[1]), k[1])} ({shape_text(dict(zip(RUN_COMPARISON_KEY, k, strict=True)))})"
            for k in mine
            if tuple(k) not in matched
        )
    )
    table = Table.from_records(
        rows,
        COLUMNS,
        caption=(
            f"This run over baseline {baseline_run}, matched by {MATCH_RULE}: output tok/s with "
            "warehouse/stats.throughput_comparison_ci's estimator, TTFT P50 and E2E P95 with percentile-bootstrap "
            "intervals over ok requests. A move is named only where its 95% interval excludes 1."
        ),
    )
    return Baseline(baseline_run, MATCH_RULE, tuple(verdicts), table, unmatched)
