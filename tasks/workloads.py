"""Workloads: which requests a bench cell sends, as plain data.

Three kinds (tasks.matrix.Workload): the study's prompts x output lengths; shared_prefix, groups of
requests that share one long system prompt (prefix caching / RadixAttention shows here); random,
synthetic lengths drawn from a seeded distribution. Synthetic text is words of a small fixed
vocabulary, about one token each; the server's usage says how many tokens a prompt really was.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path

from tasks import structured, trace
from tasks.matrix import DATA_DIR, MAX_PROMPTS_BYTES, Matrix, MatrixError, Workload, builtin_or_file, read_yaml

# Workload kinds measured cold: no request may be served from the prefix cache an earlier one left (the
# study set sends each prompt once per output length). shared_prefix is about that cache: it stays warm.
# reports/method.py's COLD_WORKLOADS says the same (tests/test_engine_flags.py holds them equal).
COLD_WORKLOAD_KINDS = ("prompts", "random", "structured")
# A prompts file's YAML nodes once aliases are expanded: a few per prompt (the study's 40 prompts are 250).
MAX_PROMPT_NODES = 2_000_000


@dataclass(frozen=True)
class RequestSpec:
    prompt_id: str
    text: str
    max_tokens: int
    system: str | None = None  # a system message sent before the user message
    # structured (tasks/structured.py): the schema the reply is judged against, and the request's
    # response_format field (None: unconstrained)
    schema_id: str | None = None
    schema: dict | None = None
    response_format: dict | None = None
    # trace (tasks/trace.py): when the request is due, ns from the cell start (the trace's own timestamps)
    at_ns: int | None = None
    # cancellation (Workload.cancel_share): close the stream this long after the send (None: never)
    cancel_after_ns: int | None = None
    # multi_turn: a session's spec holds its turns (each with session_id and turn); the load generator sends
    # them one after the other, each with the conversation so far (history) and think_s after the reply before
    session_id: str | None = None
    turn: int | None = None
    turns: tuple[RequestSpec, ...] | None = None
    history: tuple[dict, ...] = ()
    think_s: float = 0.0


WARMUP_MARK = "Warm-up request {i}, not measured."


def warmup_specs(specs: list[RequestSpec], n: int) -> list[RequestSpec]:
    """n warm-up requests shaped like the workload's first ones (same lengths, same system prompt layout)
    that share no prompt prefix with any measured request: each first message starts with WARMUP_MARK,
    so an engine's prefix cache (vLLM's and SGLang's hash whole blocks from the first token) cannot be
    warmed for the requests that are measured."""
    out = []
    for i, spec in enumerate((specs * (n // max(len(specs), 1) + 1))[:n] if specs else []):
        mark = WARMUP_MARK.format(i=i)
        if spec.system is not None:
            out.append(dataclasses.replace(spec, prompt_id=f"warmup-{i}", system=f"{mark} {spec.system}"))
        else:
            out.append(dataclasses.replace(spec, prompt_id=f"warmup-{i}", text=f"{mark} {spec.text}"))
    return out


# Common short English words: each is one token (with its leading space) in the usual BPE vocabularies.
_WORDS = (
    "the of and to in is it you that he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part over new sound take only little work know place year live me back give most very "
    "after thing our just name good sentence man think say great where help through much before line right too"
).split()


def prompt_file(name_or_path: str, base_dir: Path | None = None) -> Path:
    """A built-in prompt set by name (tasks/data/prompts_<name>.yaml) or a file path."""
    # a directory, a FIFO or a broken file is named by load_prompts
    return builtin_or_file(name_or_path, base_dir, prefix="prompts", exts=("yaml",), field="prompts", what="prompt set")


def load_prompts(path: Path) -> list[tuple[str, str]]:
    """A prompts file: `prompts:`, a list of entries with a unique `id` (a string or a number) and a
    non-empty `text` (other keys, such as `topic`, are kept out of the requests). Read with the matrix's bounds (tasks.matrix.read_yaml): a file that is too large,
    binary, not UTF-8, not YAML or repeats a key is one MatrixError line naming it."""
    data, _ = read_yaml(path, "prompts file", max_bytes=MAX_PROMPTS_BYTES, max_nodes=MAX_PROMPT_NODES)
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list) or not prompts:
        raise MatrixError(f"{path}: prompts must be a list of entries with 'id' and 'text'")
    for i, p in enumerate(prompts):
        if not isinstance(p, dict):
            raise MatrixError(f"{path}: prompts.{i}: must be an entry with 'id' and 'text'")
        if isinstance(p.get("id"), bool) or not isinstance(p.get("id"), (str, int)) or p["id"] == "":
            raise MatrixError(f"{path}: prompts.{i}.id: must be a non-empty string or a number")
        if not isinstance(p.get("text"), str) or not p["text"].strip():
            raise MatrixError(f"{path}: prompts.{i}.text: must be non-empty text")
    ids = [str(p["id"]) for p in prompts]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise MatrixError(f"{path}: prompt ids must be unique, repeated: {repeated}")
    return [(str(p["id"]), str(p["text"]).strip()) for p in prompts]


def check_prompt_files(matrix: Matrix, base_dir: Path | None = None) -> None:
    """Read every prompts file the matrix's workloads name (MatrixError, one line, on the first bad one):
    what `bakeoff plan` checks without starting anything; preflight builds the requests themselves."""
    for workload in matrix.workloads:
        if workload.kind == "prompts":
            load_prompts(prompt_file(workload.prompts, base_dir))
        elif workload.kind == "structured":
            structured.load_schemas(structured.schema_file(workload.schemas, base_dir))
        elif workload.kind == "trace":
            trace_requests(workload, seed=0, base_dir=base_dir)


def build_requests(workload: Workload, *, seed: int, base_dir: Path | None = None) -> list[RequestSpec]:
    if workload.kind == "shared_prefix":
        return shared_prefix_requests(workload, seed=seed)
    if workload.kind == "random":
        return random_requests(workload, seed=seed)
    if workload.kind == "structured":
        return structured_requests(workload, seed=seed, base_dir=base_dir)
    if workload.kind == "trace":
        return trace_requests(workload, seed=seed, base_dir=base_dir)
    if workload.kind == "multi_turn":
        return multi_turn_requests(workload, seed=seed)
    return prompt_requests(workload, seed=seed, base_dir=base_dir)


def prompt_requests(workload: Workload, *, seed: int, base_dir: Path | None = None) -> list[RequestSpec]:
    """Every prompt at every output length, in a seeded shuffled order so that lengths interleave
    under concurrency (a sorted order would run all the long requests together at the end)."""
    prompts = load_prompts(prompt_file(workload.prompts, base_dir))
    if workload.limit_prompts:
        prompts = prompts[: workload.limit_prompts]
    specs = [RequestSpec(pid, text, n) for n in workload.output_lengths for pid, text in prompts]
    random.Random(seed).shuffle(specs)
    return specs


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(_WORDS, k=n))


def shared_prefix_requests(workload: Workload, *, seed: int) -> list[RequestSpec]:
    """`num_requests` requests in `groups` groups; each group's requests share a system prompt of
    shared_fraction x input_tokens words and differ in the rest. Groups take turns (round robin), so
    a cache must hold several prefixes at once to help."""
    rng = random.Random(f"{seed}/shared_prefix")
    prefix_len = max(1, round(workload.input_tokens * workload.shared_fraction))
    question_len = max(1, workload.input_tokens - prefix_len)
    # The group number first: two groups never share a prefix by chance.
    prefixes = [f"[{g}] " + _words(rng, prefix_len - 1) for g in range(workload.groups)]
    specs = []
    for i in range(workload.num_requests):
        g = i % workload.groups
        specs.append(
            RequestSpec(
                f"g{g}-q{i // workload.groups}", _words(rng, question_len), workload.output_tokens, system=prefixes[g]
            )
        )
    return specs


def random_requests(workload: Workload, *, seed: int) -> list[RequestSpec]:
    """Input and output lengths uniform in mean x [1 - range_ratio, 1 + range_ratio], seeded; every
    prompt is fresh random words, so no two share a prefix beyond the chat template."""
    rng = random.Random(f"{seed}/random")

    def length(mean: int) -> int:
        lo, hi = round(mean * (1 - workload.range_ratio)), round(mean * (1 + workload.range_ratio))
        return max(1, rng.randint(lo, hi))

    specs = []
    for i in range(workload.num_requests):
        n_in, n_out = length(workload.input_tokens), length(workload.output_tokens)
        specs.append(RequestSpec(f"rand{i:05d}-in{n_in}", _words(rng, n_in), n_out))
    return specs


def structured_requests(workload: Workload, *, seed: int, base_dir: Path | None = None) -> list[RequestSpec]:
    """Every prompt of every schema of the set once, in a seeded shuffled order (schemas of different
    difficulty interleave under concurrency); prompt_id is `<schema id>/<prompt id>`. The text is the
    prompt then the schema, the same for every response_format (the unconstrained twin is told the schema
    too, it is only not made to follow it)."""
    specs = []
    for s in structured.load_schemas(structured.schema_file(workload.schemas, base_dir)):
        rf = structured.response_format(workload.response_format, s.schema_id, s.schema)
        schema_text = json.dumps(s.schema, separators=(",", ":"))
        for pid, text in s.prompts:
            specs.append(
                RequestSpec(
                    f"{s.schema_id}/{pid}",
                    f"{text}\n{structured.INSTRUCTION}\n{schema_text}",
                    workload.output_tokens,
                    schema_id=s.schema_id,
                    schema=s.schema,
                    response_format=rf,
                )
            )
    random.Random(f"{seed}/structured").shuffle(specs)
    return specs


def trace_requests(workload: Workload, *, seed: int, base_dir: Path | None = None) -> list[RequestSpec]:
    """The trace's requests in its order, each due at its own (scaled) timestamp, cut at max_duration_s;
    prompts synthesised to the input lengths, hash blocks shared where hash_ids repeat. prompt_id says the
    request's line and lengths: `t00012-in96-out8`."""
    path = trace.trace_file(workload.trace, base_dir)
    block = workload.block_tokens or (trace.BUILTIN_BLOCK_TOKENS if path.parent == DATA_DIR else 512)
    requests = trace.load_trace(path, workload.trace_format, block)
    due = trace.schedule_ns(requests, workload.time_scale, workload.max_duration_s)
    return [
        RequestSpec(
            f"t{i:05d}-in{r.input_tokens}-out{r.output_tokens}",
            trace.prompt_text(r, words=_WORDS, block_tokens=block, seed=seed, index=i),
            r.output_tokens,
            at_ns=at,
        )
        for i, (r, at) in enumerate(zip(requests, due, strict=False))
    ]


