"""Workloads: the study's prompts, shared-prefix groups and seeded random lengths, as request specs."""

from __future__ import annotations

import asyncio
import statistics

import pytest
import yaml

from tasks.loadgen import Target, run_closed_loop
from tasks.matrix import MatrixError, Workload, load_matrix
from tasks.workloads import build_requests
from tests.mock_faulty_server import MockFaultyServer


def words(text: str) -> int:
    return len(text.split())


def test_study_default_is_40_prompts_by_4_lengths():
    specs = build_requests(Workload(id="study"), seed=0)
    assert len(specs) == 160
    assert sorted({s.max_tokens for s in specs}) == [32, 64, 128, 256]
    assert all(s.system is None for s in specs)


def test_shared_prefix_groups_share_one_long_system_prompt():
    w = Workload(
        id="sp",
        kind="shared_prefix",
        num_requests=10,
        groups=3,
        input_tokens=100,
        shared_fraction=0.8,
        output_tokens=16,
    )
    specs = build_requests(w, seed=1)
    assert len(specs) == 10
    # Round robin over the groups; each group's requests carry the same 80-word system prompt.
    assert [s.prompt_id.split("-")[0] for s in specs] == ["g0", "g1", "g2"] * 3 + ["g0"]
    by_group = {}
    for s in specs:
        by_group.setdefault(s.prompt_id.split("-")[0], set()).add(s.system)
    assert all(len(systems) == 1 for systems in by_group.values())
    prefixes = [next(iter(v)) for v in by_group.values()]
    assert len(set(prefixes)) == 3 and all(words(p) == 80 for p in prefixes)
    assert len({p.split()[0] for p in prefixes}) == 3  # they differ from the first word on
    assert all(words(s.text) == 20 and s.max_tokens == 16 for s in specs)
    assert len({s.text for s in specs}) == 10  # the questions differ
    assert len({s.prompt_id for s in specs}) == 10


def test_random_lengths_are_drawn_in_range_and_seeded():
    w = Workload(id="r", kind="random", num_requests=2000, input_tokens=100, output_tokens=40, range_ratio=0.5)
    specs = build_requests(w, seed=3)
    ins, outs = [words(s.text) for s in specs], [s.max_tokens for s in specs]
    assert min(ins) >= 50 and max(ins) <= 150 and min(outs) >= 20 and max(outs) <= 60
    assert statistics.fmean(ins) == pytest.approx(100, rel=0.03)
    assert statistics.fmean(outs) == pytest.approx(40, rel=0.03)
    assert len(set(ins)) > 50  # drawn, not fixed
    assert build_requests(w, seed=3) == specs
    assert build_requests(w, seed=4) != specs


def test_random_without_range_is_exact():
    w = Workload(id="r", kind="random", num_requests=5, input_tokens=30, output_tokens=7)
    assert {(words(s.text), s.max_tokens) for s in build_requests(w, seed=0)} == {(30, 7)}


