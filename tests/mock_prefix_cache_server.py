"""MOCK: an OpenAI-style streaming server with a prefix cache and the reset endpoints vLLM and SGLang
have, for the reset's protocol only (no timing measured of it means anything). Neither vLLM nor SGLang
runs here (no GPU, no images), and llama-server has no endpoint that empties its prompt cache (its slot
erase leaves the RAM cache: docs/engine-versions.md), so this stands in for their answers:

- a completion reports `usage.prompt_tokens_details.cached_tokens` = its prompt tokens when the same
  prompt was served since the last reset, else 0 (a whole-prompt cache, enough to tell warm from cold);
- `POST /reset_prefix_cache` answers `{"success": false}` to its first `busy` calls (vLLM 0.33 while
  requests hold blocks), then `{"success": true}` and empties the cache;
- `POST /flush_cache` answers 400 to its first `busy` calls (SGLang while requests run), then 200;
- any other path is a 404.

`events` records, in order, ("reset", path, answered status) and ("request", prompt text)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.mock_reasoning_server import sse_event, stream_events

RESET_PATHS = ("/reset_prefix_cache", "/flush_cache")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _whole(self, status: int, payload: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        if self.path != "/v1/models":
            self._whole(404, b'{"detail": "Not Found"}')
            return
        self._whole(
            200, json.dumps({"object": "list", "data": [{"id": self.server.served, "object": "model"}]}).encode()
        )

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path in RESET_PATHS:
            self._reset()
        elif self.path == "/v1/chat/completions":
            self._complete(json.loads(body))
        else:
            self._whole(404, b'{"detail": "Not Found"}')

    def _reset(self) -> None:
        srv = self.server
        with srv.lock:
            busy = srv.busy > 0
            srv.busy -= busy
            if not busy:
                srv.seen.clear()
            vllm = self.path == "/reset_prefix_cache"
            status = 200 if vllm or not busy else 400
            srv.events.append(("reset", self.path, status))
        if vllm:
            self._whole(200, json.dumps({"success": not busy}).encode())
        else:
            self._whole(
                status, b"Cache flushed.\n" if not busy else b"Cache not flushed: requests are running.\n", "text/plain"
            )

    def _complete(self, body: dict) -> None:
        prompt = "\n".join(m["content"] for m in body["messages"])
        n_prompt = len(prompt.split())
        with self.server.lock:
            cached = n_prompt if prompt in self.server.seen else 0
            self.server.seen.add(prompt)
            self.server.events.append(("request", prompt))
        n_out = body.get("max_tokens", 3)
        events = [sse_event({"role": "assistant", "content": ""})]
        events += [sse_event({"content": " x"}) for _ in range(n_out)]
        events.append(sse_event({}, finish="length"))
        usage = {
            "prompt_tokens": n_prompt,
            "completion_tokens": n_out,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        events += [sse_event(usage=usage), b"data: [DONE]\n\n"]
        stream_events(self, events)


class MockPrefixCacheServer:
    def __init__(self, served: str = "mock-ok", busy: int = 0) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.served = served
        self.httpd.busy = busy
        self.httpd.seen = set()
        self.httpd.events = []
        self.httpd.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def events(self) -> list[tuple]:
        with self.httpd.lock:
            return list(self.httpd.events)

    def __enter__(self) -> MockPrefixCacheServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
