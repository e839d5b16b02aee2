"""Telemetry: host samples everywhere; GPU samples through NVML where there is a GPU.

The GPU tests skip on CPU machines (CI, dev boxes) with the reason; BAKEOFF_REQUIRE_GPU=1 (set when
they run on a lent GPU machine) makes that a failure. They need only pynvml and torch there.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from tasks import telemetry
from tests.builders import import_or_require
from tests.gpu import NO_GPU
from tests.gpu import requires_gpu as gpu


def wait_for_samples(rows: list, n: int, *, work: bool = False, cap_s: float = 60.0) -> None:
    """Until the sampler has taken n samples (a busy machine samples late, not never); `cap_s` only
    ends a sampler that is broken."""
    end = time.monotonic() + cap_s
    while len(rows) < n and time.monotonic() < end:
        if work:
            sum(i * i for i in range(10_000))  # some CPU work to see
        else:
            time.sleep(0.01)


def test_host_samples_on_any_machine():
    with telemetry.Sampler("r", "c", gpu_index=None, pids={"self": os.getpid()}, interval_s=0.05) as s:
        wait_for_samples(s.host_rows, 4, work=True)
    assert len(s.host_rows) >= 4
    for row in s.host_rows:
        assert row["instance_id"] == "self"
        assert row["engine_rss_bytes"] > 10_000_000  # this Python process
        assert row["cpu_util_pct"] is None or 0.0 <= row["cpu_util_pct"] <= 100.0
        assert row["steal_pct"] is None or 0.0 <= row["steal_pct"] <= row["cpu_util_pct"]  # steal is busy time
    assert any(r["cpu_util_pct"] and r["cpu_util_pct"] > 0 for r in s.host_rows)
    assert s.gpu_rows == []


def test_steal_is_read_from_proc_stat():
    """/proc/stat's steal column, against a read of the same file here: the sampler's steal share over a
    window is steal ticks over every tick (0 on a machine no hypervisor steals from)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    total, idle, steal = telemetry._cpu_times()
    assert total >= sum(fields) and steal >= fields[7] and idle >= fields[3]


def test_no_gpu_is_a_clear_reason_not_a_crash():
    # a CPU box has no card 0; a GPU box has no card 64: either way no GPU to read, said in one line
    index = 64 if NO_GPU is None else 0
    with pytest.raises(telemetry.NvmlUnavailable, match=r"no GPU telemetry|not importable|does not exist"):
        telemetry.gpu_info(index)
    with telemetry.Sampler("r", "c", gpu_index=index, interval_s=0.05) as s:
        wait_for_samples(s.host_rows, 2)
    assert s.gpu_rows == [] and s.gpu_unavailable
    assert s.host_rows


@gpu
def test_gpu_info_reads_the_card():
    info = telemetry.gpu_info(0)
    assert info.name and info.driver
    assert info.memory_total_bytes > 1 << 30
    assert re.fullmatch(r"\d+\.\d", info.cuda_version or ""), info.cuda_version  # a CUDA driver: the card works
    # NVML's used + free is total minus a small reserved area on recent drivers.
    assert 0.9 * info.memory_total_bytes <= info.memory_used_bytes + info.memory_free_bytes <= info.memory_total_bytes
    with pytest.raises(telemetry.NvmlUnavailable, match="does not exist"):
        telemetry.gpu_info(64)


@gpu
def test_gpu_samples_see_an_allocation_and_work():
    torch = import_or_require("torch", "BAKEOFF_REQUIRE_GPU", "torch is needed to put load on the GPU")
    baseline = telemetry.gpu_info(0).memory_used_bytes
    with telemetry.Sampler("r", "c", gpu_index=0, interval_s=0.1) as s:
        block = torch.empty(4 << 30, dtype=torch.uint8, device="cuda")  # 4 GiB
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
        peak_seen = telemetry.gpu_info(0).memory_used_bytes
    del block, a
    torch.cuda.empty_cache()
    assert s.gpu_unavailable is None
    assert len(s.gpu_rows) >= 10
    used = [r["memory_used_bytes"] for r in s.gpu_rows]
    assert max(used) - baseline >= int(3.5 * (1 << 30)), (baseline, max(used), peak_seen)
    assert max(r["gpu_util_pct"] or 0 for r in s.gpu_rows) >= 50
    assert all(r["memory_total_bytes"] == s.gpu_rows[0]["memory_total_bytes"] for r in s.gpu_rows)
    print(
        "GPU_FACTS",
        telemetry.gpu_info(0),
        "baseline_used",
        baseline,
        "peak_used",
        max(used),
        "max_util",
        max(r["gpu_util_pct"] or 0 for r in s.gpu_rows),
        "max_power_w",
        max(r["power_w"] or 0 for r in s.gpu_rows),
        "samples",
        len(s.gpu_rows),
    )


def test_engine_cpu_counts_the_process_tree():
    """A stand-in engine whose work is in a child process (as vLLM's is): its CPU is counted, as a share of
    the machine, and an idle one reads near zero."""
    import subprocess
    import sys

    spin = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'print(1, flush=True)\\nwhile True: pass'])"
    busy = subprocess.Popen(  # killed as a group: the spinner is its child
        [sys.executable, "-c", spin], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert busy.stdout is not None and busy.stdout.readline() == "1\n"  # the spinner is spinning
    idle = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert idle.stdout is not None and idle.stdout.readline() == "up\n"  # past Python's own start-up work
    try:
        pids = {"busy": busy.pid, "idle": idle.pid}
        with telemetry.Sampler("r", "c", gpu_index=None, pids=pids, interval_s=0.5) as s:
            wait_for_samples(s.host_rows, 2 * 6)
    finally:
        os.killpg(busy.pid, 9)
        idle.kill()
        busy.wait()
        idle.wait()
    by = {
        i: [r["engine_cpu_pct"] for r in s.host_rows if r["instance_id"] == i and r["engine_cpu_pct"] is not None]
        for i in pids
    }
    one_core = 100.0 / (os.cpu_count() or 1)
    # the grandchild spins a core: up to 1/ncpu of the machine (a machine busy with other work gives it less);
    # the parent only waits, so without its descendants the busy tree would read as idle as the sleeper
    assert 0.1 * one_core < max(by["busy"]) <= one_core * 1.1  # 1.1: a clock tick's rounding
    assert max(by["idle"]) < 0.05 * one_core


def test_the_machine_is_described_from_proc():
    from tasks.telemetry import _cuda_text, host_facts

    facts = host_facts()
    assert facts["cpu_count"] == os.cpu_count()
    assert abs(facts["memory_total_mib"] - os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20) < 2
    assert facts["cpu_model"]  # /proc/cpuinfo's model name (or platform.processor())
    assert (_cuda_text(12080), _cuda_text(11040), _cuda_text(None)) == ("12.8", "11.4", None)
