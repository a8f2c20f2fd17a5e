"""Turn a fleet file into blocks, deployments, schedules and automations, idempotently.

``check_fleet`` asks the server (read only) whether everything the file refers
to exists: storage and database blocks, Secret blocks, environment variables,
the Slack block and the work pool. ``plan_fleet`` compares what the file wants
with what the server holds and returns one :class:`Change` per object; only
``create`` and ``update`` changes do anything when applied, so a second apply
of the same file changes nothing.

Names on the server, for a database ``shop``:

- blocks ``sqlite-database/shop`` (SQLite), ``secret/db-backup-shop-password``
  (a password given as ``{env: NAME}``), the ``slack-webhook`` block;
- deployments ``backup-database/shop``, ``verify-backup/shop`` (with
  ``verify_schedule``), ``prune-backups/shop`` (with ``retention``, when the
  prune flow is installed);
- automations ``db-backup: failures to <slack block>`` (one per Slack block,
  matching deployments tagged ``db-backup:slack:<block>``) and
  ``db-backup: no successful backup of shop`` (the dead man's switch).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from db_backup.deployments.fleet import DatabaseJob, FleetError, LoadedFleet, parse_duration
from db_backup.flows.hooks import AUTOMATION_TAG

PASSWORD_ENVS = {
    "postgres": "DB_BACKUP_PG_PASSWORD",
    "mysql": "DB_BACKUP_MYSQL_PASSWORD",
    "mongodb": "DB_BACKUP_MONGO_PASSWORD",
}
FLOWS = {
    "backup": ("backup-database", "flows/backup.py:backup_database", "db_backup.flows.backup"),
    "verify": ("verify-backup", "flows/restore.py:verify_backup", "db_backup.flows.restore"),
    "prune": ("prune-backups", "flows/prune.py:prune_backups", "db_backup.flows.prune"),
}
SLACK_SLUG = "slack-incoming-webhook"  # prefect-slack's SlackWebhook block type
SYMBOLS = {"create": "+", "update": "~", "unchanged": "=", "skip": "!"}
FAILURE_EVENTS = (
    "prefect.flow-run.Failed",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.TimedOut",
)
FAILURE_SUBJECT = (
    "db-backup: {{ flow.name }} run {{ flow_run.name }} ended {{ flow_run.state.name }}"
)
FAILURE_BODY = (
    "Database: {{ flow_run.parameters.get('name') or flow_run.parameters.get('database') }}\n"
    "Flow: {{ flow.name }}\n"
    "Error: {{ flow_run.state.message }}"
)


@dataclass
class Change:
    """One object the fleet wants, and what applying the fleet does to it."""

    kind: str
    target: str
    action: str
    detail: str = ""
    run: Callable[[], None] | None = field(default=None, repr=False)

    def describe(self) -> str:
        """``+ deployment backup-database/shop (new)`` and the like."""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{SYMBOLS[self.action]} {self.kind} {self.target}{detail}"


@dataclass
class Plan:
    """Every change of one fleet, in the order they are applied."""

    changes: list[Change]

    @property
    def pending(self) -> list[Change]:
        """The changes that create or update something."""
        return [c for c in self.changes if c.action in ("create", "update")]

    def summary(self) -> str:
        """``Plan: 2 to create, 1 to update, 5 unchanged.``"""
        count = {a: sum(c.action == a for c in self.changes) for a in SYMBOLS}
        return (
            f"Plan: {count['create']} to create, {count['update']} to update, "
            f"{count['unchanged']} unchanged"
            + (f", {count['skip']} skipped" if count["skip"] else "")
            + "."
        )


def block_slug_name(value: str) -> str:
    """A block name from a backup name (lowercase letters, digits, dashes)."""
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


def secret_block_of(name: str, job: DatabaseJob) -> str | None:
    """The Secret block holding ``name``'s password, if it has one."""
    if job.password is None:
        return None
    return job.password.secret or f"db-backup-{block_slug_name(name)}-password"


# --------------------------------------------------------------------- checks


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

    if "://" in ref or not re.match(r"^[a-z0-9-]+/[A-Za-z0-9_-]+$", ref):
        return None
    slug, name = ref.split("/")
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


