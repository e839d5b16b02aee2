"""MOCK: a scripted OpenAI-style server that streams reasoning before its answer, as vLLM, SGLang and
llama.cpp (with a reasoning format) do: `delta.reasoning_content` chunks, then `delta.content` chunks,
then usage with `completion_tokens_details.reasoning_tokens`. SmolLM2 does not reason, and no reasoning
model could be run here: this server stands in for one, for the parsing only (no timing is measured of
it that means anything). `answer=False` streams reasoning only (a budget spent before the answer);
`pieces` are the answer's content chunks (a reply the test chooses)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REASONING = ["Let", " me", " think", "."]
ANSWER = ["Four", "."]
GAP_S = 0.02  # between chunks


def sse_event(delta: dict | None = None, usage: dict | None = None, finish: str | None = None) -> bytes:
    event: dict = {"id": "x", "object": "chat.completion.chunk", "choices": []}
    if delta is not None:
        event["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    if usage is not None:
        event["usage"] = usage
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def stream_events(handler: BaseHTTPRequestHandler, events: list[bytes], gap_s: float = 0.0) -> None:
    """A 200 event stream of `events`, one HTTP chunk each, `gap_s` apart (shared by the MOCK servers)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for e in events:
        handler.wfile.write(f"{len(e):x}\r\n".encode() + e + b"\r\n")
        handler.wfile.flush()
        time.sleep(gap_s)
    handler.wfile.write(b"0\r\n\r\n")
    handler.wfile.flush()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):  # the model list, for a night's external-engine health check
        payload = json.dumps({"object": "list", "data": [{"id": "mock-reasoner", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer, pieces = self.server.answer, self.server.pieces
        events = [sse_event({"role": "assistant", "content": ""})]
        events += [sse_event({"reasoning_content": piece}) for piece in REASONING]
        events += [sse_event({"content": piece}) for piece in pieces] if answer else []
        events.append(sse_event({}, finish="stop" if answer else "length"))
        n_out = len(REASONING) + (len(pieces) if answer else 0)
        usage = {
            "prompt_tokens": 7,
            "completion_tokens": n_out,
            "completion_tokens_details": {"reasoning_tokens": len(REASONING)},
        }
        events += [sse_event(usage=usage), b"data: [DONE]\n\n"]
        stream_events(self, events, GAP_S)


class MockReasoningServer:
    def __init__(self, answer: bool = True, pieces: tuple[str, ...] = tuple(ANSWER)) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.answer = answer
        self.httpd.pieces = pieces  # the answer's content chunks
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> MockReasoningServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
