"""Prefect at the edges: every task gets our retry policy from ``io_task``, every flow
its secret checks and alert hooks from ``alerting_flow`` (issue 13)."""

from __future__ import annotations

import importlib

import pytest
from prefect import Flow, Task

from db_backup.flows.hooks import notify_failure
from db_backup.tasks.policy import retry_transient

TASK_MODULES = ["backup", "drill", "encryption", "gc", "incremental", "prune", "restore"]
TRANSFERS = {"dump", "dump-chunked", "upload", "download", "write-manifest", "record-check"}
TRANSFERS |= {"verify", "collect-chunk-garbage"}
LOOKUPS = {"find-backup", "list-backups", "previous-backup", "allocate-id", "plan-prune"}
LOOKUPS |= {"prepare-encryption", "unlock-key"}


def all_tasks() -> dict[str, Task]:
    found: dict[str, Task] = {}
    for name in TASK_MODULES:
        module = importlib.import_module(f"db_backup.tasks.{name}")
        for obj in vars(module).values():
            if isinstance(obj, Task) and obj.fn.__module__ == module.__name__:
                found[obj.name] = obj
    return found


def test_transfers_retry_three_times_with_jitter_and_only_transient_failures() -> None:
    tasks = all_tasks()
    for name in TRANSFERS:
        t = tasks[name]
        assert (t.retries, t.retry_delay_seconds, t.retry_jitter_factor) == (3, [2, 8, 30], 0.5)
        assert t.retry_condition_fn is retry_transient, name


def test_lookups_retry_twice_and_other_tasks_never() -> None:
    tasks = all_tasks()
    for name in LOOKUPS:
        t = tasks[name]
        assert (t.retries, t.retry_delay_seconds) == (2, [2, 8]), name
        assert t.retry_condition_fn is retry_transient, name
    assert tasks["drop-scratch"].retries == 2 and tasks["drop-scratch"].retry_condition_fn is None
    for name in set(tasks) - TRANSFERS - LOOKUPS - {"drop-scratch"}:
        assert not tasks[name].retries, name


@pytest.mark.parametrize(
    ("module", "attr", "alerts"),
    [
        ("backup", "backup_database", True),
        ("restore", "restore_database", True),
        ("restore", "verify_backup", True),
        ("prune", "prune_backups", True),
        ("drill", "drill_backup", True),
        ("gc", "gc_chunks", False),
    ],
)
def test_every_flow_is_declared_by_alerting_flow(module: str, attr: str, alerts: bool) -> None:
    flow = getattr(importlib.import_module(f"db_backup.flows.{module}"), attr)
    assert isinstance(flow, Flow)
    hooks = ([notify_failure], [notify_failure]) if alerts else ([], [])
    assert (flow.on_failure_hooks, flow.on_crashed_hooks) == hooks
    assert flow.fn.__wrapped__ is not None  # the secret check runs before the body
