"""Retention: which backups a policy keeps, as a pure function.

:func:`select` takes the backups of one name (built from their manifests and
check records), a :class:`Policy` and the current time, and returns one
:class:`Decision` per backup saying whether it is kept and which rules keep it.
It does no I/O, so every rule is tested with a table of made-up backups.

The rules combine as in restic: each rule looks at the backups on its own and a
backup is kept when **any** rule keeps it.

* ``keep_last N``: the N newest counted backups.
* ``keep_hourly/daily/weekly/monthly/yearly N``: the newest counted backup of
  each of the N most recent hours / days / ISO weeks / months / years that have
  one, in the policy's time zone (periods without a backup are skipped, not
  counted).
* ``keep_within D``: every backup younger than ``D`` (e.g. ``7d``), whatever
  its status.

Promises, whatever the policy:

* the newest successful backup is never removed;
* a backup whose latest check failed (a drill or verify found it damaged) is
  never *counted*: it fills no rule's slot, so a good backup is kept in its
  place. It is itself kept until it is older than every backup the rules keep,
  so a broken drill set-up that fails everything deletes nothing;
* when no backup is successful, none is removed;
* a backup dated after ``now`` (clock skew) is kept, and is not counted;
* a policy that keeps nothing is refused (:class:`ConfigError`).

Backups still being written have no manifest, so they are not backups and never
reach this function (prune handles their leftovers with a safety window).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from db_backup.errors import ConfigError
from db_backup.parsing import RETENTION_UNITS, format_duration, parse_timezone
from db_backup.parsing import parse_duration as _parse_duration

BUCKET_RULES = ("hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class Policy:
    """How many backups to keep; zero means "this rule keeps nothing"."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: timedelta | None = None
    timezone: str = "UTC"

    def validate(self) -> None:
        """Raise ConfigError for negative counts, an unknown zone, or a policy keeping nothing."""
        counts = self.counts()
        for rule, value in counts.items():
            if value < 0:
                raise ConfigError(f"retention rule keep-{rule} is {value}; use 0 or more")
        if self.keep_within is not None and self.keep_within < timedelta(0):
            raise ConfigError(f"retention rule keep-within is negative ({self.keep_within})")
        zone(self.timezone)
        if not any(counts.values()) and not self.keep_within:
            raise ConfigError(
                "retention policy keeps nothing: give at least one of --keep-last, "
                "--keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly "
                "or --keep-within"
            )

    def counts(self) -> dict[str, int]:
        """The count rules by name: last, hourly, ... yearly."""
        return {
            "last": self.keep_last,
            "hourly": self.keep_hourly,
            "daily": self.keep_daily,
            "weekly": self.keep_weekly,
            "monthly": self.keep_monthly,
            "yearly": self.keep_yearly,
        }

    def describe(self) -> str:
        """The policy as flags, e.g. ``--keep-last 3 --keep-daily 7 (tz UTC)``."""
        parts = [f"--keep-{rule} {n}" for rule, n in self.counts().items() if n]
        if self.keep_within:
            parts.append(f"--keep-within {format_duration(self.keep_within)}")
        return " ".join(parts) + f" (time zone {self.timezone})"


@dataclass(frozen=True)
class Backup:
    """What retention needs to know about one backup."""

    backup_id: str
    created_at: datetime
    counted: bool = True
    note: str = ""


