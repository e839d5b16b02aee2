"""Recommendations: every one a stated rule applied to the measured results. The rules are the data
below (RULES, and the multi-model rule); no conclusion is written by hand.

The throughput rule reads the cells' output tok/s and its interval (THROUGHPUT_RULE). A metric rule,
per model · workload: take the configurations measured at the rule's load (the heaviest
or the lightest load shape tested for that model and workload, all of them at that exact shape), rank
them by the statistic, and name the best only when the 95% percentile-bootstrap interval of its ratio
to the runner-up (warehouse/stats.bootstrap_ratio_ci, ok requests) excludes 1; otherwise "not enough
evidence". One configuration alone is not enough evidence either: there is nothing to beat.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from reports.tables import Column, Table, fmt_value

NOT_ENOUGH = "not enough evidence"


def _cv(m: np.ndarray) -> np.ndarray:
    """Coefficient of variation per row (sample std / mean): the bootstrap statistic of consistency."""
    return m.std(axis=-1, ddof=1) / m.mean(axis=-1)


@dataclass(frozen=True)
class MetricRule:
    use_case: str
    metric: str  # a per-request column
    stat: str | float | Callable  # as warehouse/stats takes it
    stat_label: str
    unit: str
    higher_is_better: bool
    load: str  # "heaviest" | "lightest": which tested load shape the rule reads
    workload_kind: str | None = None  # only workloads of this kind (from the matrix file)

    @property
    def text(self) -> str:
        best = "highest" if self.higher_is_better else "lowest"
        where = f" on a {self.workload_kind.replace('_', '-')} workload" if self.workload_kind else ""
        return (
            f"the {best} {self.stat_label}{where} at the {self.load} tested load, where the 95% interval of its "
            "ratio to the runner-up excludes 1"
        )


THROUGHPUT_RULE = (
    "the highest cell output tok/s (Σ ok output tokens / Σ wall seconds) at the heaviest tested load, where the "
    "95% interval of its ratio to the runner-up (warehouse/stats.throughput_comparison_ci) excludes 1"
)
RULES: tuple[MetricRule, ...] = (
    MetricRule("Lowest latency (first token)", "ttft_ms", "median", "TTFT P50", "ms", False, "lightest"),
    MetricRule("Lowest latency (under load)", "e2e_ms", 0.95, "E2E P95", "ms", False, "heaviest"),
    MetricRule("Latency consistency", "e2e_ms", _cv, "E2E coefficient of variation", "", False, "heaviest"),
    MetricRule("Shared prefix", "ttft_ms", "median", "TTFT P50", "ms", False, "heaviest", "shared_prefix"),
)
MULTI_MODEL_RULE = (
    "the co-location group with the most instances that started whole (all its instances up, none "
    "failed); a tie at the top, or no co-located group that started whole, is not enough evidence"
)


@dataclass(frozen=True)
class Recommendation:
    use_case: str
    scope: str  # model · workload · load, or "" for the whole run
    rule: str
    evidence: str
    verdict: str  # the configuration, or "not enough evidence: why"
    decided: bool


def _load_weight(key: dict) -> tuple:
    return (key.get("concurrency") or key.get("max_concurrency") or 0, key.get("rate_rps") or 0.0)


def _point(values: pl.Series, stat) -> float:
    from warehouse.stats import _statistic

    x = values.drop_nulls().drop_nans().to_numpy().astype(float)
    return float(_statistic(stat)(x[None, :])[0]) if len(x) else math.nan


def apply_rule(rule: MetricRule, ok: pl.DataFrame, shape_cols: Sequence[str], shape_text) -> list[Recommendation]:
    """`ok`: ok requests with `name`, the shape columns, and the rule's metric."""
    from warehouse.stats import bootstrap_ratio_ci

    out = []
    for _key, frame in sorted(
        ok.partition_by(["model", "workload_id"], as_dict=True).items(), key=lambda kv: tuple(str(v) for v in kv[0])
    ):
        shapes = frame.select(shape_cols).unique().to_dicts()
        pick = max if rule.load == "heaviest" else min
        shape = pick(shapes, key=_load_weight)
        at = frame.filter(
            pl.all_horizontal([pl.col(c).is_null() if v is None else pl.col(c) == v for c, v in shape.items()])
        )
        scope = shape_text(shape)
        groups = {n: g[rule.metric] for (n,), g in at.partition_by(["name"], as_dict=True).items()}
        scored = sorted(
            ((v, n) for n, g in groups.items() if not math.isnan(v := _point(g, rule.stat))),
            key=lambda t: (-t[0] if rule.higher_is_better else t[0], t[1]),
        )
        if len(scored) < 2:
            only = scored[0][1] if scored else "none"
            out.append(
                Recommendation(
                    rule.use_case,
                    scope,
                    rule.text,
                    f"one configuration measured ({only})",
                    f"{NOT_ENOUGH}: nothing to compare it with",
                    False,
                )
            )
            continue
        (v1, best), (v2, runner) = scored[0], scored[1]
        ci = bootstrap_ratio_ci(groups[best], groups[runner], rule.stat)
        unit = f" {rule.unit}" if rule.unit else ""
        evidence = (
            f"{best} {fmt_value(v1)}{unit} (n={groups[best].len()}), runner-up {runner} {fmt_value(v2)}{unit} "
            f"(n={groups[runner].len()}): ratio {ci.estimate:.2f}× [{ci.low:.2f}–{ci.high:.2f}]"
        )
        decided = ci.low > 1 if rule.higher_is_better else ci.high < 1
        verdict = best if decided else f"{NOT_ENOUGH}: the interval includes 1"
        if "client_kept_up" in at.columns:
            late = sorted(
                n
                for n in (best, runner)
                if at.filter((pl.col("name") == n) & (pl.col("client_kept_up").eq(False))).height
            )
            if late:
                verdict += f" (read with care: the load generator did not keep up measuring {', '.join(late)})"
        out.append(Recommendation(rule.use_case, scope, rule.text, evidence, verdict, decided))
    return out


