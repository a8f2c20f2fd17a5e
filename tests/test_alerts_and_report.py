"""Failure alerts (text, when the hook posts, the failed step) and the backup report."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from db_backup.errors import SourceError
from db_backup.flows import hooks
from db_backup.manifest import Manifest, StoredObject
from db_backup.reports import backup_artifact_key as artifact_key
from db_backup.reports import backup_markdown as report_markdown
from db_backup.reports import backup_rows as report_rows


def _manifest(**changes: Any) -> Manifest:
    started = datetime(2026, 1, 15, 2, 0, 0, tzinfo=UTC)
    obj = StoredObject(
        key="shop/20260115T020000Z/db.sqlite3.zst",
        part="database",
        format="sqlite3",
        size=1_000_000,
        sha256="a" * 64,
        raw_size=4_000_000,
        raw_sha256="b" * 64,
    )
    fields: dict[str, Any] = {
        "backup_id": "20260115T020000Z",
        "name": "shop",
        "engine": "sqlite",
        "source": "/srv/shop.db",
        "started_at": started,
        "finished_at": started + timedelta(seconds=2),
        "objects": [obj],
        "tables": {"orders": 10, "customers": 2},
        "logical_bytes": 4_000_000,
        "stored_bytes": 1_000_000,
    }
    return Manifest(**{**fields, **changes})


def test_report_rows_state_sizes_ratio_speed_and_location() -> None:
    rows = dict(report_rows(_manifest(), "/var/backups"))
    assert rows["Database"] == "shop (sqlite: /srv/shop.db)"
    assert rows["Backup id"] == "20260115T020000Z"
    assert rows["Raw size"].endswith("(4000000 bytes)")
    assert rows["Stored size"].endswith("(1000000 bytes)")
    assert rows["Compression ratio"] == "4.00x"
    assert rows["Duration"] == "2.0 s"
    assert rows["Throughput (raw)"].endswith("/s")
    assert rows["Storage location"] == "/var/backups/shop/20260115T020000Z/"
    assert rows["Tables"] == "2"


def test_report_handles_an_instant_empty_backup_and_escapes_pipes() -> None:
    m = _manifest(stored_bytes=0, logical_bytes=0, source="a|b")
    m = m.model_copy(update={"finished_at": m.started_at})
    rows = dict(report_rows(m, "s3://bucket"))
    assert rows["Compression ratio"] == "n/a" and rows["Throughput (raw)"] == "n/a"
    text = report_markdown(m, "s3://bucket")
    assert text.startswith("### Backup shop/20260115T020000Z\n")
    assert "a\\|b" in text


@pytest.mark.parametrize(
    ("name", "key"),
    [("shop", "backup-shop"), ("Orders_DB.v2", "backup-orders-db-v2"), ("__", "backup-unnamed")],
)
def test_artifact_key_is_lowercase_letters_digits_dashes(name: str, key: str) -> None:
    assert artifact_key(name) == key


def test_failure_text_names_database_flow_and_error() -> None:
    subject, body = hooks.failure_text(
        "backup-database",
        "backup-shop-20260115T020000Z",
        "Failed",
        {"database": "sqlite-database/shop", "name": None},
        "SourceError: step 'dump' failed: boom",
    )
    assert subject == "db-backup: backup-database run backup-shop-20260115T020000Z ended Failed"
    assert body.splitlines() == [
        "Database: sqlite-database/shop",
        "Flow: backup-database",
        "Error: SourceError: step 'dump' failed: boom",
    ]


def test_hook_posts_only_when_configured_and_not_covered(monkeypatch: pytest.MonkeyPatch) -> None:
    assert hooks.hook_should_post(["db-backup"]) is None
    monkeypatch.setenv(hooks.HOOK_BLOCK_ENV, "ops-alerts")
    assert hooks.hook_should_post(["db-backup"]) == "ops-alerts"
    assert hooks.hook_should_post(None) == "ops-alerts"
    assert hooks.hook_should_post(["db-backup", hooks.AUTOMATION_TAG]) is None


class _Obj:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def test_notify_failure_posts_the_message_to_the_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    from prefect_slack import SlackWebhook

    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    monkeypatch.setattr(SlackWebhook, "load", classmethod(lambda cls, name: cls(url=url)))
    monkeypatch.setenv(hooks.HOOK_BLOCK_ENV, "ops-alerts")
    flow = _Obj(name="verify-backup")
    run = _Obj(name="verify-shop-latest", tags=["db-backup"], parameters={"name": "shop"})
    state = _Obj(name="Failed", message="IntegrityError: object x is truncated")
    try:
        hooks.notify_failure(flow, run, state)
        run.tags = [hooks.AUTOMATION_TAG]
        hooks.notify_failure(flow, run, state)  # covered by an automation: silent
    finally:
        server.shutdown()
    assert [m["text"] for m in received] == [
        "db-backup: verify-backup run verify-shop-latest ended Failed\n"
        "Database: shop\nFlow: verify-backup\nError: IntegrityError: object x is truncated"
    ]


def test_notify_failure_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hooks.HOOK_BLOCK_ENV, "does-not-exist")
    from prefect_slack import SlackWebhook

    def boom(cls: Any, name: str) -> Any:
        raise ValueError(f"Unable to find block document named {name}")

    monkeypatch.setattr(SlackWebhook, "load", classmethod(boom))
    run = _Obj(name="r", tags=[], parameters={})
    hooks.notify_failure(_Obj(name="f"), run, _Obj(name="Crashed", message=None))


def _failing_task_body() -> None:
    raise SourceError("disk gone")


def test_name_failed_step_prefixes_our_errors_in_deployment_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def flow_body() -> None:
        _failing_task_body()

    wrapped = hooks.name_failed_step(flow_body)
    monkeypatch.setattr(hooks, "_in_deployment_run", lambda: True)
    with pytest.raises(SourceError, match=r"^step 'failing-task-body' failed: disk gone$"):
        wrapped()
    monkeypatch.setattr(hooks, "_in_deployment_run", lambda: False)
    with pytest.raises(SourceError, match=r"^disk gone$"):
        wrapped()


def test_name_failed_step_leaves_foreign_errors_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def flow_body() -> None:
        raise KeyError("x")

    monkeypatch.setattr(hooks, "_in_deployment_run", lambda: True)
    with pytest.raises(KeyError) as info:
        hooks.name_failed_step(flow_body)()
    assert info.value.args == ("x",)
