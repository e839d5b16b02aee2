"""The skip for GPU-only tests: skipped with the reason on machines without a GPU (CI, dev boxes),
a failure where BAKEOFF_REQUIRE_GPU=1 says there is one (the lent GPU machine)."""

from __future__ import annotations

import os

import pytest

from tasks import telemetry


def no_gpu_reason() -> str | None:
    try:
        telemetry.gpu_info(0)
    except telemetry.NvmlUnavailable as exc:
        return str(exc)
    return None


NO_GPU = no_gpu_reason()
requires_gpu = pytest.mark.skipif(
    NO_GPU is not None and os.environ.get("BAKEOFF_REQUIRE_GPU") != "1", reason=f"no GPU here: {NO_GPU}"
)
