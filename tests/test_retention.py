"""Retention as a pure function: tables of made-up backups, policies and expected kept sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from db_backup.errors import ConfigError
from db_backup.retention.policy import (
    Backup,
    Policy,
    format_duration,
    parse_duration,
    select,
)


def at(text: str) -> datetime:
    """'2026-01-15 02:00' (UTC) -> aware datetime."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def bid(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%SZ")


def backups(*times: str, failed: tuple[str, ...] = ()) -> list[Backup]:
    out = []
    for t in times:
        when = at(t)
        bad = t in failed
        out.append(
            Backup(bid(when), when, counted=not bad, note="last drill failed" if bad else "")
        )
    return out


def kept(decisions: list, fmt: str = "%Y-%m-%d %H:%M") -> list[str]:
    return sorted(d.created_at.strftime(fmt) for d in decisions if d.keep)


def hourly(start: str, hours: int) -> list[str]:
    first = at(start)
    return [(first + timedelta(hours=h)).strftime("%Y-%m-%d %H:%M") for h in range(hours)]


def daily(start: str, days: int, hour: str = "02:00") -> list[str]:
    first = at(f"{start} {hour}")
    return [(first + timedelta(days=d)).strftime("%Y-%m-%d %H:%M") for d in range(days)]


NOW = at("2026-03-31 12:00")

# (id, backups, policy, now, expected kept) -------------------------------------------
TABLE = [
    (
        "keep-last keeps the N newest",
        daily("2026-03-01", 10),
        Policy(keep_last=3),
        NOW,
        ["2026-03-08 02:00", "2026-03-09 02:00", "2026-03-10 02:00"],
    ),
    (
        "keep-last larger than the number of backups keeps all",
        daily("2026-03-01", 2),
        Policy(keep_last=5),
        NOW,
        ["2026-03-01 02:00", "2026-03-02 02:00"],
    ),
    (
        "keep-daily keeps the newest backup of each day",
        [
            "2026-03-01 01:00",
            "2026-03-01 23:00",
            "2026-03-02 01:00",
            "2026-03-02 05:00",
            "2026-03-03 04:00",
        ],
        Policy(keep_daily=2),
        NOW,
        ["2026-03-02 05:00", "2026-03-03 04:00"],
    ),
    (
        "days without a backup are skipped, not counted",
        ["2026-03-01 02:00", "2026-03-05 02:00", "2026-03-20 02:00"],
        Policy(keep_daily=2),
        NOW,
        ["2026-03-05 02:00", "2026-03-20 02:00"],
    ),
    (
        "keep-hourly keeps one per hour",
        ["2026-03-01 10:05", "2026-03-01 10:55", "2026-03-01 11:10", "2026-03-01 12:30"],
        Policy(keep_hourly=24),
        NOW,
        ["2026-03-01 10:55", "2026-03-01 11:10", "2026-03-01 12:30"],
    ),
    (
        "keep-weekly uses ISO weeks (Mon 2026-03-02 starts W10)",
        ["2026-03-01 02:00", "2026-03-02 02:00", "2026-03-08 02:00", "2026-03-09 02:00"],
        Policy(keep_weekly=2),
        NOW,
        ["2026-03-08 02:00", "2026-03-09 02:00"],
    ),
    (
        "keep-weekly across a year boundary: 2025-12-29 and 2026-01-04 are both 2026-W01",
        ["2025-12-28 02:00", "2025-12-29 02:00", "2026-01-04 02:00"],
        Policy(keep_weekly=5),
        NOW,
        ["2025-12-28 02:00", "2026-01-04 02:00"],
    ),
    (
        "keep-monthly and keep-yearly",
        [
            "2024-06-01 02:00",
            "2024-12-31 02:00",
            "2025-01-15 02:00",
            "2025-12-01 02:00",
            "2026-01-10 02:00",
            "2026-01-20 02:00",
            "2026-02-10 02:00",
        ],
        Policy(keep_monthly=2, keep_yearly=3),
        NOW,
        ["2024-12-31 02:00", "2025-12-01 02:00", "2026-01-20 02:00", "2026-02-10 02:00"],
    ),
    (
        "grandfather-father-son: rules combine as a union",
        daily("2026-01-01", 90),
        Policy(keep_daily=7, keep_weekly=4, keep_monthly=3),
        at("2026-04-01 12:00"),
        sorted(
            set(daily("2026-03-25", 7))  # 7 daily: 03-25 .. 03-31
            # 4 weekly: newest of W14 (Tue 03-31), W13 (Sun 03-29), W12 and W11 (Sundays)
            | {"2026-03-22 02:00", "2026-03-15 02:00"}
            | {"2026-01-31 02:00", "2026-02-28 02:00"}  # 3 monthly: month ends (03-31 too)
        ),
    ),
    (
        "keep-within keeps everything younger than the duration",
        daily("2026-03-20", 12),
        Policy(keep_within=timedelta(days=3)),
        NOW,
        ["2026-03-29 02:00", "2026-03-30 02:00", "2026-03-31 02:00"],
    ),
    (
        "keep-within plus keep-last",
        daily("2026-03-20", 12),
        Policy(keep_last=1, keep_within=timedelta(hours=36)),
        NOW,
        ["2026-03-30 02:00", "2026-03-31 02:00"],
    ),
    (
        "the newest backup is kept even when keep-within keeps nothing",
        daily("2026-01-01", 5),
        Policy(keep_within=timedelta(days=1)),
        NOW,
        ["2026-01-05 02:00"],
    ),
    (
        "a backup dated after now (clock skew) is kept",
        ["2026-03-01 02:00", "2026-03-02 02:00", "2026-04-05 02:00"],
        Policy(keep_last=1),
        NOW,
        ["2026-03-02 02:00", "2026-04-05 02:00"],
    ),
    (
        "no backups: nothing to decide",
        [],
        Policy(keep_last=3),
        NOW,
        [],
    ),
]


