"""The load generator: streamed chat completions, one raw record per request.

The HTTP side is tasks/streaming_client.py (why not httpx: see there and benchmarks/client_capacity.py).

Closed loop: `concurrency` workers each send their next request as soon as the previous one ends.
Open loop: requests are due at absolute offsets from the cell start (t0 + cumulative inter-arrival
gaps, so a late send never delays the ones after it), optionally capped by a max concurrency; each
record keeps when it was due (scheduled_at) and when it went (sent_at).
Every request is a row, whatever happens to it: HTTP errors, timeouts, disconnects and malformed
streams are classified into `status` and never stop the cell.
Two deadlines, neither extended by a slow stream: each request must be complete within
`request_timeout_s` of its send, and the whole measured cell within `cell_timeout_s` of its start
(default: `default_cell_timeout_s`, the longest a cell can take whose requests each end within their
own deadline). Past the cell's deadline nothing more is sent and the requests in flight are cut off.
A request cut off by either is status "timeout" (error_class request_timeout or cell_timeout) and keeps
what it received until then: its chunk times, first/last token, the HTTP status of the head.
The client also measures itself (ClientOverhead): how late sends were against when they could go, and
how late a ticker on the event loop wakes up; a busy client shows in both before it skews the results.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tasks.plan import LoadShape
from tasks.records import CLIENT_CANCEL, RequestRecord
from tasks.streaming_client import ABORT, CONTINUE, DONE, StreamError, StreamingClient
from tasks.workloads import RequestSpec

log = logging.getLogger("bakeoff.loadgen")

# "The client kept up" when both p99s are at most this: the bound on send lateness, applied
# to loop lag too (a loop that wakes 2 ms late stamps chunk times up to 2 ms late).
KEPT_UP_P99_MS = 2.0
_TICK_S = 0.01  # loop-lag ticker period: 100 samples/s, negligible load


@dataclass(frozen=True)
class Target:
    base_url: str  # e.g. http://127.0.0.1:8080
    served_model: str
    engine: str
    model: str
    deployment_id: str
    instance_id: str
    extra_body: dict  # engine-specific request fields (e.g. ignore_eos)


@dataclass(frozen=True)
class ClientOverhead:
    send_lateness_p50_ms: float | None  # sent_at minus the moment the request could go
    send_lateness_p99_ms: float | None
    loop_lag_p99_ms: float | None  # ticker oversleep
    loop_lag_max_ms: float | None

    @property
    def kept_up(self) -> bool | None:
        values = (self.send_lateness_p99_ms, self.loop_lag_p99_ms)
        return None if None in values else all(v <= KEPT_UP_P99_MS for v in values)


@dataclass
class CellResult:
    records: list[RequestRecord]  # the requests sent (a duration limit may stop before the last)
    started_at: datetime
    wall_ns: int  # first send to last completion of the measured requests
    overhead: ClientOverhead | None = None
    texts: dict[str, str] = field(default_factory=dict)  # request_id -> reply content, structured requests only


def quantile(values: list[float], q: float) -> float | None:
    """Linear interpolation between order statistics, the same definition as the warehouse views."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def arrival_offsets_ns(n: int, shape: LoadShape, seed: int) -> list[int]:
    """When each of n open-loop requests is due, in ns from the cell start: the first at 0, then the
    running sum of inter-arrival gaps (summed in float seconds, rounded once: no rounding drift).
    poisson: exponential gaps; gamma: shape k = burstiness, scale 1/(rate k), so the mean gap is
    1/rate and the coefficient of variation 1/sqrt(k); constant: exactly 1/rate."""
    rate = shape.rate_rps
    rng = random.Random(f"{seed}/arrivals")
    k = shape.burstiness or 1.0
    gaps: dict[str, Callable[[], float]] = {
        "poisson": lambda: rng.expovariate(rate),
        "gamma": lambda: rng.gammavariate(k, 1.0 / (rate * k)),
        "constant": lambda: 1.0 / rate,
    }
    if shape.arrival not in gaps:
        raise ValueError(f"not an open-loop arrival process: {shape.arrival!r}")
    gap = gaps[shape.arrival]
    offsets, t = [], 0.0
    for _ in range(n):
        offsets.append(round(t * 1e9))
        t += gap()
    return offsets


