"""The load generator's HTTP/1.1 streaming client, against a real TCP server that plays scripted bytes.

The scripted server exists for what a real engine will not do on demand (split its framing at every
byte, send a bad chunk size, close a kept-alive connection, hang); llama-server's real chunked
keep-alive streams are covered by the engine tests, which all go through this client.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tasks.streaming_client import ABORT, CONTINUE, DONE, StreamError, StreamingClient

EVENTS = [b'data: {"n": 1}\n\n', b": ping\n\n", b'data: {"n": 2}\r\n\r\n', b"data: [DONE]\n\n"]
SSE = b"".join(EVENTS)
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"


def chunked(*pieces: bytes, ext: bool = False) -> bytes:
    out = b""
    for p in pieces:
        out += f"{len(p):x}".encode() + (b";x=y" if ext else b"") + b"\r\n" + p + b"\r\n"
    return out + b"0\r\n" + (b"X-Trailer: 1\r\n" if ext else b"") + b"\r\n"


class ScriptedServer:
    """Accepts connections; for each request read, writes the next response of `script` in the given
    pieces (with a pause between them, so each is its own read); `close_after` closes the connection
    after that response. Counts connections and requests."""

    def __init__(
        self, script: list[list[bytes]], *, pause: float = 0.002, close_after: bool = False, hang: bool = False
    ) -> None:
        self.script, self.pause, self.close_after, self.hang = list(script), pause, close_after, hang
        self.connections = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.script:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                self.requests.append(head + await reader.readexactly(length))
                for piece in self.script.pop(0):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(self.pause)
                if self.hang:
                    await asyncio.sleep(30)
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def collect(lines: list[tuple[bytes, int]]):
    def on_line(payload: bytes, t: int) -> int:
        lines.append((payload, t))
        return DONE if payload == b"[DONE]" else CONTINUE

    return on_line


async def post(client: StreamingClient, lines: list | None = None, body: bytes = b'{"a": 1}'):
    return await client.post_stream("/v1/chat/completions", body, collect([] if lines is None else lines))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


@pytest.mark.parametrize("framing", ["chunked", "chunked+ext", "length", "close"])
def test_every_split_of_the_response_gives_the_same_lines(framing):
    if framing.startswith("chunked"):
        wire = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*EVENTS, ext=framing.endswith("ext"))
    elif framing == "length":
        wire = OK_HEAD + f"Content-Length: {len(SSE)}\r\n\r\n".encode() + SSE
    else:
        wire = OK_HEAD + b"Connection: close\r\n\r\n" + SSE

    async def main():
        for cut in range(1, len(wire)):
            async with (
                ScriptedServer([[wire[:cut], wire[cut:]]], pause=0.002) as server,
                StreamingClient(server.url) as client,
            ):
                lines = []
                resp = await post(client, lines)
                assert resp.status == 200, cut
                assert [p for p, _ in lines] == [b'{"n": 1}', b'{"n": 2}', b"[DONE]"], cut

    run(main())


def test_request_is_a_plain_http11_post_with_the_body():
    async def main():
        wire = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(SSE)
        async with ScriptedServer([[wire]]) as server, StreamingClient(server.url + "/prefix/") as client:
            await post(client, body=b'{"model": "m"}')
            head, _, body = server.requests[0].partition(b"\r\n\r\n")
            assert head.startswith(b"POST /prefix/v1/chat/completions HTTP/1.1\r\n")
            assert f"Host: 127.0.0.1:{server.url.rsplit(':', 1)[1]}".encode() in head
            assert json.loads(body) == {"model": "m"}

    run(main())


def test_each_read_is_stamped_once_and_in_order():
    async def main():
        wire = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
        pieces = [wire] + [chunked(e)[:-5] for e in EVENTS] + [b"0\r\n\r\n"]  # one chunk per write
        async with ScriptedServer([pieces], pause=0.01) as server, StreamingClient(server.url) as client:
            lines = []
            resp = await post(client, lines)
            stamps = [t for _, t in lines]
            assert stamps == sorted(stamps) and len(set(stamps)) == 3  # three reads, ten ms apart
            assert stamps[-1] - stamps[0] >= 15_000_000
            assert resp.done_ns == stamps[-1]  # complete at the read that held [DONE]

    run(main())


def test_kept_alive_connection_is_reused():
    async def main():
        wire = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(SSE)
        async with ScriptedServer([[wire]] * 3) as server, StreamingClient(server.url) as client:
            for _ in range(3):
                assert (await post(client)).status == 200
                await asyncio.sleep(0.01)  # the terminating chunk comes in its own write
            assert server.connections == 1 and client.opened == 1

    run(main())


def test_connection_close_is_honoured():
    async def main():
        wire = OK_HEAD + f"Connection: close\r\nContent-Length: {len(SSE)}\r\n\r\n".encode() + SSE
        async with ScriptedServer([[wire]] * 2, close_after=True) as server, StreamingClient(server.url) as client:
            await post(client)
            await post(client)
            assert server.connections == 2 and len(server.requests) == 2

    run(main())


def test_a_kept_alive_connection_the_server_closed_is_not_a_failed_request():
    # The server keeps quiet about it (no "Connection: close") and closes after one response, as
    # llama-server does on idle kept-alive connections. The next request goes on a fresh connection,
    # exactly once.
    async def main():
        wire = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(SSE)
        async with ScriptedServer([[wire]] * 3, close_after=True) as server, StreamingClient(server.url) as client:
            for _ in range(3):
                assert (await post(client)).status == 200
            assert len(server.requests) == 3 and server.connections == 3

    run(main())


def test_a_stale_connection_is_resent_once_on_a_fresh_one():
    # The race: the server closes an idle kept-alive connection just as a request goes out on it.
    # Reading is paused so that the client cannot see the close before it sends.
    async def main():
        wire = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(SSE)
        async with (
            ScriptedServer([[wire]] * 2, pause=0.05, close_after=True) as server,
            StreamingClient(server.url) as client,
        ):
            await post(client)
            (conn,) = client._idle
            conn.transport.pause_reading()
            await asyncio.sleep(0.2)  # the server has closed it by now
            assert not conn.lost
            asyncio.get_running_loop().call_soon(conn.transport.resume_reading)  # once the request is written
            assert (await post(client)).status == 200
            assert client.resent == 1 and client.opened == 2 and len(server.requests) == 2

    run(main())


def test_error_status_returns_its_body():
    async def main():
        body = b'{"error": "model not found"}'
        wire = (
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        async with ScriptedServer([[wire]]) as server, StreamingClient(server.url) as client:
            lines = []
            resp = await post(client, lines)
            assert (resp.status, resp.body, lines) == (404, body, [])

    run(main())


def test_informational_head_is_skipped():
    async def main():
        wire = b"HTTP/1.1 100 Continue\r\n\r\n" + OK_HEAD + f"Content-Length: {len(SSE)}\r\n\r\n".encode() + SSE
        async with ScriptedServer([[wire]]) as server, StreamingClient(server.url) as client:
            assert (await post(client)).status == 200

    run(main())


@pytest.mark.parametrize(
    "wire, message",
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
        (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcdXY", "chunk not followed by CRLF"),
        (OK_HEAD + b"Content-Length: nope\r\n\r\n", "bad Content-Length"),
    ],
)
def test_malformed_responses_are_protocol_errors(wire, message):
    async def main():
        async with ScriptedServer([[wire]], hang=True) as server, StreamingClient(server.url) as client:
            with pytest.raises(StreamError) as err:
                await post(client)
            assert err.value.kind == "RemoteProtocolError" and message in str(err.value)

    run(main())


def test_body_cut_short_is_a_protocol_error():
    async def main():
        wire = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(EVENTS[0])[:-5]
        async with ScriptedServer([[wire]], close_after=True) as server, StreamingClient(server.url) as client:
            lines = []
            with pytest.raises(StreamError) as err:
                await post(client, lines)
            assert err.value.kind == "RemoteProtocolError" and "without sending complete message body" in str(err.value)
            assert [p for p, _ in lines] == [b'{"n": 1}']  # what came before the cut was handed over

    run(main())


def test_silence_past_the_deadline_is_a_timeout_keeping_the_head_and_what_came():
    async def main():
        wire = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(EVENTS[0])[:-5]
        async with (
            ScriptedServer([[wire]], hang=True) as server,
            StreamingClient(server.url, request_timeout=0.3) as client,
        ):
            lines = []
            t = asyncio.get_running_loop().time()
            with pytest.raises(StreamError) as err:
                await post(client, lines)
            waited = asyncio.get_running_loop().time() - t
            assert err.value.timeout and err.value.kind == "request_timeout"
            assert err.value.http_status == 200 and err.value.received == len(wire)
            assert f"HTTP 200, {len(wire)} bytes received" in str(err.value)
            assert [p for p, _ in lines] == [b'{"n": 1}'] and 0.3 <= waited < 0.6

    run(main())


def test_a_trickling_stream_cannot_extend_the_deadline():
    """Bytes every 0.1 s, each well within any idle timeout: the request is cut off 1 s after it was
    sent, not when the stream ends (about 3 s later); an idle-read timeout would have let it run."""

    async def main():
        head = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
        body = chunked(*EVENTS)
        pieces = [head + body[:20]] + [body[i : i + 1] for i in range(20, len(body))]
        assert len(pieces) * 0.1 > 3
        async with (
            ScriptedServer([pieces], pause=0.1) as server,
            StreamingClient(server.url, request_timeout=1.0) as client,
        ):
            lines = []
            t = asyncio.get_running_loop().time()
            with pytest.raises(StreamError) as err:
                await post(client, lines)
            waited = asyncio.get_running_loop().time() - t
            assert err.value.kind == "request_timeout" and err.value.http_status == 200
            assert 1.0 <= waited < 1.3, waited
            assert 20 < err.value.received < len(head) + len(body)
            assert lines and lines[-1][0] != b"[DONE]"  # the lines that arrived before the cut were handed over

    run(main())


def test_a_cutoff_before_the_deadline_ends_the_request_at_the_cutoff():
    async def main():
        wire = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(EVENTS[0])[:-5]
        async with ScriptedServer([[wire]], hang=True) as server, StreamingClient(server.url) as client:
            loop = asyncio.get_running_loop()
            t = loop.time()
            with pytest.raises(StreamError) as err:
                await client.post_stream("/x", b"{}", collect([]), cutoff=t + 0.2)
            assert err.value.timeout and err.value.kind == "cutoff" and err.value.http_status == 200
            assert 0.2 <= loop.time() - t < 0.5

    run(main())


def test_the_deadline_counts_the_connect():
    """A listening socket whose accept queue is full never completes a connect: the request's
    deadline (0.3 s) ends it, not the 10 s connect timeout."""
    import socket

    async def main():
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            # Fill the backlog: connections the listener never accepts.
            fillers = []
            for _ in range(4):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                fillers.append(s)
            await asyncio.sleep(0.05)
            try:
                async with StreamingClient(f"http://127.0.0.1:{port}", request_timeout=0.3) as client:
                    t = asyncio.get_running_loop().time()
                    with pytest.raises(StreamError) as err:
                        await post(client)
                    waited = asyncio.get_running_loop().time() - t
            finally:
                for s in fillers:
                    s.close()
            assert err.value.timeout and err.value.kind == "request_timeout" and err.value.http_status is None
            assert "still connecting" in str(err.value) and waited < 1.0

    run(main())


def test_an_endless_line_is_given_up_not_buffered():
    async def main():
        wire = OK_HEAD + b"Connection: close\r\n\r\ndata: " + b"x" * (2 * 1024 * 1024)
        async with ScriptedServer([[wire]], hang=True) as server, StreamingClient(server.url) as client:
            with pytest.raises(StreamError) as err:
                await post(client)
            assert err.value.kind == "line_too_long" and err.value.http_status == 200
            assert err.value.received < 2 * 1024 * 1024  # it stopped reading past the limit
            await asyncio.sleep(0.01)
            assert not client._all  # the connection is closed

    run(main())


def test_connection_refused_is_a_connect_error():
    async def main():
        async with StreamingClient("http://127.0.0.1:9") as client:
            with pytest.raises(StreamError) as err:
                await post(client)
            assert err.value.kind == "ConnectError" and not err.value.timeout

    run(main())


def test_abort_closes_the_connection_and_it_is_not_reused():
    async def main():
        wire = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(SSE)
        async with ScriptedServer([[wire]] * 2) as server, StreamingClient(server.url) as client:
            seen = []
            resp = await client.post_stream("/x", b"{}", lambda p, t: seen.append(p) or ABORT)
            assert resp.status == 200 and seen == [b'{"n": 1}']
            await post(client)
            assert server.connections == 2

    run(main())


def test_cancelling_a_request_aborts_its_connection():
    async def main():
        wire = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(EVENTS[0])[:-5]  # no end
        async with ScriptedServer([[wire]], hang=True) as server, StreamingClient(server.url) as client:
            task = asyncio.create_task(post(client))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.01)
            assert not client._idle and not client._all

    run(main())


def test_base_url_must_be_http():
    async def main():
        with pytest.raises(ValueError, match="not an http"):
            StreamingClient("ftp://example.org")

    run(main())
