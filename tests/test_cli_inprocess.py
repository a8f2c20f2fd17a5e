"""``db-backup prune`` / ``drill`` run in this process (so coverage sees them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from db_backup.catalog import list_backups
from db_backup.cli import app
from db_backup.storage.local import LocalStorage
from tests.backup_helpers import make_backup
from tests.sqlite_helpers import make_shop

runner = CliRunner()


def setup_store(tmp_path: Path) -> LocalStorage:
    store = LocalStorage(tmp_path / "store")
    shop = make_shop(tmp_path / "shop.db", rows=30)
    now = datetime.now(UTC)
    for days in (3, 2, 1):
        make_backup(store, "shop", shop, now - timedelta(days=days))
    return store


def test_prune_refuses_bad_policies_before_any_flow_runs(tmp_path: Path):
    store = setup_store(tmp_path)
    res = runner.invoke(app, ["prune", "--name", "shop", "--storage", str(store.root), "--apply"])
    assert res.exit_code == 2 and "keeps nothing" in res.output
    res = runner.invoke(
        app,
        ["prune", "--name", "shop", "--keep-within", "3 days", "--storage", str(store.root)],
    )
    assert res.exit_code == 2 and "duration '3 days' is invalid" in res.output
    res = runner.invoke(
        app,
        [
            "prune",
            "--name",
            "shop",
            "--keep-daily",
            "3",
            "--timezone",
            "Nowhere/X",
            "--storage",
            str(store.root),
        ],
    )
    assert res.exit_code == 2 and "time zone 'Nowhere/X' is unknown" in res.output
    assert len(list_backups(store, "shop")) == 3


def test_prune_and_drill_in_process(prefect_api: str, tmp_path: Path):
    store = setup_store(tmp_path)
    root = str(store.root)
    dry = runner.invoke(app, ["prune", "--name", "shop", "--keep-last", "2", "--storage", root])
    assert dry.exit_code == 0, dry.output
    assert dry.output.count("would remove") == 1 and "add --apply" in dry.output
    done = runner.invoke(
        app, ["prune", "--name", "shop", "--keep-last", "2", "--storage", root, "--apply"]
    )
    assert done.exit_code == 0, done.output
    assert "Removed 1 backup(s)" in done.output
    again = runner.invoke(
        app, ["prune", "--name", "shop", "--keep-last", "2", "--storage", root, "--json"]
    )
    assert [r["action"] for r in json.loads(again.output)["rows"]] == ["keep", "keep"]
    none = runner.invoke(app, ["prune", "--name", "nobody", "--keep-last", "2", "--storage", root])
    assert none.exit_code == 0 and "no backups named nobody" in none.output
    drill = runner.invoke(
        app, ["drill", "--name", "shop", "--storage", root, "--scratch", str(tmp_path)]
    )
    assert drill.exit_code == 0, drill.output
    assert "drill passed for shop/" in drill.output
    assert not list(tmp_path.glob(".db-backup-drill-*"))
    table = runner.invoke(app, ["list", "--storage", root])
    lines = table.output.splitlines()
    assert lines[0].split()[-1] == "DRILL"
    assert lines[1].endswith("never") and " ok 20" in lines[2]
    good = runner.invoke(app, ["verify", "latest", "--name", "shop", "--storage", root])
    assert good.exit_code == 0 and good.output.strip().endswith("ok shop/" + lines[2].split()[1])
