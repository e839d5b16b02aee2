"""Environment defaults Prefect and Great Expectations read at import: set before either is imported,
by the CLI's `run` and by the tests (one place, so the two cannot drift). prefect.yaml's
`job_variables.env` gives a deployment's flow runs the same (tests/test_prefect_deployment.py holds
the two equal)."""

from __future__ import annotations

import os
import signal
import sys
import threading

# Quiet, offline, and our loggers forwarded to the Prefect run log (that is where the UI shows progress).
RUN_ENVIRONMENT = {
    "PREFECT_LOGGING_EXTRA_LOGGERS": "bakeoff",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
}


def prefect_defaults(startup_timeout_s: int = 120) -> None:
    """RUN_ENVIRONMENT and a patient ephemeral server. Values already in the environment win."""
    for name, value in RUN_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(startup_timeout_s))


def sigterm_exits() -> None:
    """SIGTERM (a Prefect cancel, `kill`, systemd stopping a unit) as SystemExit(143) instead of its default
    action, which skips `finally` and atexit: engines are stopped, a load's transaction rolls back, and a
    half-written report file is removed, as on Ctrl-C. Only the main thread can set a handler."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