def with_cancellations(specs: list[RequestSpec], workload: Workload, *, seed: int) -> list[RequestSpec]:
    """The cell's requests with workload.cancel_share of them (each drawn, seeded; each turn of a session)
    to be cancelled after their delay: cancel_after_ms, or drawn around it (exponential with that mean;
    uniform in 0 to twice it)."""
    if workload.cancel_share <= 0:
        return specs
    rng = random.Random(f"{seed}/cancel")
    mean_s = workload.cancel_after_ms / 1e3
    draw = {
        "fixed": lambda: mean_s,
        "exponential": lambda: rng.expovariate(1 / mean_s),
        "uniform": lambda: rng.uniform(0, 2 * mean_s),
    }[workload.cancel_delay]

    def maybe(spec: RequestSpec) -> RequestSpec:
        picked = rng.random() < workload.cancel_share
        delay = draw()  # drawn for every request, so the picks do not shift the delays of the others
        return dataclasses.replace(spec, cancel_after_ns=max(1, round(delay * 1e9))) if picked else spec

    # a multi_turn session is drawn turn by turn: a user may give up on any reply and go on talking
    return [dataclasses.replace(s, turns=tuple(maybe(t) for t in s.turns)) if s.turns else maybe(s) for s in specs]


def multi_turn_requests(workload: Workload, *, seed: int) -> list[RequestSpec]:
    """`sessions` session specs, each with its turns: a fresh user message of input_tokens words per turn
    (its first word the session's, so two sessions never share a prefix beyond the chat template), the
    turn count uniform in [min_turns, turns] (fixed: turns), the think time before each turn after the
    first fixed or exponential. One spec per session: the load shape schedules sessions."""
    rng = random.Random(f"{seed}/multi_turn")
    out = []
    for s in range(workload.sessions):
        n = rng.randint(workload.min_turns, workload.turns) if workload.min_turns is not None else workload.turns
        sid = f"s{s:04d}"
        turns = []
        for t in range(1, n + 1):
            think = 0.0
            if t > 1:
                mean = workload.think_time_s
                think = rng.expovariate(1 / mean) if workload.think_time == "exponential" and mean > 0 else mean
            text = f"[{sid} turn {t}] " + _words(rng, max(1, workload.input_tokens - 3))
            turns.append(
                RequestSpec(f"{sid}-t{t}", text, workload.output_tokens, session_id=sid, turn=t, think_s=think)
            )
        out.append(dataclasses.replace(turns[0], prompt_id=sid, turns=tuple(turns)))
    return out