@dataclass(frozen=True)
class Decision:
    """Keep or remove one backup, with every reason."""

    backup_id: str
    created_at: datetime
    keep: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def action(self) -> str:
        """``keep`` or ``remove``."""
        return "keep" if self.keep else "remove"


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name``; ConfigError when it is unknown (the one check)."""
    return parse_timezone(name)


def parse_duration(text: str) -> timedelta:
    """``36h``, ``7d``, ``2w`` or a sum like ``1w3d`` (whole hours); ConfigError otherwise."""
    return _parse_duration(text, RETENTION_UNITS)


def _bucket_key(rule: str, when: datetime, tz: tzinfo) -> str:
    """The period of ``when`` for a bucket rule, in local time."""
    local = when.astimezone(tz)
    if rule == "hourly":
        # The UTC offset tells apart the two wall-clock 01:00 hours of a DST fall-back.
        return local.strftime("%Y-%m-%d %H:00 UTC%z")
    if rule == "daily":
        return local.strftime("%Y-%m-%d")
    if rule == "weekly":
        iso = local.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if rule == "monthly":
        return local.strftime("%Y-%m")
    return local.strftime("%Y")


def _keep_last(backups: Sequence[Backup], n: int, add: Callable[[str, str], None]) -> None:
    for i, b in enumerate(backups[:n], start=1):
        add(b.backup_id, f"last ({i} of {n})")


def _keep_buckets(
    backups: Sequence[Backup], rule: str, n: int, tz: tzinfo, add: Callable[[str, str], None]
) -> None:
    """Keep the newest backup of each of the ``n`` newest periods that have one."""
    last_key: str | None = None
    kept = 0
    for b in backups:
        if kept >= n:
            return
        key = _bucket_key(rule, b.created_at, tz)
        if key != last_key:
            kept += 1
            add(b.backup_id, f"{rule} {key} ({kept} of {n})")
            last_key = key


def select(backups: Sequence[Backup], policy: Policy, now: datetime) -> list[Decision]:
    """Decide, for every backup, keep or remove and why; newest first.

    Pure: no I/O, same input -> same output. Raises ConfigError for a policy
    that keeps nothing.
    """
    policy.validate()
    tz = zone(policy.timezone)
    ordered = sorted(backups, key=lambda b: (b.created_at, b.backup_id), reverse=True)
    reasons: dict[str, list[str]] = {b.backup_id: [] for b in ordered}

    def add(backup_id: str, reason: str) -> None:
        reasons[backup_id].append(reason)

    # A backup dated in the future (clock skew) is kept but fills no slot: a wrong
    # clock must not push real backups out.
    counted = [b for b in ordered if b.counted and b.created_at <= now]
    _keep_last(counted, policy.keep_last, add)
    for rule in BUCKET_RULES:
        _keep_buckets(counted, rule, policy.counts()[rule], tz, add)
    _keep_within(ordered, policy.keep_within, now, add)
    _keep_safety(ordered, counted, now, add)
    _keep_uncounted(ordered, counted, reasons, now)
    return [_decision(b, reasons[b.backup_id]) for b in ordered]


def _keep_within(
    ordered: Sequence[Backup],
    within: timedelta | None,
    now: datetime,
    add: Callable[[str, str], None],
) -> None:
    if not within:
        return
    for b in ordered:
        if now - b.created_at < within:
            add(b.backup_id, f"within {format_duration(within)}")


def _keep_safety(
    ordered: Sequence[Backup],
    counted: Sequence[Backup],
    now: datetime,
    add: Callable[[str, str], None],
) -> None:
    """The guarantees that no policy can override."""
    if counted:
        add(counted[0].backup_id, "newest successful backup")
    for b in ordered:
        if b.created_at > now:
            add(b.backup_id, "dated after now (clock skew): kept")


def _keep_uncounted(
    ordered: Sequence[Backup],
    counted: Sequence[Backup],
    reasons: dict[str, list[str]],
    now: datetime,
) -> None:
    """A failed backup stays while it is newer than the oldest backup the rules keep."""
    kept_times = [b.created_at for b in ordered if reasons[b.backup_id]]
    horizon = min(kept_times) if kept_times else None
    for b in ordered:
        if reasons[b.backup_id] or (b.counted and b.created_at <= now):
            continue
        if not counted:
            reasons[b.backup_id].append(f"{b.note or 'not counted'}; no successful backup exists")
        elif horizon is not None and b.created_at >= horizon:
            reasons[b.backup_id].append(
                f"{b.note or 'not counted'}; kept until older than every kept backup"
            )


def _decision(b: Backup, reasons: list[str]) -> Decision:
    if reasons:
        return Decision(b.backup_id, b.created_at, True, tuple(reasons))
    why = f"{b.note}; older than every kept backup" if not b.counted else "no rule keeps it"
    return Decision(b.backup_id, b.created_at, False, (why,))


def utcnow() -> datetime:
    """The current time, UTC (the one impure helper, for callers)."""
    return datetime.now(UTC)