def highest_throughput(
    configs: Sequence[dict], comparisons: Sequence, shape_cols: Sequence[str]
) -> list[Recommendation]:
    """THROUGHPUT_RULE per model · workload. `configs`: reports.model's configuration rows (name, shape,
    output_tps and the shape columns); `comparisons`: reports.model.Comparison (better-first pairs)."""
    by_pair = {(c.shape, c.a, c.b): c for c in comparisons}
    out = []
    per_workload: dict[tuple, list[dict]] = {}
    for c in configs:
        per_workload.setdefault((str(c["model"]), str(c["workload_id"])), []).append(c)
    for _key, rows in sorted(per_workload.items()):
        heaviest = max((_load_weight(r) for r in rows), default=(0, 0.0))
        at = [r for r in rows if _load_weight(r) == heaviest and r.get("output_tps") is not None]
        shapes = {r["shape"] for r in at}
        scope = sorted(shapes)[0] if shapes else ""
        at = sorted((r for r in at if r["shape"] == scope), key=lambda r: (-r["output_tps"], r["name"]))
        if len(at) < 2:
            only = at[0]["name"] if at else "none"
            out.append(
                Recommendation(
                    "Highest throughput",
                    scope,
                    THROUGHPUT_RULE,
                    f"one configuration measured ({only})",
                    f"{NOT_ENOUGH}: nothing to compare it with",
                    False,
                )
            )
            continue
        best, runner = at[0], at[1]
        comp = by_pair.get((scope, best["name"], runner["name"]))
        evidence = f"{best['name']} {fmt_value(best['output_tps'])} tok/s, runner-up {runner['name']} " + (
            f"{fmt_value(runner['output_tps'])} tok/s"
        )
        decided = False
        if comp is not None and not math.isnan(comp.low):
            evidence += f": ratio {comp.ratio:.2f}× [{comp.low:.2f}–{comp.high:.2f}] (n={comp.n_a} / {comp.n_b})"
            decided = comp.low > 1
        verdict = best["name"] if decided else f"{NOT_ENOUGH}: the interval includes 1"
        late = [r["name"] for r in (best, runner) if r.get("client_fell_behind")]
        if late:
            verdict += f" (read with care: the load generator did not keep up measuring {', '.join(sorted(late))})"
        out.append(Recommendation("Highest throughput", scope, THROUGHPUT_RULE, evidence, verdict, decided))
    return out


