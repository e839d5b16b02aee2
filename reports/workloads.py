"""Per-workload sections: what the workload kinds beyond the study's prompts measure that the
throughput and latency tables do not show. Structured output: the share of replies that parsed and that
validated against their schema, per cell, and what constraining cost against the unconstrained twin
(same instance, load shape and repeat; TTFT and output tokens/s). Multi-turn by turn, trace replays,
cancellation against its no-cancel twin, and reasoning where an engine streamed it. Every figure is read from v_cells and
`requests` (warehouse/README.md)."""

from __future__ import annotations

from dataclasses import dataclass

from reports.tables import Column, Table, fmt_ratio

TWIN_SUFFIX = "-unconstrained"  # tasks/matrix.py TWIN_SUFFIX: the twin's workload id (reports never import tasks)
NOCANCEL_SUFFIX = "-nocancel"  # tasks/matrix.py NOCANCEL_SUFFIX: the cancel twin's workload id
SEND_BOUND_MS = 2.0  # tasks/loadgen.py KEPT_UP_P99_MS: the client's bound on P99 send lateness


def _on_schedule(c: dict) -> str:
    """Whether the trace's requests left on time (P99 send lateness within the client's bound), and, when
    they did but the client did not keep up otherwise, that its event loop lagged (chunk times may be late)."""
    p99 = c.get("send_lateness_p99_ms")
    if p99 is None:
        return "—"
    if p99 > SEND_BOUND_MS:
        return f"no: sends fell behind (P99 {p99:.1f} ms > {SEND_BOUND_MS:g} ms)"
    return "yes" if c.get("client_kept_up") is not False else "yes (but the event loop lagged)"


STRUCTURED_COLUMNS = (
    Column("name", "Instance", numeric=False),
    Column("workload_id", "Workload", numeric=False),
    Column("load", "Load", numeric=False),
    Column("repeat", "Rep."),
    Column("response_format", "response_format", numeric=False),
    Column("ok", "OK"),
    Column("parsed_share", "Parsed share"),
    Column("valid_share", "Valid share"),
    Column("ttft_ms_p50", "TTFT P50 ms"),
    Column("output_throughput_tps", "Output tok/s"),
    Column("ttft_cost", "TTFT P50 vs twin", numeric=False),
    Column("tps_cost", "Output tok/s vs twin", numeric=False),
)
SCHEMA_COLUMNS = (
    Column("workload_id", "Workload", numeric=False),
    Column("response_format", "response_format", numeric=False),
    Column("schema_id", "Schema", numeric=False),
    Column("judged", "Judged"),
    Column("valid", "Valid"),
    Column("valid_share", "Valid share"),
    Column("example_error", "An error", numeric=False),
)


@dataclass(frozen=True)
class Structured:
    cells: Table
    schemas: Table
    costs: tuple[str, ...]  # one sentence per constrained cell with a twin


TRACE_COLUMNS = (
    Column("name", "Instance", numeric=False),
    Column("workload_id", "Workload", numeric=False),
    Column("repeat", "Rep."),
    Column("requests", "Requests"),
    Column("ok", "OK"),
    Column("wall_s", "Wall s"),
    Column("send_lateness_p50_ms", "Send lateness P50 ms"),
    Column("send_lateness_p99_ms", "Send lateness P99 ms"),
    Column("kept_up", "On schedule", numeric=False),
    Column("prefix_hit_share", "Prefix hit share"),
    Column("ttft_ms_p50", "TTFT P50 ms"),
    Column("ttft_ms_p99", "TTFT P99 ms"),
    Column("output_throughput_tps", "Output tok/s"),
)


CANCEL_COLUMNS = (
    Column("name", "Instance", numeric=False),
    Column("workload_id", "Workload", numeric=False),
    Column("load", "Load", numeric=False),
    Column("repeat", "Rep."),
    Column("requests", "Requests"),
    Column("cancel_picked", "Picked to cancel"),
    Column("cancelled_by_client", "Cancelled"),
    Column("cancel_ms_p50", "Send → cancel P50 ms"),
    Column("ok", "OK"),
    Column("ttft_ms_p50", "TTFT P50 ms (ok)"),
    Column("tpot_ms_p50", "TPOT P50 ms (ok)"),
    Column("ttft_cost", "TTFT P50 vs no-cancel twin", numeric=False),
    Column("tpot_cost", "TPOT P50 vs no-cancel twin", numeric=False),
)


