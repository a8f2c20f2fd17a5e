"""The prune flow and ``db-backup prune`` against the session's Prefect API."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from db_backup.catalog import list_backups
from db_backup.errors import ConfigError
from db_backup.storage.local import LocalStorage
from tests.backup_helpers import make_backup, read_artifact
from tests.sqlite_helpers import make_shop

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    store = LocalStorage(tmp_path / "store")
    shop = make_shop(tmp_path / "shop.db", rows=50)
    for days in (5, 4, 3, 2, 1):
        make_backup(store, "shop", shop, NOW - timedelta(days=days))
    return store


def ids(store: LocalStorage) -> list[str]:
    return [m.backup_id for m in list_backups(store, "shop")]


def test_flow_dry_run_then_apply(prefect_api: str, store: LocalStorage):
    from db_backup.flows.prune import prune_backups

    before = ids(store)
    dry = prune_backups(name="shop", storage=str(store.root), keep_last=2, keep_weekly=0)
    assert [r["action"] for r in dry["rows"]] == ["keep", "keep", "remove", "remove", "remove"]
    assert ids(store) == before
    assert "dry run (nothing deleted)" in read_artifact("prune-shop")
    done = prune_backups(name="shop", storage=str(store.root), keep_last=2, apply=True)
    assert sorted(done["removed"]) == before[:3]
    assert ids(store) == before[3:]
    artifact = read_artifact("prune-shop")
    assert "applied" in artifact and "Removed 3 backup(s)" in artifact


def test_flow_refuses_a_policy_that_keeps_nothing(prefect_api: str, store: LocalStorage):
    from db_backup.flows.prune import prune_backups

    with pytest.raises(ConfigError, match="keeps nothing"):
        prune_backups(name="shop", storage=str(store.root), apply=True)
    assert len(ids(store)) == 5


def test_cli_prune(cli, store: LocalStorage):
    root = str(store.root)
    before = ids(store)
    dry = cli(
        "prune", "--name", "shop", "--keep-last", "1", "--keep-within", "60h", "--storage", root
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would remove") == 3
    assert "within 60h" in dry.stdout
    assert "add --apply to delete" in dry.stdout
    assert ids(store) == before
    applied = cli(
        "prune",
        "--name",
        "shop",
        "--keep-last",
        "1",
        "--keep-within",
        "60h",
        "--storage",
        root,
        "--apply",
        "--json",
    )
    assert applied.returncode == 0, applied.stderr
    report = json.loads(applied.stdout)
    assert sorted(report["removed"]) == before[:3]
    assert ids(store) == before[3:]


def test_applied_prunes_during_real_backup_runs_lose_nothing(cli, tmp_path: Path):
    """`db-backup backup` (the real flow, in a subprocess) while prune loops with --apply."""
    import threading
    import time

    from db_backup.retention.policy import Policy
    from db_backup.retention.prune import apply_plan, plan_prune
    from tests.backup_helpers import verify_manifest_objects

    store = LocalStorage(tmp_path / "race-store")
    shop = make_shop(tmp_path / "race.db", rows=2000)
    for days in (3, 2, 1):
        make_backup(store, "race", shop, NOW - timedelta(days=days))
    made: list[str] = []
    failures: list[str] = []

    def backups() -> None:
        for _ in range(2):
            run = cli("backup", "--database", str(shop), "--storage", str(store.root))
            if run.returncode != 0:
                failures.append(run.stderr)
                return
            made.append(run.stdout.strip().splitlines()[-1])

    worker = threading.Thread(target=backups)
    worker.start()
    rounds = 0
    while worker.is_alive():
        result = apply_plan(
            store, plan_prune(store, "race", Policy(keep_last=1), datetime.now(UTC)), hooks=[]
        )
        assert result.errors == [] and result.orphans_removed == []
        rounds += 1
        time.sleep(0.05)
    worker.join()
    assert failures == []
    assert rounds > 10, "prune did not overlap the backups"
    listed = list_backups(store, "race")
    assert made[-1] == listed[-1].backup_id
    assert {m.backup_id for m in listed} <= set(made)  # the older ones were pruned meanwhile
    for m in listed:
        assert verify_manifest_objects(store, m) == []
    leftovers = {o.key.split("/")[1] for o in store.list("race/")}
    assert leftovers == {m.backup_id for m in listed}