# asyncio's timers wake up to 1 ms late (epoll's timeout is in whole ms, rounded up), which was
# most of the send lateness at 100 req/s. So the pacer sleeps until this much before a send is due and
# covers the rest by yielding to the loop (sleep(0): I/O is still served), at most ~1 ms of busy
# waiting per send.
PACE_SPIN_NS = 1_100_000


async def paced(
    offsets_ns: list[int],
    t0: int,
    *,
    clock: Callable[[], int] = time.monotonic_ns,
    sleep: Callable[[float], Awaitable] = asyncio.sleep,
    spin_ns: int = PACE_SPIN_NS,
) -> AsyncIterator[int]:
    """Yields i when request i is due (t0 + offsets_ns[i]), never early. Each wait is computed
    from the absolute due time, so an oversleep makes that one send late and not the rest."""
    for i, offset in enumerate(offsets_ns):
        while (wait := t0 + offset - clock()) > 0:
            await sleep((wait - spin_ns) / 1e9 if wait > spin_ns else 0)
        yield i


class _LagTicker:
    """Sleeps _TICK_S over and over and records how much longer each sleep took: the event loop's lag."""

    def __init__(self) -> None:
        self.lags_ns: list[int] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        period = int(_TICK_S * 1e9)
        while True:
            t = time.monotonic_ns()
            await asyncio.sleep(_TICK_S)
            self.lags_ns.append(max(0, time.monotonic_ns() - t - period))

    def __enter__(self) -> _LagTicker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        self._task.cancel()


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e6


def _overhead(lateness_ns: list[int], lags_ns: list[int]) -> ClientOverhead:
    return ClientOverhead(
        send_lateness_p50_ms=_ms(quantile(lateness_ns, 0.50)),
        send_lateness_p99_ms=_ms(quantile(lateness_ns, 0.99)),
        loop_lag_p99_ms=_ms(quantile(lags_ns, 0.99)),
        loop_lag_max_ms=_ms(max(lags_ns)) if lags_ns else None,
    )


def _body(target: Target, spec: RequestSpec, temperature: float) -> dict:
    messages = [*spec.history, {"role": "user", "content": spec.text}]  # history: a session's turns so far
    if spec.system is not None:
        messages.insert(0, {"role": "system", "content": spec.system})
    body = {
        "model": target.served_model,
        "messages": messages,
        "max_tokens": spec.max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        **target.extra_body,
    }
    if spec.response_format is not None:
        body["response_format"] = spec.response_format
    return body


_PATH = "/v1/chat/completions"


# The client's deadline kinds as the record's error classes (named after the matrix fields).
_ERROR_CLASS = {"request_timeout": "request_timeout", "cutoff": "cell_timeout"}


