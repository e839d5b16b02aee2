"""Before each cell: the engine's prefix cache emptied where it can be, and what it held when the cell
began recorded as `cells.cache_state` (migration 0011), so no cell is measured over the prompts an
earlier cell left cached without saying so. The per-version endpoints are the adapters' `cache_resets`
tables (docs/engine-versions.md); an external engine names its own (`engines.X.cache_reset`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import httpx

from tasks.engines.base import CacheReset, EngineAdapter
from tasks.matrix import Engine, Workload

log = logging.getLogger("bakeoff.cache")

# vLLM answers {"success": false} and SGLang 400 while requests still hold blocks (a cancelled request the
# engine has not noticed yet): ask again, briefly, before calling the reset failed.
RESET_TRIES = 6
RESET_PAUSE_S = 1.0
RESET_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class CacheState:
    state: str  # one of tasks.records.CACHE_STATES
    detail: str | None = None  # why it is not "reset" (logged with the cell)


def reset_prefix_cache(reset: CacheReset, base_url: str) -> str | None:
    """Asks the server to empty its prefix cache. None once it says it did; else why not, in one line."""
    url = base_url.rstrip("/") + reset.path
    problem = "no answer"
    for attempt in range(1, RESET_TRIES + 1):
        try:
            resp = httpx.request(reset.method, url, timeout=RESET_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return f"{reset.method} {reset.path}: {type(exc).__name__}: {exc}"
        if resp.status_code == 404:
            return f"{reset.method} {reset.path}: 404, the server has no such endpoint"
        busy = resp.status_code == 400 or (resp.is_success and _says_not_yet(resp, reset))
        if resp.is_success and not busy:
            return None
        problem = f"{reset.method} {reset.path}: HTTP {resp.status_code} {resp.text[:200].strip()}".strip()
        if not busy:
            return problem
        if attempt < RESET_TRIES:
            time.sleep(RESET_PAUSE_S)
    return f"{problem} (still busy after {RESET_TRIES} tries)"


def _says_not_yet(resp: httpx.Response, reset: CacheReset) -> bool:
    if reset.answer != "json-success":
        return False
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("success") is False


def prepare_cache(adapter: EngineAdapter, engine: Engine | None, workload: Workload, base_url: str) -> CacheState:
    """Empties the instance's prefix cache before a cell of `workload` where the engine can, and says
    what the cell starts with."""
    if adapter.request_extras(workload, engine).get("cache_prompt") is False:
        return CacheState("not_cached")  # every request is sent with the cache off
    reset = adapter.cache_reset_for(engine) if engine is not None else None
    if reset is None:
        what = f"{engine.kind} {engine.version}" if engine is not None else "the engine"
        return CacheState("not_reset", f"{what}: no prefix-cache reset bakeoff knows")
    unmet = {k: v for k, v in reset.needs_env.items() if engine is not None and engine.env.get(k, v) != v}
    if unmet:
        return CacheState("not_reset", f"the reset needs {unmet} but the engine's env sets otherwise")
    problem = reset_prefix_cache(reset, base_url)
    return CacheState("reset") if problem is None else CacheState("reset_failed", problem)
