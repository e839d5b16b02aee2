"""MOCK: an OpenAI-style streaming server that misbehaves on purpose.

Only for faults a real engine cannot be made to produce on demand (a 500, a connection cut
mid-stream, malformed SSE, a hang, a byte a second, an HTML page where /v1/models should be); the
real engine is tested in test_engine_llamacpp.py. The model name in the request picks the behaviour
of a completion (see do_POST); `MockFaultyServer(health="html")` makes GET /v1/models answer a 200
HTML page (a captive portal or a web server on the wrong port) instead of the model list;
`MockFaultyServer(unavailable=3)` answers the first 3 completions 503 with an HTML body (an engine
behind a proxy, overloaded for a while), then serves them; `health_unavailable=3` does the same to
the first 3 GETs of /v1/models (an engine still loading).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HTML = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
# The one event mock-trickle sends a byte a second, then [DONE]: about a minute in all.
TRICKLED = b'data: {"choices": [{"index": 0, "delta": {"content": "slow"}}]}\n\ndata: [DONE]\n\n'


def _chunk(content: str | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    event = {"id": "x", "object": "chat.completion.chunk", "choices": []}
    if content is not None or finish is not None:
        event["choices"] = [
            {"index": 0, "delta": {"content": content} if content is not None else {}, "finish_reason": finish}
        ]
    if usage is not None:
        event["usage"] = usage
    return b"data: " + json.dumps(event).encode() + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        with self.server.lock:
            self.server.health_calls += 1
            unavailable = self.server.health_unavailable > 0
            self.server.health_unavailable -= unavailable
        if unavailable:
            self._whole(503, "application/json", b'{"error": {"message": "Loading model", "code": 503}}')
            return
        if self.server.health == "html":
            payload, kind = HTML, "text/html"
        else:
            payload, kind = (
                json.dumps({"object": "list", "data": [{"id": "mock-ok", "object": "model"}]}).encode(),
                "application/json",
            )
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _whole(self, status: int, kind: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        # The client may give up on the stream (a deadline, a line too long): expected here.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._post()

    def _post(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        behaviour = body["model"]
        n = body.get("max_tokens", 3)
        with self.server.lock:
            self.server.bodies.append(body)
            unavailable = self.server.unavailable > 0
            self.server.unavailable -= unavailable
        if unavailable:  # overloaded for a while: a non-JSON error body
            self._whole(503, "text/html", b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>")
            return
        if behaviour == "mock-500":
            self._whole(500, "application/json", b'{"error": "boom"}')
            return
        if behaviour == "mock-json":  # a 200 that ignored "stream": true
            payload = json.dumps(
                {"choices": [{"message": {"content": "hi"}}], "usage": {"completion_tokens": 1}}
            ).encode()
            self._whole(200, "application/json", payload)
            return
        if behaviour == "mock-html":  # a 200 web page: a proxy's or a portal's, not the engine's
            self._whole(200, "text/html", HTML)
            return
        if behaviour == "mock-silent":  # the connection is open, no byte ever comes
            time.sleep(5)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        w = self.wfile
        if behaviour == "mock-garbage":  # a 200 event stream of lines that are not SSE events, then the end
            w.write(b"\x00\xff garbage\n<html>\nnot: an event\n\n" * 4)
            return
        w.write(_chunk(content=""))  # role chunk with empty content: first chunk, not first token
        w.flush()
        if behaviour == "mock-hang":
            time.sleep(5)
            return
        if behaviour == "mock-bigline":  # one 10 MB line, no newline
            w.write(b"data: " + b"x" * (10 * 1024 * 1024))
            return
        if behaviour == "mock-trickle":  # one content chunk, then one byte a second
            w.write(_chunk(content="t0 "))
            w.flush()
            for i in range(len(TRICKLED)):
                time.sleep(1.0)
                w.write(TRICKLED[i : i + 1])
                w.flush()
            return
        for i in range(n):
            time.sleep(0.002)
            w.write(_chunk(content=f"t{i} "))
            w.flush()
            if behaviour == "mock-disconnect" and i == 1:
                self.close_connection = True
                self.connection.shutdown(2)  # cut mid-stream, no [DONE]
                return
            if behaviour == "mock-badjson" and i == 1:
                w.write(b"data: {not json\n\n")
                w.flush()
                return
            if behaviour == "mock-truncated" and i == 1:  # the stream ends inside an event's JSON
                w.write(_chunk(content="t2 ")[:30])
                w.flush()
                return
        w.write(_chunk(finish="length"))
        if behaviour != "mock-no-usage":
            w.write(_chunk(usage={"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}))
        w.write(b"data: [DONE]\n\n")
        w.flush()


class MockFaultyServer:
    def __init__(self, health: str = "ok", unavailable: int = 0, health_unavailable: int = 0) -> None:
        self.health = health  # "ok": GET /v1/models lists the models; "html": a 200 HTML page
        self.unavailable = unavailable  # the first this many completions are a 503
        self.health_unavailable = health_unavailable  # the first this many GETs are a 503

    def __enter__(self) -> MockFaultyServer:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.health = self.health
        self.httpd.bodies = []
        self.httpd.unavailable = self.unavailable
        self.httpd.health_unavailable = self.health_unavailable
        self.httpd.health_calls = 0
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def health_calls(self) -> int:
        return self.httpd.health_calls

    @property
    def bodies(self) -> list[dict]:
        return self.httpd.bodies

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