async def _one_request(
    client: StreamingClient,
    target: Target,
    spec: RequestSpec,
    rec: RequestRecord,
    t0: int,
    temperature: float,
    cutoff: float | None = None,
) -> str | None:
    """Returns the reply's content for a request with a schema (judged after the cell), else None."""

    def now() -> int:
        return time.monotonic_ns() - t0

    saw_done = False
    pieces: list[str] | None = [] if spec.schema is not None or spec.session_id is not None else None

    def on_line(payload: bytes, t_read: int) -> int:
        # Runs inside the client's data_received, once per SSE data line; t_read is when its read arrived.
        nonlocal saw_done
        t = t_read - t0
        if rec.first_chunk_at is None:
            rec.first_chunk_at = t
        if payload == b"[DONE]":
            saw_done = True
            return DONE
        try:
            event = json.loads(payload)
            if not isinstance(event, dict):
                raise ValueError("not a JSON object")
        except ValueError:  # invalid JSON, invalid UTF-8, or not an object
            rec.status, rec.error_class = "bad_stream", "invalid_json"
            rec.error_message = payload[:200].decode("utf-8", "replace")
            return ABORT
        if "error" in event:
            rec.status, rec.error_class = "bad_stream", "error_event"
            rec.error_message = json.dumps(event["error"])[:500]
            return ABORT
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if rec.first_reasoning_at is None and delta.get("reasoning_content"):
                rec.first_reasoning_at = t  # a reasoning engine's thinking, streamed before the answer
            if content:
                if rec.first_token_at is None:
                    rec.first_token_at = t
                rec.last_token_at = t
                rec.chunk_times.append(t)
                if pieces is not None:
                    pieces.append(content)
            if choice.get("finish_reason"):
                rec.finish_reason = choice["finish_reason"]
        usage = event.get("usage")
        if usage:
            rec.prompt_tokens = usage.get("prompt_tokens")
            rec.completion_tokens = usage.get("completion_tokens")
            details = usage.get("prompt_tokens_details") or {}
            rec.cached_prompt_tokens = details.get("cached_tokens")
            rec.reasoning_tokens = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
        return CONTINUE

    body = json.dumps(_body(target, spec, temperature)).encode()
    done_ns = None
    rec.sent_at = now()
    try:
        if spec.cancel_after_ns is None:
            resp = await client.post_stream(_PATH, body, on_line, cutoff=cutoff)
        else:  # a client that gives up: the stream is closed (the connection aborted) at the delay
            rec.cancel_after_ns = spec.cancel_after_ns
            try:
                resp = await asyncio.wait_for(
                    client.post_stream(_PATH, body, on_line, cutoff=cutoff), spec.cancel_after_ns / 1e9
                )
            except TimeoutError:
                done_ns = time.monotonic_ns()  # the stream is closed: the request is over now
                rec.cancelled_at = done_ns - t0
                rec.status, rec.error_class = "cancelled", CLIENT_CANCEL
                return "".join(pieces) if pieces is not None else None  # what streamed before it was closed
        done_ns = resp.done_ns
        rec.http_status = resp.status
        if resp.status != 200:
            rec.status, rec.error_class = "http_error", f"http_{resp.status}"
            rec.error_message = resp.body.decode("utf-8", "replace")[:500]
        elif rec.status != "ok":
            pass  # the line handler classified it (bad_stream)
        elif rec.first_chunk_at is None:  # a 200 that is not an event stream (e.g. a whole JSON answer)
            rec.status, rec.error_class = "bad_stream", "no_sse_events"
        elif not saw_done:
            rec.status, rec.error_class = "disconnected", "stream_ended_without_done"
        elif rec.first_token_at is None:
            # reasoning only: the budget ran out before the answer began
            rec.status, rec.error_class = "bad_stream", "no_answer" if rec.first_reasoning_at else "no_content"
    except StreamError as exc:
        # What arrived before it stays: chunk times, first/last token, the head's status.
        rec.http_status = exc.http_status
        if exc.timeout:
            rec.status = "timeout"
        elif exc.kind == "line_too_long":
            rec.status = "bad_stream"
        else:
            rec.status = "disconnected"
        rec.error_class = _ERROR_CLASS.get(exc.kind, exc.kind)
        content = f"; content chunks received: {len(rec.chunk_times)}" if rec.chunk_times else ""
        rec.error_message = f"{exc}{content}"[:500]
    except (asyncio.CancelledError, KeyboardInterrupt, SystemExit) as exc:
        # Cut short by the caller (a cancelled cell, Ctrl-C, SIGTERM): never left looking "ok".
        rec.status, rec.error_class = "cancelled", type(exc).__name__
        raise
    finally:
        # The response's end as its read arrived; else (an error) when this coroutine saw it.
        rec.done_at = done_ns - t0 if done_ns is not None else now()
    return "".join(pieces) if pieces is not None else None


