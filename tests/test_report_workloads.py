"""The report's per-workload sections from known rows: builders.stage -> store.load_run -> render_run, the
figures read back from both files."""

from __future__ import annotations

import json
from html import unescape

from reports import render_run
from tests.builders import cell_row, record, stage
from tests.test_report import md_rows, section
from warehouse import store


def _structured(cell: str, i0: int, *, valid: list[bool], response_format: str | None, sent_chunks_ms):
    return [
        record(
            i0 + i,
            cell_id=cell,
            chunks_ms=sent_chunks_ms,
            schema_id="flat" if i % 2 == 0 else "enum",
            response_format=response_format,
            output_parsed=True,
            output_valid=v,
            validation_error=None if v else "(top level): 'name' is a required property",
        )
        for i, v in enumerate(valid)
    ]


def test_structured_section_shows_validity_and_the_cost_of_constraining(tmp_path, warehouse):
    # constrained: 4 of 4 valid, TTFT 20 ms; the twin: 1 of 4 valid, TTFT 10 ms -> TTFT 2.00x the twin's
    records = _structured("c-json", 0, valid=[True] * 4, response_format="json_schema", sent_chunks_ms=(20, 30, 40))
    records += _structured(
        "c-twin", 10, valid=[True, False, False, False], response_format=None, sent_chunks_ms=(10, 20, 30)
    )
    cells = [
        {**cell_row("c-json", wall_ms=100.0), "workload_id": "json"},
        {**cell_row("c-twin", wall_ms=50.0), "workload_id": "json-unconstrained"},
    ]
    verdict, _ = store.gate_and_load(warehouse, stage(tmp_path, records, cells))
    assert verdict.outcome == "passed", verdict
    valid = dict(warehouse.execute("SELECT workload_id, valid_share FROM v_cells").fetchall())
    assert valid == {"json": 1.0, "json-unconstrained": 0.25}
    paths = render_run(warehouse, "run-1", tmp_path / "report")
    html, md = unescape(paths["html"].read_text()), paths["markdown"].read_text()
    sentence = "TTFT P50 is 2.00× the unconstrained twin's, output tokens/s 0.50×; valid replies 100% against 25%"
    for text in (html, md):
        assert "Structured output" in text
        assert sentence in text
        assert "0.250" in text  # the twin's valid share in the cells table
        assert "'name' is a required property" in text  # an example error per schema


def test_no_workloads_section_without_structured_requests(tmp_path, warehouse):
    store.load_run(warehouse, stage(tmp_path, [record(0)], [cell_row()]))
    paths = render_run(warehouse, "run-1", tmp_path / "report")
    assert "Structured output" not in paths["html"].read_text()
    assert "## Workloads" not in paths["markdown"].read_text()


def test_trace_section_says_whether_the_replay_kept_to_its_timestamps(tmp_path, warehouse):
    records = [
        record(i, cell_id="c-trace", sent_ms=100.0 * i, chunks_ms=(100 * i + 10, 100 * i + 20)) for i in range(4)
    ]
    for r in records:
        r.prompt_tokens, r.cached_prompt_tokens = 40, 10
    cell = {
        **cell_row("c-trace", wall_ms=500.0),
        "workload_id": "mooncake",
        "load_kind": "open",
        "arrival": "trace",
        "concurrency": None,
        "send_lateness_p50_ms": 0.4,
        "send_lateness_p99_ms": 7.5,
        "loop_lag_p99_ms": 0.5,
        "client_kept_up": False,
    }
    store.load_run(warehouse, stage(tmp_path, records, [cell]))
    paths = render_run(warehouse, "run-1", tmp_path / "report")
    html, md = unescape(paths["html"].read_text()), paths["markdown"].read_text()
    for text in (html, md):
        assert "Trace replay" in text and "no: sends fell behind (P99 7.5 ms > 2 ms)" in text
        assert "7.50" in text and "0.250" in text  # the P99 lateness and the prefix hit share
    assert "Structured output" not in md


