"""The load generator's record of each request: timings, usage, and every failure class as a row."""

from __future__ import annotations

import asyncio

import pytest

from tasks.loadgen import Target, default_cell_timeout_s, run_load
from tasks.plan import LoadShape
from tasks.workloads import RequestSpec
from tests.mock_faulty_server import MockFaultyServer


def run(
    url: str,
    model: str,
    n: int = 4,
    *,
    max_tokens: int = 5,
    concurrency: int = 2,
    timeout: float = 10.0,
    warmup=(),
    shape: LoadShape | None = None,
    **kw,
):
    target = Target(url, model, "mock", "m", "dep", "dep-0", {"ignore_eos": True})
    specs = [RequestSpec(f"p{i}", f"prompt {i}", max_tokens) for i in range(n)]
    return asyncio.run(
        run_load(
            target,
            specs,
            shape or LoadShape("closed", concurrency=concurrency),
            run_id="r",
            cell_id="c",
            warmup=list(warmup),
            request_timeout_s=timeout,
            **kw,
        )
    )


@pytest.fixture(scope="module")
def server():
    with MockFaultyServer() as s:
        yield s


def test_ok_stream_is_recorded_in_full(server):
    result = run(server.url, "mock-ok", n=6, max_tokens=5)
    assert [r.status for r in result.records] == ["ok"] * 6
    for r in result.records:
        assert r.completion_tokens == 5 and r.prompt_tokens == 7
        assert len(r.chunk_times) == 5
        assert r.scheduled_at <= r.sent_at <= r.first_chunk_at <= r.first_token_at <= r.last_token_at <= r.done_at
        assert r.chunk_times[0] == r.first_token_at and r.chunk_times[-1] == r.last_token_at
        assert r.finish_reason == "length"
    assert len({r.request_id for r in result.records}) == 6
    assert result.wall_ns >= max(r.done_at for r in result.records)


def test_request_body_asks_for_usage_and_engine_extras(server):
    server.bodies.clear()
    run(server.url, "mock-ok", n=1)
    body = server.bodies[-1]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["max_tokens"] == 5


def test_warmup_is_sent_but_not_recorded(server):
    server.bodies.clear()
    result = run(server.url, "mock-ok", n=3, warmup=[RequestSpec("w", "warm", 2)])
    assert len(server.bodies) == 4
    assert len(result.records) == 3 and all(r.prompt_id != "w" for r in result.records)


def test_concurrency_is_respected(server):
    # 8 requests, 2 slots: never more than 2 in flight at once.
    result = run(server.url, "mock-ok", n=8, concurrency=2)
    events = sorted([(r.sent_at, 1) for r in result.records] + [(r.done_at, -1) for r in result.records])
    in_flight = peak = 0
    for _, delta in events:
        in_flight += delta
        peak = max(peak, in_flight)
    assert peak <= 2


def test_missing_usage_is_null_never_guessed(server):
    result = run(server.url, "mock-no-usage", n=2)
    assert all(r.status == "ok" and r.completion_tokens is None for r in result.records)
    assert all(len(r.chunk_times) == 5 for r in result.records)


@pytest.mark.parametrize(
    "model, status, error_class",
    [
        ("mock-500", "http_error", "http_500"),
        ("mock-disconnect", "disconnected", "stream_ended_without_done"),  # no [DONE]: never ok
        ("mock-badjson", "bad_stream", "invalid_json"),
        ("mock-truncated", "bad_stream", "invalid_json"),  # the stream ends inside an event
        ("mock-json", "bad_stream", "no_sse_events"),
        ("mock-html", "bad_stream", "no_sse_events"),  # a 200 web page
        ("mock-garbage", "bad_stream", "no_sse_events"),  # lines that are not events
        ("mock-bigline", "bad_stream", "line_too_long"),  # one 10 MB line: given up at 1 MiB
    ],
)
def test_failures_are_rows_not_crashes(server, model, status, error_class):
    result = run(server.url, model, n=3)
    assert len(result.records) == 3
    for r in result.records:
        assert (r.status, r.error_class) == (status, error_class), r.error_message
        assert r.done_at is not None and r.done_at >= r.sent_at
        assert r.http_status == (500 if model == "mock-500" else 200)
    if model == "mock-500":
        assert all("boom" in r.error_message for r in result.records)


def test_a_hanging_server_is_cut_off_by_the_timeout(server):
    result = run(server.url, "mock-hang", n=2, timeout=0.5)
    assert [r.status for r in result.records] == ["timeout", "timeout"]
    assert all(r.first_chunk_at is not None and r.first_token_at is None for r in result.records)
    assert all(r.error_class == "request_timeout" and r.http_status == 200 for r in result.records)


def test_a_server_that_never_answers_is_a_timeout_without_a_status(server):
    """The connection is open and the request read, but no byte comes back (an engine hung)."""
    result = run(server.url, "mock-silent", n=2, timeout=0.5)
    for r in result.records:
        assert (r.status, r.error_class, r.http_status, r.first_chunk_at) == ("timeout", "request_timeout", None, None)
        assert 0.5e9 <= r.done_at - r.sent_at < 1.0e9
        assert "no response head, 0 bytes received" in r.error_message


def test_one_byte_a_second_is_cut_off_at_the_deadline(server):
    """The issue's case: a server sending one byte a second kept a request ok for 45 s under a 3 s
    timeout (each byte re-armed an idle timer). Under a 1 s deadline it ends as a timeout about 1 s
    after the send, with the 200 and what had arrived: the first content chunk, the bytes counted."""
    result = run(server.url, "mock-trickle", n=1, concurrency=1, timeout=1.0)
    (r,) = result.records
    assert (r.status, r.error_class, r.http_status) == ("timeout", "request_timeout", 200), r.error_message
    assert 1.0e9 <= r.done_at - r.sent_at < 1.5e9
    assert len(r.chunk_times) == 1 and r.first_token_at == r.last_token_at == r.chunk_times[0]
    assert r.first_chunk_at <= r.first_token_at <= r.done_at
    assert "HTTP 200" in r.error_message and "content chunks received: 1" in r.error_message
    assert result.wall_ns < 2e9