async def run_load(
    target: Target,
    requests: list[RequestSpec],
    shape: LoadShape,
    *,
    run_id: str,
    cell_id: str,
    seed: int = 0,
    warmup: list[RequestSpec] = (),
    temperature: float = 0.0,
    request_timeout_s: float = 300.0,
    duration_s: float | None = None,
    cell_timeout_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_start: Callable[[list[RequestRecord], datetime, int], None] | None = None,
) -> CellResult:
    """Sends `requests` in the given load shape; stops sending new ones after `duration_s`. Each
    request must be complete within `request_timeout_s` of its send; the measured part must end within
    `cell_timeout_s` (None: `default_cell_timeout_s`), after which nothing is sent and the requests in
    flight are cut off (status "timeout", error_class "cell_timeout"); the warmup is not counted.
    `on_start(records, started_at, t0_ns)` hands the caller the cell's records as the measured part
    begins, so an interrupted cell (Ctrl-C, a cancelled flow) can still keep what was measured: the
    requests in flight are cancelled and end as status "cancelled"."""
    async with StreamingClient(target.base_url, request_timeout=request_timeout_s) as client:
        # Warmup: sent and awaited, never recorded (first requests pay for caches and allocation), no more
        # at once than the cell will have in flight: a burst above it would queue in the engine and skew
        # what it allocates (SGLang PR #39398 saw TTFT destabilised by exactly that).
        if warmup:
            scratch = [_new_record(target, run_id, "warmup", i, s, datetime.now(UTC), 0) for i, s in enumerate(warmup)]
            t_w = time.monotonic_ns()
            slots = asyncio.Semaphore(warmup_concurrency(shape))

            async def warm(spec: RequestSpec, record: RequestRecord) -> None:
                async with slots:
                    await _one_request(client, target, spec, record, t_w, temperature)

            await asyncio.gather(*(warm(s, r) for s, r in zip(warmup, scratch, strict=True)))

        if shape.kind == "closed":
            offsets = None
        elif shape.arrival == "trace":
            offsets = [s.at_ns for s in requests]  # a trace: its own timestamps
        else:
            offsets = arrival_offsets_ns(len(requests), shape, seed)
        if cell_timeout_s is None:
            span_s = offsets[-1] / 1e9 if offsets else 0.0
            cell_timeout_s = default_cell_timeout_s(shape, len(requests), request_timeout_s, duration_s, span_s)
        started_at = datetime.now(UTC)
        t0 = time.monotonic_ns()
        cell_end = t0 + int(cell_timeout_s * 1e9)
        cutoff = cell_end / 1e9  # the loop's clock (loop.time() is time.monotonic())
        # No request is sent after this: the duration limit or the cell's deadline, the earlier.
        deadline = min(cell_end, t0 + int(duration_s * 1e9)) if duration_s else cell_end
        # a multi_turn session is one unit the load shape schedules, with one record per turn
        flat = [t for s in requests for t in (s.turns or (s,))]
        records = [_new_record(target, run_id, cell_id, i, s, started_at, 0) for i, s in enumerate(flat)]
        first = list(itertools.accumulate((len(s.turns or (s,)) for s in requests), initial=0))
        heads = [records[j] for j in first[:-1]]  # each unit's first record: the loops stamp scheduled_at on it
        if on_start:
            on_start(records, started_at, t0)
        lateness: list[int] = []  # sent_at minus the moment the request could go
        texts: dict[str, str] = {}
        done = 0

        async def send(i: int, ready_ns: int) -> None:
            nonlocal done
            if requests[i].turns:
                await _session(
                    client,
                    target,
                    requests[i].turns,
                    records[first[i] : first[i + 1]],
                    t0,
                    temperature,
                    lateness,
                    cutoff,
                )
            else:
                text = await _one_request(client, target, requests[i], heads[i], t0, temperature, cutoff)
                if text is not None and requests[i].schema is not None:
                    texts[heads[i].request_id] = text
            lateness.append(heads[i].sent_at - ready_ns)
            done += 1
            if progress:
                progress(done, len(requests))

        with _LagTicker() as ticker:
            if shape.kind == "closed":
                await _closed_loop(send, len(requests), shape.concurrency, heads, t0, deadline)
            else:
                await _open_loop(send, offsets, shape.max_concurrency, heads, t0, deadline)
        wall_ns = time.monotonic_ns() - t0
    sent = [r for r in records if r.sent_at is not None]
    cut = sum(r.error_class == "cell_timeout" for r in sent)
    if cut or (time.monotonic_ns() >= cell_end and len(sent) < len(records)):
        log.warning(
            "%s: the cell's deadline (%g s) passed: %d requests in flight cut off, %d of %d not sent",
            cell_id,
            cell_timeout_s,
            cut,
            len(records) - len(sent),
            len(records),
        )
    return CellResult(
        records=sent,
        started_at=started_at,
        wall_ns=wall_ns,
        overhead=_overhead(lateness, ticker.lags_ns),
        texts=texts,
    )


