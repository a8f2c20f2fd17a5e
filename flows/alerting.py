"""``@alerting_flow``: the one way db-backup declares a flow.

Every flow of ours gets, from this one decorator:

- its URL parameters checked **before anything else** runs: a database,
  target, scratch or storage URL that carries a secret (or cannot be parsed)
  fails the run at once with a masked one-line message
  (:func:`db_backup.parsing.refuse_url_secrets`);
- the failing step named in its error (:func:`~db_backup.flows.hooks.name_failed_step`);
- with ``alerts=True`` (the default), the ``on_failure``/``on_crashed`` hooks
  that post to Slack (:func:`~db_backup.flows.hooks.notify_failure`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from prefect import Flow, flow

from db_backup.flows.hooks import name_failed_step, notify_failure
from db_backup.parsing import STORAGE_HINT, refuse_url_secrets

P = ParamSpec("P")
R = TypeVar("R")

#: Flow parameter -> (what the message calls it, the hint on where credentials go).
URL_PARAMETERS: dict[str, tuple[str, str | None]] = {
    "database": ("database URL", None),
    "target": ("target URL", None),
    "scratch": ("scratch URL", None),
    "storage": ("storage URL", STORAGE_HINT),
}


def refuse_secret_parameters(fn: Callable[P, R]) -> Callable[P, R]:
    """Refuse a call whose URL parameters carry a secret, before ``fn`` runs."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        bound = signature.bind_partial(*args, **kwargs)
        bound.apply_defaults()
        for param, (what, hint) in URL_PARAMETERS.items():
            value = bound.arguments.get(param)
            if isinstance(value, str):
                if hint is None:
                    refuse_url_secrets(value, what)
                else:
                    refuse_url_secrets(value, what, hint)
        return fn(*args, **kwargs)

    return wrapper


def alerting_flow(
    name: str, *, alerts: bool = True, **options: Any
) -> Callable[[Callable[P, R]], Flow[P, R]]:
    """``@flow(name=..., **options)`` with the checks, step naming and alert hooks above."""
    hooks: dict[str, Any] = (
        {"on_failure": [notify_failure], "on_crashed": [notify_failure]} if alerts else {}
    )

    def decorate(fn: Callable[P, R]) -> Flow[P, R]:
        inner = refuse_secret_parameters(name_failed_step(fn) if alerts else fn)
        return cast(Flow[P, R], flow(name=name, **hooks, **options)(inner))

    return decorate
