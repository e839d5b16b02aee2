"""Telemetry while a cell runs: GPU samples through NVML (nvidia-ml-py's `pynvml`) and host samples
from /proc, taken by one background thread at a fixed interval.

Only the standard library and pynvml are imported here, so this module also runs on a GPU box that
has nothing else of bakeoff installed. Without a GPU (or without the NVML library), `gpu_info`
returns None with the reason and the sampler records host samples only: a CPU run is not an error.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    driver: str
    memory_total_bytes: int
    memory_free_bytes: int
    memory_used_bytes: int
    cuda_version: str | None = None  # the CUDA version the driver supports, e.g. "12.8"


class NvmlUnavailable(RuntimeError):
    pass


def _nvml():
    try:
        import pynvml
    except ImportError as exc:  # nvidia-ml-py is a dependency; this is a broken install
        raise NvmlUnavailable(f"pynvml is not importable ({exc})") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML is not available on this machine ({exc}); no GPU telemetry") from None
    return pynvml


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _handle(nv, index: int):
    """The card at `index`; NvmlUnavailable (the reason in one line) where there is none."""
    count = nv.nvmlDeviceGetCount()
    if index >= count:
        raise NvmlUnavailable(f"gpu.index {index} does not exist: this machine has {count} GPU(s)")
    return nv.nvmlDeviceGetHandleByIndex(index)


def gpu_info(index: int = 0) -> GpuInfo:
    """Name, driver and memory of one GPU. Raises NvmlUnavailable with the reason on a CPU box."""
    nv = _nvml()
    try:
        handle = _handle(nv, index)
        mem = nv.nvmlDeviceGetMemoryInfo(handle)
        return GpuInfo(
            index=index,
            name=_text(nv.nvmlDeviceGetName(handle)),
            driver=_text(nv.nvmlSystemGetDriverVersion()),
            memory_total_bytes=int(mem.total),
            memory_free_bytes=int(mem.free),
            memory_used_bytes=int(mem.used),
            cuda_version=_cuda_text(_optional(nv.nvmlSystemGetCudaDriverVersion)),
        )
    finally:
        nv.nvmlShutdown()


def _cuda_text(version: int | None) -> str | None:
    """NVML's CUDA driver version (12080) as people write it (12.8)."""
    return None if not version else f"{version // 1000}.{version % 1000 // 10}"


def _optional(fn, *args):
    """NVML answers NOT_SUPPORTED for some fields on some boards (power on a MIG slice, say)."""
    try:
        return fn(*args)
    except Exception:  # pynvml.NVMLError subclasses, one per error code
        return None


