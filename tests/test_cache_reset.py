"""The prefix cache emptied before each cell (tasks/engines/cache.py), and `cells.cache_state` saying
what each cell began with: through small nights (bench_group -> stage -> load -> report) against the
MOCK prefix-cache server (vLLM's and SGLang's reset answers; neither engine runs here), the reset's
retry rules, vLLM's dev-mode variable at launch, and the matrix field's bad input.

llama.cpp's side (cold workloads sent with cache_prompt off: `not_cached`) is asserted on the real
engine in tests/test_guards_engine.py."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from reports.method import CACHE_TEXT, CARE_RULES
from tasks.engines import adapter_for
from tasks.engines.base import CacheReset
from tasks.engines.cache import RESET_TRIES, prepare_cache, reset_prefix_cache
from tasks.launch import instance_launch
from tasks.matrix import load_matrix
from tasks.plan import plan
from tasks.records import CACHE_STATES
from tests.builders import external_engine_matrix
from tests.mock_prefix_cache_server import MockPrefixCacheServer
from tests.test_guards_engine import care, night
from tests.test_report import md_rows, section

REPEATS = 2  # the second repeat sends the first one's prompts again: warm, unless the cache is emptied


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr("tasks.engines.cache.RESET_PAUSE_S", 0.01)


def mock_night(tmp_path: Path, url: str, cache_reset: dict | None, **load):
    data = external_engine_matrix(
        "cache-reset",
        url,
        repeats=REPEATS,
        workloads=[{"id": "w", "limit_prompts": 3, "output_lengths": [3]}],
        load={"concurrency": [1], "warmup_requests": 1, "request_timeout_s": 5, **load},
    )
    if cache_reset is not None:
        data["engines"]["ext"]["cache_reset"] = cache_reset
    return night(tmp_path, data)


def cache_column(md: str, cells: dict) -> dict[str, str]:
    """The report's overhead table: cell id -> its "Prefix cache at start"."""
    rows = md_rows(section(md, "## Method", "## Overview"))
    header = next(r for r in rows if "Prefix cache at start" in r)
    at = header.index("Prefix cache at start")
    got = {r[0]: r[at] for r in rows if len(r) == len(header) and r[0] in cells}
    assert got.keys() == cells.keys(), "a row per cell"
    return got


def cells_in_order(events: list[tuple]) -> list[list[tuple]]:
    """The server's event log cut at each reset: what each reset was followed by."""
    out: list[list[tuple]] = []
    for e in events:
        if e[0] == "reset":
            out.append([e])
        elif out:
            out[-1].append(e)
    return out


@pytest.mark.parametrize(("path", "busy"), [("/reset_prefix_cache", 2), ("/flush_cache", 2)])
def test_every_cell_begins_with_an_emptied_cache(tmp_path, path, busy):
    """vLLM says `success: false` and SGLang 400 while requests hold the cache: asked again, then done."""
    with MockPrefixCacheServer(busy=busy) as server:
        md, cells, _ = mock_night(tmp_path, server.url, {"path": path})
        events = server.events
    assert len(cells) == REPEATS
    assert {c["cache_state"] for c in cells.values()} == {"reset"}
    assert all(c["prefix_hit_share"] == 0 for c in cells.values()), "the second repeat's prompts were served cold"
    assert events[0][0] == "reset", "the cache is emptied before the first request"
    resets = [e for e in events if e[0] == "reset"]
    assert len(resets) == REPEATS + busy, "one accepted reset per cell, after the refused ones"
    served = [run for run in cells_in_order(events) if len(run) > 1]  # a refused reset is followed by another
    assert len(served) == REPEATS and all(len(run) == 1 + 1 + 3 for run in served), "reset, warmup, 3 prompts"
    assert set(cache_column(md, cells).values()) == {"emptied"}
    assert set(CACHE_TEXT) == set(CACHE_STATES), "the report says every state"
    assert not any(CARE_RULES[5][1] in r or CARE_RULES[9][1] in r for rs in care(md).values() for r in rs)


def test_without_a_reset_the_second_repeat_is_warm_and_the_report_says_so(tmp_path):
    with MockPrefixCacheServer() as server:
        md, cells, _ = mock_night(tmp_path, server.url, None)
        assert [e for e in server.events if e[0] == "reset"] == []
    assert {c["cache_state"] for c in cells.values()} == {"not_reset"}
    first, second = sorted(cells.values(), key=lambda c: c["repeat"])
    assert first["prefix_hit_share"] == 0 and second["prefix_hit_share"] == 1
    assert set(cache_column(md, cells).values()) == {"as earlier cells left it"}
    (reasons,) = [rs for cell, rs in care(md).items() if cell == second["cell_id"]]
    assert any(CARE_RULES[5][1] in r and "100% of prompt tokens cached" in r for r in reasons)


def test_a_reset_the_server_lacks_is_recorded_and_the_night_goes_on(tmp_path):
    with MockPrefixCacheServer() as server:
        md, cells, _ = mock_night(tmp_path, server.url, {"path": "/no_such_reset"})
    assert {c["cache_state"] for c in cells.values()} == {"reset_failed"}
    assert all(c["ok"] == 3 for c in cells.values()), "the cells are measured all the same"
    assert set(cache_column(md, cells).values()) == {"not emptied (reset failed)"}
    assert all(CARE_RULES[9][1] in rs for rs in care(md).values()) and len(care(md)) == REPEATS


def test_reset_answers(monkeypatch):
    vllm = CacheReset("POST", "/reset_prefix_cache", answer="json-success")
    with MockPrefixCacheServer(busy=RESET_TRIES) as server:
        problem = reset_prefix_cache(vllm, server.url)
        assert problem is not None and f"still busy after {RESET_TRIES} tries" in problem
        assert reset_prefix_cache(vllm, server.url) is None, "the next cell's reset is accepted"
    with MockPrefixCacheServer() as server:
        assert "404, the server has no such endpoint" in reset_prefix_cache(CacheReset("POST", "/nope"), server.url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert "ConnectError" in reset_prefix_cache(vllm, f"http://127.0.0.1:{port}")


def vllm_matrix(tmp_path: Path, env: dict | None = None):
    engine = {"kind": "vllm", "launcher": "docker", "image": "vllm/vllm-openai", "version": "0.33.0"}
    if env:
        engine["env"] = env
    data = {
        "name": "dev-mode",
        "engines": {"v": engine},
        "models": {"m": {"path": "org/model"}},
        "deployments": [{"id": "d", "instances": [{"engine": "v", "model": "m"}]}],
        "workloads": [{"id": "w", "output_lengths": [8]}],
    }
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    matrix, _ = load_matrix(path)
    return matrix, plan(matrix)[0].instances[0]


def test_vllm_starts_in_dev_mode_for_its_reset_unless_the_matrix_says_otherwise(tmp_path):
    matrix, planned = vllm_matrix(tmp_path)
    assert instance_launch(matrix, planned, base_dir=tmp_path, port=8000).spec.env["VLLM_SERVER_DEV_MODE"] == "1"
    matrix, planned = vllm_matrix(tmp_path, env={"VLLM_SERVER_DEV_MODE": "0"})
    assert instance_launch(matrix, planned, base_dir=tmp_path, port=8000).spec.env["VLLM_SERVER_DEV_MODE"] == "0"
    engine = matrix.engines["v"]
    got = prepare_cache(adapter_for("vllm"), engine, matrix.workloads[0], "http://127.0.0.1:9")
    assert got.state == "not_reset" and "VLLM_SERVER_DEV_MODE" in got.detail, "no reset asked of a server without it"
