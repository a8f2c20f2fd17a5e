"""The fleet file: what it accepts, and the line and reason of everything it refuses."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from db_backup.deployments.fleet import load_fleet, load_fleet_text, parse_duration
from db_backup.errors import FleetError

GOOD = """\
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
    timezone: America/New_York
    verify_schedule: "0 6 * * 0"
    expect_success_within: 3h
"""


def refused(text: str) -> list[str]:
    with pytest.raises(FleetError) as info:
        load_fleet_text(text, "jobs.yaml")
    assert "nothing was changed" in str(info.value)
    return info.value.problems


def test_good_file_gives_defaults_and_overrides() -> None:
    loaded = load_fleet_text(GOOD, "jobs.yaml")
    fleet = loaded.fleet
    assert set(fleet.databases) == {"shop", "orders"}
    assert fleet.timezone_of("shop") == "Europe/Berlin"
    assert fleet.timezone_of("orders") == "America/New_York"
    assert fleet.storage_of("orders") == "local-file-system/backups"
    assert fleet.alerts_of("shop") is True
    assert fleet.databases["orders"].password is not None
    assert fleet.databases["orders"].password.secret == "orders-db-password"
    assert loaded.where("databases", "orders", "schedule") == "jobs.yaml:19"
    # a key that is not there points at its nearest parent
    assert loaded.line("databases", "shop", "storage") == 10


def test_typo_in_a_key_names_line_and_key() -> None:
    problems = refused(GOOD.replace('    schedule: "30 2', '    schedul: "30 2'))
    assert any(p.startswith("jobs.yaml:13: databases.shop.schedul: unknown key") for p in problems)
    # the required key it should have been is reported on the database's line
    assert any(p.startswith("jobs.yaml:10: databases.shop.schedule: missing") for p in problems)


def test_invalid_cron_is_refused_with_its_line() -> None:
    problems = refused(GOOD.replace('"0 * * * *"', '"61 * * * *"'))
    assert problems == [
        "jobs.yaml:19: databases.orders.schedule: invalid cron expression '61 * * * *'"
    ]


def test_cron_with_wrong_field_count() -> None:
    (problem,) = refused(GOOD.replace('"30 2 * * *"', '"30 2 * *"'))
    assert problem.startswith("jobs.yaml:13: databases.shop.schedule: invalid cron")
    assert "5 fields" in problem


def test_unknown_time_zone_is_refused() -> None:
    (problem,) = refused(GOOD.replace("Europe/Berlin", "Europe/Berlín"))
    assert problem == (
        "jobs.yaml:4: defaults.timezone: unknown time zone 'Europe/Berlín' "
        "(use an IANA name like Europe/Berlin)"
    )


def test_password_in_url_is_refused_and_not_echoed() -> None:
    bad = GOOD.replace("backup@db1", "backup:hunter2@db1")
    (problem,) = refused(bad)
    assert problem.startswith("jobs.yaml:17: databases.orders.url: the URL holds a password")
    assert "hunter2" not in problem


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://backup:hunter2@[db1.internal:5432/orders", "hunter2"),
        ("postgresql://backup@db1.internal:5432/orders?password=hunter2", "hunter2"),
        ("postgresql://backup:hun/ter2@db1.internal:5432/orders", "hun/ter2"),
    ],
)
def test_every_url_secret_form_is_refused_when_read(url: str, secret: str) -> None:
    """Issue 12 item 10: an unparseable URL or ``?password=`` was accepted (no password seen).

    Every form is refused when the file is read, on the URL's line, and masked.
    """
    (problem,) = refused(GOOD.replace("postgresql://backup@db1.internal:5432/orders", url))
    assert problem.startswith("jobs.yaml:17: databases.orders.url: the URL ")
    assert secret not in problem and "hunter" not in problem


def test_storage_url_with_credentials_is_refused_when_read() -> None:
    """Issue 12 item 10: ``s3://KEY:SECRET@bucket`` as a store was accepted and then
    stored in every deployment's parameters."""
    bad = GOOD.replace("storage: local-file-system/backups", "storage: s3://AKIAX:TopSecret@bkt")
    (problem,) = refused(bad)
    assert problem.startswith("jobs.yaml:5: defaults.storage: the storage URL holds a password")
    assert "TopSecret" not in problem
    job = GOOD.replace("    type: sqlite\n", "    type: sqlite\n    storage: s3://K:TopSecret@b\n")
    (problem,) = refused(job)
    assert problem.startswith("jobs.yaml:12: databases.shop.storage:")
    assert "TopSecret" not in problem


