"""Failure alerts from inside a flow run, and naming the step that failed.

Two paths can tell Slack that a run failed:

1. **Server automations** (created by ``db-backup apply``): the Prefect server
   posts when a run of our deployments ends Failed, Crashed or TimedOut. The
   deployments ``apply`` creates carry the tag :data:`AUTOMATION_TAG`.
2. **Flow hooks** (:func:`notify_failure`, attached as ``on_failure`` and
   ``on_crashed``): the run itself posts, for users without server
   automations. They are switched on by ``$DB_BACKUP_SLACK_WEBHOOK_BLOCK``
   (the name of a prefect-slack ``SlackWebhook`` block).

No double posts: the hook stays silent for a run tagged :data:`AUTOMATION_TAG`,
because an automation already covers it. Both paths send the same text
(:func:`failure_text`).

:func:`name_failed_step` makes the failing step part of the run's error, so the
server's state message (and therefore the automation's message) says which
step failed, not only why.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from prefect import Task

HOOK_BLOCK_ENV = "DB_BACKUP_SLACK_WEBHOOK_BLOCK"
AUTOMATION_TAG = "db-backup:alerts-by-automation"

F = TypeVar("F", bound=Callable[..., Any])


def database_label(parameters: Mapping[str, Any]) -> str:
    """The database a run is about: the backup name, else the database reference."""
    return str(parameters.get("name") or parameters.get("database") or "unknown database")


def failure_text(
    flow_name: str, run_name: str, state_name: str, parameters: Mapping[str, Any], message: str
) -> tuple[str, str]:
    """Subject and body of a failure alert (the automation's template says the same)."""
    subject = f"db-backup: {flow_name} run {run_name} ended {state_name}"
    body = (
        f"Database: {database_label(parameters)}\n"
        f"Flow: {flow_name}\n"
        f"Error: {message or 'no message'}"
    )
    return subject, body


def hook_should_post(tags: list[str] | None) -> str | None:
    """The SlackWebhook block the hook posts with, or None when it must stay silent."""
    block = os.environ.get(HOOK_BLOCK_ENV, "").strip()
    if not block or AUTOMATION_TAG in (tags or []):
        return None
    return block


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_failure``/``on_crashed`` hook: post to Slack when configured (see module doc).

    Never raises: an alert that cannot be sent is logged, and the run keeps its
    own final state.
    """
    from prefect.logging import get_logger

    logger = get_logger("db_backup.hooks")
    block_name = hook_should_post(list(flow_run.tags or []))
    if block_name is None:
        return
    subject, body = failure_text(
        flow.name, flow_run.name, state.name, flow_run.parameters or {}, state.message or ""
    )
    try:
        from prefect_slack import SlackWebhook

        SlackWebhook.load(block_name).notify(body, subject=subject)
    except Exception as exc:  # an alert must not hide the real failure
        logger.warning("Could not post the failure alert with block %r: %s", block_name, exc)


def _step_of(exc: BaseException, fn: Callable[..., Any]) -> str | None:
    """The task (or function called by the flow) where ``exc`` was raised."""
    tasks = {
        obj.fn.__code__: obj.name
        for obj in fn.__globals__.values()
        if isinstance(obj, Task) and hasattr(obj.fn, "__code__")
    }
    frames: list[Any] = []
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    for code in reversed(frames):
        if code in tasks:
            return tasks[code]
    for index, code in enumerate(frames[:-1]):
        if code is fn.__code__:
            return frames[index + 1].co_name.strip("_").replace("_", "-")
    return None


def _in_deployment_run() -> bool:
    from prefect.runtime import deployment

    return bool(deployment.id)


def name_failed_step(fn: F) -> F:
    """Prefix the error of a failed deployment run with the step that failed.

    ``SourceError: database file x does not exist`` becomes
    ``SourceError: step 'dump' failed: database file x does not exist`` in the
    run's state message, which alerts quote. Only db-backup's own errors are
    touched (their text is their only argument), and only in deployment runs,
    so the CLI's one-line errors stay as they were.
    """
    from db_backup.errors import BackupError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BackupError as exc:
            step = _step_of(exc, fn)
            plain = len(exc.args) == 1 and isinstance(exc.args[0], str)
            if step and plain and _in_deployment_run():
                exc.args = (f"step {step!r} failed: {exc.args[0]}",)
            raise

    return wrapper  # type: ignore[return-value]
