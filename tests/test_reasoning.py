"""Reasoning tokens: the first reasoning chunk and the first answer chunk recorded apart, and the
server's reasoning token count, parsed from a scripted MOCK server (tests/mock_reasoning_server.py):
SmolLM2 does not reason and no reasoning model could be run here."""

from __future__ import annotations

import asyncio

import pytest

from tasks.loadgen import Target, run_closed_loop
from tasks.workloads import RequestSpec
from tests.builders import cell_row, external_engine_matrix, stage
from tests.mock_reasoning_server import ANSWER, GAP_S, REASONING, MockReasoningServer
from tests.test_guards_engine import night
from tests.test_report import md_rows, section
from warehouse import store


def _run(url: str, n: int = 2):
    target = Target(url, "mock-reasoner", "mock", "m", "dep", "dep-0", {})
    specs = [RequestSpec(f"p{i}", "What is 2 + 2?", 16) for i in range(n)]
    return asyncio.run(run_closed_loop(target, specs, run_id="run-1", cell_id="cell-a", concurrency=1))


def test_reasoning_and_answer_are_timed_apart_and_counted(tmp_path, warehouse):
    with MockReasoningServer() as server:
        result = _run(server.url)
    for r in result.records:
        assert r.status == "ok" and r.reasoning_tokens == len(REASONING)
        assert r.sent_at < r.first_reasoning_at < r.first_token_at  # thinking first, then the answer
        # the answer begins after the reasoning chunks (one GAP_S apart): TTFT of the answer is later
        assert (r.first_token_at - r.first_reasoning_at) / 1e9 >= (len(REASONING) - 0.5) * GAP_S
        assert len(r.chunk_times) == len(ANSWER)  # chunk_times: the answer's content chunks only
    store.load_run(warehouse, stage(tmp_path, result.records, [cell_row(wall_ms=result.wall_ns / 1e6)]))
    rows = warehouse.execute("SELECT ttft_any_ms, ttfr_ms, ttft_ms, reasoning_tokens FROM v_requests").fetchall()
    for any_ms, ttfr, ttft, tokens in rows:
        assert any_ms == ttfr < ttft and tokens == len(REASONING)
    assert warehouse.execute("SELECT reasoning_tokens, ttfr_ms_p50 < ttft_ms_p50 FROM v_cells").fetchone() == (
        2 * len(REASONING),
        True,
    )


def test_a_reply_that_only_reasoned_is_no_answer():
    with MockReasoningServer(answer=False) as server:
        result = _run(server.url, n=1)
    (r,) = result.records
    assert (r.status, r.error_class) == ("bad_stream", "no_answer")
    assert r.first_reasoning_at is not None and r.first_token_at is None and r.reasoning_tokens == 4


@pytest.mark.parametrize("answer", [True, False])
def test_the_report_shows_reasoning_per_cell(tmp_path, answer):
    """A night against the reasoning MOCK through an external engine: the report's Reasoning table holds
    the server's reasoning count, the time to the first reasoning and to the first answer chunk, or, for
    replies that only reasoned, how many ended with no answer."""
    with MockReasoningServer(answer=answer) as server:
        matrix = external_engine_matrix(
            "reasoning", server.url, "mock-reasoner", workloads=[{"id": "w", "limit_prompts": 3, "output_lengths": [6]}]
        )
        md, cells, _ = night(tmp_path, matrix)
    (cell,) = cells.values()
    part = section(md, "### Reasoning", "\n#")
    header, *rows = md_rows(part)
    (row,) = rows
    got = dict(zip(header, row, strict=True))
    assert got["Requests"] == "3"
    if answer:
        assert (got["OK"], got["Reasoned, no answer"], got["Reasoning tokens"]) == ("3", "0", str(3 * len(REASONING)))
        assert got["Reasoning share"] == f"{len(REASONING) / (len(REASONING) + len(ANSWER)):.3f}"
        first_reasoning, first_answer = float(got["First reasoning P50 ms"]), float(got["First answer P50 ms"])
        assert first_reasoning < first_answer and float(got["Thinking P50 ms"]) >= (len(REASONING) - 0.5) * GAP_S * 1e3
        assert first_answer == pytest.approx(cell["ttft_ms_p50"], rel=0.01), "the latency tables' TTFT is the answer's"
    else:
        assert (got["OK"], got["Reasoned, no answer"]) == ("0", "3")
