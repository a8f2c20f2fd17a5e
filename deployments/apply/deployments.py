"""The deployments a fleet wants (backup, verify, prune per database), compared and created."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from db_backup.deployments.apply.blocks import block_slug_name, secret_block_of
from db_backup.deployments.apply.plan import Change
from db_backup.deployments.fleet import DatabaseJob, LoadedFleet
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
    specs: list[DeploymentSpec] = []
    notes: list[str] = []  # deployments the fleet wants but cannot have (none today)
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