TURN_COLUMNS = (
    Column("name", "Instance", numeric=False),
    Column("workload_id", "Workload", numeric=False),
    Column("load", "Load (sessions)", numeric=False),
    Column("turn", "Turn"),
    Column("requests", "Requests"),
    Column("ok", "OK"),
    Column("prompt_tokens_mean", "Prompt tokens mean"),
    Column("prefix_hit_share", "Prefix hit share"),
    Column("ttft_ms_p50", "TTFT P50 ms"),
    Column("ttft_ms_p95", "TTFT P95 ms"),
)


def _request_groups(
    con, run_id: str, names: dict, load_shape, *, by: str, figures: str, where: str = "", having: str = ""
) -> list[dict]:
    """One run's requests grouped by their cell's instance and load shape and by `by` (a column of
    `q` v_requests or `c` cells), with `figures` (SQL aggregates) beside each group's requests and ok count;
    as dicts, each with its instance's display name and its load shape in words."""
    cur = con.execute(
        f"""
        SELECT c.deployment_id, c.instance_id, c.workload_id, c.load_kind, c.arrival, c.concurrency, c.rate_rps,
               c.burstiness, c.max_concurrency, c.duration_limit_s, {by},
               count(*) AS requests, count(*) FILTER (q.status = 'ok') AS ok, {figures}
        FROM v_requests q JOIN cells c USING (run_id, cell_id)
        WHERE q.run_id = ? {where}
        GROUP BY ALL {having}
        ORDER BY c.deployment_id, c.instance_id, c.workload_id, c.concurrency, c.rate_rps, {by}
        """,
        [run_id],
    )
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    for r in rows:
        r["name"], r["load"] = names.get((r["deployment_id"], r["instance_id"]), r["instance_id"]), load_shape(r)
    return rows


def multi_turn(con, run_id: str, names: dict, load_shape) -> Table | None:
    """Multi-turn sessions, by turn: TTFT and the share of the prompt the server read from its prefix cache
    (Σ cached / Σ prompt tokens): what prefix caching buys on a chat workload, turn by turn."""
    rows = _request_groups(
        con,
        run_id,
        names,
        load_shape,
        by="q.turn",
        where="AND q.turn IS NOT NULL",
        figures="""
               avg(q.prompt_tokens) FILTER (q.status = 'ok') AS prompt_tokens_mean,
               sum(q.cached_prompt_tokens) FILTER (q.cached_prompt_tokens IS NOT NULL)
                   / nullif(sum(q.prompt_tokens) FILTER (q.cached_prompt_tokens IS NOT NULL), 0) AS prefix_hit_share,
               quantile_cont(q.ttft_ms, 0.5) FILTER (q.status = 'ok') AS ttft_ms_p50,
               quantile_cont(q.ttft_ms, 0.95) FILTER (q.status = 'ok') AS ttft_ms_p95""",
    )
    if not rows:
        return None
    return Table.from_records(
        rows,
        TURN_COLUMNS,
        caption=(
            "Multi-turn sessions by turn (repeats pooled): each turn sends the conversation so far, so its prompt "
            "grows; the prefix hit share is Σ cached / Σ prompt tokens as the server reported them."
        ),
    )


REASONING_COLUMNS = (
    Column("name", "Instance", numeric=False),
    Column("workload_id", "Workload", numeric=False),
    Column("load", "Load", numeric=False),
    Column("repeat", "Rep."),
    Column("requests", "Requests"),
    Column("ok", "OK"),
    Column("no_answer", "Reasoned, no answer"),
    Column("reasoning_tokens", "Reasoning tokens"),
    Column("reasoning_share", "Reasoning share"),
    Column("ttfr_ms_p50", "First reasoning P50 ms"),
    Column("ttft_ms_p50", "First answer P50 ms"),
    Column("thinking_ms_p50", "Thinking P50 ms"),
)


