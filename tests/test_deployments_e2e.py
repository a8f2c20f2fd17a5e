"""End to end with real parts: a `prefect server start` with its services, a process
work pool and worker, a local HTTP receiver standing in for Slack, deployments
from prefect.yaml and from `db-backup apply`, runs started with
`prefect deployment run`.

One server (and one worker) serves every test of this module.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import need_service
from tests.sqlite_helpers import dump_rows, make_shop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "db-backup-process"
SLACK_BLOCK = "e2e-alerts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SlackReceiver:
    """A local HTTP endpoint that records what a Slack webhook would get."""

    url: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    def wait_for(self, pattern: str, timeout: float = 90.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [m for m in self.messages if re.search(pattern, m.get("text", ""))]
            if hits:
                return hits
            time.sleep(0.5)
        raise AssertionError(f"no Slack message matching {pattern!r}; got {self.messages}")


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackReceiver]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SlackReceiver(f"http://127.0.0.1:{server.server_address[1]}/hook", received)
    server.shutdown()


@dataclass
class Stack:
    """A running server and worker, and how to talk to them."""

    api: str
    env: dict[str, str]
    home: Path
    data: Path

    def prefect(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"prefect {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def db_backup(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return subprocess.run(
            [str(BIN / "db-backup"), *args],
            cwd=self.data,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.api}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.api}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def python(self, code: str) -> str:
        """Run Python against the server (blocks are saved through the public API)."""
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=self.data,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def run_deployment(self, name: str, *params: str) -> str:
        args = ["deployment", "run", name]
        for param in params:
            args += ["--param", param]
        out = self.prefect(*args).stdout
        match = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
        assert match, out
        return match.group(1)

    def wait_final(self, run_id: str, timeout: float = 240.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"/flow_runs/{run_id}")
            if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run  # type: ignore[no-any-return]
            time.sleep(1)
        raise AssertionError(f"flow run {run_id} did not finish: {run['state']}")

    def hook_finished(self, run_id: str) -> bool:
        """The run's on_failure hook (which may post to Slack) has returned."""
        logs = self.post(
            "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
        )
        return any("Hook 'notify_failure' finished running" in log["message"] for log in logs)

    def automation_acted_on(self, run_id: str) -> bool:
        """A server automation has finished its action for this run's Failed event."""
        failed = self.post(
            "/events/filter",
            {
                "filter": {
                    "event": {"name": ["prefect.flow-run.Failed"]},
                    "resource": {"id": [f"prefect.flow-run.{run_id}"]},
                },
                "limit": 10,
            },
        )["events"]
        triggers = {f"prefect.event.{event['id']}" for event in failed}
        executed = self.post(
            "/events/filter",
            {"filter": {"event": {"name": ["prefect.automation.action.executed"]}}, "limit": 50},
        )["events"]
        return any(
            related.get("prefect.resource.id") in triggers
            for event in executed
            for related in event.get("related", [])
        )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(0.5)


