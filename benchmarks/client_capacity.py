"""Client capacity: can bakeoff's load generator outrun any single engine? (issue 3)

Serves an OpenAI-style SSE stream (CHUNKS content chunks + usage + [DONE]) on 127.0.0.1 two ways:
as a static file from nginx (large writes: the server is never the bottleneck) and from
benchmarks/chunked_sse_server.py (one HTTP chunk per event, each its own write, as engines send it:
many more, smaller reads for the client). It measures, for bakeoff's client
(tasks/loadgen.run_load, the real code path with records) and for a plain aiohttp client doing the
same work (benchmarks/aiohttp_reference.py), in the same run:
  - content chunks parsed per second and requests per second, closed loop at each concurrency level;
  - send lateness (sent - due) p50/p99 in an open loop at constant 100 and 1000 requests/s.
Everything is bounded: a fixed number of requests per measurement. Needs nginx (apt-get install nginx).

    .venv/bin/python benchmarks/client_capacity.py            # the README's figures
    .venv/bin/python benchmarks/client_capacity.py --quick    # a smaller run, for a smoke check
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages are imported below, hence E402

from benchmarks import aiohttp_reference  # noqa: E402
from tasks.loadgen import Target, quantile, run_load  # noqa: E402
from tasks.plan import LoadShape  # noqa: E402
from tasks.workloads import RequestSpec  # noqa: E402

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {dir}/body;
    types {{ }}
    default_type text/event-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/www;
        # POST to a static file is a 405; redirected to the same URI it is served as GET.
        error_page 405 =200 $uri;
    }}
}}
"""


def sse_events(chunks: int) -> list[bytes]:
    """The SSE events of one response: a role chunk, `chunks` content chunks, finish, usage, [DONE]."""

    def event(obj: dict) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench"}
    out = [
        event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    ]
    out += [
        event({**base, "choices": [{"index": 0, "delta": {"content": f" tok{i}"}, "finish_reason": None}]})
        for i in range(chunks)
    ]
    out.append(event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}))
    out.append(
        event(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 8, "completion_tokens": chunks, "total_tokens": 8 + chunks},
            }
        )
    )
    out.append(b"data: [DONE]\n\n")
    return out


def sse_body(chunks: int) -> bytes:
    return b"".join(sse_events(chunks))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, what: str) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit(f"{what} did not start")


class _Server:
    """A streaming server on 127.0.0.1:port in a subprocess, serving `chunks` content chunks per response."""

    name = ""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class ChunkedServer(_Server):
    """benchmarks/chunked_sse_server.py in its own process: one chunk per event, as engines write."""

    name = "chunk per event"

    def __enter__(self) -> ChunkedServer:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.chunked_sse_server",
                "--port",
                str(self.port),
                "--chunks",
                str(self.chunks),
            ],
            cwd=ROOT,
        )
        _wait_for_port(self.port, self.proc, "benchmarks/chunked_sse_server.py")
        return self


class Nginx(_Server):
    """nginx (1 worker) serving the stream as a static file: large writes."""

    name = "nginx static"

    def __enter__(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            sys.exit("nginx is not installed (apt-get install -y nginx)")
        self.dir = Path(tempfile.mkdtemp(prefix="bakeoff-nginx-"))
        self.dir.chmod(0o755)  # nginx workers run as an unprivileged user when started as root
        (self.dir / "www/v1/chat").mkdir(parents=True)
        (self.dir / "www/v1/chat/completions").write_bytes(sse_body(self.chunks))
        self.port = _free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port))
        self.proc = subprocess.Popen([binary, "-p", str(self.dir), "-c", str(conf)], stderr=subprocess.DEVNULL)
        _wait_for_port(self.port, self.proc, f"nginx (see {self.dir}/error.log)")
        return self

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        shutil.rmtree(self.dir, ignore_errors=True)


def specs(n: int) -> list[RequestSpec]:
    return [RequestSpec(f"p{i}", "hi", 256) for i in range(n)]


def _check_ok(records) -> None:
    bad = [r for r in records if r.status != "ok"]
    if bad:
        sys.exit(f"bakeoff client: {len(bad)} requests failed, e.g. {bad[0].error_class}: {bad[0].error_message}")


def bakeoff_closed(url: str, n: int, concurrency: int) -> tuple[int, int]:
    target = Target(url, "bench", "bench", "bench", "d", "d-0", {})
    result = asyncio.run(
        run_load(target, specs(n), LoadShape("closed", concurrency=concurrency), run_id="b", cell_id="c")
    )
    _check_ok(result.records)
    return sum(len(r.chunk_times) for r in result.records), result.wall_ns