# ---------------------------------------------------------------------- plan


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


@dataclass
class DeploymentSpec:
    """What one deployment of the fleet should look like on the server."""

    flow_name: str
    name: str
    entrypoint: str
    module: str
    parameters: dict[str, Any]
    cron: str
    timezone: str
    work_pool: str
    work_queue: str
    tags: list[str]
    job_variables: dict[str, Any]
    pull_steps: list[dict[str, Any]]
    description: str

    @property
    def full_name(self) -> str:
        """``flow/deployment`` as ``prefect deployment run`` takes it."""
        return f"{self.flow_name}/{self.name}"

    def comparable(self) -> dict[str, Any]:
        """The fields compared with the server's copy."""
        return {
            "entrypoint": self.entrypoint,
            "parameters": self.parameters,
            "schedules": [(self.cron, self.timezone, True)],
            "work_pool": self.work_pool,
            "work_queue": self.work_queue,
            "tags": sorted(self.tags),
            "job_variables": self.job_variables,
            "pull_steps": self.pull_steps,
            "description": self.description,
        }


def _database_param(name: str, job: DatabaseJob) -> str:
    if job.block:
        return job.block
    if job.type == "sqlite":
        return f"sqlite-database/{block_slug_name(name)}"
    return str(job.url)


def _common(loaded: LoadedFleet, name: str) -> dict[str, Any]:
    fleet, job = loaded.fleet, loaded.fleet.databases[name]
    tags = ["db-backup", *job.tags]
    if fleet.alerts_of(name) and fleet.slack is not None:
        tags += [AUTOMATION_TAG, f"db-backup:slack:{fleet.slack.block}"]
    job_variables: dict[str, Any] = {}
    secret = secret_block_of(name, job)
    if secret is not None:
        env_name = PASSWORD_ENVS[job.type]
        job_variables = {"env": {env_name: "{{ prefect.blocks.secret." + secret + " }}"}}
    return {
        "timezone": fleet.timezone_of(name),
        "work_pool": job.work_pool or fleet.defaults.work_pool,
        "work_queue": fleet.defaults.work_queue or "default",
        "tags": tags,
        "job_variables": job_variables,
        "pull_steps": [
            {
                "prefect.deployments.steps.set_working_directory": {
                    "directory": fleet.defaults.project_dir
                }
            }
        ],
    }


def deployment_specs(loaded: LoadedFleet) -> tuple[list[DeploymentSpec], list[str]]:
    """The deployments a fleet wants, and notes on those it cannot have."""
    specs, notes = [], []
    for name, job in loaded.fleet.databases.items():
        common = _common(loaded, name)
        storage = loaded.fleet.storage_of(name)
        params: dict[str, Any] = {
            "database": _database_param(name, job),
            "storage": storage,
            "name": name,
        }
        params["compression_level"] = job.compression_level
        specs.append(_spec("backup", name, params, job.schedule, common, f"Back up {name}."))
        if job.verify_schedule:
            vparams = {"name": name, "storage": storage, "backup": "latest"}
            desc = f"Verify the latest backup of {name}."
            specs.append(_spec("verify", name, vparams, job.verify_schedule, common, desc))
        if job.retention is not None:
            if importlib.util.find_spec(FLOWS["prune"][2]) is None:
                notes.append(f"prune-backups/{name}: this db-backup has no prune flow yet")
                continue
            rules = job.retention.model_dump(exclude={"schedule"}, exclude_none=True)
            pparams = {"name": name, "storage": storage, **rules, "apply": True}
            pparams["timezone"] = common["timezone"]
            desc = f"Apply the retention policy to backups of {name}."
            specs.append(_spec("prune", name, pparams, job.retention.schedule, common, desc))
    return specs, notes


def _spec(
    kind: str, name: str, params: dict[str, Any], cron: str, common: dict[str, Any], desc: str
) -> DeploymentSpec:
    flow_name, entrypoint, module = FLOWS[kind]
    tags = [*common["tags"], kind]
    return DeploymentSpec(
        flow_name,
        name,
        entrypoint,
        module,
        params,
        cron,
        **{**common, "tags": tags},
        description=desc,
    )


