"""Nightly trend: each key metric of this run's configurations over the last N nights (v_nightly),
with warehouse/stats.detect_regressions' flags (its test and thresholds are stated there and in the
caption) and the engine versions in force each night, so an upgrade shows beside a move."""

from __future__ import annotations

from dataclasses import dataclass

from reports.tables import MISSING, Column, Table, fmt_value
from warehouse.stats import LOAD_SHAPE_COLUMNS

DEFAULT_NIGHTS = 14
TREND_METRICS = (
    ("output_throughput_tps", "Output tok/s"),
    ("ttft_ms_p50", "TTFT P50 ms"),
    ("e2e_ms_p95", "E2E P95 ms"),
)
KEY = ("deployment_id", "instance_id", "engine", *LOAD_SHAPE_COLUMNS)  # one configuration


@dataclass(frozen=True)
class Regression:
    configuration: str
    metric: str
    night: str  # the first flagged night of the latest streak: when it started
    change: float


@dataclass(frozen=True)
class Trend:
    nights: int  # asked for
    table: Table
    versions: Table
    regressions: tuple[Regression, ...]


def trend(con, run_id: str, names: dict, shape_text, nights: int = DEFAULT_NIGHTS) -> Trend:
    from warehouse.stats import REGRESSION_MIN_HISTORY, REGRESSION_WINDOW, REGRESSION_Z, nightly_regressions

    mine = set(con.execute(f"SELECT DISTINCT {', '.join(KEY)} FROM cells WHERE run_id = ?", [run_id]).fetchall())
    # the nights that measured one of this run's configurations (another matrix's nights are not its trend)
    same = " AND ".join(f"c.{k} IS NOT DISTINCT FROM m.{k}" for k in KEY)
    runs = [
        r
        for (r,) in con.execute(
            "SELECT run_id FROM runs r WHERE started_at <= (SELECT started_at FROM runs WHERE run_id = ?) "
            f"AND EXISTS (SELECT 1 FROM cells c JOIN cells m ON {same} WHERE c.run_id = r.run_id AND m.run_id = ?) "
            "ORDER BY started_at DESC LIMIT ?",
            [run_id, run_id, nights],
        ).fetchall()
    ][::-1]
    nights_of = dict(
        con.execute(
            "SELECT run_id, (started_at AT TIME ZONE 'UTC')::DATE::VARCHAR FROM runs WHERE run_id = ANY(?::VARCHAR[])",
            [runs],
        ).fetchall()
    )
    labels = {r: nights_of[r] + ("" if list(nights_of.values()).count(nights_of[r]) == 1 else f" ({r})") for r in runs}
    rows, regressions = [], []
    for metric, label in TREND_METRICS:
        frame = nightly_regressions(con, metric, run_ids=runs)
        by_config: dict[tuple, dict[str, dict]] = {}
        for rec in frame.iter_rows(named=True):
            key = tuple(rec[k] for k in KEY)
            if key in mine:
                by_config.setdefault(key, {})[rec["run_id"]] = rec
        for key, per_run in sorted(by_config.items(), key=lambda kv: tuple(str(v) for v in kv[0])):
            name = names.get(key[:2], key[1])
            row = {"name": name, "shape": shape_text(dict(zip(KEY, key, strict=True))), "metric": label}
            streak: str | None = None
            change = None
            for r in runs:
                rec = per_run.get(r)
                if rec is None:
                    row[r] = MISSING
                    streak = None
                    continue
                mark = " ▼ regressed" if rec["regressed"] else " ▲ improved" if rec["improved"] else ""
                row[r] = fmt_value(rec[metric]) + mark
                if rec["regressed"]:
                    streak, change = streak or labels[r], rec["change"]
                else:
                    streak = None
            last = per_run.get(runs[-1]) if runs else None
            if streak is not None:
                row["flag"] = f"regressed since {streak} ({change:+.0%})"
                regressions.append(Regression(name, label, streak, change))
            elif last is None or last["regressed"] is None:
                row["flag"] = "no verdict (too few earlier nights)"
            else:
                row["flag"] = "within noise" if not last["improved"] else f"improved ({last['change']:+.0%})"
            rows.append(row)
    columns = (
        Column("name", "Configuration", numeric=False),
        Column("shape", "Model · workload · load", numeric=False),
        Column("metric", "Metric", numeric=False),
        *(Column(r, labels[r]) for r in runs),
        Column("flag", "Latest night", numeric=False),
    )
    table = Table(
        columns,
        tuple(tuple(str(r.get(c.key, MISSING)) for c in columns) for r in rows),
        caption=(
            f"The last {len(runs)} of up to {nights} nights ending with this run, per configuration of this run "
            f"(v_nightly). A night is flagged when it moved the bad way by more than {REGRESSION_Z:g} robust standard "
            f"deviations (1.4826 × MAD) of the previous {REGRESSION_WINDOW} nights and by 2% of their median; fewer than "
            f"{REGRESSION_MIN_HISTORY} earlier nights give no verdict (warehouse/stats.detect_regressions)."
        ),
    )
    versions = con.execute(
        "SELECT run_id, string_agg(DISTINCT engine || ' ' || coalesce(engine_version, '?'), ', ' ORDER BY "
        "engine || ' ' || coalesce(engine_version, '?')) FROM deployments WHERE run_id = ANY(?::VARCHAR[]) "
        "GROUP BY run_id",
        [runs],
    ).fetchall()
    by_run = dict(versions)
    vrows, prev = [], None
    for r in runs:
        v = by_run.get(r)
        vrows.append((labels[r], r, v or MISSING, "changed" if prev is not None and v != prev else ""))
        prev = v
    vtable = Table(
        (
            Column("night", "Night", numeric=False),
            Column("run", "Run", numeric=False),
            Column("versions", "Engine versions", numeric=False),
            Column("change", "", numeric=False),
        ),
        tuple(vrows),
        caption="The engine versions in force each night.",
    )
    return Trend(nights, table, vtable, tuple(regressions))
