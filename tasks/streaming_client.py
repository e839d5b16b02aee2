"""The load generator's streaming hot path: HTTP/1.1 POST with a server-sent-events response, on
asyncio's Protocol API (standard library only).

Why not httpx here (httpx does everything else in bakeoff): benchmarks/client_capacity.py measured
httpx at 67-101 % of a plain aiohttp client's chunks/s and 466 ms p99 send lateness at 1,000 req/s
(about 1 ms of CPU per request in request building and httpcore/anyio bookkeeping). aiohttp would be a
runtime dependency beyond the project's foundations. This client does the one thing the load generator
needs and nothing more: every byte is handled in `data_received` callbacks (no coroutine switch per
read or per line), each SSE `data:` line goes to the caller's handler with the time its read arrived,
and the request's coroutine wakes once, when the response is over.

Supported, because engines send it: Content-Length, chunked and read-until-close bodies, keep-alive
reuse (a connection is reused only after its body ended cleanly and the server did not ask to close),
plain http and https. Not supported, because engines do not need it: proxies, redirects, compression,
HTTP/2. Errors are raised as StreamError with httpx's exception names as `kind` (ConnectError,
ConnectTimeout, ReadError, RemoteProtocolError), so the warehouse's error classes read the same as
before this client existed, and three of its own: `request_timeout` and `cutoff` (below), and
`line_too_long` (an SSE line over 1 MiB: not an engine talking; reading on would only grow memory).

Timeouts are deadlines, not idle timers: a request has `request_timeout` seconds from the moment
`post_stream` is called (connecting included) to be complete, however its bytes trickle in (a server
sending one byte a second is cut off like one sending nothing); the caller may pass an earlier
absolute `cutoff` (the load generator's cell deadline). One timer per request, armed once: no work
per read. A StreamError raised after the response head keeps its `http_status`; `received` is the
response bytes read before it (the head included).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

# What a line handler returns: go on, the response is complete ([DONE] seen), or stop reading now
# (the stream is unusable, e.g. an error event): the connection is then closed, never reused.
CONTINUE, DONE, ABORT = 0, 1, 2

LineHandler = Callable[[bytes, int], int]  # (the bytes after "data:", monotonic ns of the read) -> CONTINUE/DONE/ABORT

_MAX_HEAD = 64 * 1024  # a response head bigger than this is not an engine talking
_MAX_ERROR_BODY = 64 * 1024  # of a non-200 body, kept for the error message
_MAX_LINE = 1024 * 1024  # an SSE line longer than this is not an engine talking (the stream is given up)


class StreamError(Exception):
    """A request that could not complete. `kind` is the class name httpx would have raised, or one of
    this client's own (request_timeout, cutoff, line_too_long); `timeout` is true for the deadlines."""

    def __init__(
        self, kind: str, message: str, *, timeout: bool = False, http_status: int | None = None, received: int = 0
    ) -> None:
        super().__init__(message)
        self.kind, self.timeout = kind, timeout
        self.http_status = http_status  # the response's status when its head had arrived
        self.received = received  # response bytes read before the error


@dataclass(frozen=True, slots=True)
class _Deadline:
    at: float  # loop time (time.monotonic(), seconds)
    kind: str  # the StreamError kind when it passes
    what: str  # its message


