"""Process set-up before Prefect is imported: quiet telemetry, sane start-up wait."""

from __future__ import annotations

import logging
import os

QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # The first start of the temporary server migrates its database and can take
    # longer than Prefect's default wait on a slow machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def prepare_environment() -> None:
    """Set quiet defaults the user has not set (never overrides the user's values)."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)


def quiet_prefect_console(verbose: bool) -> None:
    """Keep Prefect's console logging to warnings (the API still gets every line).

    The CLI prints its own summary and one-line errors; Prefect's tracebacks go to
    the flow run's logs in the UI, and to the terminal with ``--verbose``.
    """
    level = logging.INFO if verbose else logging.CRITICAL
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.server", ""):
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ in ("PrefectConsoleHandler", "StreamHandler", "RichHandler"):
                handler.setLevel(level)
    # The temporary server's start/stop chatter and its event-flush noise.
    for name in ("prefect.server", "prefect._internal", "prefect.events", "uvicorn", "docket"):
        logging.getLogger(name).setLevel(logging.CRITICAL if not verbose else logging.INFO)
