"""Old home of the retry policy; it lives in :mod:`db_backup.tasks.policy` now."""

from __future__ import annotations

from db_backup.tasks.policy import (
    IO_JITTER,
    IO_RETRIES,
    IO_RETRY_DELAYS,
    SHORT_RETRY_DELAYS,
    retry_transient,
)

__all__ = ["IO_JITTER", "IO_RETRIES", "IO_RETRY_DELAYS", "SHORT_RETRY_DELAYS", "retry_transient"]