@pytest.mark.parametrize(
    "workload, expected",
    [
        (
            {"kind": "random", "groups": 2},
            "workloads.0: groups: only used by kind shared_prefix, this workload is kind random",
        ),
        (
            {"kind": "prompts", "num_requests": 5},
            "workloads.0: num_requests: only used by kind shared_prefix or random, this workload is kind prompts",
        ),
        ({"kind": "shared_prefix", "output_lengths": [4]}, "workloads.0: output_lengths: only used by kind prompts"),
        ({"kind": "shared_prefix", "shared_fraction": 1}, "workloads.0.shared_fraction: Input should be less than 1"),
        (
            {"kind": "random", "range_ratio": -0.1},
            "workloads.0.range_ratio: Input should be greater than or equal to 0",
        ),
        ({"kind": "zipf"}, "workloads.0.kind: 'zipf' is not allowed"),
    ],
)
def test_bad_workload_is_one_line_naming_the_field(tmp_path, workload, expected):
    data = {
        "name": "w",
        "engines": {
            "ext": {
                "kind": "external",
                "version": "1",
                "url": "http://127.0.0.1:9",
                "launcher": "none",
                "accepts": ["ignore_eos"],
            }
        },
        "models": {"m": {"path": "unused"}},
        "deployments": [{"id": "ext", "instances": [{"engine": "ext", "model": "m"}]}],
        "workloads": [{"id": "w", **workload}],
    }
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_the_system_prompt_is_sent_as_a_system_message():
    w = Workload(id="sp", kind="shared_prefix", num_requests=2, groups=1, input_tokens=10, output_tokens=3)
    specs = build_requests(w, seed=0)
    with MockFaultyServer() as server:
        target = Target(server.url, "mock-ok", "mock", "m", "dep", "dep-0", {})
        result = asyncio.run(run_closed_loop(target, specs, run_id="r", cell_id="c", concurrency=1))
        bodies = list(server.bodies)
    assert [r.status for r in result.records] == ["ok", "ok"]
    assert [b["messages"][0] for b in bodies] == [{"role": "system", "content": specs[0].system}] * 2
    assert [b["messages"][1]["content"] for b in bodies] == [s.text for s in specs]
    # Requested vs produced: max_tokens is what was asked, completion_tokens what the server said.
    assert [(r.max_tokens, r.completion_tokens) for r in result.records] == [(3, 3), (3, 3)]


# ---------------------------------------------------------------- structured (tasks/structured.py)


def test_the_builtin_schema_set_rises_in_difficulty_and_every_schema_is_valid():
    from tasks.structured import load_schemas, schema_file

    schemas = load_schemas(schema_file("builtin"))
    assert [s.schema_id for s in schemas] == ["flat", "nested_enum", "array_bounds"]
    assert [s.difficulty for s in schemas] == [1, 2, 3]
    specs = build_requests(Workload(id="j", kind="structured"), seed=0)
    assert len(specs) == 6 and len({s.prompt_id for s in specs}) == 6
    assert {s.response_format["type"] for s in specs} == {"json_schema"}
    # the schema is in the text, so an unconstrained request is told the same thing
    assert all(s.schema_id in s.prompt_id and '"type":"object"' in s.text for s in specs)
    assert build_requests(Workload(id="j", kind="structured"), seed=0) == specs
    unconstrained = build_requests(Workload(id="j", kind="structured", response_format="none"), seed=0)
    assert [s.text for s in unconstrained] == [s.text for s in specs]
    assert all(s.response_format is None and s.schema is not None for s in unconstrained)


def test_a_structured_workload_does_not_ignore_eos_and_its_twin_is_added(tmp_path):
    w = Workload(id="j", kind="structured")
    assert w.ignore_eos is False  # a constrained reply ends when its JSON does
    data = {
        "name": "w",
        "engines": {"ext": {"kind": "external", "version": "1", "url": "http://127.0.0.1:9", "launcher": "none"}},
        "models": {"m": {"path": "unused"}},
        "deployments": [{"id": "ext", "instances": [{"engine": "ext", "model": "m"}]}],
        "workloads": [{"id": "j", "kind": "structured", "unconstrained_twin": True}, {"id": "r", "kind": "random"}],
        "load": {"concurrency": [1]},
    }
    data["workloads"][1]["ignore_eos"] = False
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    matrix, _ = load_matrix(path)
    assert [(w.id, w.response_format) for w in matrix.workloads[:2]] == [
        ("j", "json_schema"),
        ("j-unconstrained", "none"),
    ]
    from tasks.plan import plan

    (group,) = plan(matrix)
    assert [c.workload_id for c in group.cells] == ["j", "j-unconstrained", "r"]


