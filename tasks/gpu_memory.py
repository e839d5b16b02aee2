"""GPU memory planning for co-location: from "this instance may use X of the GPU" to each engine's own flag,
a safe start order, and a prediction of whether the group fits, before anything starts.

Memory semantics (checked against the engines' sources):
- vLLM `--gpu-memory-utilization U`: the instance may use U x TOTAL memory. At start vLLM refuses
  when the FREE memory is below U x total ("Free memory on device ... on startup is less than desired
  GPU memory utilization"). Its KV cache gets U x total - weights - activations.
- SGLang `--mem-fraction-static F`: F applies to the memory FREE when the instance starts
  (model_runner: rest = free_after_weights - free_at_start x (1 - F)); rest <= 0 fails with
  "Not enough memory. Please try to increase --mem-fraction-static". So a second instance that should
  get S of the GPU needs F = S x total / free_at_start, much larger than S.
- llama.cpp on the CPU has no GPU memory flag.

Each instance also costs a per-process overhead outside its budget (CUDA context), and the driver
keeps some memory back; both are estimates stated in the matrix (`gpu`), shown in the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.engines import adapter_for
from tasks.matrix import Matrix, Model
from tasks.plan import Group, PlannedInstance

MIB = 1 << 20
GIB = 1 << 30

# The most an SGLang fraction may be set to: its own default tops out near 0.88-0.9, and the rest
# is needed for activations and CUDA graphs.
SGLANG_MAX_FRACTION = 0.9


@dataclass(frozen=True)
class MemoryPlan:
    instance_id: str
    engine_kind: str
    start_order: int
    flag: str | None  # e.g. "--mem-fraction-static"
    flag_value: float | None
    budget_bytes: int | None  # what the engine will take for weights + KV cache
    free_before_bytes: int | None  # predicted free memory when this instance starts
    weights_bytes: int | None
    kv_min_bytes: int | None  # KV cache for one sequence at the configured context length
    kv_bytes: int | None  # predicted KV cache pool (budget - weights - activations)
    fits: bool | None  # None: cannot tell (no GPU size or no model architecture)
    reason: str

    def flag_args(self) -> list[str]:
        return [] if self.flag is None or self.flag_value is None else [self.flag, f"{self.flag_value:.4f}".rstrip("0")]


def weights_bytes(model: Model) -> int | None:
    return None if model.params_b is None else int(model.params_b * 1e9 * model.dtype_bytes)


def kv_bytes_per_token(model: Model) -> int | None:
    """K and V, every layer: 2 x layers x kv_heads x head_dim x bytes."""
    if None in (model.layers, model.kv_heads, model.head_dim):
        return None
    return int(2 * model.layers * model.kv_heads * model.head_dim * model.kv_dtype_bytes)


def activation_bytes(model: Model) -> int:
    """Peak activations during the engines' profiling run: a rough 5% of the weights, at least
    256 MiB. An estimate; the report shows predicted next to measured so it can be corrected."""
    w = weights_bytes(model) or 0
    return max(256 * MIB, int(0.05 * w))


def start_order(group: Group, matrix: Matrix) -> list[PlannedInstance]:
    """When every instance gives a memory_share, the largest first (it needs the most free memory
    at its start); otherwise as written: raw engine flags are taken as given, order included, since
    SGLang's fraction depends on what was started before it."""
    if all(p.spec.memory_share is not None for p in group.instances):
        return sorted(group.instances, key=lambda p: -p.spec.memory_share)
    return list(group.instances)


def plan_group(
    matrix: Matrix, group: Group, *, total_bytes: int | None = None, free_bytes: int | None = None
) -> list[MemoryPlan]:
    """The memory plan of one deployment group, instances in start order.

    total_bytes / free_bytes: the real card's (NVML) when planning on the GPU box; else from the
    matrix's `gpu.memory_total_mib` (free = total - reserved).
    """
    gpu = matrix.gpu
    if total_bytes is None and gpu is not None and gpu.memory_total_mib:
        total_bytes = gpu.memory_total_mib * MIB
    if free_bytes is None and total_bytes is not None:
        free_bytes = total_bytes - (gpu.reserved_mib * MIB if gpu else 0)
    overhead = (gpu.process_overhead_mib if gpu else 1024) * MIB

    plans: list[MemoryPlan] = []
    free = free_bytes
    for order, planned in enumerate(start_order(group, matrix)):
        kind = matrix.engines[planned.engine_name].kind
        model = matrix.models[planned.model_name]
        plan = _plan_instance(planned, kind, model, order, total_bytes, free, overhead)
        plans.append(plan)
        if free is not None and plan.budget_bytes is not None and plan.fits is not False:
            # What this instance takes from the card for the next one: its budget + its process.
            # One predicted to fail exits at start and leaves its memory free.
            free = free - plan.budget_bytes - overhead
    return plans