@dataclass
class StreamResponse:
    status: int
    body: bytes  # the body of a non-200 response (up to 64 KiB); empty for a stream
    done_ns: int | None  # when the response was complete: the read that held [DONE] or the body's end


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; serves one request at a time."""

    def __init__(self, pool: StreamingClient) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.lost = False  # the peer closed, or the connection broke
        self._reset()

    def _reset(self) -> None:
        self.waiter: asyncio.Future | None = None
        self.on_line: LineHandler | None = None
        self.pending = b""  # bytes of the head or of chunk framing not parsed yet
        self.got_bytes = False
        self.status = 0
        self.framing = ""  # "length" | "chunked" | "close"
        self.remaining = 0  # body bytes left (length) or of the current chunk (chunked)
        self.chunk_step = "size"  # chunked: size -> data -> crlf -> size ... -> trailer
        self.keep_alive = True
        self.line_buf = b""
        self.error_body = b""
        self.finished = False  # the request's waiter has its result
        self.aborted = False  # the handler gave up on the stream: stop parsing, close
        self.body_over = False
        self.received = 0  # response bytes read, the head included
        self.timer: asyncio.TimerHandle | None = None  # the request's deadline

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes on an idle connection: nothing to do with them, don't reuse it
            self.transport.close()
            return
        self.got_bytes = True
        self.received += len(data)
        t = time.monotonic_ns()
        try:
            if self.status == 0:
                data = self._head(self.pending + data)
                if data is None:
                    return
            else:
                data = self.pending + data if self.pending else data
            self.pending = b""
            self._body(data, t)
        except StreamError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        self.lost = True
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool._forget(self)
        if self.waiter is None or self.finished:
            self._cancel_timer()
            return
        if self.framing == "close" and self.status and exc is None:
            self._end_of_body(time.monotonic_ns())  # a read-until-close body ends here
            return
        what = (
            "peer closed connection without sending complete message body"
            if self.got_bytes
            else "server disconnected without sending a response"
        )
        self._fail(
            StreamError(
                "RemoteProtocolError" if exc is None else "ReadError",
                what + (f": {exc}" if exc else ""),
                http_status=self.status or None,
                received=self.received,
            )
        )

    # parsing

    def _head(self, data: bytes) -> bytes | None:
        """Parses the response head; returns the body bytes after it, or None while it is incomplete."""
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > _MAX_HEAD:
                    raise StreamError("RemoteProtocolError", "response head too long")
                self.pending = data
                return None
            lines = data[:end].decode("latin-1").split("\r\n")
            data = data[end + 4 :]
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise StreamError("RemoteProtocolError", f"not an HTTP/1.x response: {lines[0][:80]!r}")
            status = int(parts[1])
            if 100 <= status < 200:
                continue  # 100 Continue and friends: the real head follows
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise StreamError("RemoteProtocolError", f"malformed header line: {line[:80]!r}")
                headers[name.strip().lower()] = value.strip()
            self.status = status
            connection = headers.get("connection", "").lower()
            self.keep_alive = "close" not in connection and (parts[0] != "HTTP/1.0" or "keep-alive" in connection)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.framing = "chunked"
            elif "content-length" in headers:
                try:
                    self.framing, self.remaining = "length", int(headers["content-length"])
                except ValueError:
                    raise StreamError(
                        "RemoteProtocolError", f"bad Content-Length: {headers['content-length']!r}"
                    ) from None
            elif status in (204, 304):
                self.framing, self.remaining = "length", 0
            else:
                self.framing, self.keep_alive = "close", False
            if self.framing == "length" and self.remaining == 0:
                self._end_of_body(time.monotonic_ns())
            return data

    def _body(self, data: bytes, t: int) -> None:
        if self.framing == "chunked":
            self._chunked(data, t)
        elif self.framing == "length":
            piece = data[: self.remaining]
            self.remaining -= len(piece)
            if piece:
                self._content(piece, t)
            if self.remaining == 0 and not self.body_over:
                self._end_of_body(t)
        elif data:
            self._content(data, t)

    def _chunked(self, data: bytes, t: int) -> None:
        pos, n = 0, len(data)
        while pos < n and not self.body_over:
            step = self.chunk_step
            if step == "data":
                take = min(self.remaining, n - pos)
                self._content(data[pos : pos + take], t)
                pos += take
                self.remaining -= take
                if self.aborted:
                    return
                if self.remaining == 0:
                    self.chunk_step = "crlf"
            elif step == "crlf":
                if n - pos < 2:
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise StreamError("RemoteProtocolError", "chunk not followed by CRLF")
                pos += 2
                self.chunk_step = "size"
            else:  # "size" or "trailer": one line at a time
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > 4096:
                        raise StreamError("RemoteProtocolError", "chunk size line too long")
                    break
                line = data[pos:eol]
                pos = eol + 2
                if step == "trailer":
                    if not line:
                        self._end_of_body(t)
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise StreamError("RemoteProtocolError", f"bad chunk size: {line[:40]!r}") from None
                if size == 0:
                    self.chunk_step = "trailer"
                else:
                    self.chunk_step, self.remaining = "data", size
        self.pending = data[pos:] if pos < n and not self.body_over else b""

    def _content(self, piece: bytes, t: int) -> None:
        """Body bytes: an SSE stream for a 200, an error text otherwise."""
        if self.status != 200:
            if len(self.error_body) < _MAX_ERROR_BODY:
                self.error_body += piece[: _MAX_ERROR_BODY - len(self.error_body)]
            return
        if self.finished:
            return  # after [DONE]: drained so that the connection can be reused
        buf = self.line_buf + piece if self.line_buf else piece
        lines = buf.split(b"\n")
        self.line_buf = lines.pop()
        if len(self.line_buf) > _MAX_LINE:
            raise StreamError(
                "line_too_long",
                f"an SSE line longer than {_MAX_LINE} bytes, no newline yet",
                http_status=self.status,
                received=self.received,
            )
        on_line = self.on_line
        for line in lines:
            if line[:5] != b"data:":
                continue  # blank separators, comments (": ping"), event names
            verdict = on_line(line[5:].strip(), t)
            if verdict == DONE:
                self._finish(t)
                return
            if verdict == ABORT:
                self.keep_alive, self.aborted = False, True
                self._finish(t)
                self.transport.close()
                return

    def _end_of_body(self, t: int) -> None:
        self.body_over = True
        if self.status == 200 and self.line_buf and not self.finished:
            self._content(b"\n", t)  # a last line without its newline
        if not self.finished:
            self._finish(t)
        self._cancel_timer()
        in_use = self.waiter is not None  # None: the request was cancelled or failed meanwhile
        self.waiter = None
        if self.keep_alive and not self.lost and in_use:
            self.pool._release(self)
        else:
            self.transport.close()

    def _finish(self, t: int) -> None:
        """The request has its answer (the body may still be draining)."""
        self.finished = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(StreamResponse(self.status, self.error_body, t))

    def _fail(self, exc: StreamError) -> None:
        self._cancel_timer()
        self.keep_alive = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.finished = True
        self.waiter = None
        if self.transport is not None:
            self.transport.close()

    # the deadline: one timer per request, armed once

    def _expire(self, kind: str, what: str) -> None:
        # Also after [DONE] while the rest of the body drains: the answer stands, the connection is closed.
        self.timer = None
        head = f"HTTP {self.status}" if self.status else "no response head"
        self._fail(
            StreamError(
                kind,
                f"{what} ({head}, {self.received} bytes received)",
                timeout=True,
                http_status=self.status or None,
                received=self.received,
            )
        )

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # one request

    async def request(self, head_and_body: bytes, on_line: LineHandler, deadline: _Deadline) -> StreamResponse:
        self._reset()
        self.waiter = self.pool.loop.create_future()
        self.on_line = on_line
        self.transport.write(head_and_body)
        self.timer = self.pool.loop.call_at(deadline.at, self._expire, deadline.kind, deadline.what)
        try:
            return await self.waiter
        except asyncio.CancelledError:
            self.keep_alive = False
            self._cancel_timer()
            self.waiter = None
            self.transport.abort()
            raise


class StreamingClient:
    """Streams POSTs to one server. Idle keep-alive connections are reused, newest first; a
    connection the server closed while idle is dropped, and a request that finds its reused
    connection closed before any response byte is sent once more on a fresh one (the server
    closed it between requests: the request never reached it)."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 10.0,
        request_timeout: float = 300.0,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 4096,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.prefix = url.path.rstrip("/")
        self.ssl = (ssl_context or ssl.create_default_context()) if url.scheme == "https" else None
        host_header = url.netloc.rsplit("@", 1)[-1]
        self._head_fmt = (
            "POST {path} HTTP/1.1\r\nHost: " + host_header + "\r\nUser-Agent: bakeoff\r\n"
            "Accept: text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
        )
        self.connect_timeout, self.request_timeout, self.max_idle = connect_timeout, request_timeout, max_idle
        self.loop = asyncio.get_running_loop()
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self.opened = 0  # connections made
        self.resent = 0  # requests sent again after their reused connection closed unanswered

    async def post_stream(
        self, path: str, body: bytes, on_line: LineHandler, *, cutoff: float | None = None
    ) -> StreamResponse:
        """POSTs `body` (JSON) to `path`; calls on_line for every `data:` line of a 200 response.
        Returns when the handler said DONE or ABORT, or the body ended; raises StreamError. The request
        must be complete within `request_timeout` s of this call (StreamError `request_timeout`) and
        before `cutoff`, a loop time (StreamError `cutoff`), whichever comes first."""
        message = self._head_fmt.format(path=self.prefix + path, n=len(body)).encode("latin-1") + body
        at = self.loop.time() + self.request_timeout
        if cutoff is not None and cutoff < at:
            deadline = _Deadline(cutoff, "cutoff", "cut off before the response was complete")
        else:
            deadline = _Deadline(at, "request_timeout", f"no complete response within {self.request_timeout:g} s")
        conn = self._take_idle()
        if conn is not None:
            try:
                return await conn.request(message, on_line, deadline)
            except StreamError as exc:
                if exc.timeout or conn.got_bytes or not conn.lost:
                    raise
                # closed under us before answering: the request was not taken; send it on a fresh one
                self.resent += 1
        conn = await self._connect(deadline)
        return await conn.request(message, on_line, deadline)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.lost and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, deadline: _Deadline) -> _Connection:
        left = deadline.at - self.loop.time()
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self.ssl),
                min(self.connect_timeout, max(left, 0.0)),
            )
        except TimeoutError:
            if left < self.connect_timeout:
                raise StreamError(deadline.kind, f"{deadline.what} (still connecting)", timeout=True) from None
            raise StreamError(
                "ConnectTimeout",
                f"no connection to {self.host}:{self.port} within {self.connect_timeout:g} s",
                timeout=True,
            ) from None
        except OSError as exc:
            raise StreamError("ConnectError", f"{self.host}:{self.port}: {exc.strerror or exc}") from None
        self._all.add(conn)
        self.opened += 1
        return conn

    def _release(self, conn: _Connection) -> None:
        if len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.transport.close()

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)

    async def aclose(self) -> None:
        for conn in list(self._all):
            conn.transport.close()
        self._idle.clear()
        self._all.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks

    async def __aenter__(self) -> StreamingClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
