"""prefect.yaml really deploys: `prefect deploy --all` against a real Prefect server gives a nightly
02:00 schedule and a concurrency limit of 1."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.prefect


def test_prefect_yaml_deploys_the_nightly_schedule(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    async def make_pool():
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="bakeoff", type="process"), overwrite=True)

    asyncio.run(make_pool())
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "BAKEOFF_HOME": str(ROOT)}
    prefect_cli = Path(sys.executable).with_name("prefect")
    result = subprocess.run(
        [str(prefect_cli), "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    async def read():
        async with get_client() as client:
            return await client.read_deployment_by_name("bakeoff-nightly/nightly")

    deployment = asyncio.run(read())
    assert deployment.entrypoint == "flows/nightly.py:nightly"
    assert deployment.parameters == {"matrix_path": "configs/cpu-smoke.yaml"}
    crons = [s.schedule.cron for s in deployment.schedules]
    assert crons == ["0 2 * * *"]
    assert deployment.schedules[0].active
    limit = deployment.global_concurrency_limit
    assert limit is not None and limit.limit == 1
    assert deployment.concurrency_options.collision_strategy == "CANCEL_NEW"
    # the worker gives the flow run the environment `bakeoff run` sets (flows/environment.py): progress in the UI
    from flows.environment import RUN_ENVIRONMENT

    assert deployment.job_variables["env"] == RUN_ENVIRONMENT
    assert RUN_ENVIRONMENT["PREFECT_LOGGING_EXTRA_LOGGERS"] == "bakeoff"
