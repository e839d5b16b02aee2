"""The deployment to copy: the docker-compose file of the best feasible co-location group.

Which group (DEPLOYMENT_RULE): of the co-location groups (2+ instances) that started whole, the one
with the most instances, ties broken by name. The file is regenerated from the run's matrix file by
the `compose` callable the caller passes (tasks.compose.compose_from_path: reports/ does not import
tasks/); without it, or without the file, the section says so and gives the command.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEPLOYMENT_RULE = (
    "of the co-location groups (2+ instances) that started whole, the one with the most instances; ties broken by name"
)


@dataclass(frozen=True)
class DeploymentToCopy:
    deployment_id: str | None
    rule: str
    command: str | None  # how to reproduce the file
    compose: str | None  # the file's text; None when it could not be regenerated
    note: str  # why not, or where it came from


def best_group(groups: Sequence) -> str | None:
    whole = [(len(g.instances.rows), g.deployment_id) for g in groups if g.started_whole and len(g.instances.rows) >= 2]
    return min(whole, key=lambda t: (-t[0], t[1]))[1] if whole else None


def deployment_to_copy(
    groups: Sequence, matrix_path: str | None, compose: Callable[[str, str], str] | None
) -> DeploymentToCopy:
    dep = best_group(groups)
    if dep is None:
        return DeploymentToCopy(
            None, DEPLOYMENT_RULE, None, None, "no co-location group started whole: nothing to copy"
        )
    path = matrix_path or "MATRIX.yaml"
    command = f"bakeoff compose {shlex.quote(path)} {shlex.quote(dep)} --out compose.yaml"
    if not matrix_path or not Path(matrix_path).is_file():
        return DeploymentToCopy(
            dep,
            DEPLOYMENT_RULE,
            command,
            None,
            f"the matrix file {matrix_path or '(not recorded)'} is no longer there: the compose "
            "file cannot be regenerated from the warehouse; with the matrix file, run the command",
        )
    if compose is None:
        return DeploymentToCopy(
            dep,
            DEPLOYMENT_RULE,
            command,
            None,
            "this report was rendered without bakeoff's compose logic: run the command",
        )
    try:
        text = compose(matrix_path, dep)
    except Exception as exc:  # any failure is reported in the section: the report still renders
        return DeploymentToCopy(dep, DEPLOYMENT_RULE, command, None, f"the compose file cannot be generated: {exc}")
    return DeploymentToCopy(dep, DEPLOYMENT_RULE, command, text, f"regenerated from {matrix_path} as it is now")
