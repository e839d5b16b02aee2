"""A plain aiohttp streaming client: the reference bakeoff's client is measured against.

It does the same work per request as tasks/loadgen.py (POST the chat body, read the SSE stream line by
line, json-decode every data line, stamp every content chunk with time.monotonic_ns, keep the usage)
and nothing else: no records, no error classes. Used by benchmarks/client_capacity.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 256,
    "stream": True,
    "stream_options": {"include_usage": True},
}


async def _one(session: aiohttp.ClientSession, url: str) -> int:
    """One streamed request; returns its number of content chunks."""
    chunk_times = []
    async with session.post(url, json=BODY) as resp:
        resp.raise_for_status()
        async for raw in resp.content:  # one SSE line at a time
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            event = json.loads(payload)
            for choice in event.get("choices") or ():
                if (choice.get("delta") or {}).get("content"):
                    chunk_times.append(time.monotonic_ns())
            event.get("usage")
    return len(chunk_times)


def _session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit), timeout=aiohttp.ClientTimeout(total=300))


async def closed_loop(url: str, n: int, concurrency: int) -> tuple[int, int]:
    """n requests, `concurrency` in flight; returns (content chunks parsed, wall ns)."""
    async with _session(concurrency) as session:
        left, chunks = n, 0

        async def worker() -> None:
            nonlocal left, chunks
            while left > 0:
                left -= 1
                got = await _one(session, url)
                chunks += got  # not `chunks += await ...`: that reads chunks before the await

        t0 = time.monotonic_ns()
        await asyncio.gather(*(worker() for _ in range(min(n, concurrency))))
        return chunks, time.monotonic_ns() - t0


async def open_loop(url: str, n: int, rate: float) -> list[int]:
    """n requests at a constant rate on absolute times; returns each send's lateness in ns."""
    async with _session(0) as session:  # 0: no connection limit, as an open loop needs
        lateness, tasks = [], []

        async def send(due: int) -> None:
            lateness.append(time.monotonic_ns() - due)
            await _one(session, url)

        t0 = time.monotonic_ns()
        for i in range(n):
            due = t0 + round(i * 1e9 / rate)
            while (wait := due - time.monotonic_ns()) > 0:
                await asyncio.sleep(wait / 1e9)
            tasks.append(asyncio.create_task(send(due)))
        await asyncio.gather(*tasks)
        return lateness
