"""The blocks a fleet creates: SQLite database blocks, password Secrets, the Slack webhook."""

from __future__ import annotations

import os
import re
from typing import Any

from db_backup.deployments.apply.plan import Change
from db_backup.deployments.fleet import DatabaseJob, LoadedFleet

SLACK_SLUG = "slack-incoming-webhook"  # prefect-slack's SlackWebhook block type


def block_slug_name(value: str) -> str:
    """A block name from a backup name (lowercase letters, digits, dashes)."""
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


def secret_block_of(name: str, job: DatabaseJob) -> str | None:
    """The Secret block holding ``name``'s password, if it has one."""
    if job.password is None:
        return None
    return job.password.secret or f"db-backup-{block_slug_name(name)}-password"


def _block_change(
    kind_slug: str, name: str, current: Any, wanted: dict[str, Any], save: Any
) -> Change:
    target = f"{kind_slug}/{name}"
    if current is None:
        return Change("block", target, "create", "new", save)
    differs = [k for k, v in wanted.items() if _plain(getattr(current, k, None)) != v]
    if not differs:
        return Change("block", target, "unchanged")
    return Change("block", target, "update", ", ".join(differs), save)


def _plain(value: Any) -> Any:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def _load_block(cls: Any, name: str) -> Any:
    try:
        return cls.load(name)
    except ValueError:
        return None


def _secret_value(env: str | None, secret: str | None) -> str:
    from prefect.blocks.system import Secret

    if env is not None:
        return os.environ[env]
    block: Any = Secret.load(str(secret))
    return str(block.get())


def _block_changes(loaded: LoadedFleet) -> list[Change]:
    from prefect.blocks.system import Secret

    from db_backup.blocks.databases import SqliteDatabase

    changes = []
    fleet = loaded.fleet
    if fleet.slack is not None and fleet.slack.webhook_url is not None:
        from prefect_slack import SlackWebhook

        ref = fleet.slack.webhook_url
        url = _secret_value(ref.env, ref.secret)
        changes.append(
            _block_change(
                SLACK_SLUG,
                fleet.slack.block,
                _load_block(SlackWebhook, fleet.slack.block),
                {"url": url},
                lambda: SlackWebhook(url=url).save(fleet.slack.block, overwrite=True),  # type: ignore[union-attr]
            )
        )
    for name, job in fleet.databases.items():
        if job.type == "sqlite" and job.path:
            block_name, path = block_slug_name(name), job.path
            changes.append(
                _block_change(
                    "sqlite-database",
                    block_name,
                    _load_block(SqliteDatabase, block_name),
                    {"path": path},
                    lambda n=block_name, p=path: SqliteDatabase(path=p).save(n, overwrite=True),
                )
            )
        if job.password is not None and job.password.env is not None:
            secret_name, value = secret_block_of(name, job), os.environ[job.password.env]
            changes.append(
                _block_change(
                    "secret",
                    str(secret_name),
                    _load_block(Secret, str(secret_name)),
                    {"value": value},
                    lambda n=secret_name, v=value: Secret(value=v).save(n, overwrite=True),
                )
            )
    return changes
