"""Property tests of the hot path's HTTP/SSE parsing (tasks/streaming_client.py, tasks/loadgen.py): any
response bytes (a well-formed stream, one broken in any way, or random garbage), split into any pieces
and served by a real local TCP server, end as exactly one request record with a status; never an
exception, never a hang, and never `ok` unless the stream really was one (a 200, content, `[DONE]`)."""

from __future__ import annotations

import asyncio
import itertools
import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tasks.loadgen import Target, run_load
from tasks.plan import LoadShape
from tasks.records import STATUSES
from tasks.workloads import RequestSpec
from tests.test_streaming_client import ScriptedServer


def _event(content: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}}]}).encode() + b"\n\n"


sse_lines = st.lists(
    st.one_of(
        st.text(min_size=1, max_size=8).map(_event),  # a content event
        st.just(b"data: [DONE]\n\n"),
        st.just(b": keep-alive\n\n"),
        st.just(b'data: {"choices": [{"delta": {"content": "tru'),  # truncated JSON
        st.just(b'data: {"error": {"message": "boom"}}\n\n'),
        st.binary(max_size=40),  # garbage
    ),
    max_size=12,
)


@st.composite
def responses(draw) -> tuple[bytes, bytes]:
    """(the bytes on the wire, the body they carry once unframed): the oracle reads the body, since
    chunked framing can split `data: [DONE]` across chunks on the wire."""
    body = b"".join(draw(sse_lines))
    status = draw(st.sampled_from([200, 200, 200, 500, 503]))
    framing = draw(st.sampled_from(["chunked", "length", "close", "garbage-head"]))
    if framing == "garbage-head":
        return draw(st.binary(max_size=200)) + body, body
    head = f"HTTP/1.1 {status} X\r\nContent-Type: text/event-stream\r\n"
    if framing == "chunked":
        pieces = draw(st.lists(st.integers(1, 64), max_size=8))
        out, rest = b"", body
        for n in pieces:
            piece, rest = rest[:n], rest[n:]
            if piece:
                out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        if rest:
            out += f"{len(rest):x}\r\n".encode() + rest + b"\r\n"
        if draw(st.booleans()):
            out += b"0\r\n\r\n"  # else cut short
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + out, body
    if framing == "length":
        declared = len(body) + draw(st.sampled_from([0, 0, 5]))  # sometimes more than comes
        return (head + f"Content-Length: {declared}\r\n\r\n").encode() + body, body
    return (head + "Connection: close\r\n\r\n").encode() + body, body


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a] or [b""]


async def _one(wire: list[bytes]):
    async with ScriptedServer([wire], pause=0, close_after=True) as server:
        target = Target(server.url, "m", "mock", "m", "dep", "dep-0", {})
        result = await run_load(
            target,
            [RequestSpec("p0", "prompt", 4)],
            LoadShape("closed", concurrency=1),
            run_id="r",
            cell_id="c",
            request_timeout_s=2.0,
        )
    return result.records


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response=responses(), cuts=st.lists(st.integers(0, 10_000), max_size=6))
# `[DONE]` split across two HTTP chunks: a stream that is ok though the wire never holds it whole
@example(
    response=(
        b"HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (len(_event("0")), _event("0"))
        + b"b\r\ndata: [DONE\r\n1\r\n]\r\n2\r\n\n\n\r\n0\r\n\r\n",
        _event("0") + b"data: [DONE]\n\n",
    ),
    cuts=[],
)
def test_any_response_split_anywhere_is_one_record_with_a_status(response, cuts):
    data, body = response
    records = asyncio.run(asyncio.wait_for(_one(_split(data, cuts)), 15))  # a hang fails here
    assert len(records) == 1
    (rec,) = records
    assert rec.status in STATUSES and rec.done_at is not None
    if rec.status == "ok":
        assert data.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in body and rec.first_token_at is not None
    else:
        assert rec.error_class