def _plan_instance(
    planned: PlannedInstance, kind: str, model: Model, order: int, total: int | None, free: int | None, overhead: int
) -> MemoryPlan:
    spec = planned.spec
    weights = weights_bytes(model)
    per_token = kv_bytes_per_token(model)
    kv_min = per_token * spec.context_length if per_token else None
    base = {
        "instance_id": planned.instance_id,
        "engine_kind": kind,
        "start_order": order,
        "free_before_bytes": free,
        "weights_bytes": weights,
        "kv_min_bytes": kv_min,
    }

    def verdict(
        fits: bool | None,
        reason: str,
        *,
        flag: str | None = None,
        value: float | None = None,
        budget: int | None = None,
        kv: int | None = None,
    ) -> MemoryPlan:
        return MemoryPlan(
            **base, flag=flag, flag_value=value, budget_bytes=budget, kv_bytes=kv, fits=fits, reason=reason
        )

    # The adapter's flag and what its value is a fraction of (tasks/engines: the engines own them).
    adapter = adapter_for(kind)
    flag, of_what = adapter.memory_flag, adapter.memory_fraction_of
    if flag is None:
        return verdict(None, f"{kind} has no GPU memory flag")
    if spec.memory_share is None and spec.memory_flag is None:
        return verdict(None, f"no memory_share or memory_flag: {kind} uses its default")
    if total is None or free is None:
        value = (
            spec.memory_flag if spec.memory_flag is not None else (spec.memory_share if of_what == "total" else None)
        )
        return verdict(
            None,
            "GPU memory unknown: set gpu.memory_total_mib or plan on the GPU box",
            flag=flag if value is not None else None,
            value=value,
        )

    # The flag, and the budget it gives this instance.
    if spec.memory_flag is not None:
        value = spec.memory_flag
        budget = int(value * (total if of_what == "total" else free))
        how = f"{flag} {value} as given"
    elif of_what == "total":
        value = spec.memory_share
        budget = int(value * total)
        how = f"share {spec.memory_share} of total"
    else:
        budget = int(spec.memory_share * total)
        value = round(budget / free, 4) if free > 0 else float("inf")
        how = f"share {spec.memory_share} of total = {value:.3f} of the {free / GIB:.1f} GiB free at start"
        if value > SGLANG_MAX_FRACTION:
            return verdict(
                False,
                f"{how}: above {SGLANG_MAX_FRACTION}, not enough free memory left for this share",
                flag=flag,
                value=value,
                budget=budget,
            )

    if of_what == "total" and budget > free:  # vLLM checks the whole share against free memory at start
        return verdict(
            False,
            f"{how}: vLLM needs {budget / GIB:.1f} GiB free at start, "
            f"predicted free {free / GIB:.1f} GiB (free memory on device ... is less than desired)",
            flag=flag,
            value=value,
            budget=budget,
        )
    if budget + overhead > free:
        return verdict(
            False,
            f"{how}: {(budget + overhead) / GIB:.1f} GiB with process overhead, predicted free {free / GIB:.1f} GiB",
            flag=flag,
            value=value,
            budget=budget,
        )
    if weights is None or kv_min is None:
        return verdict(
            None,
            f"{how}: model architecture unknown (params_b, layers, kv_heads, head_dim)",
            flag=flag,
            value=value,
            budget=budget,
        )
    kv = budget - weights - activation_bytes(model)
    if kv <= 0:
        failure = (
            "Not enough memory (increase --mem-fraction-static)"
            if kind == "sglang"
            else "No available memory for the cache blocks"
        )
        return verdict(
            False,
            f"{how}: budget {budget / GIB:.2f} GiB < weights {weights / GIB:.2f} GiB + activations: {failure}",
            flag=flag,
            value=value,
            budget=budget,
            kv=kv,
        )
    if kv < kv_min:
        return verdict(
            False,
            f"{how}: KV cache {kv / GIB:.2f} GiB < one {spec.context_length}-token sequence "
            f"({kv_min / GIB:.2f} GiB): lower context_length or raise the share",
            flag=flag,
            value=value,
            budget=budget,
            kv=kv,
        )
    return verdict(
        True,
        f"{how}: weights {weights / GIB:.2f} GiB + KV {kv / GIB:.2f} GiB ({kv // per_token:,} tokens)",
        flag=flag,
        value=value,
        budget=budget,
        kv=kv,
    )


