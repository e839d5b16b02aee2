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