@pytest.mark.parametrize(
    ("times", "policy", "now", "expected"),
    [pytest.param(t, p, n, e, id=i) for i, t, p, n, e in TABLE],
)
def test_retention_table(times: list[str], policy: Policy, now: datetime, expected: list[str]):
    decisions = select(backups(*times), policy, now)
    assert kept(decisions) == expected
    assert len(decisions) == len(times)
    for d in decisions:
        assert d.reasons, f"{d.backup_id} has no reason"


TZ_NOW = at("2026-12-31 12:00")


# Time zones and DST --------------------------------------------------------------------
TZ_TABLE = [
    (
        # 23:30 UTC on 03-01 is 00:30 on 03-02 in Paris: a different day than in UTC.
        "daily buckets follow the policy's zone, not UTC",
        ["2026-03-01 22:30", "2026-03-01 23:30"],
        "Europe/Paris",
        Policy(keep_daily=5, timezone="Europe/Paris"),
        ["2026-03-01 22:30", "2026-03-01 23:30"],
    ),
    (
        "the same backups in UTC share a day",
        ["2026-03-01 22:30", "2026-03-01 23:30"],
        "UTC",
        Policy(keep_daily=5),
        ["2026-03-01 23:30"],
    ),
    (
        # 2026-11-01 in New York: 01:00-01:59 happens twice (EDT, then EST).
        # 05:30 UTC = 01:30 EDT; 06:30 UTC = 01:30 EST: two real hours, both kept.
        "DST fall-back: the repeated wall-clock hour is two hourly buckets",
        ["2026-11-01 05:10", "2026-11-01 05:30", "2026-11-01 06:30"],
        "America/New_York",
        Policy(keep_hourly=10, timezone="America/New_York"),
        ["2026-11-01 05:30", "2026-11-01 06:30"],
    ),
    (
        # The 25-hour day 2026-11-01 (NY) runs from 04:00 UTC to 05:00 UTC the next day:
        # 11-02 04:30 UTC is 23:30 EST on 11-01, 11-02 05:30 UTC is 00:30 on 11-02.
        "DST fall-back: the 25-hour day is one daily bucket",
        ["2026-11-01 04:30", "2026-11-01 06:30", "2026-11-02 04:30", "2026-11-02 05:30"],
        "America/New_York",
        Policy(keep_daily=10, timezone="America/New_York"),
        ["2026-11-02 04:30", "2026-11-02 05:30"],
    ),
    (
        # 2026-03-29 in Paris: 02:00-02:59 does not exist; 00:30 UTC = 01:30 CET,
        # 01:30 UTC = 03:30 CEST. Different hours, same 23-hour day.
        "DST spring-forward: hours either side of the gap are separate, the day is one",
        ["2026-03-29 00:30", "2026-03-29 01:30", "2026-03-29 21:30", "2026-03-29 22:30"],
        "Europe/Paris",
        Policy(keep_daily=10, timezone="Europe/Paris"),
        # 21:30 UTC = 23:30 CEST (03-29); 22:30 UTC = 00:30 CEST (03-30)
        ["2026-03-29 21:30", "2026-03-29 22:30"],
    ),
    (
        "DST spring-forward: hourly buckets either side of the gap",
        ["2026-03-29 00:30", "2026-03-29 01:30"],
        "Europe/Paris",
        Policy(keep_hourly=10, timezone="Europe/Paris"),
        ["2026-03-29 00:30", "2026-03-29 01:30"],
    ),
    (
        # 2025-12-31 23:30 UTC is 2026-01-01 08:30 in Tokyo: the new year there.
        "yearly buckets in a zone ahead of UTC",
        ["2025-12-31 10:00", "2025-12-31 23:30"],
        "Asia/Tokyo",
        Policy(keep_yearly=5, timezone="Asia/Tokyo"),
        ["2025-12-31 10:00", "2025-12-31 23:30"],
    ),
    (
        "monthly buckets in a zone behind UTC (Jan 31 evening in Los Angeles is Feb 1 UTC)",
        ["2026-02-01 03:00", "2026-02-01 09:00"],
        "America/Los_Angeles",
        Policy(keep_monthly=5, timezone="America/Los_Angeles"),
        ["2026-02-01 03:00", "2026-02-01 09:00"],
    ),
]


