"""A retention policy from the values a user types (CLI flags, flow parameters, fleet file)."""

from __future__ import annotations

from db_backup.parsing import RETENTION_UNITS, parse_duration
from db_backup.retention.policy import Policy


def build_policy(
    keep_last: int = 0,
    keep_hourly: int = 0,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
    keep_yearly: int = 0,
    keep_within: str | None = None,
    timezone: str = "UTC",
) -> Policy:
    """A validated policy; ConfigError for a bad duration or zone, or one that keeps nothing.

    The prune flow, ``db-backup prune`` and the fleet file all call this, so a
    policy the fleet file accepts is one every scheduled prune accepts too.
    """
    policy = Policy(
        keep_last=keep_last,
        keep_hourly=keep_hourly,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        keep_yearly=keep_yearly,
        keep_within=parse_duration(keep_within, RETENTION_UNITS) if keep_within else None,
        timezone=timezone,
    )
    policy.validate()
    return policy
