"""Manifests for listing tests."""

from __future__ import annotations

from db_backup.manifest import Manifest, StoredObject, parse_backup_id


def fake_manifest(name: str, backup_id: str) -> bytes:
    when = parse_backup_id(backup_id)
    obj = StoredObject(
        key=f"{name}/{backup_id}/part00.zst",
        part="database",
        format="sqlite3",
        size=1,
        sha256="0" * 64,
        raw_size=1,
        raw_sha256="0" * 64,
    )
    return Manifest(
        backup_id=backup_id,
        name=name,
        engine="sqlite",
        source="test",
        started_at=when,
        finished_at=when,
        objects=[obj],
    ).to_json()