def reasoning(con, run_id: str, names: dict, load_shape) -> Table | None:
    """The cells whose engine streamed reasoning (reasoning_content chunks or a reasoning token count): how
    much of the output was reasoning, and how long a reply thought before its answer began."""
    rows = _request_groups(
        con,
        run_id,
        names,
        load_shape,
        by="c.repeat",
        having="HAVING count(q.first_reasoning_at) > 0 OR sum(q.reasoning_tokens) > 0",
        figures="""
               count(*) FILTER (q.error_class = 'no_answer') AS no_answer,
               sum(q.reasoning_tokens) FILTER (q.status = 'ok') AS reasoning_tokens,
               sum(q.reasoning_tokens) FILTER (q.status = 'ok')
                   / nullif(sum(q.completion_tokens) FILTER (q.status = 'ok' AND q.reasoning_tokens IS NOT NULL), 0)
                   AS reasoning_share,
               quantile_cont(q.ttfr_ms, 0.5) FILTER (q.status = 'ok') AS ttfr_ms_p50,
               quantile_cont(q.ttft_ms, 0.5) FILTER (q.status = 'ok') AS ttft_ms_p50,
               quantile_cont(q.ttft_ms - q.ttfr_ms, 0.5) FILTER (q.status = 'ok') AS thinking_ms_p50""",
    )
    if not rows:
        return None
    return Table.from_records(
        rows,
        REASONING_COLUMNS,
        caption=(
            "Reasoning, per cell whose engine streamed it: reasoning tokens = Σ "
            "usage.completion_tokens_details.reasoning_tokens of the ok replies (their share of Σ completion "
            "tokens); first reasoning = first chunk with reasoning_content − sent; first answer (the TTFT of the "
            "latency tables) = first chunk with content − sent; thinking = first answer − first reasoning; "
            "reasoned, no answer = replies that ended before any answer chunk (bad_stream, no_answer: a token "
            "budget spent thinking)."
        ),
    )


@dataclass(frozen=True)
class Cancellation:
    cells: Table
    effects: tuple[str, ...]  # one sentence per cell with cancellations and a no-cancel twin


@dataclass(frozen=True)
class Workloads:
    structured: Structured | None = None
    trace: Table | None = None  # trace replays: on schedule or not, and the prefix reuse the trace brought
    cancellation: Cancellation | None = None
    multi_turn: Table | None = None  # TTFT and prefix hit share by turn
    reasoning: Table | None = None  # reasoning tokens and thinking time, where the engine reasoned

    @property
    def present(self) -> bool:
        parts = (self.structured, self.trace, self.cancellation, self.multi_turn, self.reasoning)
        return any(x is not None for x in parts)


def cancellation(con, run_id: str, names: dict, load_shape) -> Cancellation | None:
    """The cells that cancelled requests (v_cells.cancel_picked > 0): how many, how soon, and whether the
    requests that were not cancelled ran slower than in the no-cancel twin (same instance, load, repeat)."""
    cur = con.execute("SELECT * FROM v_cells WHERE run_id = ? ORDER BY deployment_id, cell_id", [run_id])
    cols = [d[0] for d in cur.description]
    every = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    cells = [c for c in every if c["cancel_picked"]]
    if not cells:
        return None
    twins = {(c["workload_id"], _shape_key(c)): c for c in every}
    rows, effects = [], []
    for c in cells:
        row = {**c, "name": names.get((c["deployment_id"], c["instance_id"]), c["instance_id"]), "load": load_shape(c)}
        twin = twins.get((c["workload_id"] + NOCANCEL_SUFFIX, _shape_key(c)))
        if twin is not None:
            ttft, tpot = _ratio(c["ttft_ms_p50"], twin["ttft_ms_p50"]), _ratio(c["tpot_ms_p50"], twin["tpot_ms_p50"])
            row["ttft_cost"], row["tpot_cost"] = fmt_ratio(ttft), fmt_ratio(tpot)
            effects.append(
                f"{row['name']} · {c['workload_id']} · {row['load']}: with {c['cancelled_by_client']} of "
                f"{c['requests']} requests cancelled, the requests that were not had TTFT P50 {fmt_ratio(ttft)} and "
                f"TPOT P50 {fmt_ratio(tpot)} those of the same workload without cancellations"
            )
        rows.append(row)
    return Cancellation(
        Table.from_records(
            rows,
            CANCEL_COLUMNS,
            caption=(
                "Cancellation, per cell: requests picked to cancel, those the client did cancel (closing the stream; "
                "the rest ended first), sent → cancel; latency of the ok requests against the no-cancel twin."
            ),
        ),
        tuple(effects),
    )


def trace(con, run_id: str, names: dict) -> Table | None:
    """The trace cells (arrival 'trace'): whether the replay kept to the trace's timestamps (send lateness,
    cells.client_kept_up) and what its repeated hash blocks gave (v_cells.prefix_hit_share)."""
    cur = con.execute(
        "SELECT * FROM v_cells WHERE run_id = ? AND arrival = 'trace' ORDER BY deployment_id, cell_id", [run_id]
    )
    cols = [d[0] for d in cur.description]
    cells = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    if not cells:
        return None
    rows = [
        {
            **c,
            "name": names.get((c["deployment_id"], c["instance_id"]), c["instance_id"]),
            "kept_up": _on_schedule(c),
        }
        for c in cells
    ]
    return Table.from_records(
        rows,
        TRACE_COLUMNS,
        caption=(
            "Trace replays, on the trace's own timestamps: send lateness (sent_at − the trace's time, scaled) and "
            "whether the client kept to the schedule; the prefix hit share is Σ cached / Σ prompt tokens as the "
            "server reported them, the reuse the trace's repeated hash blocks brought."
        ),
    )