def test_a_cell_deadline_cuts_off_the_requests_in_flight_and_sends_no_more(server):
    # Each request hangs 5 s, well inside its own 10 s deadline; the cell's is 0.8 s.
    result = run(server.url, "mock-hang", n=6, concurrency=2, timeout=10.0, cell_timeout_s=0.8)
    assert len(result.records) == 2  # the other four were never sent
    for r in result.records:
        assert (r.status, r.error_class, r.http_status) == ("timeout", "cell_timeout", 200), r.error_message
        assert r.first_chunk_at is not None  # what it received is kept
        assert 0.8e9 <= r.done_at < 1.2e9
    assert 0.8e9 <= result.wall_ns < 1.5e9


def test_an_open_loop_stops_sending_at_the_cell_deadline(server):
    shape = LoadShape("constant", rate_rps=20.0)
    result = run(server.url, "mock-hang", n=40, shape=shape, timeout=10.0, cell_timeout_s=0.5)
    assert 8 <= len(result.records) <= 11  # due at 0, 50, ... 450 ms; the rest after the deadline
    assert all(r.sent_at < 0.5e9 for r in result.records)
    assert {(r.status, r.error_class) for r in result.records} == {("timeout", "cell_timeout")}
    assert result.wall_ns < 1.5e9


def test_the_default_cell_deadline_is_the_longest_a_cell_keeping_its_request_deadlines_takes():
    closed = LoadShape("closed", concurrency=4)
    assert default_cell_timeout_s(closed, 10, 3.0) == 3 * 3.0 + 1  # ceil(10 / 4) waves of 3 s, + 1 s
    assert default_cell_timeout_s(closed, 2, 3.0) == 3.0 + 1  # fewer requests than slots: one wave
    assert default_cell_timeout_s(closed, 100, 3.0, duration_s=5.0) == 5.0 + 3.0 + 1  # no send after 5 s
    poisson = LoadShape("poisson", rate_rps=10.0)
    assert default_cell_timeout_s(poisson, 100, 3.0, span_s=9.7) == 9.7 + 3.0 + 1  # each sent when due
    capped = LoadShape("poisson", rate_rps=10.0, max_concurrency=10)
    assert default_cell_timeout_s(capped, 100, 3.0, duration_s=5.0, span_s=4.9) == 4.9 + 10 * 3.0 + 1


def test_a_default_cell_deadline_cuts_off_nothing_that_keeps_its_request_deadline(server):
    # 4 requests that each hang until their 0.4 s deadline, 2 at a time: the cell takes 0.8 s, all sent.
    result = run(server.url, "mock-hang", n=4, concurrency=2, timeout=0.4)
    assert [r.error_class for r in result.records] == ["request_timeout"] * 4


def test_a_server_unavailable_for_a_while_then_healthy():
    """503 (an HTML body, not JSON) for the first three requests, then served: each is its row, the
    cell goes on, and the ones after are ok."""
    with MockFaultyServer(unavailable=3) as flaky:
        result = run(flaky.url, "mock-ok", n=6, concurrency=1)
    assert [(r.status, r.error_class, r.http_status) for r in result.records] == [
        ("http_error", "http_503", 503)
    ] * 3 + [("ok", None, 200)] * 3
    assert "503 Service Temporarily Unavailable" in result.records[0].error_message


def test_connection_refused_is_a_row():
    result = run("http://127.0.0.1:9", "mock-ok", n=2)
    assert [r.status for r in result.records] == ["disconnected"] * 2
    assert all(r.error_class == "ConnectError" for r in result.records)


def test_warmup_keeps_to_the_cells_concurrency():
    """A stand-in server that counts the requests it holds at once: six warm-ups for a cell of
    concurrency 2 never have more than 2 in flight (an asyncio.gather of all six would have 6)."""
    from tasks.loadgen import run_load
    from tasks.plan import LoadShape

    held = peak = 0

    async def handle(reader, writer):
        nonlocal held, peak
        await reader.readuntil(b"\r\n\r\n")
        held += 1
        peak = max(peak, held)
        await asyncio.sleep(0.05)
        held -= 1
        body = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        target = Target(f"http://127.0.0.1:{port}", "m", "mock", "m", "dep", "dep-0", {})
        warm = [RequestSpec(f"w{i}", "warm", 1) for i in range(6)]
        async with server:
            return await run_load(target, [], LoadShape("closed", concurrency=2), run_id="r", cell_id="c", warmup=warm)

    asyncio.run(main())
    assert peak == 2


def test_warmup_prompts_share_no_prefix_with_the_measured_ones():
    from tasks.workloads import warmup_specs

    measured = [RequestSpec("a", "Explain TCP.", 8), RequestSpec("b", "Explain UDP.", 16, system="You are terse.")]
    warm = warmup_specs(measured, 3)
    assert [w.max_tokens for w in warm] == [8, 16, 8]  # shaped like the workload, cycled
    assert [w.prompt_id for w in warm] == ["warmup-0", "warmup-1", "warmup-2"]
    firsts = [w.system if w.system is not None else w.text for w in warm]
    for first in firsts:  # the first message, where a prefix cache starts matching
        assert not any(first[:5] == m[:5] for m in ("Explain TCP.", "You are terse."))
    assert len(set(firsts)) == 3  # nor with each other