@pytest.mark.parametrize(
    ("times", "zone_name", "policy", "expected"),
    [pytest.param(t, z, p, e, id=i) for i, t, z, p, e in TZ_TABLE],
)
def test_retention_time_zones(times: list[str], zone_name: str, policy: Policy, expected):
    assert policy.timezone == zone_name
    decisions = select(backups(*times), policy, TZ_NOW)
    assert kept(decisions) == expected


def test_hourly_reasons_name_the_offset_at_fall_back():
    decisions = select(
        backups("2026-11-01 05:30", "2026-11-01 06:30"),
        Policy(keep_hourly=5, timezone="America/New_York"),
        TZ_NOW,
    )
    reasons = sorted(r for d in decisions for r in d.reasons if r.startswith("hourly"))
    assert reasons == [
        "hourly 2026-11-01 01:00 UTC-0400 (2 of 5)",
        "hourly 2026-11-01 01:00 UTC-0500 (1 of 5)",
    ]


# Failed / unverified backups -------------------------------------------------------------
def test_failed_backup_does_not_fill_a_keep_slot():
    times = daily("2026-03-01", 5)
    decisions = select(backups(*times, failed=(times[-1],)), Policy(keep_last=2), NOW)
    by_time = {d.created_at.strftime("%Y-%m-%d %H:%M"): d for d in decisions}
    # The two newest *good* backups are kept: 03-04 and 03-03.
    assert by_time["2026-03-04 02:00"].keep and by_time["2026-03-03 02:00"].keep
    assert "newest successful backup" in by_time["2026-03-04 02:00"].reasons
    # The failed one is newer than what the policy keeps, so it stays (for investigation)
    # but no rule counted it.
    failed = by_time["2026-03-05 02:00"]
    assert failed.keep
    assert not any(r.startswith("last (") for r in failed.reasons)
    assert "last drill failed" in failed.reasons[0]
    assert not by_time["2026-03-01 02:00"].keep


