"""The co-location planner on the study's cases: a 32 GB RTX 5090 (32607 MiB), TinyLlama 1.1B,
Qwen2.5-3B and Yi-6B, vLLM at 0.15 / 0.25 / 0.45, SGLang as the study set it and as planned."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.gpu_memory import (
    GIB,
    MIB,
    activation_bytes,
    kv_bytes_per_token,
    plan_group,
    sglang_fraction_for,
    weights_bytes,
)
from tasks.matrix import load_matrix
from tasks.plan import plan

SEED = Path(__file__).resolve().parent.parent / "configs" / "rtx5090-seed.yaml"
TOTAL = 32607 * MIB
FREE0 = TOTAL - 480 * MIB  # the seed's driver reserve
OVERHEAD = 1024 * MIB


@pytest.fixture(scope="module")
def seed():
    matrix, _ = load_matrix(SEED)
    return matrix, {g.deployment_id: g for g in plan(matrix)}


def plans(seed, group_id):
    matrix, groups = seed
    return {p.instance_id: p for p in plan_group(matrix, groups[group_id])}


def test_model_arithmetic_by_hand(seed):
    matrix, _ = seed
    qwen = matrix.models["qwen"]
    assert weights_bytes(qwen) == int(3.09e9 * 2)
    assert kv_bytes_per_token(qwen) == 2 * 36 * 2 * 128 * 2  # K+V x layers x kv heads x head dim x bf16
    assert kv_bytes_per_token(matrix.models["yi"]) == 2 * 32 * 4 * 128 * 2


def test_vllm_shares_are_the_flag_and_all_three_fit(seed):
    p = plans(seed, "vllm-three")
    assert [x.flag_value for x in sorted(p.values(), key=lambda x: x.start_order)] == [0.45, 0.25, 0.15]
    assert all(x.flag == "--gpu-memory-utilization" for x in p.values())
    assert all(x.fits for x in p.values())
    yi = p["vllm-three-yi"]
    assert yi.budget_bytes == int(0.45 * TOTAL)
    matrix, _ = seed
    assert yi.kv_bytes == yi.budget_bytes - weights_bytes(matrix.models["yi"]) - activation_bytes(matrix.models["yi"])
    # the second instance starts with the first one's budget and process taken
    assert p["vllm-three-qwen"].free_before_bytes == FREE0 - int(0.45 * TOTAL) - OVERHEAD


def test_sglang_as_the_study_set_it_fails_with_not_enough_memory(seed):
    p = plans(seed, "sglang-three-study-flags")
    tiny, qwen, yi = p["sglang-study-tinyllama"], p["sglang-study-qwen"], p["sglang-study-yi"]
    assert tiny.fits and tiny.budget_bytes == int(0.85 * FREE0)
    free_after_tiny = FREE0 - int(0.85 * FREE0) - OVERHEAD
    assert qwen.free_before_bytes == free_after_tiny
    assert qwen.budget_bytes == int(0.25 * free_after_tiny)  # a fraction of what is LEFT
    assert qwen.fits is False and "Not enough memory" in qwen.reason
    # Qwen failed and freed nothing it took: Yi sees the same free memory, and fails the same way.
    assert yi.free_before_bytes == free_after_tiny and yi.fits is False


def test_sglang_as_the_planner_sets_it_fits(seed):
    p = plans(seed, "sglang-three-planned")
    order = sorted(p.values(), key=lambda x: x.start_order)
    assert [x.instance_id for x in order] == ["sglang-planned-yi", "sglang-planned-qwen", "sglang-planned-tinyllama"]
    free = FREE0
    for x, share in zip(order, (0.45, 0.25, 0.15), strict=True):
        assert x.free_before_bytes == free
        assert x.flag_value == pytest.approx(share * TOTAL / free, abs=1e-4)
        assert x.flag_value > share  # a later instance needs a larger fraction than its share
        assert x.budget_bytes == int(share * TOTAL)
        assert x.fits
        free -= x.budget_bytes + OVERHEAD
    assert order[-1].flag_value == pytest.approx(0.674, abs=0.001)


def test_a_share_that_cannot_be_free_any_more(seed):
    matrix, groups = seed
    group = groups["sglang-three-planned"]
    # A 16 GB card: after Yi's 45%, Qwen's 25% of the total needs more than 0.9 of what is free.
    out = plan_group(matrix, group, total_bytes=16 * GIB, free_bytes=16 * GIB)
    assert min(out, key=lambda p: p.start_order).fits is False  # Yi's weights alone: 11.3 GiB > 7.2


def test_unknown_gpu_cannot_tell(seed):
    matrix, groups = seed
    m2 = matrix.model_copy(update={"gpu": None})
    out = plan_group(m2, groups["vllm-qwen"])
    assert out[0].fits is None and "GPU memory unknown" in out[0].reason
    assert out[0].flag_value == 0.25  # vLLM's flag needs no card to compute


def test_sglang_fraction_at_launch_time():
    assert sglang_fraction_for(0.25, 32 * GIB, 16 * GIB) == 0.5


def test_bakeoff_plan_prints_the_groups(capsys):
    from flows.cli import main

    assert main(["plan", str(SEED)]) == 0
    out = capsys.readouterr().out
    assert "sglang-three-study-flags: 3 instance(s)" in out and "does NOT fit" in out
    assert "Not enough memory" in out
    assert "--mem-fraction-static 0.6742" in out  # the planned third SGLang instance's flag
    assert "vllm/vllm-openai:v0.10.2 --model Qwen/Qwen2.5-3B-Instruct" in out
    assert "2 group(s) predicted not to fit." not in out  # only the study-flags group fails
    assert "1 group(s) predicted not to fit." in out


def test_compose_export_of_the_study_three_model_deployment(tmp_path):
    import yaml

    from flows.cli import main

    out = tmp_path / "compose.yaml"
    assert main(["compose", str(SEED), "sglang-three-planned", "--out", str(out)]) == 0
    services = yaml.safe_load(out.read_text())["services"]
    assert list(services) == ["sglang-planned-yi", "sglang-planned-qwen", "sglang-planned-tinyllama"]
    qwen = services["sglang-planned-qwen"]
    assert qwen["depends_on"] == {"sglang-planned-yi": {"condition": "service_healthy"}}
    assert qwen["command"][qwen["command"].index("--mem-fraction-static") + 1] == "0.4962"
    assert qwen["image"] == "bakeoff/sglang-blackwell"
    assert qwen["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    ports = [s["command"][s["command"].index("--port") + 1] for s in services.values()]
    assert len(set(ports)) == 3  # host network: each instance its own port
