"""Reasoning tokens: the first reasoning chunk and the first answer chunk recorded apart, and the
server's reasoning token count, parsed from a scripted MOCK server (tests/mock_reasoning_server.py):
SmolLM2 does not reason and no reasoning model could be run here."""

from __future__ import annotations

import asyncio

from tasks.loadgen import Target, run_closed_loop
from tasks.workloads import RequestSpec
from tests.builders import cell_row, stage
from tests.mock_reasoning_server import ANSWER, GAP_S, REASONING, MockReasoningServer
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
