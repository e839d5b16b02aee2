"""Memory planning against a real card (GPU machines only; skipped elsewhere with the reason,
failing instead where BAKEOFF_REQUIRE_GPU=1 says a GPU is there).

What only a real card shows: the planner reads total and free memory through NVML, and an SGLang
share becomes its --mem-fraction-static from the memory free *now*, after the instances started
before it -- here a process holding GPU memory stands in for them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks import telemetry
from tests.builders import import_or_require
from tests.gpu import requires_gpu

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "configs" / "rtx5090-seed.yaml"

pytestmark = requires_gpu


def test_plan_reads_the_real_card(capsys):
    from flows.cli import main

    card = telemetry.gpu_info(0)
    assert main(["plan", str(SEED)]) == 0
    out = capsys.readouterr().out
    assert f"this machine's {card.name}" in out
    # vLLM's budget is a share of the card's own total, whatever the matrix's gpu section says.
    expected = f"budget {int(0.25 * card.memory_total_bytes) / (1 << 30):.2f} GiB"
    assert expected in out
    print(out)


def test_sglang_share_follows_the_memory_free_now():
    import_or_require("torch", "BAKEOFF_REQUIRE_GPU", "torch stands in for an engine already on the card")
    from tasks.deploy import _memory_args
    from tasks.gpu_memory import plan_group
    from tasks.matrix import load_matrix
    from tasks.plan import plan

    matrix, _ = load_matrix(SEED)
    group = next(g for g in plan(matrix) if g.deployment_id == "sglang-three-planned")
    qwen = next(p for p in group.instances if p.instance_id == "sglang-planned-qwen")
    before = telemetry.gpu_info(0)
    hold_gib = 20
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import torch,time; x=torch.empty({hold_gib}<<30, dtype=torch.uint8, device='cuda'); "
            "print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        time.sleep(0.5)
        now = telemetry.gpu_info(0)
        taken = before.memory_free_bytes - now.memory_free_bytes
        assert taken >= hold_gib << 30  # the allocation plus the holder's CUDA context
        memory = {
            m.instance_id: m
            for m in plan_group(matrix, group, total_bytes=now.memory_total_bytes, free_bytes=before.memory_free_bytes)
        }
        flag, value = _memory_args(matrix, qwen, memory["sglang-planned-qwen"])
        assert flag == "--mem-fraction-static"
        live = 0.25 * now.memory_total_bytes / telemetry.gpu_info(0).memory_free_bytes
        assert float(value) == pytest.approx(live, abs=2e-3)
        print(
            f"GPU_PLANNING card={now.name} total={now.memory_total_bytes} free_before={before.memory_free_bytes} "
            f"free_with_holder={now.memory_free_bytes} holder_took={taken} qwen_share=0.25 "
            f"flag_live={value} flag_predicted={memory['sglang-planned-qwen'].flag_value} "
            f"holder_context_overhead_mib={(taken - (hold_gib << 30)) / (1 << 20):.0f}"
        )
    finally:
        holder.kill()
        holder.wait()
