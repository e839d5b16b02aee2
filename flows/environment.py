"""Environment defaults Prefect and Great Expectations read at import: set before either is imported,
by the CLI's `run` and by the tests (one place, so the two cannot drift)."""

from __future__ import annotations

import os


def prefect_defaults(startup_timeout_s: int = 120) -> None:
    """Quiet, offline, a patient ephemeral server, and our loggers forwarded to the Prefect run log
    (that is where the UI shows progress). Values already in the environment win."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(startup_timeout_s))
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "bakeoff")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