class _GpuReader:
    def __init__(self, index: int) -> None:
        self.nv = _nvml()
        self.index = index
        try:
            self.handle = _handle(self.nv, index)  # a card that is not there: host samples only, the reason kept
        except NvmlUnavailable:
            self.nv.nvmlShutdown()
            raise

    def read(self) -> dict:
        nv, h = self.nv, self.handle
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        util = _optional(nv.nvmlDeviceGetUtilizationRates, h)
        power = _optional(nv.nvmlDeviceGetPowerUsage, h)
        return {
            "gpu_index": self.index,
            "memory_used_bytes": int(mem.used),
            "memory_total_bytes": int(mem.total),
            "gpu_util_pct": None if util is None else int(util.gpu),
            "memory_util_pct": None if util is None else int(util.memory),
            "power_w": None if power is None else power / 1000.0,
            "temperature_c": _optional(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
            "sm_clock_mhz": _optional(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
        }

    def close(self) -> None:
        self.nv.nvmlShutdown()


def _cpu_times() -> tuple[int, int, int]:
    """(total, idle, steal) clock ticks of every core from /proc/stat's cpu line: user nice system idle
    iowait irq softirq steal (guest and guest_nice are already inside user and nice: not added again)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    return sum(fields), idle, steal


_CLK_TCK = os.sysconf("SC_CLK_TCK")  # the unit of /proc/PID/stat's utime and stime
TREE_REFRESH_S = 10.0  # how often the engines' process trees are looked up again (one /proc scan)
ENGINE_CPU_MIN_WINDOW_S = 0.25  # 25 ticks per core at 100 Hz: rounding stays within 4 % of a core


def _ticks(pid: int) -> int | None:
    """utime + stime of one process (/proc/PID/stat fields 14 and 15, clock ticks), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": comm may hold spaces
    return int(fields[11]) + int(fields[12])


def process_trees(roots: Iterable[int]) -> dict[int, list[int]]:
    """Each root pid with its live descendants, from one scan of /proc (parent pids). vLLM and SGLang run
    their work in child processes; llama-server in threads of one. The scan costs about 2 ms of the
    interpreter, so a Sampler repeats it only every TREE_REFRESH_S, not every sample."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone between the listing and the read
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out = {}
    for root in roots:
        tree, todo = [], [root]
        while todo:
            p = todo.pop()
            tree.append(p)
            todo += children.get(p, [])
        out[root] = tree
    return out


def _tree_ticks(pids: list[int]) -> int | None:
    """The summed ticks of a tree's processes; None when its root is gone (a descendant gone since the
    last scan just stops counting)."""
    root = _ticks(pids[0])
    if root is None:
        return None
    return root + sum(t for p in pids[1:] if (t := _ticks(p)) is not None)


def host_facts() -> dict:
    """The machine itself, for the runs row: CPU model and count, memory (None where /proc does not say)."""
    model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    memory_mib = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = next((int(line.split()[1]) for line in f if line.startswith("MemTotal:")), None)
        memory_mib = None if kib is None else kib // 1024
    except (OSError, ValueError):
        pass
    return {
        "cpu_model": model or platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "memory_total_mib": memory_mib,
    }


def card_or_none(index: int) -> GpuInfo | None:
    """The card at `index`, or None on a machine without NVML (a CPU box simply has no GPU)."""
    try:
        return gpu_info(index)
    except NvmlUnavailable:
        return None


def rss_bytes(pid: int) -> int | None:
    """A process's resident memory (/proc/PID/status VmRSS), None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Sampler:
    """Samples GPU (when there is one) and host every `interval_s` from a daemon thread.

    with Sampler(run_id, cell_id, gpu_index=0, pids={"inst-0": 1234}) as s: ...; s.gpu_rows, s.host_rows
    """

    def __init__(
        self,
        run_id: str,
        cell_id: str,
        *,
        gpu_index: int | None = 0,
        pids: dict[str, int] | None = None,
        interval_s: float = 0.5,
    ) -> None:
        self.run_id, self.cell_id, self.interval_s = run_id, cell_id, interval_s
        self.gpu_index, self.pids = gpu_index, dict(pids or {})
        self.gpu_rows: list[dict] = []
        self.host_rows: list[dict] = []
        self.gpu_unavailable: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._reader = None
        if self.gpu_index is not None:
            try:
                self._reader = _GpuReader(self.gpu_index)
            except NvmlUnavailable as exc:
                self.gpu_unavailable = str(exc)
        self._last_cpu = _cpu_times()
        self._refresh_trees()
        self._last_engine = {i: (_tree_ticks(self._trees[p]), time.monotonic()) for i, p in self.pids.items() if p}
        self._thread = threading.Thread(target=self._loop, name="bakeoff-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sample()  # a last sample at the end of the cell
        if self._reader is not None:
            self._reader.close()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._sample()
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _refresh_trees(self) -> None:
        self._trees = process_trees(p for p in self.pids.values() if p)
        self._trees_at = time.monotonic()

    def _sample(self) -> None:
        if self.pids and time.monotonic() - self._trees_at >= TREE_REFRESH_S:
            self._refresh_trees()
        at = datetime.now(UTC)
        if self._reader is not None:
            try:
                self.gpu_rows.append(
                    {"run_id": self.run_id, "cell_id": self.cell_id, "sampled_at": at, **self._reader.read()}
                )
            except Exception as exc:  # a GPU that fell off the bus: note it, keep the cell going
                self.gpu_unavailable = f"NVML read failed: {exc}"
                self._reader = None
        total, idle, steal = _cpu_times()
        d_total, d_idle, d_steal = total - self._last_cpu[0], idle - self._last_cpu[1], steal - self._last_cpu[2]
        self._last_cpu = (total, idle, steal)
        load1 = os.getloadavg()[0]
        for instance_id, pid in self.pids.items() or [(None, None)]:
            engine_cpu = None
            if pid:
                # the tree's clock ticks over the ticks every core had since its own previous read (timed
                # at the read: the /proc scan takes a while on a busy box, /proc/stat's interval is not its)
                now, now_t = _tree_ticks(self._trees.get(pid, [pid])), time.monotonic()
                before, before_t = self._last_engine.get(instance_id, (None, now_t))
                if now_t - before_t >= ENGINE_CPU_MIN_WINDOW_S or before is None:
                    # a shorter window is a few clock ticks: its share would be mostly rounding
                    self._last_engine[instance_id] = (now, now_t)
                    capacity = (now_t - before_t) * _CLK_TCK * (os.cpu_count() or 1)
                    if now is not None and before is not None and capacity > 0:
                        engine_cpu = min(100.0, 100.0 * (now - before) / capacity)
            self.host_rows.append(
                {
                    "run_id": self.run_id,
                    "cell_id": self.cell_id,
                    "sampled_at": at,
                    "instance_id": instance_id,
                    "cpu_util_pct": 100.0 * (d_total - d_idle) / d_total if d_total > 0 else None,
                    "load1": load1,
                    "engine_rss_bytes": rss_bytes(pid) if pid else None,
                    "engine_cpu_pct": engine_cpu,
                    # a VM's hypervisor running something else on our cores (migration 0013)
                    "steal_pct": 100.0 * d_steal / d_total if d_total > 0 else None,
                }
            )


def as_dict(info: GpuInfo) -> dict:
    return asdict(info)