def _server_view(deployment: Any) -> dict[str, Any]:
    return {
        "entrypoint": deployment.entrypoint,
        "parameters": deployment.parameters,
        "schedules": [
            (s.schedule.cron, s.schedule.timezone, s.active)
            for s in deployment.schedules
            if hasattr(s.schedule, "cron")
        ],
        "work_pool": deployment.work_pool_name,
        "work_queue": deployment.work_queue_name,
        "tags": sorted(deployment.tags),
        "job_variables": deployment.job_variables or {},
        "pull_steps": deployment.pull_steps or [],
        "description": deployment.description,
    }


def _read_deployment(client: Any, full_name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(full_name)
    except ObjectNotFound:
        return None


def _deploy(client: Any, spec: DeploymentSpec) -> None:
    import importlib

    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.utilities.callables import parameter_schema

    module = importlib.import_module(spec.module)
    flow_obj = getattr(module, spec.entrypoint.rsplit(":", 1)[1])
    flow_id = client.create_flow_from_name(spec.flow_name)
    client.create_deployment(
        flow_id=flow_id,
        name=spec.name,
        entrypoint=spec.entrypoint,
        parameters=spec.parameters,
        schedules=[
            DeploymentScheduleCreate(
                schedule=CronSchedule(cron=spec.cron, timezone=spec.timezone), active=True
            )
        ],
        work_pool_name=spec.work_pool,
        work_queue_name=spec.work_queue,
        tags=spec.tags,
        job_variables=spec.job_variables,
        pull_steps=spec.pull_steps,
        description=spec.description,
        parameter_openapi_schema=parameter_schema(flow_obj).model_dump_for_openapi(),
        enforce_parameter_schema=True,
    )


def _deployment_changes(client: Any, specs: list[DeploymentSpec]) -> list[Change]:
    changes = []
    for spec in specs:
        current = _read_deployment(client, spec.full_name)
        apply = lambda s=spec: _deploy(client, s)  # noqa: E731
        if current is None:
            changes.append(Change("deployment", spec.full_name, "create", "new", apply))
            continue
        have, want = _server_view(current), spec.comparable()
        differs = [k for k in want if have[k] != want[k]]
        action = "update" if differs else "unchanged"
        changes.append(
            Change(
                "deployment", spec.full_name, action, ", ".join(differs), apply if differs else None
            )
        )
    return changes


# ---------------------------------------------------------------- automations


def default_window(cron: str, timezone: str) -> timedelta:
    """How long without a successful backup before the dead man's switch fires.

    The longest gap between the next ten scheduled runs, plus 10% (at least 15
    minutes) for the backup itself: 26 h 24 min for a nightly backup.
    """
    import asyncio

    from prefect.server.schemas.schedules import CronSchedule

    times = asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(n=11))
    gap = max(b - a for a, b in zip(times, times[1:], strict=False))
    return gap + max(gap * 0.1, timedelta(minutes=15))


def _failure_automation(block: str, block_id: Any) -> Any:
    from prefect.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.actions import SendNotification

    return AutomationCore(
        name=f"db-backup: failures to {block}",
        description="Posts to Slack when a db-backup run ends Failed, Crashed or TimedOut.",
        enabled=True,
        trigger=EventTrigger(
            expect=set(FAILURE_EVENTS),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": f"prefect.tag.db-backup:slack:{block}"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            SendNotification(block_document_id=block_id, subject=FAILURE_SUBJECT, body=FAILURE_BODY)
        ],
    )


def _switch_automation(name: str, deployment_id: Any, window: timedelta, block_id: Any) -> Any:
    from prefect.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.actions import SendNotification

    hours = window.total_seconds() / 3600
    return AutomationCore(
        name=f"db-backup: no successful backup of {name}",
        description=f"Dead man's switch: no completed backup of {name} within {hours:g} h.",
        enabled=True,
        trigger=EventTrigger(
            expect={"prefect.flow-run.Completed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": f"prefect.deployment.{deployment_id}"},
            posture=Posture.Proactive,
            threshold=1,
            within=window,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject=f"db-backup: no successful backup of {name} in {hours:g} h",
                body=(
                    f"Database: {name}\nNo run of backup-database/{name} completed in the last "
                    f"{hours:g} hours. Check the deployment, its work pool and the worker."
                ),
            )
        ],
    )


