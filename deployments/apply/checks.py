"""Read-only checks: does everything the fleet file refers to exist on the server?"""

from __future__ import annotations

import os
import re
from typing import Any

from db_backup.deployments.apply.blocks import SLACK_SLUG
from db_backup.deployments.fleet import LoadedFleet
from db_backup.errors import FleetError
from db_backup.parsing import block_reference


def _block_exists(client: Any, slug: str, name: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    try:
        client.read_block_document_by_name(name=name, block_type_slug=slug)
    except ObjectNotFound:
        return False
    return True


def _block_type_exists(client: Any, slug: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    try:
        client.read_block_type_by_slug(slug)
    except ObjectNotFound:
        return False
    return True


def _looks_like_block(ref: str, client: Any) -> tuple[str, str] | None:
    from db_backup.blocks.resolve import STORAGE_BLOCKS

    block = block_reference(ref)
    if block is None or not re.match(r"^[a-z0-9-]+$", block[0]):
        return None
    if not re.match(r"^[A-Za-z0-9_-]+$", block[1]):
        return None
    slug, name = block
    if slug in STORAGE_BLOCKS or _block_type_exists(client, slug):
        return slug, name
    return None


def _check_storage(loaded: LoadedFleet, client: Any, name: str) -> list[str]:
    fleet = loaded.fleet
    ref = fleet.storage_of(name)
    block = _looks_like_block(ref, client)
    if block is None or _block_exists(client, *block):
        return []
    path = (
        ("databases", name, "storage") if fleet.databases[name].storage else ("defaults", "storage")
    )
    return [f"{loaded.where(*path)}: storage block {ref!r} does not exist (create it first)"]


def _check_database(loaded: LoadedFleet, client: Any, name: str) -> list[str]:
    job = loaded.fleet.databases[name]
    problems = []
    if job.block is not None:
        slug, block_name = job.block.split("/")
        if not _block_exists(client, slug, block_name):
            where = loaded.where("databases", name, "block")
            problems.append(f"{where}: database block {job.block!r} does not exist")
    if job.password is not None:
        where = loaded.where("databases", name, "password")
        problems += _check_secret(client, job.password.env, job.password.secret, where)
    return problems


def _check_secret(client: Any, env: str | None, secret: str | None, where: str) -> list[str]:
    if env is not None and not os.environ.get(env):
        return [f"{where}: environment variable {env} is not set (the secret comes from it)"]
    if secret is not None and not _block_exists(client, "secret", secret):
        return [f"{where}: Secret block {secret!r} does not exist"]
    return []


def _check_slack(loaded: LoadedFleet, client: Any) -> list[str]:
    slack = loaded.fleet.slack
    if slack is None:
        return []
    if slack.webhook_url is not None:
        where = loaded.where("slack", "webhook_url")
        return _check_secret(client, slack.webhook_url.env, slack.webhook_url.secret, where)
    if not _block_exists(client, SLACK_SLUG, slack.block):
        return [
            f"{loaded.where('slack', 'block')}: SlackWebhook block {slack.block!r} does not "
            "exist (create it, or give webhook_url: {env: NAME})"
        ]
    return []


def _check_work_pools(loaded: LoadedFleet, client: Any) -> list[str]:
    from prefect.exceptions import ObjectNotFound

    problems = []
    pools: dict[tuple[str, ...], str] = {("defaults", "work_pool"): loaded.fleet.defaults.work_pool}
    for name, job in loaded.fleet.databases.items():
        if job.work_pool:
            pools[("databases", name, "work_pool")] = job.work_pool
    for path, pool in pools.items():
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            problems.append(
                f"{loaded.where(*path)}: work pool {pool!r} does not exist "
                f"(prefect work-pool create {pool} --type process)"
            )
    return problems


def check_fleet(loaded: LoadedFleet, client: Any) -> None:
    """Refuse, before anything is created, a fleet that refers to missing things."""
    problems = _check_work_pools(loaded, client) + _check_slack(loaded, client)
    for name in loaded.fleet.databases:
        problems += _check_storage(loaded, client, name) + _check_database(loaded, client, name)
    if problems:
        raise FleetError(loaded.source, problems)
