"""Retry policy shared by the I/O tasks."""

from __future__ import annotations

from typing import Any

from db_backup.errors import is_transient

IO_RETRIES = 3
IO_RETRY_DELAYS: list[float] = [2.0, 8.0, 30.0]
SHORT_RETRY_DELAYS: list[float] = [2.0, 8.0]
IO_JITTER = 0.5


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only failures a second attempt may fix (timeouts, resets, 5xx, throttling).

    Bad credentials, a missing bucket or database, a checksum mismatch fail at once.
    """
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # the state could not even give its exception back
        exc = err
    return isinstance(exc, BaseException) and is_transient(exc)
