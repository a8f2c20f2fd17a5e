"""A process-wide progress hook: the CLI sets it on a terminal, flows leave it unset."""

from __future__ import annotations

from collections.abc import Callable

_progress: Callable[[int], None] | None = None


def set_progress(fn: Callable[[int], None] | None) -> None:
    """Install (or remove with None) the callback that receives byte counts."""
    global _progress
    _progress = fn


def current_progress() -> Callable[[int], None] | None:
    """The installed callback, if any."""
    return _progress
