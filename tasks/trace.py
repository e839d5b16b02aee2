"""The trace workload kind: replay a request trace on its own timestamps.

Two formats. Mooncake's trace JSONL (one object a line: `timestamp` in ms, `input_length` and
`output_length` in tokens, `hash_ids`: one id per block of `block_tokens` prompt tokens, the same id
where two requests share that block of their prompt, from the first block on). A plain CSV with the
header `timestamp_ms,input_tokens,output_tokens` (no prefix information: every prompt is fresh).

Prompts are synthesised to the lengths asked for, in words of the fixed vocabulary (about one token
each): block h of a Mooncake trace is always the same words (seeded by h), so requests that share
hash_ids share that prefix and the trace's prefix reuse is reproduced; the last block is cut to the
input length. The requests are due at (timestamp - the first timestamp) x time_scale, sent by the open
loop's absolute scheduler (tasks/loadgen.py), whose send lateness says whether the replay kept up.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from tasks.matrix import MatrixError, builtin_or_file

BUILTIN_BLOCK_TOKENS = 16  # the built-in traces' block size (short prompts: they run on a CPU engine)
MAX_TRACE_BYTES = 64 << 20  # 64 MiB: Mooncake's published traces are 2-3 MB
CSV_HEADER = ("timestamp_ms", "input_tokens", "output_tokens")


@dataclass(frozen=True)
class TraceRequest:
    timestamp_ms: float
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()


def trace_file(name_or_path: str, base_dir: Path | None = None) -> Path:
    """A built-in trace by name (tasks/data/trace_<name>.jsonl or .csv) or a file path."""
    return builtin_or_file(
        name_or_path, base_dir, prefix="trace", exts=("jsonl", "csv"), field="trace", what="trace", must_be_file=True
    )


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_TRACE_BYTES:
            raise MatrixError(f"{path}: {size:,} bytes, larger than a trace file may be (at most {MAX_TRACE_BYTES:,})")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise MatrixError(f"{path}: not UTF-8 text; a trace is JSONL or CSV") from None
    except OSError as exc:
        raise MatrixError(f"{path}: cannot read the trace ({exc.strerror or exc})") from None


def _int(value: object, where: str, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
        raise MatrixError(f"{where}: {name} must be a whole number >= {minimum} (got {value!r})")
    return int(value)


def _time(value: object, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise MatrixError(f"{where}: {name} must be a number of ms >= 0 (got {value!r})")
    return float(value)


def load_trace(path: Path, trace_format: str = "auto", block_tokens: int = 512) -> list[TraceRequest]:
    """The trace's requests in file order (timestamps must not go back); one MatrixError line naming the
    file and line on anything wrong, a Mooncake line whose hash_ids do not cover its input in blocks of
    block_tokens included."""
    fmt = trace_format if trace_format != "auto" else ("csv" if path.suffix.lower() == ".csv" else "mooncake")
    text = _read_text(path)
    out: list[TraceRequest] = []
    if fmt == "csv":
        rows = csv.reader(io.StringIO(text))
        header = tuple(h.strip() for h in next(rows, ()))
        if header != CSV_HEADER:
            raise MatrixError(f"{path}: line 1: a trace CSV starts with the header {','.join(CSV_HEADER)}")
        for n, row in enumerate(rows, start=2):
            if not row:
                continue
            where = f"{path}: line {n}"
            if len(row) != 3:
                raise MatrixError(f"{where}: 3 fields expected ({','.join(CSV_HEADER)}), got {len(row)}")
            try:
                ts, n_in, n_out = float(row[0]), float(row[1]), float(row[2])
            except ValueError:
                raise MatrixError(f"{where}: the fields must be numbers") from None
            out.append(
                TraceRequest(
                    _time(ts, where, "timestamp_ms"),
                    _int(n_in, where, "input_tokens", 1),
                    _int(n_out, where, "output_tokens", 1),
                )
            )
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}: line {n}"
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise MatrixError(f"{where}: not JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise MatrixError(f"{where}: a Mooncake trace line is an object with timestamp, input_length, ...")
            n_in = _int(obj.get("input_length"), where, "input_length", 1)
            hash_ids = obj.get("hash_ids", [])
            if not isinstance(hash_ids, list) or not all(
                isinstance(h, int) and not isinstance(h, bool) for h in hash_ids
            ):
                raise MatrixError(f"{where}: hash_ids must be a list of integers")
            if hash_ids and len(hash_ids) != math.ceil(n_in / block_tokens):
                raise MatrixError(
                    f"{where}: {len(hash_ids)} hash_ids for input_length {n_in} in blocks of block_tokens "
                    f"{block_tokens} ({math.ceil(n_in / block_tokens)} expected): set the workload's block_tokens "
                    "to the trace's block size"
                )
            out.append(
                TraceRequest(
                    _time(obj.get("timestamp"), where, "timestamp"),
                    n_in,
                    _int(obj.get("output_length"), where, "output_length", 1),
                    tuple(hash_ids),
                )
            )
    if not out:
        raise MatrixError(f"{path}: the trace has no requests")
    for i in range(1, len(out)):
        if out[i].timestamp_ms < out[i - 1].timestamp_ms:
            raise MatrixError(f"{path}: request {i + 1}'s timestamp goes back in time; a trace is in send order")
    return out


def schedule_ns(trace: list[TraceRequest], time_scale: float, max_duration_s: float | None) -> list[int]:
    """When each request is due, in ns from the cell start: (timestamp - the first) x time_scale; the
    requests due at or after max_duration_s are left out (the list is shorter)."""
    t0 = trace[0].timestamp_ms
    out = []
    for r in trace:
        at = round((r.timestamp_ms - t0) * time_scale * 1e6)
        if max_duration_s is not None and at >= max_duration_s * 1e9:
            break
        out.append(at)
    return out


def prompt_text(r: TraceRequest, *, words: tuple[str, ...], block_tokens: int, seed: int, index: int) -> str:
    """The prompt: each hash block's own words (the same words for the same id in every request), cut to
    input_tokens; without hash_ids, fresh words seeded by the request's index."""
    if not r.hash_ids:
        rng = random.Random(f"{seed}/trace/{index}")
        return " ".join(rng.choices(words, k=r.input_tokens))
    out: list[str] = []
    for h in r.hash_ids:
        rng = random.Random(f"{seed}/trace-block/{h}")
        # the block's id first: two different blocks never begin alike by chance
        out += [f"[{h}]", *rng.choices(words, k=block_tokens - 1)]
    return " ".join(out[: r.input_tokens])