@pytest.mark.parametrize("within", ["90m", "1.5d", "3 days", "0h"])
def test_retention_durations_the_prune_flow_refuses_are_refused_when_read(within: str) -> None:
    """Issue 12 item 16a: ``keep_within: 90m`` was accepted, then every scheduled prune
    failed on it. The file is checked with the prune flow's own parser."""
    from db_backup.errors import ConfigError
    from db_backup.retention.flags import build_policy

    with pytest.raises(ConfigError):
        build_policy(keep_within=within)  # what each scheduled prune would do
    bad = GOOD.replace("{keep_daily: 7, keep_weekly: 4}", f"{{keep_within: '{within}'}}")
    (problem,) = refused(bad)
    assert problem.startswith("jobs.yaml:14: databases.shop.retention.keep_within: duration")
    assert "whole hours" in problem


def test_retention_durations_the_prune_flow_accepts_are_accepted() -> None:
    good = GOOD.replace("{keep_daily: 7, keep_weekly: 4}", "{keep_within: 1w3d, keep_last: 2}")
    retention = load_fleet_text(good).fleet.databases["shop"].retention
    assert retention is not None and retention.keep_within == "1w3d"


def test_secret_written_in_clear_is_refused() -> None:
    (problem,) = refused(GOOD.replace("{secret: orders-db-password}", "hunter2"))
    assert problem.startswith("jobs.yaml:18: databases.orders.password:")
    assert "hunter2" not in problem


def test_secret_reference_needs_exactly_one_source() -> None:
    bad = GOOD.replace("{secret: orders-db-password}", "{secret: x, env: Y}")
    (problem,) = refused(bad)
    assert problem.startswith("jobs.yaml:18: databases.orders.password: give exactly one")


def test_several_problems_are_all_reported() -> None:
    bad = GOOD.replace("Europe/Berlin", "Mars/Olympus").replace("keep_daily", "keep_dayly")
    problems = refused(bad)
    assert [p.split(":")[1] for p in problems] == ["4", "14"]


def test_source_shapes_per_engine() -> None:
    (problem,) = refused(GOOD.replace("    path: /srv/shop.db\n", ""))
    assert problem.startswith("jobs.yaml:10: databases.shop: a sqlite database needs exactly one")
    both = GOOD.replace("    path: /srv/shop.db\n", "    path: /srv/shop.db\n    url: x://y\n")
    assert refused(both)


def test_bad_yaml_and_empty_file() -> None:
    (problem,) = refused("databases:\n  shop: [unclosed\n")
    assert problem.startswith("jobs.yaml:3: not valid YAML")
    assert refused("")[0].startswith("jobs.yaml:1:")


def test_bad_backup_name_and_retention_that_keeps_nothing() -> None:
    assert refused(GOOD.replace("  shop:", "  'sh op':"))[0].startswith("jobs.yaml:")
    bad = GOOD.replace("{keep_daily: 7, keep_weekly: 4}", "{keep_daily: 0}")
    assert "keeps nothing" in refused(bad)[0]


def test_load_fleet_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(GOOD)
    assert load_fleet(path).source == str(path)
    with pytest.raises(Exception, match="cannot read fleet file"):
        load_fleet(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("26h", timedelta(hours=26)), ("90m", timedelta(minutes=90)), ("2d", timedelta(days=2))],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["0h", "h", "1w", "-3h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_automation_fingerprint_ignores_set_order_and_trigger_ids() -> None:
    from uuid import uuid4

    from db_backup.deployments.apply.automations import (
        _failure_automation,
        _strip_ids,
        automation_fingerprint,
    )

    # another process serialises the ``expect`` set in another order
    assert _strip_ids({"id": 1, "expect": ["b", "a"]}) == {"expect": ["a", "b"]}

    block_id = uuid4()
    one, two = _failure_automation("ops", block_id), _failure_automation("ops", block_id)
    two.trigger.expect = set(reversed(sorted(one.trigger.expect)))  # type: ignore[union-attr]
    assert automation_fingerprint(one) == automation_fingerprint(two)
    assert automation_fingerprint(one) != automation_fingerprint(_failure_automation("x", block_id))
