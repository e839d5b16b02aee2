"""The trace workload kind (tasks/trace.py): Mooncake JSONL and CSV traces, their schedule and prompts."""

from __future__ import annotations

import pytest
import yaml

from tasks.matrix import DATA_DIR, MatrixError, Workload, load_matrix
from tasks.plan import plan
from tasks.trace import generate_mooncake, load_trace, schedule_ns
from tasks.workloads import build_requests


def test_the_shipped_trace_is_the_generators():
    assert (DATA_DIR / "trace_small.jsonl").read_text() == generate_mooncake()


def test_mooncake_prompts_share_the_blocks_their_hash_ids_share():
    specs = build_requests(Workload(id="t", kind="trace"), seed=0)
    trace = load_trace(DATA_DIR / "trace_small.jsonl", block_tokens=16)
    assert len(specs) == len(trace) == 24
    assert [s.max_tokens for s in specs] == [r.output_tokens for r in trace]
    assert [len(s.text.split()) for s in specs] == [r.input_tokens for r in trace]  # one word a token
    assert [s.at_ns for s in specs] == [round(r.timestamp_ms * 1e6) for r in trace]
    # requests 0 and 2 share blocks 0 and 1 (32 words), then differ; request 1 shares nothing with 0
    w0, w1, w2 = (specs[i].text.split() for i in range(3))
    assert trace[0].hash_ids[:2] == trace[2].hash_ids[:2] == (0, 1)
    assert w2[:24] == w0 and w2[24:32] != [] and w1[0] != w0[0]
    assert build_requests(Workload(id="t", kind="trace"), seed=0) == specs


def test_time_scale_and_duration_cap():
    trace = load_trace(DATA_DIR / "trace_small.jsonl", block_tokens=16)
    assert schedule_ns(trace, 0.5, None)[2] == round(489 * 0.5 * 1e6)
    capped = build_requests(Workload(id="t", kind="trace", time_scale=0.5, max_duration_s=1.0), seed=0)
    assert [s.at_ns for s in capped] == [
        0,
        166_000_000,
        244_500_000,
        300_000_000,
        437_000_000,
        448_000_000,
        705_500_000,
        955_500_000,
    ]


def test_a_csv_trace(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("timestamp_ms,input_tokens,output_tokens\n1000,12,4\n1250.5,30,8\n")
    specs = build_requests(Workload(id="t", kind="trace", trace=str(path)), seed=1)
    assert [(s.at_ns, len(s.text.split()), s.max_tokens) for s in specs] == [(0, 12, 4), (250_500_000, 30, 8)]
    assert specs[0].text.split()[:5] != specs[1].text.split()[:5]  # no hash_ids: fresh words


@pytest.mark.parametrize(
    "name, text, expected",
    [
        (
            "t.csv",
            "ts,in,out\n1,2,3\n",
            "line 1: a trace CSV starts with the header timestamp_ms,input_tokens,output_tokens",
        ),
        ("t.csv", "timestamp_ms,input_tokens,output_tokens\n1,2\n", "line 2: 3 fields expected"),
        ("t.csv", "timestamp_ms,input_tokens,output_tokens\n5,2,3\n1,2,3\n", "goes back in time"),
        (
            "t.jsonl",
            '{"timestamp": 0, "input_length": 40, "output_length": 3, "hash_ids": [1, 2]}\n',
            "2 hash_ids for input_length 40 in blocks of block_tokens 512",
        ),
        (
            "t.jsonl",
            '{"timestamp": 0, "input_length": 0, "output_length": 3}\n',
            "line 1: input_length must be a whole number >= 1",
        ),
        ("t.jsonl", "{nope\n", "line 1: not JSON"),
        ("t.jsonl", "\n", "the trace has no requests"),
    ],
)
def test_a_bad_trace_is_one_line_naming_the_line(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MatrixError) as err:
        load_trace(path, block_tokens=512 if name.endswith("jsonl") else 16)
    assert expected in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_trace_workload_is_one_cell_per_instance_and_repeat_whatever_the_load_levels(tmp_path):
    data = {
        "name": "w",
        "engines": {"ext": {"kind": "external", "version": "1", "url": "http://127.0.0.1:9", "launcher": "none"}},
        "models": {"m": {"path": "unused"}},
        "deployments": [{"id": "ext", "instances": [{"engine": "ext", "model": "m"}]}],
        "workloads": [
            {"id": "t", "kind": "trace", "ignore_eos": False},
            {"id": "r", "kind": "random", "ignore_eos": False},
        ],
        "load": {"concurrency": [1, 2], "rates": [3]},
        "repeats": 2,
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    matrix, _ = load_matrix(path)
    (group,) = plan(matrix)
    trace_cells = [c.cell_id for c in group.cells if c.workload_id == "t"]
    assert trace_cells == ["ext-0.t.trace.r0", "ext-0.t.trace.r1"]
    assert len([c for c in group.cells if c.workload_id == "r"]) == 6