async def _session(
    client: StreamingClient,
    target: Target,
    turns: tuple[RequestSpec, ...],
    records: list[RequestRecord],
    t0: int,
    temperature: float,
    lateness: list[int],
    cutoff: float | None = None,
) -> None:
    """A multi_turn session: each turn after its think time, with the conversation so far; a turn due
    when its think time ends (scheduled_at), its lateness measured from then. A failed turn ends the
    session (the turns after it are not sent); a turn the client cancelled does not: as a chat user who
    stops a reply and writes on, the conversation keeps what had streamed of it."""
    history: list[dict] = []
    for k, (spec, rec) in enumerate(zip(turns, records, strict=True)):
        rec.session_id, rec.turn = spec.session_id, spec.turn
        if k:
            await asyncio.sleep(spec.think_s)
            rec.scheduled_at = time.monotonic_ns() - t0
        reply = await _one_request(
            client, target, dataclasses.replace(spec, history=tuple(history)), rec, t0, temperature, cutoff
        )
        if k:
            lateness.append(rec.sent_at - rec.scheduled_at)
        if rec.status != "ok" and rec.error_class != CLIENT_CANCEL:
            return
        history += [{"role": "user", "content": spec.text}, {"role": "assistant", "content": reply or ""}]


async def _closed_loop(send, n: int, concurrency: int, records: list[RequestRecord], t0: int, deadline: int) -> None:
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < n:
            # Closed loop: the request is due the moment a slot frees up.
            ready = time.monotonic_ns()
            if ready >= deadline:
                return
            i, next_i = next_i, next_i + 1
            records[i].scheduled_at = ready - t0
            await send(i, ready - t0)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))


async def _open_loop(
    send, offsets: list[int], cap: int | None, records: list[RequestRecord], t0: int, deadline: int
) -> None:
    slots = asyncio.Semaphore(cap) if cap else None
    tasks: set[asyncio.Task] = set()

    async def capped(i: int, ready: int) -> None:
        try:
            await send(i, ready)
        finally:
            slots.release()

    offsets = [o for o in offsets if t0 + o < deadline]
    async for i in paced(offsets, t0):
        records[i].scheduled_at = offsets[i]
        ready = offsets[i]
        if slots is not None:
            # Waiting for a slot is the server's backlog, not client lateness: it shows as queue
            # delay (sent_at - scheduled_at), and lateness is measured from when the slot came.
            await slots.acquire()
            if time.monotonic_ns() >= deadline:  # the slot came after the last moment to send
                slots.release()
                break
            ready = max(ready, time.monotonic_ns() - t0)
            task = asyncio.create_task(capped(i, ready))
        else:
            task = asyncio.create_task(send(i, ready))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


def default_cell_timeout_s(
    shape: LoadShape, n: int, request_timeout_s: float, duration_s: float | None = None, span_s: float = 0.0
) -> float:
    """The cell deadline when the matrix sets none: the longest a cell can take whose requests each
    end within their own deadline, plus a second for the client's lateness. With s slots (the
    concurrency; an open loop's max_concurrency, or every request when uncapped) the k-th send waits for
    the (k-s)-th to end, so the last one is sent at most floor((n-1)/s) request timeouts after the
    schedule's last due time (span_s; 0 for a closed loop) and the cell ends by
    span_s + ceil(n / s) x request_timeout_s. A duration limit stops sends, so when every send is on
    schedule (closed loop, uncapped open loop) the cell also ends by duration_s + request_timeout_s.
    Such a deadline never cuts off a cell that keeps its per-request deadlines; a tighter
    cell_timeout_s bounds a night's cell against an engine that answers every request slowly."""
    slots = shape.concurrency if shape.kind == "closed" else shape.max_concurrency
    waves = math.ceil(n / max(1, min(slots or n, n))) if n else 0
    bound = span_s + waves * request_timeout_s
    if duration_s is not None and (shape.kind == "closed" or not shape.max_concurrency):
        bound = min(bound, duration_s + request_timeout_s)
    return bound + 1.0


def warmup_concurrency(shape: LoadShape) -> int:
    """How many warm-up requests may be in flight at once: the cell's concurrency (closed loop) or its cap
    (open loop), else one at a time."""
    return max(1, shape.concurrency or shape.max_concurrency or 1)


async def run_closed_loop(target: Target, requests: list[RequestSpec], *, concurrency: int, **kw) -> CellResult:
    return await run_load(target, requests, LoadShape("closed", concurrency=concurrency), **kw)


def _new_record(
    target: Target, run_id: str, cell_id: str, i: int, spec: RequestSpec, started_at: datetime, scheduled: int
) -> RequestRecord:
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
