"""The load generator: streamed chat completions over httpx, one raw record per request.

Closed loop: `concurrency` workers each send their next request as soon as the previous one ends.
Every request is a row, whatever happens to it: HTTP errors, timeouts, disconnects and malformed
streams are classified into `status` and never stop the cell.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx

from tasks.records import RequestRecord
from tasks.workloads import RequestSpec

log = logging.getLogger("bakeoff.loadgen")


@dataclass(frozen=True)
class Target:
    base_url: str  # e.g. http://127.0.0.1:8080
    served_model: str
    engine: str
    model: str
    deployment_id: str
    instance_id: str
    extra_body: dict  # engine-specific request fields (e.g. ignore_eos)


@dataclass
class CellResult:
    records: list[RequestRecord]
    started_at: datetime
    wall_ns: int  # first send to last completion of the measured requests


def _body(target: Target, spec: RequestSpec, temperature: float) -> dict:
    return {
        "model": target.served_model,
        "messages": [{"role": "user", "content": spec.text}],
        "max_tokens": spec.max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        **target.extra_body,
    }


async def _one_request(
    client: httpx.AsyncClient, target: Target, spec: RequestSpec, rec: RequestRecord, t0: int, temperature: float
) -> None:
    def now() -> int:
        return time.monotonic_ns() - t0

    rec.sent_at = now()
    try:
        async with client.stream("POST", "/v1/chat/completions", json=_body(target, spec, temperature)) as resp:
            rec.http_status = resp.status_code
            if resp.status_code != 200:
                text = (await resp.aread()).decode("utf-8", "replace")
                rec.status, rec.error_class = "http_error", f"http_{resp.status_code}"
                rec.error_message = text[:500]
                return
            saw_done = False
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments (": ping"), event names
                t = now()
                if rec.first_chunk_at is None:
                    rec.first_chunk_at = t
                payload = line[5:].strip()
                if payload == "[DONE]":
                    saw_done = True
                    break
                try:
                    event = json.loads(payload)
                except json.JSONDecodeError:
                    rec.status, rec.error_class = "bad_stream", "invalid_json"
                    rec.error_message = payload[:200]
                    return
                if "error" in event:
                    rec.status, rec.error_class = "bad_stream", "error_event"
                    rec.error_message = json.dumps(event["error"])[:500]
                    return
                for choice in event.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if rec.first_token_at is None:
                            rec.first_token_at = t
                        rec.last_token_at = t
                        rec.chunk_times.append(t)
                    if choice.get("finish_reason"):
                        rec.finish_reason = choice["finish_reason"]
                usage = event.get("usage")
                if usage:
                    rec.prompt_tokens = usage.get("prompt_tokens")
                    rec.completion_tokens = usage.get("completion_tokens")
                    details = usage.get("prompt_tokens_details") or {}
                    rec.cached_prompt_tokens = details.get("cached_tokens")
            if not saw_done:
                rec.status, rec.error_class = "disconnected", "stream_ended_without_done"
            elif rec.first_token_at is None:
                rec.status, rec.error_class = "bad_stream", "no_content"
    except httpx.TimeoutException as exc:
        rec.status, rec.error_class, rec.error_message = "timeout", type(exc).__name__, str(exc)[:500]
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError, httpx.WriteError) as exc:
        rec.status, rec.error_class, rec.error_message = "disconnected", type(exc).__name__, str(exc)[:500]
    except asyncio.CancelledError:
        rec.status, rec.error_class = "cancelled", "cancelled"
        raise
    finally:
        rec.done_at = now()


async def run_closed_loop(
    target: Target,
    requests: list[RequestSpec],
    *,
    run_id: str,
    cell_id: str,
    concurrency: int,
    warmup: list[RequestSpec] = (),
    temperature: float = 0.0,
    request_timeout_s: float = 300.0,
    progress: Callable[[int, int], None] | None = None,
) -> CellResult:
    timeout = httpx.Timeout(request_timeout_s, connect=10.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=target.base_url, timeout=timeout, limits=limits) as client:
        # Warmup: sent and awaited, never recorded (first requests pay for caches and allocation).
        if warmup:
            scratch = [_new_record(target, run_id, "warmup", i, s, datetime.now(timezone.utc), 0) for i, s in enumerate(warmup)]
            t_w = time.monotonic_ns()
            await asyncio.gather(*(_one_request(client, target, s, r, t_w, temperature) for s, r in zip(warmup, scratch)))

        started_at = datetime.now(timezone.utc)
        t0 = time.monotonic_ns()
        records = [_new_record(target, run_id, cell_id, i, s, started_at, 0) for i, s in enumerate(requests)]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(requests)):
            queue.put_nowait(i)
        done = 0

        async def worker() -> None:
            nonlocal done
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                # Closed loop: the request is due the moment a slot frees up.
                records[i].scheduled_at = time.monotonic_ns() - t0
                await _one_request(client, target, requests[i], records[i], t0, temperature)
                done += 1
                if progress:
                    progress(done, len(requests))

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))
        wall_ns = time.monotonic_ns() - t0
    return CellResult(records=records, started_at=started_at, wall_ns=wall_ns)


def _new_record(target: Target, run_id: str, cell_id: str, i: int, spec: RequestSpec, started_at: datetime, scheduled: int) -> RequestRecord:
    return RequestRecord(
        run_id=run_id,
        cell_id=cell_id,
        request_id=f"{cell_id}#{i:05d}",
        prompt_id=spec.prompt_id,
        engine=target.engine,
        model=target.model,
        deployment_id=target.deployment_id,
        instance_id=target.instance_id,
        max_tokens=spec.max_tokens,
        cell_started_at=started_at,
        scheduled_at=scheduled,
    )
