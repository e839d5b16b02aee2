"""One deployment group of a night: start its instances, run its cells (and the rate sweep), tear it
down, and hand back everything it measured. The flow (flows/nightly.py) wraps `bench_group` as a
Prefect task and passes its own tasks for starting an instance and running a cell, so the work
shows in the run's history; here it is plain Python, tested without a server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks import bench, deploy
from tasks.bench import CellInterrupted, CellOutcome
from tasks.deploy import DeployedGroup, InstanceHandle
from tasks.matrix import Matrix
from tasks.plan import Cell, Group
from tasks.runs import Collected


class GroupStopped(Exception):
    """The group ended early: the night was stopped (Ctrl-C, a cancelled flow run) or something
    failed. `collected` holds what the group measured until then (an interrupted cell's sent requests
    included, and every instance's row), `cause` is what to re-raise once that is kept."""

    def __init__(self, collected: Collected, cause: BaseException) -> None:
        super().__init__(f"stopped ({type(cause).__name__}) after {len(collected.cells)} cells")
        self.collected, self.cause = collected, cause


@dataclass
class _Group:
    """What one group's cells need, so each cell is one call."""

    matrix: Matrix
    deployed: DeployedGroup
    got: Collected
    run_id: str
    base_dir: Path
    run_cell: Callable[..., CellOutcome]

    def measure(self, cell: Cell, handle: InstanceHandle, label: str) -> CellOutcome:
        """One cell on a live instance, with the engine's metrics scraped around it. The outcome is
        not collected here: the caller keeps it (a sweep returns its cells with their stop reason)."""
        workload = next(w for w in self.matrix.workloads if w.id == cell.workload_id)
        cache_state = handle.prepare_cache(workload)  # before the metrics scrape: a reset moves no counter
        self.got.engine_metrics += handle.scrape_metrics(self.run_id, cell.cell_id, "before")
        outcome = self.run_cell(
            self.matrix,
            cell,
            handle.target,
            handle.request_extras(workload),
            run_id=self.run_id,
            base_dir=self.base_dir,
            engine_pids=deploy.engine_pids(self.deployed.handles),
            label=label,
            cache_state=cache_state,
        )
        self.got.engine_metrics += handle.scrape_metrics(self.run_id, cell.cell_id, "after")
        handle.check_alive()
        return outcome


Keep = Callable[[str, Collected, bool], None]  # (part name, what it holds, complete): stage one part


def group_part(group: Group) -> str:
    """The name of the part that says a group ran to its end (its deployment rows)."""
    return f"group-{group.deployment_id}"


def sweep_part(instance_id: str) -> str:
    return f"sweep-{instance_id}"


def bench_group(
    matrix: Matrix,
    group: Group,
    *,
    run_id: str,
    run_dir: Path,
    base_dir: Path,
    images: dict[str, str],
    where: str,
    start: Callable[..., InstanceHandle] | None = None,
    run_cell: Callable[..., CellOutcome] = bench.run_cell,
    keep: Keep | None = None,
    done: frozenset[str] = frozenset(),
) -> Collected:
    """Deploy the group (deploy.deploy_group), run every cell of an instance that is up, then the sweep
    per instance (matrix load.sweep), and stop every instance whatever happens. Returns the group's
    rows and records; raises GroupStopped with them when the group ends early.

    With `keep`, each finished cell (and each instance's whole sweep) is handed to it as it ends, then
    the group's deployment rows (the part `group_part` names, complete when the group ran to its end),
    and only those rows are returned; a cell cut short is handed over as an incomplete part. Cells and
    sweeps named in `done` (a resumed night's complete parts) are not measured again."""
    got = Collected()

    def staged(name: str, complete: bool = True) -> None:
        if keep is not None:
            keep(name, got.take_measured(), complete)

    deployed = deploy.deploy_group(
        matrix, group, run_id=run_id, run_dir=run_dir, base_dir=base_dir, images=images, start=start
    )
    g = _Group(matrix, deployed, got, run_id, base_dir, run_cell)
    finished = False
    try:
        for c_i, cell in enumerate(group.cells, 1):
            handle = deployed.handles.get(cell.instance_id)
            if cell.cell_id in done or handle is None or not handle.check_alive():
                continue  # measured before a resume; or did not start, or died: its deployments row says so
            got.add_cell(g.measure(cell, handle, f"{where}, cell {c_i}/{len(group.cells)} {cell.cell_id}"))
            staged(cell.cell_id)
        for planned in group.instances if matrix.load.sweep else ():
            handle = deployed.handles.get(planned.instance_id)
            if sweep_part(planned.instance_id) in done or handle is None or not handle.check_alive():
                continue
            measured: list[CellOutcome] = []

            def measure(
                cell: Cell, handle: InstanceHandle = handle, measured: list[CellOutcome] = measured
            ) -> CellOutcome:
                measured.append(g.measure(cell, handle, f"{where}, sweep {cell.cell_id}"))
                return measured[-1]

            try:
                outcomes = bench.run_sweep(matrix, planned, measure)
            except CellInterrupted:
                for outcome in measured:  # the sweep's finished cells, then the interrupted one
                    got.add_cell(outcome)
                raise
            for outcome in outcomes:  # as run_sweep returns them: the last carries its stop reason
                got.add_cell(outcome)
            staged(sweep_part(planned.instance_id))  # a sweep is one part: a resume runs it whole
        finished = True
    except CellInterrupted as stopped:
        got.add_cell(stopped.outcome)  # keep what the cell measured, then stop the night as asked
        staged(f"cut-short-{stopped.outcome.row.cell_id}", complete=False)
        raise GroupStopped(got, stopped.cause) from None
    except Exception as exc:  # not a crash of the night's data: what was measured is staged all the same
        staged(f"cut-short-{group.deployment_id}", complete=False)
        raise GroupStopped(got, exc) from None
    finally:
        deployed.stop()  # always, even when a cell raised
        got.deployments += deployed.rows()  # read now: the rows carry what check_alive found
        if keep is not None:
            keep(group_part(group), Collected(deployments=list(got.deployments)), finished)
            got.take_measured()  # staged already: the caller gets the rows
    return got
