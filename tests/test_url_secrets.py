"""Secrets in URLs never reach the Prefect server (issue 12 item 10).

One check (:func:`db_backup.parsing.refuse_url_secrets`) for every engine, store
and entry point: the CLI refuses before it calls a flow (so no flow run records
the secret), every flow refuses before it does anything else, and the fleet file
refuses when it is read (tests/test_fleet.py). The secret is never echoed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from db_backup.cli import app
from db_backup.errors import ConfigError
from db_backup.parsing import mask_url, refuse_url_secrets

runner = CliRunner()

# (URL, the secret in it): every form that used to slip through somewhere.
DATABASE_URLS = [
    # does not parse: was taken as "no password" and sent to the flow
    ("postgresql://root:Unparsed1x@[127.0.0.1:5432/db", "Unparsed1x"),
    # ?password=: refused only after the flow run was recorded
    ("postgresql://root@127.0.0.1:5432/db?password=QueryPw2x", "QueryPw2x"),
    ("mysql://root@127.0.0.1:3306/db?password=QueryPw3x", "QueryPw3x"),
    ("mysql://root:UserPw4x@127.0.0.1:3306/db", "UserPw4x"),
    # a '/' in the password moves urlsplit's host part: no password seen
    ("postgresql://root:Sla/shPw5x@127.0.0.1:5432/db", "Sla/shPw5x"),
    ("mongodb://app:MongoPw6x@127.0.0.1:27017/db", "MongoPw6x"),
]
STORAGE_URLS = [
    ("s3://AKIAEXAMPLE:S3Secret7x@bucket/prefix", "S3Secret7x"),
    ("gs://bucket/prefix?token=GcsToken8x", "GcsToken8x"),
    ("az://container/prefix?sv=2024&sig=SasSig9x", "SasSig9x"),
]


def flow_runs_holding(secret: str) -> list[str]:
    """Names of the flow runs on the test server whose parameters or state hold ``secret``."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
    return [
        r.name
        for r in runs
        if secret in json.dumps(r.parameters, default=str)
        or secret in str(r.state.message if r.state else "")
    ]


def assert_refused(result: Any, secret: str) -> None:
    """Exit 2, one line naming the cause, the URL masked, the secret nowhere."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "refused" in lines[0] and "***" in lines[0], lines[0]
    assert secret not in result.output
    assert secret.split("/")[0] not in result.output


@pytest.mark.parametrize(("url", "secret"), DATABASE_URLS)
def test_cli_backup_refuses_a_database_url_secret_before_any_flow_run(
    prefect_api: str, tmp_path: Path, url: str, secret: str
) -> None:
    """Each form exits 2 masked, and no flow run on the server holds the secret."""
    result = runner.invoke(app, ["backup", "--url", url, "--storage", str(tmp_path / "store")])
    assert_refused(result, secret)
    assert flow_runs_holding(secret) == []
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(("url", "secret"), DATABASE_URLS[:3])
def test_cli_restore_and_drill_refuse_target_secrets(
    prefect_api: str, tmp_path: Path, url: str, secret: str
) -> None:
    restored = runner.invoke(
        app, ["restore", "latest", "--name", "shop", "--to", url, "--storage", str(tmp_path)]
    )
    assert_refused(restored, secret)
    drilled = runner.invoke(
        app, ["drill", "--name", "shop", "--scratch", url, "--storage", str(tmp_path)]
    )
    assert_refused(drilled, secret)
    assert flow_runs_holding(secret) == []


@pytest.mark.parametrize(("url", "secret"), STORAGE_URLS)
def test_cli_refuses_storage_credentials_before_any_flow_run(
    prefect_api: str, tmp_path: Path, url: str, secret: str
) -> None:
    """``s3://KEY:SECRET@bucket`` was echoed in the error and stored in the run's parameters."""
    db = tmp_path / "shop.db"
    db.touch()
    for args in (
        ["backup", "--database", str(db), "--storage", url],
        ["prune", "--name", "shop", "--keep-last", "1", "--storage", url],
        ["verify", "--name", "shop", "--storage", url],
        ["list", "--storage", url],
    ):
        assert_refused(runner.invoke(app, args), secret)
    assert flow_runs_holding(secret) == []


def test_environment_storage_with_credentials_is_refused(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_BACKUP_STORAGE", "s3://AKIAEXAMPLE:EnvSecret1x@bucket")
    result = runner.invoke(app, ["list"])
    assert_refused(result, "EnvSecret1x")


def test_flow_parameters_with_secrets_are_refused_by_the_flow(
    prefect_api: str, tmp_path: Path
) -> None:
    """Called directly (a deployment run, the Python API), each flow refuses before anything
    else: MongoDB with a password used to be accepted and connected with it."""
    from db_backup.flows.backup import backup_database
    from db_backup.flows.gc import gc_chunks
    from db_backup.flows.prune import prune_backups
    from db_backup.flows.restore import restore_database

    store = tmp_path / "store"
    calls: list[tuple[Any, dict[str, Any], str]] = [
        (backup_database, {"database": DATABASE_URLS[5][0], "storage": str(store)}, "MongoPw6x"),
        (backup_database, {"database": DATABASE_URLS[0][0], "storage": str(store)}, "Unparsed1x"),
        (
            restore_database,
            {"name": "shop", "target": DATABASE_URLS[1][0], "storage": str(store)},
            "QueryPw2x",
        ),
        (prune_backups, {"name": "shop", "keep_last": 1, "storage": STORAGE_URLS[0][0]}, "S3Se"),
        (gc_chunks, {"storage": STORAGE_URLS[0][0], "dry_run": True}, "S3Secret7x"),
    ]
    for flow_fn, params, secret in calls:
        with pytest.raises(ConfigError, match="refused") as info:
            flow_fn(**params)
        assert secret not in str(info.value) and "***" in str(info.value)
    assert not store.exists()


@pytest.mark.parametrize(("url", "secret"), DATABASE_URLS + STORAGE_URLS)
def test_the_one_check_masks_every_form(url: str, secret: str) -> None:
    with pytest.raises(ConfigError) as info:
        refuse_url_secrets(url)
    message = str(info.value)
    assert "\n" not in message and secret not in message and mask_url(url) in message


@pytest.mark.parametrize(
    "ok",
    [
        "postgresql://root@127.0.0.1:5432/db?sslmode=require",
        "mysql://root@127.0.0.1:3306/db?ssl-ca=/etc/ca.pem",
        "mongodb://app@h1:27017,h2:27017/db",
        "sqlite:///srv/shop.db",
        "/srv/shop.db",
        "postgres-database/orders",
        "s3://bucket/prefix",
    ],
)
def test_urls_without_secrets_pass(ok: str) -> None:
    refuse_url_secrets(ok)