def _strip_ids(value: Any) -> Any:
    """Drop generated ids; sort string lists (``expect`` is a set: its order is arbitrary)."""
    if isinstance(value, dict):
        return {k: _strip_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        items = [_strip_ids(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value


def automation_fingerprint(automation: Any) -> str:
    """The parts of an automation that matter, as JSON (trigger ids left out)."""
    fields = {"name", "description", "enabled", "trigger", "actions"}
    fields |= {"actions_on_trigger", "actions_on_resolve"}
    data = automation.model_dump(mode="json", include=fields)
    for key in ("actions", "actions_on_trigger", "actions_on_resolve"):
        data[key] = sorted(json.dumps(a, sort_keys=True) for a in data.get(key) or [])
    return json.dumps(_strip_ids(data), sort_keys=True)


def _automation_change(client: Any, name: str, build: Callable[[], Any | None]) -> Change:
    existing = client.read_automations_by_name(name)
    wanted = build()

    def apply() -> None:
        fresh = build()
        if fresh is None:
            raise FleetError(name, [f"automation {name!r}: its block or deployment is missing"])
        current = client.read_automations_by_name(name)
        if current:
            client.update_automation(current[0].id, fresh)
            for extra in current[1:]:
                client.delete_automation(extra.id)
        else:
            client.create_automation(fresh)

    if not existing:
        return Change("automation", name, "create", "new", apply)
    same = wanted is not None and len(existing) == 1
    if same and automation_fingerprint(existing[0]) == automation_fingerprint(wanted):
        return Change("automation", name, "unchanged")
    return Change("automation", name, "update", "trigger or actions", apply)


def _block_id(client: Any, slug: str, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_block_document_by_name(name=name, block_type_slug=slug).id
    except ObjectNotFound:
        return None


def _automation_changes(
    client: Any, loaded: LoadedFleet, specs: list[DeploymentSpec]
) -> list[Change]:
    fleet = loaded.fleet
    if fleet.slack is None or not any(fleet.alerts_of(n) for n in fleet.databases):
        return []
    block = fleet.slack.block

    def failures() -> Any:
        block_id = _block_id(client, SLACK_SLUG, block)
        return None if block_id is None else _failure_automation(block, block_id)

    changes = [_automation_change(client, f"db-backup: failures to {block}", failures)]
    for spec in specs:
        if spec.flow_name != FLOWS["backup"][0] or not fleet.alerts_of(spec.name):
            continue
        job = fleet.databases[spec.name]
        limit = job.expect_success_within or fleet.defaults.expect_success_within
        window = parse_duration(limit) if limit else default_window(spec.cron, spec.timezone)

        def switch(s: DeploymentSpec = spec, w: timedelta = window) -> Any:
            current = _read_deployment(client, s.full_name)
            block_id = _block_id(client, SLACK_SLUG, block)
            if current is None or block_id is None:
                return None
            return _switch_automation(s.name, current.id, w, block_id)

        name = f"db-backup: no successful backup of {spec.name}"
        changes.append(_automation_change(client, name, switch))
    return changes


def plan_fleet(loaded: LoadedFleet, client: Any) -> Plan:
    """Compare the fleet with the server; nothing is written."""
    specs, notes = deployment_specs(loaded)
    changes = _block_changes(loaded)
    changes += _deployment_changes(client, specs)
    changes += _automation_changes(client, loaded, specs)
    changes += [
        Change("deployment", note.split(":")[0], "skip", note.split(": ", 1)[1]) for note in notes
    ]
    return Plan(changes)


def apply_plan(plan: Plan, report: Callable[[str], None] = print) -> int:
    """Apply the pending changes in order (blocks, deployments, automations)."""
    for change in plan.pending:
        assert change.run is not None
        change.run()
        report(f"applied: {change.describe()}")
    return len(plan.pending)
