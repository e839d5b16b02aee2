"""The workload kinds beyond prompts / shared_prefix / random against the real CPU engine (llama.cpp's
llama-server serving SmolLM2), through bench.run_cell, then into a real warehouse: small cells, short
outputs. Each test fails if its feature is taken away (the request field not sent, the column not
recorded, the schedule not kept)."""

from __future__ import annotations

import pytest
import yaml

from tasks import deploy
from tasks.bench import run_cell
from tasks.matrix import load_matrix
from tasks.plan import plan
from tests import builders
from warehouse import store

pytestmark = pytest.mark.engine

# A small schema set of our own (the file option; the built-in set is tests/test_workloads.py's): a
# flat object, an enum, an array with length bounds; one prompt each, short replies.
SCHEMAS = {
    "schemas": [
        {
            "id": "flat",
            "difficulty": 1,
            "schema": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
                "required": ["name", "age"],
                "additionalProperties": False,
            },
            "prompts": [{"id": "person", "text": "Invent a person: name and age."}],
        },
        {
            "id": "enum",
            "difficulty": 2,
            "schema": {
                "type": "object",
                "properties": {"status": {"enum": ["pending", "shipped"]}, "qty": {"type": "integer"}},
                "required": ["status", "qty"],
                "additionalProperties": False,
            },
            "prompts": [{"id": "order", "text": "Describe a shipped order of three items."}],
        },
        {
            "id": "array",
            "difficulty": 3,
            "schema": {
                "type": "object",
                "properties": {
                    "tags": {
                        "type": "array",
                        "minItems": 2,
                        "maxItems": 3,
                        "items": {"type": "string", "maxLength": 10},
                    }
                },
                "required": ["tags"],
                "additionalProperties": False,
            },
            "prompts": [{"id": "tags", "text": "Give two or three tags for a photo of a cat."}],
        },
    ]
}
WORKLOADS = [
    # two chat sessions of three turns, 50 ms of think time
    {
        "id": "chat",
        "kind": "multi_turn",
        "sessions": 2,
        "turns": 3,
        "input_tokens": 12,
        "output_tokens": 6,
        "think_time_s": 0.05,
    },
    # the same chat with half its turns cancelled 300 ms after their send (a seeded draw: turns 1 and 3 of
    # each session), replies of 48 tokens (seconds), and its no-cancel twin
    {
        "id": "chat-cancel",
        "kind": "multi_turn",
        "sessions": 2,
        "turns": 3,
        "input_tokens": 12,
        "output_tokens": 48,
        "think_time_s": 0.05,
        "cancel_share": 0.5,
        "cancel_after_ms": 300,
        "cancel_twin": True,
    },
    # half the requests (a seeded draw: 3 of these 4) cancelled 300 ms after their send; replies of 24 tokens take seconds
    {
        "id": "cancel",
        "kind": "random",
        "num_requests": 4,
        "input_tokens": 12,
        "output_tokens": 24,
        "cancel_share": 0.5,
        "cancel_after_ms": 300,
    },
    # the shipped Mooncake-format trace (24 requests over 6 s, hash blocks of 16 tokens), its first second
    {"id": "trace", "kind": "trace", "max_duration_s": 1.0},
    {"id": "json", "kind": "structured", "schemas": "schemas.yaml", "output_tokens": 64, "unconstrained_twin": True},
    {
        "id": "jsonobj",
        "kind": "structured",
        "schemas": "schemas.yaml",
        "response_format": "json_object",
        "output_tokens": 64,
    },
]


# one llama-server of 2 slots of 1024 tokens
TWO_SLOTS = [{"id": "cpu", "instances": [{"engine": "cpu", "model": "smollm2", "parallel": 2, "context_length": 1024}]}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, llama_server, smollm2):
    """One llama-server (2 slots of 1024 tokens) for the module."""
    tmp = tmp_path_factory.mktemp("workloads")
    matrix = builders.cpu_engine_matrix(
        "workloads-engine",
        llama_server,
        smollm2,
        deployments=TWO_SLOTS,
        workloads=WORKLOADS,
        load={"concurrency": [2], "warmup_requests": 1, "request_timeout_s": 300},
    )
    (tmp / "schemas.yaml").write_text(yaml.safe_dump(SCHEMAS))
    path = tmp / "matrix.yaml"
    path.write_text(yaml.safe_dump(matrix))
    matrix, _ = load_matrix(path)
    (group,) = plan(matrix)
    (planned,) = group.instances
    handle = deploy.launch_instance(matrix, planned, start_order=0, run_id="run-1", run_dir=tmp / "run", base_dir=tmp)
    try:
        yield matrix, group, handle, tmp
    finally:
        handle.stop()


