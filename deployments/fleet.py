"""The fleet file: every database, where it goes, when, how long, who hears of failures.

One YAML file describes a fleet; ``db-backup apply FILE`` turns it into blocks,
deployments, schedules and automations. This module only reads and checks the
file (no server): unknown keys, bad cron expressions, unknown time zones and
secrets written in clear are refused with the line they are on::

    version: 1
    defaults:
      work_pool: db-backup-process
      timezone: Europe/Berlin
      storage: local-file-system/backups
    slack:
      block: db-backup-alerts
      webhook_url: {env: SLACK_WEBHOOK_URL}
    databases:
      shop:
        type: sqlite
        path: /srv/shop.db
        schedule: "30 2 * * *"
        retention: {keep_daily: 7, keep_weekly: 4}
      orders:
        type: postgres
        url: postgresql://backup@db1.internal:5432/orders
        password: {secret: orders-db-password}
        schedule: "0 * * * *"

Secrets are references only: ``{env: NAME}`` (read by ``apply`` on the machine
that runs it, stored in a Prefect Secret block) or ``{secret: NAME}`` (an
existing Secret block).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from db_backup import parsing
from db_backup.errors import ConfigError, FleetError
from db_backup.manifest import check_name

_BLOCK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def parse_duration(value: str) -> timedelta:
    """``"26h"``, ``"90m"``, ``"2d"``, ``"30s"`` as a timedelta; ValueError otherwise.

    The one duration grammar (:func:`db_backup.parsing.parse_duration`) with
    the units an alert window takes; ValueError so pydantic reports the line.
    """
    try:
        return parsing.parse_duration(value, parsing.WINDOW_UNITS)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def check_timezone(value: str) -> str:
    """An IANA time-zone name such as ``Europe/Berlin``; ValueError otherwise."""
    try:
        parsing.parse_timezone(value)
    except ConfigError as exc:
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)"
        ) from exc
    return value


def check_retention(value: Retention) -> None:
    """ValueError unless the prune flow accepts ``value`` (the same parser and checks)."""
    from db_backup.retention.flags import build_policy

    try:
        build_policy(
            value.keep_last,
            value.keep_hourly,
            value.keep_daily,
            value.keep_weekly,
            value.keep_monthly,
            value.keep_yearly,
            value.keep_within,
        )
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def check_url(value: str, what: str) -> str:
    """ValueError when a URL holds a secret or cannot be parsed; the secret is never echoed."""
    problem = parsing.url_secret_problem(value)
    if problem is not None:
        raise ValueError(
            f"the {what} {problem} ({parsing.mask_url(value)}); remove it and use "
            + (
                "password: {env: NAME} or password: {secret: BLOCK-NAME}"
                if what == "URL"
                else "a storage block that holds the credentials"
            )
        )
    return value


def check_cron(value: str) -> str:
    """A five-field cron expression the Prefect server accepts; ValueError otherwise."""
    from prefect.client.schemas.schedules import CronSchedule

    if len(value.split()) != 5:
        raise ValueError(f"invalid cron expression {value!r}: expected 5 fields")
    try:
        CronSchedule(cron=value)
    except ValidationError as exc:
        raise ValueError(f"invalid cron expression {value!r}") from exc
    return value


def _is_database_block(ref: str) -> bool:
    block = parsing.block_reference(ref, ("-database",))
    return block is not None and all(_BLOCK_NAME_RE.match(part) for part in block)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """Where a secret comes from: an environment variable or an existing Secret block."""

    env: str | None = Field(default=None, description="Environment variable read by apply.")
    secret: str | None = Field(default=None, description="Name of an existing Secret block.")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.secret is None):
            raise ValueError("give exactly one of env: NAME or secret: BLOCK-NAME")
        if self.secret is not None and not _BLOCK_NAME_RE.match(self.secret):
            raise ValueError(f"Secret block name {self.secret!r} is invalid (a-z, 0-9, '-')")
        return self


class Retention(_Strict):
    """How many backups to keep (the prune flow's policy) and when to prune."""

    keep_last: int = Field(default=0, ge=0)
    keep_hourly: int = Field(default=0, ge=0)
    keep_daily: int = Field(default=0, ge=0)
    keep_weekly: int = Field(default=0, ge=0)
    keep_monthly: int = Field(default=0, ge=0)
    keep_yearly: int = Field(default=0, ge=0)
    keep_within: str | None = None
    schedule: str = Field(default="0 5 * * *", description="Cron of the prune runs.")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("keep_within")
    @classmethod
    def _within(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parsing.parse_duration(value, parsing.RETENTION_UNITS)
            except ConfigError as exc:
                raise ValueError(f"{exc}: the prune flow counts whole hours") from None
        return value

    @model_validator(mode="after")
    def _keeps_something(self) -> Retention:
        counts = (self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly)
        if not any(counts + (self.keep_monthly, self.keep_yearly)) and not self.keep_within:
            raise ValueError("retention keeps nothing: set at least one keep_* rule")
        check_retention(self)
        return self


class SlackSettings(_Strict):
    """The Slack target of the failure and dead-man's-switch alerts."""

    block: str = Field(description="Name of the prefect-slack SlackWebhook block.")
    webhook_url: SecretRef | None = Field(
        default=None, description="Create or update the block from this secret."
    )

    @field_validator("block")
    @classmethod
    def _block_name(cls, value: str) -> str:
        if not _BLOCK_NAME_RE.match(value):
            raise ValueError(f"block name {value!r} is invalid (a-z, 0-9, '-')")
        return value


class Defaults(_Strict):
    """Settings every database gets unless it says otherwise."""

    work_pool: str = "db-backup-process"
    work_queue: str | None = None
    timezone: str = "UTC"
    storage: str | None = None
    project_dir: str = Field(
        default="{{ $DB_BACKUP_PROJECT_DIR }}",
        description="Directory of the project on the worker (pull step).",
    )
    expect_success_within: str | None = None
    alerts: bool = True

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("storage")
    @classmethod
    def _no_secret_in_storage(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, "storage URL")

    @field_validator("expect_success_within")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


Engine = Literal["sqlite", "postgres", "mysql", "mongodb"]


class DatabaseJob(_Strict):
    """One database of the fleet: the source, its schedule and where it goes."""

    type: Engine
    path: str | None = Field(default=None, description="SQLite file on the worker.")
    url: str | None = Field(default=None, description="Server URL, never with a password.")
    block: str | None = Field(default=None, description="An existing database block slug/name.")
    password: SecretRef | None = None
    storage: str | None = None
    schedule: str = Field(description="Cron expression of the backups.")
    timezone: str | None = None
    verify_schedule: str | None = None
    retention: Retention | None = None
    compression_level: int = Field(default=3, ge=1, le=22)
    expect_success_within: str | None = None
    alerts: bool | None = None
    work_pool: str | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("schedule", "verify_schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)

    @field_validator("expect_success_within")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, "URL")

    @field_validator("storage")
    @classmethod
    def _no_secret_in_storage(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, "storage URL")

    @model_validator(mode="after")
    def _one_source(self) -> DatabaseJob:
        given = [k for k in ("path", "url", "block") if getattr(self, k)]
        allowed = ("path", "block") if self.type == "sqlite" else ("url", "block")
        if len(given) != 1 or given[0] not in allowed:
            raise ValueError(f"a {self.type} database needs exactly one of {' or '.join(allowed)}")
        if self.password is not None and not self.url:
            raise ValueError("password goes with url (a database block holds its own secrets)")
        if self.block is not None and not _is_database_block(self.block):
            raise ValueError(f"block {self.block!r} is not a database block reference (slug/name)")
        return self


class Fleet(_Strict):
    """A whole fleet file."""

    version: Literal[1] = 1
    defaults: Defaults = Field(default_factory=Defaults)
    slack: SlackSettings | None = None
    databases: dict[str, DatabaseJob] = Field(min_length=1)

    @field_validator("databases")
    @classmethod
    def _names(cls, value: dict[str, DatabaseJob]) -> dict[str, DatabaseJob]:
        for name in value:
            try:
                check_name(name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _storage_everywhere(self) -> Fleet:
        for name, job in self.databases.items():
            if not (job.storage or self.defaults.storage):
                raise ValueError(f"database {name!r} has no storage (set it or defaults.storage)")
        return self

    def storage_of(self, name: str) -> str:
        """Where backups of ``name`` go."""
        return self.databases[name].storage or self.defaults.storage or ""

    def timezone_of(self, name: str) -> str:
        """The time zone of ``name``'s schedules."""
        return self.databases[name].timezone or self.defaults.timezone

    def alerts_of(self, name: str) -> bool:
        """Whether failures of ``name`` post to Slack (needs ``slack:``)."""
        job = self.databases[name]
        enabled = self.defaults.alerts if job.alerts is None else job.alerts
        return bool(enabled and self.slack)


class LoadedFleet:
    """A validated fleet plus the line of every key, for error messages."""

    def __init__(self, fleet: Fleet, source: str, lines: dict[tuple[Any, ...], int]) -> None:
        self.fleet = fleet
        self.source = source
        self._lines = lines

    def line(self, *path: Any) -> int:
        """The line of the deepest existing key on ``path`` (1-based)."""
        return _line_for(self._lines, path)

    def where(self, *path: Any) -> str:
        """``file:line`` for a key path."""
        return f"{self.source}:{self.line(*path)}"


def _index_lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            key_path = (*path, key.value)
            _index_lines(value, key_path, out)
            out[key_path] = key.start_mark.line + 1  # a key's line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*path, index), out)


def _line_for(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


def _message(error: Any) -> str:
    msg = str(error["msg"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {error['loc'][-1]!r} (check the spelling)"
    if error["type"] == "missing":
        return f"missing required key {error['loc'][-1]!r}"
    return msg.removeprefix("Value error, ")


def _location(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A pydantic location without the model/union labels pydantic inserts."""
    return tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))


def load_fleet_text(text: str, source: str = "fleet.yaml") -> LoadedFleet:
    """Parse and validate a fleet file; FleetError lists every problem with its line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise FleetError(source, [f"{source}:{line}: not valid YAML: {exc.problem}"]) from exc
    if node is None or not isinstance(data, dict):
        raise FleetError(source, [f"{source}:1: the file must be a mapping with databases:"])
    lines: dict[tuple[Any, ...], int] = {}
    _index_lines(node, (), lines)
    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = _location(tuple(error["loc"]))
            where = ".".join(str(p) for p in loc) or "(top level)"
            problems.append(f"{source}:{_line_for(lines, loc)}: {where}: {_message(error)}")
        raise FleetError(source, problems) from exc
    return LoadedFleet(fleet, source, lines)


def load_fleet(path: Path) -> LoadedFleet:
    """Read and validate the fleet file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read fleet file {path}: {exc.strerror or exc}") from exc
    return load_fleet_text(text, str(path))