def _wait_healthy(api: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prefect server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"prefect server not healthy in 180 s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes], sig: int, wait: float) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, slack: SlackReceiver) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("e2e")
    home, data = base / "prefect-home", base / "data"
    home.mkdir()
    data.mkdir()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "DB_BACKUP_", "PG", "MYSQL"))
    }
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
    )
    server_log = base / "server.log"
    server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    with server_log.open("wb") as out:
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    worker: subprocess.Popen[bytes] | None = None
    try:
        _wait_healthy(api, server, server_log)
        stack = Stack(api, env, home, data)
        stack.prefect("work-pool", "create", POOL, "--type", "process")
        worker_env = {
            **env,
            "DB_BACKUP_PROJECT_DIR": str(ROOT),
            # the hook path is on: runs covered by an automation must still post once
            "DB_BACKUP_SLACK_WEBHOOK_BLOCK": SLACK_BLOCK,
        }
        with (base / "worker.log").open("wb") as out:
            worker = subprocess.Popen(
                [str(BIN / "prefect"), "worker", "start", "--pool", POOL],
                env=worker_env,
                cwd=data,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        stack.python(
            "from prefect_slack import SlackWebhook\n"
            f"SlackWebhook(url={slack.url!r}).save({SLACK_BLOCK!r}, overwrite=True)\n"
        )
        yield stack
    finally:
        if worker is not None:
            _stop(worker, signal.SIGINT, 30)  # a worker ignores SIGTERM for ~25 s
        _stop(server, signal.SIGINT, 30)


def _save_blocks(stack: Stack, shop: Path, store: Path) -> None:
    stack.python(
        "from prefect.filesystems import LocalFileSystem\n"
        "from db_backup.blocks.databases import SqliteDatabase\n"
        f"SqliteDatabase(path={str(shop)!r}).save('shop', overwrite=True)\n"
        f"SqliteDatabase(path={str(shop.with_name('scratch.db'))!r})"
        ".save('shop-scratch', overwrite=True)\n"
        f"LocalFileSystem(basepath={str(store)!r}).save('backups', overwrite=True)\n"
    )


def _artifacts(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    return stack.post(  # type: ignore[no-any-return]
        "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    )


def _manifest(store: Path, name: str, backup_id: str) -> dict[str, Any]:
    return json.loads((store / name / backup_id / "manifest.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def deployed(stack: Stack) -> tuple[Path, Path]:
    """prefect.yaml deployed, with the blocks its parameters name: (shop.db, store)."""
    shop, store = make_shop(stack.data / "shop.db", rows=300), stack.data / "store"
    _save_blocks(stack, shop, store)
    stack.prefect("deploy", "--all")
    return shop, store


def test_prefect_yaml_deploys_runs_and_alerts(
    stack: Stack, slack: SlackReceiver, deployed: tuple[Path, Path]
) -> None:
    shop, store = deployed

    # the schedules the server holds are the ones prefect.yaml declares
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for dep in spec["deployments"]:
        flow_name = stack.get(f"/deployments/name/{_flow_of(dep['entrypoint'])}/{dep['name']}")
        held = [
            (s["schedule"]["cron"], s["schedule"]["timezone"], s["active"])
            for s in flow_name["schedules"]
        ]
        wanted = [
            (s["cron"], s["timezone"], s.get("active", True)) for s in dep.get("schedules", [])
        ]
        assert held == wanted, dep["name"]
        assert flow_name["pull_steps"] == spec["pull"]
        assert flow_name["work_pool_name"] == POOL
    assert ("30 2 * * *", "Europe/Berlin", True) in [
        tuple(x) for x in _schedules(stack, "backup-database/shop-nightly")
    ]

    good = stack.run_deployment("backup-database/shop-nightly")
    missing = stack.data / "no-such-dir" / "ghost.db"
    bad = stack.run_deployment("backup-database/shop-nightly", f"database={missing}", "name=ghost")
    good_run, bad_run = stack.wait_final(good), stack.wait_final(bad)

    assert good_run["state"]["type"] == "COMPLETED", good_run["state"]
    assert good_run["name"].startswith("backup-shop-")  # run names say which database and when
    (manifest_path,) = (store / "shop").glob("*/manifest.json")
    backup_id = manifest_path.parent.name
    manifest = _manifest(store, "shop", backup_id)
    assert manifest["flow_run_id"] == good
    (artifact,) = _artifacts(stack, good)
    assert artifact["key"] == "backup-shop" and artifact["type"] == "markdown"
    for fact in ("| Database | shop (sqlite", f"| Backup id | {backup_id} |", "Compression ratio"):
        assert fact in artifact["data"]
    assert f"({manifest['stored_bytes']} bytes)" in artifact["data"]
    assert f"{store}/shop/{backup_id}/" in artifact["data"]
    restored = stack.data / "restored.db"
    proc = stack.db_backup(
        "restore", backup_id, "--name", "shop", "--to", str(restored), "--storage", str(store)
    )
    assert proc.returncode == 0, proc.stderr
    assert dump_rows(restored) == dump_rows(shop)

    assert bad_run["state"]["type"] == "FAILED"
    assert "step 'dump' failed" in bad_run["state"]["message"]
    (message,) = slack.wait_for(r"Database: ghost")
    # no duplicate: once the only possible sender (this run's hook) is done, still one post
    wait_until(lambda: stack.hook_finished(bad), "the failed run's hook has finished")
    ghost = [m for m in slack.messages if "ghost" in m["text"]]
    assert ghost == [message]
    text = message["text"]
    assert text.startswith("db-backup: backup-database run backup-ghost-")
    assert "ended Failed" in text
    assert f"SQLite database {missing} does not exist" in text
    assert "step 'dump' failed" in text
    assert not (store / "ghost").exists() or not list((store / "ghost").rglob("manifest.json"))


def _flow_of(entrypoint: str) -> str:
    return {
        "backup_database": "backup-database",
        "verify_backup": "verify-backup",
        "restore_database": "restore-database",
        "prune_backups": "prune-backups",
        "drill_backup": "drill-backup",
    }[entrypoint.rsplit(":", 1)[1]]


def _schedules(stack: Stack, full_name: str) -> list[list[Any]]:
    dep = stack.get(f"/deployments/name/{full_name}")
    return [
        [s["schedule"]["cron"], s["schedule"]["timezone"], s["active"]] for s in dep["schedules"]
    ]


FLEET = """\
version: 1
defaults:
  work_pool: {pool}
  timezone: Europe/Berlin
  storage: local-file-system/fleet-store
slack:
  block: {slack}
databases:
  inventory:
    type: sqlite
    path: {inventory}
    schedule: "15 1 * * *"
    verify_schedule: "0 7 * * 1"
    expect_success_within: 26h
  ledger:
    type: sqlite
    path: {ledger}
    schedule: "0 */6 * * *"
    timezone: America/New_York
  canary:
    type: sqlite
    path: {inventory}
    schedule: "0 0 1 1 *"
    expect_success_within: 15s
"""


BAD_FLEET = """\
version: 1
defaults:
  work_pool: no-such-pool
  storage: local-file-system/fleet-store
slack:
  block: {slack}
databases:
  orders:
    type: postgres
    url: postgresql://backup@127.0.0.1:5432/orders
    password: {{env: ORDERS_DB_PASSWORD}}
    schedule: "0 * * * *"
  billing:
    type: mysql
    url: mysql://backup@127.0.0.1:3306/billing
    password: {{secret: billing-password}}
    schedule: "0 3 * * *"
"""


def test_apply_fleet_twice_changes_nothing_the_second_time(
    stack: Stack, slack: SlackReceiver
) -> None:
    store = stack.data / "fleet-store"
    inventory = make_shop(stack.data / "inventory.db", rows=50)
    fleet = stack.data / "jobs.yaml"
    fleet.write_text(
        FLEET.format(
            pool=POOL, slack=SLACK_BLOCK, inventory=inventory, ledger=stack.data / "gone.db"
        )
    )

    # refused while the storage block is missing: nothing is created
    proc = stack.db_backup("apply", str(fleet))
    assert proc.returncode == 2
    assert f"error: {fleet}:5: storage block 'local-file-system/fleet-store' does not exist" in (
        proc.stderr
    )
    assert (
        stack.post("/deployments/filter", {"deployments": {"name": {"any_": ["inventory"]}}}) == []
    )

    stack.python(
        "from prefect.filesystems import LocalFileSystem\n"
        f"LocalFileSystem(basepath={str(store)!r}).save('fleet-store', overwrite=True)\n"
    )
    # missing secrets and a missing work pool: every problem, with its line, nothing created
    bad = stack.data / "bad.yaml"
    bad.write_text(BAD_FLEET.format(slack=SLACK_BLOCK))
    proc = stack.db_backup("apply", str(bad), env={"ORDERS_DB_PASSWORD": ""})
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.splitlines() == [
        f"error: {bad}:3: work pool 'no-such-pool' does not exist "
        "(prefect work-pool create no-such-pool --type process)",
        f"error: {bad}:11: environment variable ORDERS_DB_PASSWORD is not set "
        "(the secret comes from it)",
        f"error: {bad}:16: Secret block 'billing-password' does not exist",
        "error: 3 problem(s) in the fleet file; nothing was changed",
    ]
    assert stack.post("/deployments/filter", {"deployments": {"name": {"any_": ["orders"]}}}) == []

    dry = stack.db_backup("apply", str(fleet), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "+ deployment backup-database/inventory (new)" in dry.stdout
    assert "Dry run: nothing was changed." in dry.stdout
    assert (
        stack.post("/deployments/filter", {"deployments": {"name": {"any_": ["inventory"]}}}) == []
    )

    first = stack.db_backup("apply", str(fleet))
    assert first.returncode == 0, first.stderr
    assert "Plan: 11 to create, 0 to update, 0 unchanged." in first.stdout, first.stdout
    second = stack.db_backup("apply", str(fleet))
    assert second.returncode == 0, second.stderr
    assert "Plan: 0 to create, 0 to update, 11 unchanged." in second.stdout, second.stdout
    assert "Nothing to change." in second.stdout
    assert "applied:" not in second.stdout

    assert _schedules(stack, "backup-database/inventory") == [["15 1 * * *", "Europe/Berlin", True]]
    assert _schedules(stack, "backup-database/ledger") == [
        ["0 */6 * * *", "America/New_York", True]
    ]
    assert _schedules(stack, "verify-backup/inventory") == [["0 7 * * 1", "Europe/Berlin", True]]
    switch = stack.post("/automations/filter", {})
    by_name = {a["name"]: a for a in switch}
    dead = by_name["db-backup: no successful backup of inventory"]
    assert dead["trigger"]["posture"] == "Proactive"
    assert dead["trigger"]["expect"] == ["prefect.flow-run.Completed"]
    assert dead["trigger"]["within"] == 26 * 3600
    assert "db-backup: failures to e2e-alerts" in by_name

    # a changed schedule is one update, and only that
    fleet.write_text(fleet.read_text().replace('"15 1 * * *"', '"45 1 * * *"'))
    third = stack.db_backup("apply", str(fleet))
    assert "~ deployment backup-database/inventory (schedules)" in third.stdout, third.stdout
    assert "Plan: 0 to create, 1 to update, 10 unchanged." in third.stdout, third.stdout
    assert _schedules(stack, "backup-database/inventory") == [["45 1 * * *", "Europe/Berlin", True]]

    # a failure of an apply-made deployment is posted once, by the server's automation
    # (the worker's hook is configured too, and stays silent for it)
    ledger_run = stack.run_deployment("backup-database/ledger")
    run = stack.wait_final(ledger_run)
    assert run["state"]["type"] == "FAILED"
    (message,) = slack.wait_for(r"Database: ledger")
    # no duplicate: once both possible senders are done (the run's hook, which must stay
    # silent, and the server's automation), there is still exactly one post
    wait_until(
        lambda: stack.hook_finished(ledger_run) and stack.automation_acted_on(ledger_run),
        "the ledger run's hook and the automation have both finished",
    )
    assert [m for m in slack.messages if "Database: ledger" in m["text"]] == [message]
    assert "ended Failed" in message["text"]
    assert "gone.db does not exist" in message["text"]
    assert "step 'dump' failed" in message["text"]
    executed = stack.post(
        "/events/filter",
        {"filter": {"event": {"name": ["prefect.automation.action.executed"]}}, "limit": 50},
    )["events"]
    names = {e["resource"].get("prefect.resource.name") for e in executed}
    assert "db-backup: failures to e2e-alerts" in names  # the server sent it, not the hook

    # the dead man's switch: no completed backup of canary within its 15 s window
    (alarm, *_) = slack.wait_for(r"no successful backup of canary", timeout=120)
    assert alarm["text"].startswith("db-backup: no successful backup of canary in ")
    assert "Database: canary" in alarm["text"]
    assert not [m for m in slack.messages if "no successful backup of inventory" in m["text"]]


def test_postgres_backup_through_a_deployment(stack: Stack, deployed: tuple[Path, Path]) -> None:
    ready = subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False)
    need_service(ready.returncode == 0, "PostgreSQL on 127.0.0.1:5432")
    db, copy = f"e2e_{os.getpid()}", f"e2e_{os.getpid()}_copy"
    psql = ["psql", "-h", "127.0.0.1", "-U", "root", "-v", "ON_ERROR_STOP=1", "-q"]
    for name in (db, copy):
        drop = f"DROP DATABASE IF EXISTS {name}"
        subprocess.run([*psql, "-d", "postgres", "-c", drop], check=True)
    subprocess.run([*psql, "-d", "postgres", "-c", f"CREATE DATABASE {db}"], check=True)
    try:
        subprocess.run(
            [
                *psql,
                "-d",
                db,
                "-c",
                "CREATE TABLE items (id int PRIMARY KEY, label text);"
                "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;",
            ],
            check=True,
        )
        url = f"postgresql://root@127.0.0.1:5432/{db}"
        run_id = stack.run_deployment(
            "backup-database/shop-nightly", f"database={url}", "name=pg-e2e"
        )
        run = stack.wait_final(run_id)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        (artifact,) = _artifacts(stack, run_id)
        assert artifact["key"] == "backup-pg-e2e"
        assert "| Database | pg-e2e (postgres" in artifact["data"]
        store = deployed[1]
        (manifest_path,) = (store / "pg-e2e").glob("*/manifest.json")
        manifest = json.loads(manifest_path.read_text())
        assert manifest["engine"] == "postgres"
        assert manifest["tables"] == {"public.items": 500}
        # what the deployment stored restores equal to the source
        restored = stack.db_backup(
            "restore",
            manifest_path.parent.name,
            "--name",
            "pg-e2e",
            "--to",
            f"postgresql://root@127.0.0.1:5432/{copy}",
            "--storage",
            str(store),
        )
        assert restored.returncode == 0, restored.stderr
        assert _pg_rows(psql, copy) == _pg_rows(psql, db)
        assert len(_pg_rows(psql, copy)) == 500
    finally:
        for name in (db, copy):
            subprocess.run([*psql, "-d", "postgres", "-c", f"DROP DATABASE IF EXISTS {name}"])


def _pg_rows(psql: list[str], db: str) -> list[str]:
    """Every row of ``items``, as text, in order."""
    out = subprocess.run(
        [*psql, "-d", db, "-Atc", "SELECT t::text FROM items t ORDER BY id"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.splitlines()
