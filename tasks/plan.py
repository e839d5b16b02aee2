"""The plan of a night: a matrix's deployment groups x bench cells (what runs, in which order, under
which ids). The matrix file's schema is tasks/matrix.py; this is what is derived from it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from tasks.matrix import Instance, Load, Matrix


@dataclass(frozen=True)
class PlannedInstance:
    instance_id: str
    deployment_id: str
    engine_name: str
    model_name: str
    spec: Instance


@dataclass(frozen=True)
class LoadShape:
    """How a cell's requests are sent: closed loop at a concurrency, or open loop at a rate."""

    arrival: Literal["closed", "poisson", "gamma", "constant", "trace"]  # trace: on the trace's own timestamps
    concurrency: int | None = None  # closed loop: requests in flight
    rate_rps: float | None = None  # open loop
    burstiness: float | None = None  # gamma shape
    max_concurrency: int | None = None  # open loop cap

    @property
    def kind(self) -> str:
        return "closed" if self.arrival == "closed" else "open"

    @property
    def label(self) -> str:
        """Readable and unique within a matrix: c4, poisson2rps, gamma2rps-b0.5, constant10rps-max8."""
        if self.arrival == "closed":
            return f"c{self.concurrency}"
        if self.arrival == "trace":
            return "trace"
        label = f"{self.arrival}{self.rate_rps:g}rps"
        if self.burstiness is not None:
            label += f"-b{self.burstiness:g}"
        if self.max_concurrency is not None:
            label += f"-max{self.max_concurrency}"
        return label


def load_shapes(load: Load) -> list[LoadShape]:
    closed = [LoadShape("closed", concurrency=c) for c in load.concurrency or ()]
    burstiness = (load.burstiness or 1.0) if load.arrival == "gamma" else None
    open_ = [
        LoadShape(load.arrival, rate_rps=r, burstiness=burstiness, max_concurrency=load.max_concurrency)
        for r in load.rates
    ]
    return closed + open_


TRACE_SHAPE = LoadShape("trace")  # a trace workload's one shape: its own timestamps (tasks/trace.py)


@dataclass(frozen=True)
class Cell:
    cell_id: str
    deployment_id: str
    instance_id: str
    workload_id: str
    shape: LoadShape
    repeat: int

    @property
    def concurrency(self) -> int | None:
        return self.shape.concurrency


@dataclass(frozen=True)
class Group:
    deployment_id: str
    instances: tuple[PlannedInstance, ...]
    cells: tuple[Cell, ...]


def plan(matrix: Matrix) -> list[Group]:
    """Deployment groups x bench cells. Every instance of a group is benchmarked with every cell."""
    groups = []
    for dep in matrix.deployments:
        instances = tuple(
            PlannedInstance(
                instance_id=inst.id or f"{dep.id}-{i}",
                deployment_id=dep.id,
                engine_name=inst.engine,
                model_name=inst.model,
                spec=inst,
            )
            for i, inst in enumerate(dep.instances)
        )
        cells = tuple(
            Cell(
                cell_id=f"{inst.instance_id}.{w.id}.{shape.label}.r{r}",
                deployment_id=dep.id,
                instance_id=inst.instance_id,
                workload_id=w.id,
                shape=shape,
                repeat=r,
            )
            for inst, w in itertools.product(instances, matrix.workloads)
            for shape in ([TRACE_SHAPE] if w.kind == "trace" else load_shapes(matrix.load))
            for r in range(matrix.repeats)
        )
        groups.append(Group(dep.id, instances, cells))
    return groups