def _shape_key(c: dict) -> tuple:
    return (c["deployment_id"], c["instance_id"], c["load_kind"], c["arrival"], c["concurrency"], c["rate_rps"],
            c["burstiness"], c["max_concurrency"], c["repeat"])  # fmt: skip


def structured(con, run_id: str, names: dict, load_shape) -> Structured | None:
    """None when the run has no structured request."""
    formats = dict(
        con.execute(
            "SELECT cell_id, coalesce(any_value(response_format), 'none') FROM requests "
            "WHERE run_id = ? AND schema_id IS NOT NULL GROUP BY cell_id",
            [run_id],
        ).fetchall()
    )
    if not formats:
        return None
    cur = con.execute("SELECT * FROM v_cells WHERE run_id = ? ORDER BY deployment_id, cell_id", [run_id])
    cols = [d[0] for d in cur.description]
    cells = [dict(zip(cols, row, strict=True)) for row in cur.fetchall() if row[cols.index("cell_id")] in formats]
    twins = {(c["workload_id"], _shape_key(c)): c for c in cells}
    rows, costs = [], []
    for c in cells:
        row = {
            **c,
            "name": names.get((c["deployment_id"], c["instance_id"]), c["instance_id"]),
            "load": load_shape(c),
            "response_format": formats[c["cell_id"]],
        }
        twin = twins.get((c["workload_id"] + TWIN_SUFFIX, _shape_key(c)))
        if twin is not None:
            ttft = _ratio(c["ttft_ms_p50"], twin["ttft_ms_p50"])
            tps = _ratio(c["output_throughput_tps"], twin["output_throughput_tps"])
            row["ttft_cost"], row["tps_cost"] = fmt_ratio(ttft), fmt_ratio(tps)
            costs.append(
                f"{row['name']} · {c['workload_id']} · {row['load']}: constrained ({row['response_format']}) "
                f"TTFT P50 is {fmt_ratio(ttft)} the unconstrained twin's, output tokens/s {fmt_ratio(tps)}; "
                f"valid replies {_share(c['valid_share'])} against {_share(twin['valid_share'])}"
            )
        rows.append(row)
    per_schema = con.execute(
        """
        SELECT c.workload_id, coalesce(r.response_format, 'none') AS response_format, r.schema_id,
               count(*) FILTER (r.output_valid IS NOT NULL) AS judged,
               count(*) FILTER (r.output_valid) AS valid,
               any_value(r.validation_error) FILTER (NOT r.output_valid) AS example_error
        FROM requests r JOIN cells c USING (run_id, cell_id)
        WHERE r.run_id = ? AND r.schema_id IS NOT NULL
        GROUP BY ALL ORDER BY c.workload_id, r.schema_id
        """,
        [run_id],
    ).fetchall()
    schema_rows = [
        {
            "workload_id": w,
            "response_format": rf,
            "schema_id": s,
            "judged": judged,
            "valid": valid,
            "valid_share": valid / judged if judged else None,
            "example_error": err,
        }
        for w, rf, s, judged, valid, err in per_schema
    ]
    return Structured(
        Table.from_records(
            rows,
            STRUCTURED_COLUMNS,
            caption=(
                "Structured output, per cell: of the ok replies, the share that parsed as JSON and the share that "
                "validated against its schema (jsonschema); against the unconstrained twin (same prompts without "
                "response_format, same instance, load and repeat), constrained / unconstrained."
            ),
        ),
        Table.from_records(schema_rows, SCHEMA_COLUMNS, caption="Validity per schema, all cells of a workload pooled."),
        tuple(costs),
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _share(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def workloads(con, run_id: str, names: dict, load_shape) -> Workloads | None:
    section = Workloads(
        structured=structured(con, run_id, names, load_shape),
        trace=trace(con, run_id, names),
        cancellation=cancellation(con, run_id, names, load_shape),
        multi_turn=multi_turn(con, run_id, names, load_shape),
        reasoning=reasoning(con, run_id, names, load_shape),
    )
    return section if section.present else None