def run(engine, cell_id: str):
    matrix, group, handle, tmp = engine
    cell = next(c for c in group.cells if c.cell_id == cell_id)
    workload = next(w for w in matrix.workloads if w.id == cell.workload_id)
    return run_cell(
        matrix, cell, handle.target, handle.request_extras(workload), run_id="run-1", base_dir=tmp, label=cell_id
    )


def _ttft_ms(records) -> list[float]:
    return sorted((r.first_token_at - r.sent_at) / 1e6 for r in records if r.status == "ok")


@pytest.fixture(scope="module")
def structured_cells(engine):
    """The json_schema cell and its unconstrained twin, measured one after the other on the same instance."""
    return run(engine, "cpu-0.json.c2.r0"), run(engine, "cpu-0.json-unconstrained.c2.r0")


def test_structured_output_is_constrained_and_judged(structured_cells):
    constrained, twin = structured_cells
    recs = constrained.records
    assert [r.status for r in recs] == ["ok"] * 3
    assert {r.schema_id for r in recs} == {"flat", "enum", "array"}
    assert {r.response_format for r in recs} == {"json_schema"}
    # llama-server turns the schema into a grammar: every reply parses and validates (jsonschema)
    assert all(r.output_parsed and r.output_valid and r.validation_error is None for r in recs), [
        (r.prompt_id, r.validation_error) for r in recs
    ]
    assert all(r.finish_reason == "stop" and r.completion_tokens < r.max_tokens for r in recs)
    # The twin: the same prompts (the schema is in the text) without response_format. SmolLM2 then
    # echoes the schema or rambles: its replies are judged, and most are not valid.
    trecs = twin.records
    assert sorted(r.prompt_id for r in trecs) == sorted(r.prompt_id for r in recs)
    assert {r.response_format for r in trecs} == {None} and all(r.schema_id for r in trecs)
    assert all(r.output_parsed is not None and r.output_valid is not None for r in trecs)
    assert sum(r.output_valid for r in trecs) < 3
    assert all(r.validation_error for r in trecs if not r.output_valid)


def test_structured_cells_land_in_the_warehouse_with_their_validity(structured_cells, tmp_path):
    constrained, twin = structured_cells
    records, rows = [*constrained.records, *twin.records], [constrained.row, twin.row]
    with store.opened(tmp_path / "wh.duckdb") as con:
        store.load_run(con, builders.stage(tmp_path, records, rows))
        got = dict(con.execute("SELECT workload_id, valid_share FROM v_cells").fetchall())
        per_request = con.execute(
            "SELECT count(*) FILTER (output_valid), count(*) FILTER (schema_id IS NOT NULL) FROM requests"
        ).fetchone()
    assert got["json"] == 1.0
    assert got["json-unconstrained"] == sum(r.output_valid for r in twin.records) / 3
    assert per_request == (3 + sum(r.output_valid for r in twin.records), 6)
    print(
        f"\nTTFT ms constrained {_ttft_ms(constrained.records)} vs unconstrained {_ttft_ms(twin.records)}; "
        f"twin valid {got['json-unconstrained']:.2f}"
    )


def test_json_object_mode_parses_and_is_judged_against_the_prompted_schema(engine):
    out = run(engine, "cpu-0.jsonobj.c2.r0")
    recs = out.records
    assert [r.status for r in recs] == ["ok"] * 3
    assert {r.response_format for r in recs} == {"json_object"}
    # a JSON-object grammar: the reply is JSON (unless max_tokens cut it short); the schema is only asked for
    assert all(r.output_parsed for r in recs if r.finish_reason == "stop")
    assert any(r.output_parsed for r in recs)
    assert all(r.output_valid is not None for r in recs)


