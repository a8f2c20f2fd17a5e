"""The manifest is read strictly and written in a stable, versioned form."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from db_backup.errors import ConfigError, ManifestError
from db_backup.manifest import (
    FORMAT_VERSION,
    Manifest,
    StoredObject,
    check_name,
    is_backup_id,
    new_backup_id,
    next_backup_id,
    parse_manifest,
)


def sample(**overrides: object) -> Manifest:
    data: dict[str, object] = dict(
        backup_id="20260115T020000Z",
        name="shop",
        engine="sqlite",
        source="sqlite:///data/shop.db",
        started_at=datetime(2026, 1, 15, 2, 0, tzinfo=UTC),
        finished_at=datetime(2026, 1, 15, 2, 0, 5, tzinfo=UTC),
        objects=[
            StoredObject(
                key="shop/20260115T020000Z/shop.sqlite3.zst",
                part="database",
                format="sqlite3",
                size=10,
                sha256="a" * 64,
                raw_size=100,
                raw_sha256="b" * 64,
            )
        ],
        tables={"orders": 3},
        logical_bytes=100,
        stored_bytes=10,
        uploaded_bytes=10,
    )
    data.update(overrides)
    return Manifest.model_validate(data)


def test_round_trip_keeps_every_field() -> None:
    m = sample()
    again = parse_manifest(m.to_json(), "test")
    assert again == m
    assert json.loads(m.to_json())["format_version"] == FORMAT_VERSION


def test_unknown_format_version_is_refused_with_the_location() -> None:
    raw = json.loads(sample().to_json())
    raw["format_version"] = 99
    with pytest.raises(ManifestError, match=r"store/x/manifest.json has format_version 99"):
        parse_manifest(json.dumps(raw).encode(), "store/x/manifest.json")


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"format_version": 1, "name": "x"}).encode(), "invalid at backup_id"),
    ],
)
def test_broken_manifests_name_the_problem(payload: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(payload, "m")


def test_summary_has_the_list_json_fields() -> None:
    summary = sample().summary()
    for key in ("id", "name", "engine", "created_at", "size_bytes", "sha256"):
        assert key in summary
    assert summary["created_at"] == "2026-01-15T02:00:00Z"
    assert summary["sha256"] == "a" * 64
    assert summary["logical_bytes"] == 100 and summary["uploaded_bytes"] == 10


def test_ids_sort_by_time_and_step_by_one_second() -> None:
    first = new_backup_id(datetime(2026, 1, 15, 2, 0, 59, tzinfo=UTC))
    assert first == "20260115T020059Z" and is_backup_id(first)
    assert next_backup_id(first) == "20260115T020100Z"
    assert sorted([next_backup_id(first), first]) == [first, next_backup_id(first)]
    assert not is_backup_id("latest")


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "-x", "x" * 129, "sp ace"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="backup name"):
        check_name(name)


def test_good_names_pass() -> None:
    assert check_name("shop-db_2.prod") == "shop-db_2.prod"