@pytest.mark.parametrize(
    "workload, expected",
    [
        ({"kind": "structured", "ignore_eos": True}, "ignore_eos: a structured reply ends when its JSON does"),
        ({"kind": "structured", "schemas": "nope"}, "'nope' is neither a built-in schema set"),
        ({"kind": "prompts", "schemas": "builtin"}, "schemas: only used by kind structured"),
        (
            {"kind": "structured", "response_format": "none", "unconstrained_twin": True},
            "already unconstrained",
        ),
    ],
)
def test_bad_structured_workload_is_one_line(tmp_path, workload, expected):
    from tasks.workloads import check_prompt_files

    data = {
        "name": "w",
        "engines": {"ext": {"kind": "external", "version": "1", "url": "http://127.0.0.1:9", "launcher": "none"}},
        "models": {"m": {"path": "unused"}},
        "deployments": [{"id": "ext", "instances": [{"engine": "ext", "model": "m"}]}],
        "workloads": [{"id": "w", "ignore_eos": False, **workload}],
    }
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MatrixError) as err:
        matrix, _ = load_matrix(path)
        check_prompt_files(matrix, tmp_path)
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_bad_schema_file_is_one_line_naming_the_entry(tmp_path):
    from tasks.structured import load_schemas

    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump({"schemas": [{"id": "x", "schema": {"type": "objekt"}, "prompts": [{"id": 1, "text": "t"}]}]})
    )
    with pytest.raises(MatrixError, match=r"schemas\.0\.schema: not a valid JSON schema"):
        load_schemas(path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"name": "Ava", "age": 30}', (True, True, None)),
        ('{"name": "Ava"}', (True, False, "(top level): 'age' is a required property")),
        ('{"name": "Ava", "age": -1}', (True, False, "age: -1 is less than the minimum of 0")),
        ('{"name": "Ava", "age": 3', (False, False, "not JSON: Expecting ',' delimiter: line 1 column 25 (char 24)")),
    ],
)
def test_a_reply_is_judged_with_jsonschema(text, expected):
    from tasks.structured import judge_text

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name", "age"],
    }
    assert judge_text(text, schema) == expected


def test_the_load_generator_sends_response_format_and_keeps_only_structured_replies():
    specs = build_requests(Workload(id="j", kind="structured"), seed=0)[:2]
    plain = build_requests(Workload(id="r", kind="random", num_requests=1, input_tokens=3, output_tokens=3), seed=0)
    with MockFaultyServer() as server:
        target = Target(server.url, "mock-ok", "mock", "m", "dep", "dep-0", {})
        result = asyncio.run(run_closed_loop(target, [*specs, *plain], run_id="r", cell_id="c", concurrency=1))
        bodies = list(server.bodies)
    assert [b.get("response_format") for b in bodies] == [s.response_format for s in specs] + [None]
    # the reply text is kept for the two structured requests only (the judge reads it after the cell)
    assert sorted(result.texts) == ["c#00000", "c#00001"] and all(result.texts.values())


# ---------------------------------------------------------------- cancellation (any kind)


@pytest.mark.parametrize("delay", ["fixed", "exponential", "uniform"])
def test_a_share_of_requests_is_picked_to_cancel_after_a_fixed_or_drawn_delay(delay):
    from tasks.workloads import with_cancellations

    w = Workload(
        id="r", kind="random", num_requests=2000, input_tokens=3, output_tokens=3, cancel_share=0.3, cancel_delay=delay
    )
    specs = with_cancellations(build_requests(w, seed=0), w, seed=0)
    delays = [s.cancel_after_ns / 1e9 for s in specs if s.cancel_after_ns is not None]
    assert len(delays) / len(specs) == pytest.approx(0.3, abs=0.03)
    assert statistics.fmean(delays) == pytest.approx(1.0, rel=0.1)  # cancel_after_ms 1000: the mean
    if delay == "fixed":
        assert set(delays) == {1.0}
    elif delay == "uniform":
        assert min(delays) > 0 and max(delays) <= 2.0
    assert with_cancellations(build_requests(w, seed=0), w, seed=0) == specs  # seeded
    assert with_cancellations(specs, w.without_cancellations(), seed=0) is specs