def test_failed_backup_is_removed_once_older_than_every_kept_backup():
    times = daily("2026-03-01", 5)
    decisions = select(backups(*times, failed=(times[0],)), Policy(keep_last=2), NOW)
    first = next(d for d in decisions if d.created_at == at(times[0]))
    assert not first.keep
    assert first.reasons == ("last drill failed; older than every kept backup",)


def test_failed_backups_kept_by_keep_within():
    times = daily("2026-03-27", 5)
    decisions = select(
        backups(*times, failed=tuple(times[:3])),
        Policy(keep_last=1, keep_within=timedelta(days=10)),
        NOW,
    )
    assert all(d.keep for d in decisions)


def test_when_every_backup_failed_nothing_is_removed():
    times = daily("2026-01-01", 6)
    decisions = select(backups(*times, failed=tuple(times)), Policy(keep_last=1), NOW)
    assert all(d.keep for d in decisions)
    assert all("no successful backup exists" in d.reasons[0] for d in decisions)


@pytest.mark.parametrize("seed", range(20))
def test_newest_successful_backup_is_never_removed(seed: int):
    import random

    rng = random.Random(seed)
    times = sorted(
        {
            f"2026-0{rng.randint(1, 3)}-{rng.randint(10, 28)} 0{rng.randint(0, 9)}:00"
            for _ in range(15)
        }
    )
    failed = tuple(t for t in times if rng.random() < 0.4)
    policy = Policy(
        keep_last=rng.randint(0, 2),
        keep_daily=rng.randint(0, 3),
        keep_monthly=rng.randint(0, 2),
        keep_within=timedelta(hours=1) if rng.random() < 0.5 else None,
    )
    if not any(policy.counts().values()) and policy.keep_within is None:
        policy = Policy(keep_yearly=1)
    decisions = select(backups(*times, failed=failed), policy, NOW)
    good = [d for d in decisions if d.created_at.strftime("%Y-%m-%d %H:%M") not in failed]
    if good:
        assert good[0].keep  # newest first
    else:
        assert all(d.keep for d in decisions)


def test_decisions_are_newest_first_and_deterministic():
    bs = backups(*daily("2026-03-01", 8))
    first = select(bs, Policy(keep_last=2, keep_weekly=2), NOW)
    second = select(list(reversed(bs)), Policy(keep_last=2, keep_weekly=2), NOW)
    assert first == second
    assert [d.created_at for d in first] == sorted((d.created_at for d in first), reverse=True)


def test_reasons_name_every_rule_that_keeps_a_backup():
    decisions = select(backups("2026-03-30 02:00"), Policy(keep_last=3, keep_daily=7), NOW)
    assert decisions[0].reasons == (
        "last (1 of 3)",
        "daily 2026-03-30 (1 of 7)",
        "newest successful backup",
    )


# Bad policies ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (Policy(), "keeps nothing"),
        (Policy(keep_within=timedelta(0)), "keeps nothing"),
        (Policy(keep_last=-1), "keep-last is -1"),
        (Policy(keep_daily=3, timezone="Mars/Olympus"), "time zone 'Mars/Olympus' is unknown"),
        (Policy(keep_within=timedelta(days=-1)), "negative"),
    ],
)
def test_bad_policy_is_refused(policy: Policy, message: str):
    with pytest.raises(ConfigError, match=message):
        select(backups("2026-03-01 02:00"), policy, NOW)


@pytest.mark.parametrize(
    ("text", "hours"), [("36h", 36), ("7d", 168), ("2w", 336), ("1w3d", 240), (" 12H ", 12)]
)
def test_parse_duration(text: str, hours: int):
    assert parse_duration(text) == timedelta(hours=hours)


@pytest.mark.parametrize("text", ["", "7", "7x", "d7", "1.5d", "7d junk"])
def test_parse_duration_refuses_garbage(text: str):
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(text)


def test_format_duration_round_trips():
    assert format_duration(timedelta(days=7)) == "7d"
    assert format_duration(timedelta(hours=36)) == "36h"
    assert Policy(keep_last=3, keep_within=timedelta(days=2)).describe() == (
        "--keep-last 3 --keep-within 2d (time zone UTC)"
    )