def generate_mooncake(n: int = 24, *, seed: int = 14, block_tokens: int = 16, span_ms: float = 6000.0) -> str:
    """The small trace shipped as tasks/data/trace_small.jsonl (tests/test_trace.py holds them equal):
    n requests over about span_ms, Poisson-like arrivals, 2-8 blocks of block_tokens each, three
    conversation prefixes that later requests extend (so hash_ids repeat), outputs of 4-12 tokens."""
    rng = random.Random(seed)
    next_id = 0
    prefixes: list[list[int]] = []
    lines, t = [], 0.0
    for _ in range(n):
        blocks = rng.randint(2, 8)
        base: list[int] = []
        if prefixes and rng.random() < 0.6:
            prefix = rng.choice(prefixes)
            base = prefix[: rng.randint(1, min(blocks - 1, len(prefix)))]
        ids = list(base)
        while len(ids) < blocks:
            ids.append(next_id)
            next_id += 1
        if len(prefixes) < 3 or rng.random() < 0.2:
            prefixes.append(ids)
        n_in = (blocks - 1) * block_tokens + rng.randint(1, block_tokens)
        lines.append(
            json.dumps(
                {
                    "timestamp": round(t),
                    "input_length": n_in,
                    "output_length": rng.randint(4, 12),
                    "hash_ids": ids,
                }
            )
        )
        t += rng.expovariate(n / span_ms)
    return "\n".join(lines) + "\n"