def test_cancellation_section_sets_the_requests_left_against_the_no_cancel_twin(tmp_path, warehouse):
    # the cell with cancellations: 2 ok requests with TTFT 30 ms and TPOT 20 ms (chunks at 30, 50, 70),
    # 2 cancelled at 15 ms; the twin: 4 ok with TTFT 10 ms, TPOT 10 ms -> 3.00x and 2.00x
    kept = [record(i, cell_id="c-cancel", chunks_ms=(30, 50, 70)) for i in range(2)]
    gone = [
        record(i, cell_id="c-cancel", chunks_ms=(), status="cancelled", error_class="client_cancel", tokens=None)
        for i in (2, 3)
    ]
    for r in gone:
        r.cancel_after_ns, r.cancelled_at, r.done_at = 15_000_000, 15_000_000, 15_000_000
    twin = [record(i, cell_id="c-nocancel", chunks_ms=(10, 20, 30)) for i in range(4)]
    cells = [
        {**cell_row("c-cancel"), "workload_id": "chat"},
        {**cell_row("c-nocancel"), "workload_id": "chat-nocancel"},
    ]
    # through the validation gate: the cancelled rows and the new columns pass it
    verdict, _ = store.gate_and_load(warehouse, stage(tmp_path, [*kept, *gone, *twin], cells))
    assert verdict.outcome == "passed", verdict
    got = warehouse.execute(
        "SELECT cancel_picked, cancelled_by_client, cancel_ms_p50 FROM v_cells WHERE cell_id = 'c-cancel'"
    ).fetchone()
    assert got == (2, 2, 15.0)
    paths = render_run(warehouse, "run-1", tmp_path / "report")
    html, md = unescape(paths["html"].read_text()), paths["markdown"].read_text()
    sentence = "with 2 of 4 requests cancelled, the requests that were not had TTFT P50 3.00× and TPOT P50 2.00×"
    for text in (html, md):
        assert "Cancellation" in text and sentence in text
    care = [r for r in md_rows(section(md, "## Method", "## Overview")) if len(r) == 3 and r[0] == "c-cancel"]
    assert not any("requests failed" in r[2] for r in care), "cancelled on purpose is not a failure"


def test_the_care_rules_read_a_workload_by_its_kind():
    from reports.method import care_reasons

    cell = {"ok": 30, "requests": 32, "failed": 2, "cancelled_by_client": 2, "ended_early": 5}
    assert care_reasons(cell, {"kind": "structured"}) == [], "structured never sends ignore_eos; cancels are asked"
    assert care_reasons(cell, {"kind": "prompts"}) == [
        "5 of 30 ok replies ended before max_tokens although ignore_eos was asked: the engine dropped it"
    ]
    assert care_reasons({**cell, "failed": 3}, {"kind": "structured"}) == [
        "1 of 32 requests failed (besides 2 cancelled on purpose)"
    ]


def test_multi_turn_section_shows_ttft_and_prefix_hits_by_turn(tmp_path, warehouse):
    records = []
    for s in range(2):
        for t, (prompt, cached, ttft) in enumerate([(40, 0, 30), (80, 40, 20), (120, 80, 10)], start=1):
            r = record(len(records), cell_id="c-chat", chunks_ms=(ttft, ttft + 5))
            r.session_id, r.turn, r.prompt_tokens, r.cached_prompt_tokens = f"s{s}", t, prompt, cached
            records.append(r)
    verdict, _ = store.gate_and_load(
        warehouse, stage(tmp_path, records, [{**cell_row("c-chat"), "workload_id": "chat"}])
    )
    assert verdict.outcome == "passed", verdict
    paths = render_run(warehouse, "run-1", tmp_path / "report")
    html, md = unescape(paths["html"].read_text()), paths["markdown"].read_text()
    assert "| 3 | 2 | 2 | 120.0 | 0.667 | 10.00 |" in md  # turn 3: 160/240 of the prompt cached, TTFT 10 ms
    for text in (html, md):
        assert "Multi-turn sessions" in text and "0.500" in text  # turn 2: 80/160


def test_a_models_reply_is_escaped_in_both_files(tmp_path):
    """A model's own output reaches the report where a structured reply fails its schema (the error quotes
    the reply): a reply that is a <script> element, from a MOCK server through a night, is text in the
    HTML and in the Markdown, never markup."""
    from tests.builders import external_engine_matrix
    from tests.mock_reasoning_server import MockReasoningServer
    from tests.test_guards_engine import night

    evil = "<script>alert('reply')</script>"
    with MockReasoningServer(pieces=(json.dumps(evil),)) as server:
        matrix = external_engine_matrix(
            "evil-reply",
            server.url,
            "mock-reasoner",
            workloads=[{"id": "json", "kind": "structured", "output_tokens": 16}],
        )
        md, _, con = night(tmp_path, matrix)
    (error,) = {
        e for (e,) in con.execute("SELECT validation_error FROM requests WHERE output_valid = false").fetchall()
    }
    assert evil in error, "the reply is quoted in the error the report shows"
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "<script>alert" not in page and page.count("<script") == 2  # the chart bundle and its embedding only
    assert unescape(page).count(evil) >= 1, "shown, as text"
    assert evil not in md and "&lt;script>alert('reply')&lt;/script>" in md