def sglang_fraction_for(share: float, total_bytes: int, free_bytes: int) -> float:
    """The --mem-fraction-static that gives an instance `share` of the total memory, given the memory
    free when it starts. Used at launch time with NVML's live free memory."""
    return round(share * total_bytes / free_bytes, 4)


def plan_text(matrix: Matrix, card=None, *, matrix_name: str = "", base_dir: Path = Path(".")) -> list[str]:
    """`bakeoff plan`'s lines: each group's verdict, instances in start order with budget, weights,
    KV cache and why, and a GPU engine's command line. card: the real GPU (telemetry.GpuInfo) or None
    to plan against the matrix's `gpu.memory_total_mib`. base_dir: the matrix file's folder (model
    paths are relative to it). Starts nothing."""
    from tasks.launch import display_port, instance_launch
    from tasks.plan import plan

    total = free = None
    source = (
        f"matrix gpu.memory_total_mib = {matrix.gpu.memory_total_mib}"
        if matrix.gpu and matrix.gpu.memory_total_mib
        else "unknown"
    )
    if card is not None:
        total, free = card.memory_total_bytes, card.memory_free_bytes
        source = f"this machine's {card.name} (NVML: {total / GIB:.1f} GiB total, {free / GIB:.1f} GiB free now)"
    lines = [f"matrix {matrix_name}: {len(matrix.deployments)} deployment groups; GPU memory: {source}"]
    not_fitting = 0
    for group in plan(matrix):
        plans = plan_group(matrix, group, total_bytes=total, free_bytes=free)
        verdicts = {p.fits for p in plans}
        verdict = "does NOT fit" if False in verdicts else ("fits" if verdicts == {True} else "cannot tell")
        not_fitting += False in verdicts
        lines += ["", f"{group.deployment_id}: {len(plans)} instance(s), {len(group.cells)} bench cell(s): {verdict}"]
        by_id = {p.instance_id: p for p in group.instances}
        for mp in plans:
            planned = by_id[mp.instance_id]
            engine = matrix.engines[planned.engine_name]
            mark = {True: "ok  ", False: "FAIL", None: "?   "}[mp.fits]
            lines.append(
                f"  {mp.start_order + 1}. [{mark}] {mp.instance_id}: {engine.kind} {engine.version} / {planned.model_name}"
                f"  budget {_gib(mp.budget_bytes)} GiB, weights {_gib(mp.weights_bytes)} GiB, KV {_gib(mp.kv_bytes)} GiB,"
                f" free before {_gib(mp.free_before_bytes)} GiB"
            )
            lines.append(f"     {mp.reason}")
            if adapter_for(engine.kind).memory_flag is not None:  # the command line a GPU engine will get
                launch = instance_launch(
                    matrix,
                    planned,
                    base_dir=base_dir,
                    port=display_port(planned, mp.start_order),
                    memory_args=mp.flag_args(),
                )
                lines.append(f"     {launch.image or engine.kind} {' '.join(launch.spec.argv)}")
    lines += ["", f"{not_fitting} group(s) predicted not to fit."]
    return lines


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.2f}"


def planning_card(matrix: Matrix):
    """This machine's GPU (telemetry.GpuInfo) to plan against, or None where NVML has none."""
    from tasks import telemetry

    return telemetry.card_or_none(matrix.gpu_index)
