"""A streaming server that writes like an engine: one HTTP chunk per SSE event, each its own write.

nginx (benchmarks/client_capacity.py) sends a static stream in a few large writes, so a client reads
many events per read. Engines (uvicorn under vLLM and SGLang, cpp-httplib under llama-server) write
every event as its own chunk of a chunked body as it is generated, so a client reads few events per
read and pays its per-read cost far more often. This server does that as fast as it can: per request
it writes the head, then each event with its own transport.write (asyncio sends at once while the
socket has room, TCP_NODELAY is on, so each becomes its own segment), then the last chunk, and keeps
the connection alive. It runs in its own process, so it has a core of its own.

    python -m benchmarks.chunked_sse_server --port 8000 --chunks 256
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from benchmarks.client_capacity import sse_events

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


class _Stream(asyncio.Protocol):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks, self.buf = chunks, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            write = self.transport.write
            write(HEAD)
            for chunk in self.chunks:
                write(chunk)
            write(b"0\r\n\r\n")


async def serve(port: int, chunks: int) -> None:
    framed = [f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in sse_events(chunks)]
    server = await asyncio.get_running_loop().create_server(lambda: _Stream(framed), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=256)
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.chunks))


if __name__ == "__main__":
    main()
