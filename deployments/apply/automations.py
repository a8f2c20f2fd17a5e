"""Server automations: failure alerts to Slack and the dead man's switch per database."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from db_backup.deployments.apply.blocks import SLACK_SLUG
from db_backup.deployments.apply.deployments import FLOWS, DeploymentSpec, _read_deployment
from db_backup.deployments.apply.plan import Change
from db_backup.deployments.fleet import LoadedFleet, parse_duration
from db_backup.errors import FleetError

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