def multi_model(groups: Sequence) -> Recommendation:
    """`groups`: reports.model.FeasibilityGroup (deployment_id, started_whole, instance count in its table)."""
    sizes = [(len(g.instances.rows), g.deployment_id, g.started_whole) for g in groups]
    whole = sorted(((n, d) for n, d, ok in sizes if ok and n >= 2), reverse=True)
    evidence = (
        "; ".join(
            f"{d}: {n} instance{'s' if n > 1 else ''}, {'started whole' if ok else 'did not start whole'}"
            for n, d, ok in sorted(sizes, key=lambda t: (-t[0], t[1]))
        )
        or "no deployment recorded"
    )
    if not whole:
        return Recommendation(
            "Multi-model serving",
            "",
            MULTI_MODEL_RULE,
            evidence,
            f"{NOT_ENOUGH}: no co-located group started whole",
            False,
        )
    if len(whole) > 1 and whole[0][0] == whole[1][0]:
        tied = ", ".join(sorted(d for n, d in whole if n == whole[0][0]))
        return Recommendation(
            "Multi-model serving", "", MULTI_MODEL_RULE, evidence, f"{NOT_ENOUGH}: a tie between {tied}", False
        )
    return Recommendation("Multi-model serving", "", MULTI_MODEL_RULE, evidence, whole[0][1], True)


COLUMNS = (
    Column("use_case", "Use case", numeric=False),
    Column("scope", "Model · workload · load", numeric=False),
    Column("rule", "Rule", numeric=False),
    Column("evidence", "Evidence", numeric=False),
    Column("verdict", "Verdict", numeric=False),
)


@dataclass(frozen=True)
class Recommendations:
    items: tuple[Recommendation, ...]
    table: Table


def recommendations(
    requests: pl.DataFrame,
    names: dict,
    groups: Sequence,
    shape_cols: Sequence[str],
    shape_text,
    workload_kinds: dict[str, str] | None = None,
    configs: Sequence[dict] = (),
    comparisons: Sequence = (),
) -> Recommendations:
    """Every rule over the run: `requests` as reports.model._requests_frame gives them; `workload_kinds`
    maps workload id to its kind where the matrix file is still there (the shared-prefix rule needs it)."""
    named = pl.DataFrame(
        [{"deployment_id": d, "instance_id": i, "name": n} for (d, i), n in names.items()],
        schema={"deployment_id": pl.String, "instance_id": pl.String, "name": pl.String},
    )
    ok = (
        requests.filter(pl.col("status") == "ok")
        .join(named, on=["deployment_id", "instance_id"], how="left")
        .with_columns(pl.coalesce("name", "instance_id").alias("name"))
    )
    items: list[Recommendation] = [multi_model(groups), *highest_throughput(configs, comparisons, shape_cols)]
    for rule in RULES:
        frame = ok
        if rule.workload_kind is not None:
            ids = [w for w, k in (workload_kinds or {}).items() if k == rule.workload_kind]
            if not ids:
                continue  # no such workload ran: the use case does not apply
            frame = ok.filter(pl.col("workload_id").is_in(ids))
        items += apply_rule(rule, frame, shape_cols, shape_text)
    table = Table.from_records(
        [r.__dict__ for r in items],
        COLUMNS,
        caption=(
            "Each recommendation is a rule applied to this run's measurements: the rule, the figures it read, and "
            "its verdict."
        ),
    )
    return Recommendations(tuple(items), table)