def test_a_trace_replays_on_its_own_timestamps_with_its_prefix_reuse(engine):
    from tasks.loadgen import KEPT_UP_P99_MS
    from tasks.matrix import DATA_DIR
    from tasks.trace import load_trace

    out = run(engine, "cpu-0.trace.trace.r0")
    trace = [r for r in load_trace(DATA_DIR / "trace_small.jsonl", block_tokens=16) if r.timestamp_ms < 1000]
    recs = out.records
    assert len(recs) == len(trace) == 6
    assert [r.status for r in recs] == ["ok"] * 6
    # due at the trace's own timestamps (ms -> ns from the cell start), sent on time: an open loop
    assert [r.scheduled_at for r in recs] == [round(t.timestamp_ms * 1e6) for t in trace]
    assert (out.row.load_kind, out.row.arrival) == ("open", "trace")
    lateness_ms = sorted((r.sent_at - r.scheduled_at) / 1e6 for r in recs)
    print(f"\ntrace send lateness ms {lateness_ms}; row p99 {out.row.send_lateness_p99_ms}")
    # the send lateness check applies: most sends within its bound, a late one only where the event loop
    # itself stalled (a busy machine), and the row says whether the replay kept up
    row = out.row
    assert lateness_ms[len(lateness_ms) // 2] <= KEPT_UP_P99_MS, lateness_ms
    assert lateness_ms[-1] <= row.loop_lag_max_ms + KEPT_UP_P99_MS, (lateness_ms, row.loop_lag_max_ms)
    assert row.client_kept_up == (row.send_lateness_p99_ms <= KEPT_UP_P99_MS and row.loop_lag_p99_ms <= KEPT_UP_P99_MS)
    # lengths as the trace asks (ignore_eos: exactly output_length tokens; prompts of input_length words)
    assert [r.completion_tokens for r in recs] == [t.output_tokens for t in trace]
    assert [r.max_tokens for r in recs] == [t.output_tokens for t in trace]
    # prefix reuse: a request whose first hash block an earlier request had reads more of its prompt from
    # llama-server's cache than one whose first block is new (the chat template alone is cached for those)
    seen, shared, fresh = set(), [], []
    for t, r in zip(trace, recs, strict=True):
        (shared if t.hash_ids[0] in seen else fresh).append(r.cached_prompt_tokens)
        seen.update(t.hash_ids)
    print(f"cached prompt tokens: shared first block {shared}, fresh {fresh}")
    assert max(shared) >= max(fresh) + 16, (shared, fresh)


def _tokens_predicted(base_url: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("llamacpp:tokens_predicted_total"):
                return float(line.split()[-1])
    raise AssertionError("llama-server /metrics has no llamacpp:tokens_predicted_total")


def test_cancelled_requests_close_their_stream_and_are_recorded(engine):
    import time

    _matrix, _group, handle, _tmp = engine
    before = _tokens_predicted(handle.target.base_url)
    out = run(engine, "cpu-0.cancel.c2.r0")
    time.sleep(1.0)  # the server notices a closed connection at its next token
    generated = _tokens_predicted(handle.target.base_url) - before
    recs = out.records
    picked = [r for r in recs if r.cancel_after_ns is not None]
    assert 0 < len(picked) < 4 and all(r.cancel_after_ns == 300_000_000 for r in picked)  # seeded: 3 of 4
    assert {r.status for r in recs if r.cancel_after_ns is None} == {"ok"}
    for r in picked:
        assert (r.status, r.error_class) == ("cancelled", "client_cancel")
        assert r.cancelled_at is not None and r.done_at == r.cancelled_at
        assert 300 <= (r.cancelled_at - r.sent_at) / 1e6 < 400  # closed at its delay (the loop's wake-up late)
        assert len(r.chunk_times) < 24
    # the stream was really closed: llama-server stopped generating the cancelled replies (24 tokens each
    # had they run on; the warm-up's 24 are counted too)
    ok_tokens = sum(r.completion_tokens for r in recs if r.status == "ok")
    seen = sum(len(r.chunk_times) for r in picked)
    print(
        f"\ntokens generated {generated:g}: ok {ok_tokens}, warm-up 24, cancelled replies streamed {seen} before the cancel"
    )
    assert generated < ok_tokens + 24 + len(picked) * 24 - 16, generated


def test_multi_turn_sessions_read_more_of_their_prompt_from_the_cache_each_turn(engine):
    out = run(engine, "cpu-0.chat.c2.r0")
    recs = out.records
    assert len(recs) == 6 and [r.status for r in recs] == ["ok"] * 6
    for sid in ("s0000", "s0001"):
        turns = sorted((r for r in recs if r.session_id == sid), key=lambda r: r.turn)
        assert [r.turn for r in turns] == [1, 2, 3]
        prompt = [r.prompt_tokens for r in turns]
        cached = [r.cached_prompt_tokens for r in turns]
        print(f"\n{sid}: prompt tokens by turn {prompt}, cached {cached}")
        assert prompt[0] < prompt[1] < prompt[2]  # the whole conversation each turn
        # llama-server keeps the session's conversation in its slot: each turn reads more of it from the cache
        assert cached[0] < cached[1] < cached[2], cached
        assert cached[2] >= prompt[1]  # the third turn reads (about) the whole second turn's prompt


def test_a_cancelled_turn_keeps_what_streamed_and_the_session_goes_on(engine):
    out = run(engine, "cpu-0.chat-cancel.c2.r0")
    twin = run(engine, "cpu-0.chat-cancel-nocancel.c2.r0")
    recs = out.records
    assert len(recs) == 6 and all(r.sent_at is not None for r in recs), "every turn is sent, cancelled or not"
    cancelled = [r for r in recs if r.cancel_after_ns is not None]
    assert sorted((r.session_id, r.turn) for r in cancelled) == [("s0000", 1), ("s0000", 3), ("s0001", 1), ("s0001", 3)]
    assert all((r.status, r.error_class) == ("cancelled", "client_cancel") for r in cancelled)
    whole = {(r.session_id, r.turn): r.prompt_tokens for r in twin.records}
    for sid in ("s0000", "s0001"):
        cut, (turn2,) = (
            next(r for r in cancelled if (r.session_id, r.turn) == (sid, 1)),
            [r for r in recs if (r.session_id, r.turn) == (sid, 2)],
        )
        assert turn2.status == "ok", "the session went on after its cancelled turn"
        shorter = whole[(sid, 2)] - turn2.prompt_tokens
        print(
            f"\n{sid}: turn 1 cut after {len(cut.chunk_times)} of 48 tokens; turn 2's prompt {shorter} tokens shorter"
        )
        # turn 2's conversation holds what streamed of turn 1 (one token a chunk): 48 - streamed tokens shorter
        # than after turn 1's whole reply (re-tokenizing the cut text may merge a token or two)
        assert abs(shorter - (48 - len(cut.chunk_times))) <= 3


def test_every_kind_lands_in_the_warehouse_and_in_its_report_section(tmp_path, llama_server, smollm2):
    """A night of every workload kind on the real llama-server (deployed by the night, measured, staged,
    gated, loaded, reported): each kind's columns in the warehouse, and its table in the report."""
    from tests.test_guards_engine import night
    from tests.test_report import md_rows, section

    (tmp_path / "schemas.yaml").write_text(yaml.safe_dump(SCHEMAS))
    by_id = {w["id"]: w for w in WORKLOADS}
    matrix = builders.cpu_engine_matrix(
        "every-kind",
        llama_server,
        smollm2,
        deployments=TWO_SLOTS,
        workloads=[
            {**by_id["chat"], "turns": 2},
            by_id["cancel"] | {"cancel_twin": True},
            by_id["trace"],
            {**by_id["json"], "unconstrained_twin": False},
        ],
        load={"concurrency": [2], "warmup_requests": 1, "request_timeout_s": 300},
    )
    md, cells, con = night(tmp_path, matrix)
    assert {c["workload_id"] for c in cells.values()} == {"chat", "cancel", "cancel-nocancel", "trace", "json"}

    def one(sql: str):
        return con.execute(sql).fetchall()

    # multi_turn: a session id and turn per request, the server's cached tokens by turn
    turns = one(
        "SELECT session_id, turn, status, cached_prompt_tokens FROM requests JOIN cells USING (run_id, cell_id) WHERE workload_id = 'chat'"
    )
    assert sorted((s, t) for s, t, _, _ in turns) == [("s0000", 1), ("s0000", 2), ("s0001", 1), ("s0001", 2)]
    assert {st for _, _, st, _ in turns} == {"ok"} and all(c is not None for *_, c in turns)
    # cancellation: the picked requests cancelled by the client with the time of the cancel
    cancels = one(
        "SELECT status, error_class, cancelled_at - sent_at FROM requests JOIN cells USING (run_id, cell_id) "
        "WHERE workload_id = 'cancel' AND cancel_after_ns IS NOT NULL"
    )
    assert cancels and all(s == "cancelled" and e == "client_cancel" and d >= 300e6 for s, e, d in cancels)
    # trace: the cell is an open loop on the trace's timestamps
    assert one("SELECT load_kind, arrival FROM cells WHERE workload_id = 'trace'") == [("open", "trace")]
    # structured: every ok reply judged
    judged = one(
        "SELECT output_parsed, output_valid FROM requests JOIN cells USING (run_id, cell_id) WHERE workload_id = 'json' AND status = 'ok'"
    )
    assert judged and all(p is not None and v is not None for p, v in judged)

    workloads = section(md, "## Workloads", "\n## ")
    by_turn = [r for r in md_rows(section(workloads, "### Multi-turn sessions", "\n### ")) if r[1] == "chat"]
    assert [r[3] for r in by_turn] == ["1", "2"]
    trace_rows = md_rows(section(workloads, "### Trace replay", "\n### "))
    assert any(r[1] == "trace" for r in trace_rows)
    cancel = section(workloads, "### Cancellation", "\n### ")
    assert f"with {len(cancels)} of 4 requests cancelled" in cancel  # against the no-cancel twin
    structured = md_rows(section(workloads, "### Structured output", None))
    assert any(r[1] == "json" for r in structured)
