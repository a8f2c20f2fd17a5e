"""Our retry policy, said once: :func:`io_task` makes every task of db-backup.

Two kinds of I/O are retried, and only on failures a second attempt may fix
(timeouts, resets, 5xx, throttling; see :func:`retry_transient`):

- :data:`TRANSFER`: moving data (dump, upload, download, manifest, GC):
  3 retries after 2, 8 and 30 s, with jitter so a fleet does not retry in step;
- :data:`LOOKUP`: small reads and set-up (find a manifest, unlock a key):
  2 retries after 2 and 8 s.

:data:`ONCE` is for steps a retry cannot help (pure computation, a restore
that must not run twice). No task caches its result: every run reads the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from prefect import Task, task
from prefect.cache_policies import NONE

from db_backup.errors import is_transient

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after how long, a failed task is tried again."""

    retries: int
    delays: tuple[float, ...] = ()
    jitter: float | None = None


TRANSFER = RetryPolicy(retries=3, delays=(2.0, 8.0, 30.0), jitter=0.5)
LOOKUP = RetryPolicy(retries=2, delays=(2.0, 8.0))
ONCE = RetryPolicy(retries=0)

# The figures under their old names.
IO_RETRIES = TRANSFER.retries
IO_RETRY_DELAYS: list[float] = list(TRANSFER.delays)
SHORT_RETRY_DELAYS: list[float] = list(LOOKUP.delays)
IO_JITTER = TRANSFER.jitter


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only failures a second attempt may fix (timeouts, resets, 5xx, throttling).

    Bad credentials, a missing bucket or database, a checksum mismatch fail at once.
    """
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # the state could not even give its exception back
        exc = err
    return isinstance(exc, BaseException) and is_transient(exc)


def io_task(
    name: str, policy: RetryPolicy = TRANSFER, *, transient_only: bool = True
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A ``@task`` named ``name`` with ``policy`` (retries only transient failures).

    ``transient_only=False`` retries any failure (cleaning up after ourselves,
    where a second try cannot do harm).
    """
    options: dict[str, Any] = {"name": name, "cache_policy": NONE}
    if policy.retries:
        options["retries"] = policy.retries
        options["retry_delay_seconds"] = list(policy.delays)
        if policy.jitter is not None:
            options["retry_jitter_factor"] = policy.jitter
        if transient_only:
            options["retry_condition_fn"] = retry_transient
    return cast(Callable[[Callable[P, R]], Task[P, R]], task(**options))