def bakeoff_open(url: str, n: int, rate: float) -> list[int]:
    target = Target(url, "bench", "bench", "bench", "d", "d-0", {})
    result = asyncio.run(run_load(target, specs(n), LoadShape("constant", rate_rps=rate), run_id="b", cell_id="c"))
    _check_ok(result.records)
    return [r.sent_at - r.scheduled_at for r in result.records]


CLIENTS = {
    "bakeoff": (bakeoff_closed, bakeoff_open),
    "aiohttp": (
        lambda url, *a: asyncio.run(aiohttp_reference.closed_loop(url + "/v1/chat/completions", *a)),
        lambda url, *a: asyncio.run(aiohttp_reference.open_loop(url + "/v1/chat/completions", *a)),
    ),
}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="1,64,256,1024", help="closed-loop concurrency levels")
    ap.add_argument("--rates", default="100,1000", help="open-loop request rates (req/s)")
    ap.add_argument("--chunks", type=int, default=256, help="content chunks per response, closed loop")
    ap.add_argument(
        "--open-chunks",
        type=int,
        default=16,
        help="content chunks per response, open loop (1000 req/s x 256 chunks is more than any one "
        "Python process parses; the open loop measures sending)",
    )
    ap.add_argument("--seconds", type=float, default=3.0, help="open-loop length per rate (at least 1,000 sends)")
    ap.add_argument("--quick", action="store_true", help="fewer requests (a smoke check, noisier figures)")
    ap.add_argument("--clients", default="bakeoff,aiohttp")
    ap.add_argument(
        "--servers",
        default="nginx,chunked",
        help="closed-loop servers: nginx (static file, large writes), chunked (one chunk per event, "
        "as engines write; benchmarks/chunked_sse_server.py)",
    )
    args = ap.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1024 streams need more than 1024 fds

    levels = [int(x) for x in args.levels.split(",")]
    rates = [float(x) for x in args.rates.split(",")]
    clients = args.clients.split(",")
    servers = {"nginx": Nginx, "chunked": ChunkedServer}
    rows = []
    for server_name in args.servers.split(","):
        with servers[server_name](args.chunks) as server:
            for c in levels:
                n = max(c, 32) if args.quick else max(4 * c, 200)
                for name in clients:
                    gc.collect()
                    chunks, wall = CLIENTS[name][0](server.url, n, c)
                    rows.append(
                        {
                            "client": name,
                            "server": server.name,
                            "what": f"closed c={c}",
                            "requests": n,
                            "chunks": chunks,
                            "chunks_per_s": chunks / (wall / 1e9),
                            "requests_per_s": n / (wall / 1e9),
                        }
                    )
                    print(json.dumps(rows[-1]), file=sys.stderr)
    with Nginx(args.open_chunks) as server:
        for rate in rates:
            # at least 1,000 sends (not in --quick), so that p99 is not just the few worst
            n = int(rate * (args.seconds / 3 if args.quick else args.seconds))
            n = n if args.quick else max(n, 1000)
            for name in clients:
                gc.collect()
                late = [x / 1e6 for x in CLIENTS[name][1](server.url, n, rate)]
                rows.append(
                    {
                        "client": name,
                        "server": server.name,
                        "what": f"open {rate:g} req/s",
                        "requests": n,
                        "lateness_p50_ms": quantile(late, 0.5),
                        "lateness_p99_ms": quantile(late, 0.99),
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr)

    print(
        f"\n{args.chunks} content chunks per response closed loop, {args.open_chunks} open loop; "
        f"Python {sys.version.split()[0]}\n"
    )
    print("| server | load | client | requests | chunks/s | requests/s | vs reference | send lateness p50 / p99 (ms) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    reference = {(r["server"], r["what"]): r for r in rows if r["client"] == "aiohttp"}
    for r in rows:
        ref = reference.get((r["server"], r["what"]))
        if "chunks_per_s" in r:
            ratio = f"{r['chunks_per_s'] / ref['chunks_per_s']:.0%}" if ref and r is not ref else ""
            print(
                f"| {r['server']} | {r['what']} | {r['client']} | {r['requests']} | {r['chunks_per_s']:,.0f} | "
                f"{r['requests_per_s']:,.0f} | {ratio} | |"
            )
        else:
            print(
                f"| {r['server']} | {r['what']} | {r['client']} | {r['requests']} | | | | "
                f"{r['lateness_p50_ms']:.2f} / {r['lateness_p99_ms']:.2f} |"
            )
    return rows


if __name__ == "__main__":
    main()
