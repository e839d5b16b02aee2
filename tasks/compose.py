"""`bakeoff compose`: the docker-compose file of one deployment group, with the planner's flags,
for people who want to run a configuration by hand (the study's three-model vLLM example is one)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tasks.engines import adapter_for
from tasks.gpu_memory import plan_group
from tasks.launch import display_port, instance_launch, is_credential_env, masked
from tasks.matrix import Matrix, MatrixError, load_matrix
from tasks.plan import plan


def compose_file(matrix: Matrix, deployment_id: str, base_dir: Path) -> str:
    groups = {g.deployment_id: g for g in plan(matrix)}
    if deployment_id not in groups:
        raise MatrixError(f"deployments: no deployment {deployment_id!r} (have: {sorted(groups)})")
    group = groups[deployment_id]
    memory = {m.instance_id: m for m in plan_group(matrix, group)}
    services, previous, notes = {}, None, []
    for offset, planned in enumerate(sorted(group.instances, key=lambda p: memory[p.instance_id].start_order)):
        engine = matrix.engines[planned.engine_name]
        if engine.kind == "external":
            continue
        port = display_port(planned, offset)
        # As a container whatever the night's launcher: compose runs images.
        launch = instance_launch(
            matrix,
            planned,
            base_dir=base_dir,
            port=port,
            launcher="docker",
            memory_args=memory[planned.instance_id].flag_args(),
        )
        if not (engine.image or engine.build):
            notes.append(
                f"# {planned.instance_id}: {launch.image} is the engine's upstream image (the matrix names none)\n"
            )
        command = masked(launch.spec.argv)  # the file goes into the report: never a credential's value
        if command != launch.spec.argv:
            notes.append(
                f"# {planned.instance_id}: a credential in its command line is masked (***): name it in secret_env\n"
            )
        service = {
            "image": launch.image,
            "command": command,
            "network_mode": "host",
            "volumes": [f"{src}:{v['bind']}:{v['mode']}" for src, v in launch.volumes.items()],
            "labels": {"bakeoff.deployment": deployment_id, "bakeoff.instance": planned.instance_id},
            "healthcheck": {
                "test": [
                    "CMD-SHELL",
                    f"curl -fs http://127.0.0.1:{port}{adapter_for(engine.kind).health_path} || exit 1",
                ],
                "interval": "10s",
                "retries": 60,
            },
        }
        if launch.gpu_index is not None:
            service["ipc"] = "host"
            service["deploy"] = {
                "resources": {
                    "reservations": {
                        "devices": [
                            {"driver": "nvidia", "device_ids": [str(launch.gpu_index)], "capabilities": ["gpu"]}
                        ]
                    }
                }
            }
        # the matrix's env as the night set it, a credential as a reference to the shell's; never a value
        environment = {k: f"${{{k}}}" if is_credential_env(k, v) else v for k, v in engine.env.items()}
        environment |= {name: f"${{{name}}}" for name in engine.secret_env}
        if environment:
            service["environment"] = environment
        reset = adapter_for(engine.kind).cache_reset_for(engine)
        for k, v in (reset.needs_env if reset else {}).items():
            if k not in engine.env:
                notes.append(
                    f"# {planned.instance_id}: {k}={v} is left out: the night set it only to empty the prefix cache between cells\n"
                )
        if previous:  # one after another, each after the previous one is healthy
            service["depends_on"] = {previous: {"condition": "service_healthy"}}
        services[planned.instance_id] = service
        previous = planned.instance_id
    header = (
        f"# bakeoff compose {deployment_id} (matrix {matrix.name}): instances start one after another,\n"
        f"# each after the previous is healthy; memory flags as the planner set them.\n"
    ) + "".join(notes)
    return header + yaml.safe_dump({"services": services}, sort_keys=False, width=120)


def compose_from_path(matrix_path: str, deployment_id: str) -> str:
    """The compose file of one group from a matrix file (the report's "deployment to copy"); MatrixError
    when the file is gone, invalid, or cannot be composed."""
    matrix, _ = load_matrix(matrix_path)
    return compose_file(matrix, deployment_id, Path(matrix_path).resolve().parent)
