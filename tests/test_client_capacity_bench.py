"""The client capacity benchmark runs end to end at a tiny size against both of its servers (its
figures are measured, not asserted; README has them)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.builders import require


def test_benchmark_runs_at_a_tiny_size():
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        require("BAKEOFF_REQUIRE_NGINX", "nginx is not installed (make system-deps installs it)")
    from benchmarks import client_capacity

    rows = client_capacity.main(
        ["--quick", "--levels", "1,8", "--rates", "50", "--seconds", "0.6", "--chunks", "8", "--open-chunks", "4"]
    )
    closed = [r for r in rows if "chunks_per_s" in r]
    assert {(r["server"], r["what"], r["client"]) for r in closed} == {
        (server, f"closed c={c}", client)
        for server in ("nginx static", "chunk per event")
        for c in (1, 8)
        for client in ("bakeoff", "aiohttp")
    }
    # Every content chunk of every response was parsed, from both servers, by both clients.
    assert all(r["chunks"] == 8 * r["requests"] for r in closed)
    opened = [r for r in rows if "lateness_p99_ms" in r]
    assert {r["client"] for r in opened} == {"bakeoff", "aiohttp"}
    assert all(0 <= r["lateness_p50_ms"] <= r["lateness_p99_ms"] for r in opened)