def test_a_multi_turn_session_is_picked_to_cancel_turn_by_turn():
    from tasks.workloads import with_cancellations

    w = Workload(
        id="chat", kind="multi_turn", sessions=400, turns=5, input_tokens=3, output_tokens=3, cancel_share=0.25
    )
    sessions = with_cancellations(build_requests(w, seed=0), w, seed=0)
    assert len(sessions) == 400 and all(s.cancel_after_ns is None for s in sessions), "the session is not a request"
    turns = [t for s in sessions for t in s.turns]
    picked = [t for t in turns if t.cancel_after_ns is not None]
    assert len(picked) / len(turns) == pytest.approx(0.25, abs=0.03)
    assert {t.turn for t in picked} == {1, 2, 3, 4, 5}, "any turn may be given up on"


def test_cancel_twin_adds_the_workload_without_cancellations(tmp_path):
    data = {
        "name": "w",
        "engines": {"ext": {"kind": "external", "version": "1", "url": "http://127.0.0.1:9", "launcher": "none"}},
        "models": {"m": {"path": "unused"}},
        "deployments": [{"id": "ext", "instances": [{"engine": "ext", "model": "m"}]}],
        "workloads": [{"id": "r", "kind": "random", "ignore_eos": False, "cancel_share": 0.2, "cancel_twin": True}],
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    matrix, _ = load_matrix(path)
    assert [(w.id, w.cancel_share) for w in matrix.workloads] == [("r", 0.2), ("r-nocancel", 0.0)]
    data["workloads"][0]["cancel_share"] = 0
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MatrixError, match="cancel_twin: this workload cancels nothing"):
        load_matrix(path)


# ---------------------------------------------------------------- multi_turn


def test_multi_turn_sessions_send_the_conversation_so_far_each_turn():
    w = Workload(id="chat", kind="multi_turn", sessions=2, turns=3, input_tokens=5, output_tokens=3, think_time_s=0.01)
    specs = build_requests(w, seed=0)
    assert [s.prompt_id for s in specs] == ["s0000", "s0001"] and all(len(s.turns) == 3 for s in specs)
    with MockFaultyServer() as server:
        target = Target(server.url, "mock-ok", "mock", "m", "dep", "dep-0", {})
        result = asyncio.run(run_closed_loop(target, specs, run_id="r", cell_id="c", concurrency=2))
        bodies = list(server.bodies)
    recs = result.records
    assert len(recs) == 6 and [r.status for r in recs] == ["ok"] * 6
    assert sorted((r.session_id, r.turn) for r in recs) == [(s, t) for s in ("s0000", "s0001") for t in (1, 2, 3)]
    # each turn: the user messages and replies so far, then the new user message (2 k + 1 messages)
    assert sorted(len(b["messages"]) for b in bodies) == [1, 1, 3, 3, 5, 5]
    third = next(b for b in bodies if len(b["messages"]) == 5)
    assert [m["role"] for m in third["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert all(m["content"] for m in third["messages"])  # the replies as the server streamed them
    # a later turn is due when its think time ends, after the reply before it
    by = {(r.session_id, r.turn): r for r in recs}
    assert all(by[s, t].scheduled_at >= by[s, t - 1].done_at + 10_000_000 for s in ("s0000", "s0001") for t in (2, 3))


def test_multi_turn_turns_are_drawn_between_min_turns_and_turns():
    w = Workload(id="chat", kind="multi_turn", sessions=200, turns=6, min_turns=2, think_time="exponential")
    counts = [len(s.turns) for s in build_requests(w, seed=1)]
    assert min(counts) == 2 and max(counts) == 6
    thinks = [t.think_s for s in build_requests(w, seed=1) for t in s.turns[1:]]
    assert statistics.fmean(thinks) == pytest.approx(1.0, rel=0.15) and len(set(thinks)) > 100
