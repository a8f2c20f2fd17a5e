"""MySQL/MariaDB backups against the real MariaDB on 127.0.0.1:3306."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from db_backup.connectors import connector_from_url
from db_backup.connectors.mysql.logical import MySQLConnector
from db_backup.errors import (
    ConfigError,
    IntegrityError,
    SourceError,
    TargetError,
    ToolFailed,
    is_transient,
)
from tests import server_helpers as h
from tests.conftest import CliRunner, need_service

MY_URL = "mysql://root@127.0.0.1:3306/{}"


@pytest.fixture(scope="module")
def my_up() -> None:
    need_service(h.my_available(), "MariaDB on 127.0.0.1:3306")


@pytest.fixture
def dbs(my_up: None) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        h.my_drop(name)


@pytest.fixture
def rich(dbs: list[str]) -> str:
    name = h.unique("t_my_src")
    dbs.append(name)
    h.my_create(name)
    h.my_make_rich(name)
    return name


def conn_for(name: str) -> MySQLConnector:
    c = connector_from_url(MY_URL.format(name))
    assert isinstance(c, MySQLConnector)
    return c


def test_round_trip_into_new_database_is_equal(rich: str, dbs: list[str], tmp_path: Path) -> None:
    manifest = h.backup(conn_for(rich), tmp_path / "store", "shop", tmp_path / "stage")
    assert manifest.tables == {"audit": 400, "customers": 61, "orders": 395}
    assert manifest.extra["exact_counts"] is True
    assert "MariaDB" in manifest.server_version and manifest.tool == "mariadb-dump"
    target = h.unique("t_my_dst")
    dbs.append(target)
    h.restore(conn_for(target), tmp_path / "store", manifest, tmp_path / "rstage")
    src, dst = h.my_snapshot(rich), h.my_snapshot(target)
    assert dst["auto_increment"] == src["auto_increment"]
    assert dst == src
    assert conn_for(target).check() == []


def test_row_counts_come_from_the_dumps_snapshot(rich: str, dbs: list[str], tmp_path: Path) -> None:
    """A writer committing throughout the dump: the counts equal what the dump holds."""
    stop = threading.Event()

    def writer() -> None:
        conn = h.my_connect(rich)
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("INSERT INTO audit(what) VALUES ('during')")
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        manifest = h.backup(conn_for(rich), tmp_path / "store", "snap", tmp_path / "stage")
    finally:
        stop.set()
        thread.join()
    assert manifest.extra["exact_counts"] is True
    target = h.unique("t_my_snap")
    dbs.append(target)
    h.restore(conn_for(target), tmp_path / "store", manifest, tmp_path / "r")
    assert conn_for(target).row_counts() == manifest.tables
    assert manifest.tables["audit"] > 400


def test_counts_exclude_rows_committed_after_the_snapshot(
    rich: str, dbs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows committed while the backup counts are neither counted nor dumped."""
    from db_backup.connectors.mysql import logical as mysql

    real_count = mysql._count

    def count_after_a_commit(conn: object, table: str) -> int:
        h.my_exec(rich, "INSERT INTO audit(what) VALUES ('late')")
        return real_count(conn, table)

    monkeypatch.setattr(mysql, "_count", count_after_a_commit)
    manifest = h.backup(conn_for(rich), tmp_path / "s", "snap", tmp_path / "st")
    monkeypatch.undo()
    assert manifest.tables["audit"] == 400
    assert conn_for(rich).row_counts()["audit"] == 403
    target = h.unique("t_my_snap2")
    dbs.append(target)
    h.restore(conn_for(target), tmp_path / "s", manifest, tmp_path / "r")
    assert conn_for(target).row_counts()["audit"] == 400


def test_selective_restore_of_two_tables_into_new_database(
    rich: str, dbs: list[str], tmp_path: Path
) -> None:
    manifest = h.backup(conn_for(rich), tmp_path / "store", "shop", tmp_path / "stage")
    target = h.unique("t_my_sel")
    dbs.append(target)
    result = h.restore(
        conn_for(target),
        tmp_path / "store",
        manifest,
        tmp_path / "r",
        tables=["customers", "orders"],
    )
    assert result.tables == ["customers", "orders"]
    src, dst = h.my_snapshot(rich), h.my_snapshot(target)
    assert set(dst["tables"]) == {"customers", "orders"}
    for table in ("customers", "orders"):
        assert dst["tables"][table] == src["tables"][table]  # indexes, FK, AUTO_INCREMENT
        assert dst["data"][table] == src["data"][table]
    assert [t[0] for t in dst["triggers"]] == ["orders_log"]
    assert dst["views"] == {} and dst["routines"] == [] and dst["events"] == []


def test_restore_refuses_database_with_data_and_leaves_it_unchanged(
    rich: str, dbs: list[str], tmp_path: Path
) -> None:
    manifest = h.backup(conn_for(rich), tmp_path / "store", "shop", tmp_path / "stage")
    other = h.unique("t_my_busy")
    dbs.append(other)
    h.my_create(other)
    h.my_exec(other, "CREATE TABLE customers (keep INT)", "INSERT INTO customers VALUES (42)")
    before = h.my_snapshot(other)
    with pytest.raises(TargetError, match="already holds 1 table"):
        h.restore(conn_for(other), tmp_path / "store", manifest, tmp_path / "r")
    with pytest.raises(TargetError, match="already has table"):
        h.restore(
            conn_for(other), tmp_path / "store", manifest, tmp_path / "r", tables=["customers"]
        )
    with pytest.raises(ConfigError, match="nope"):
        h.restore(conn_for(other), tmp_path / "store", manifest, tmp_path / "r", tables=["nope"])
    assert h.my_snapshot(other) == before
    h.restore(conn_for(other), tmp_path / "store", manifest, tmp_path / "r", force=True)
    assert h.my_snapshot(other)["data"] == h.my_snapshot(rich)["data"]


def test_bad_sources_fail_with_one_line_and_no_manifest(my_up: None, tmp_path: Path) -> None:
    store = tmp_path / "store"
    cases = [
        (MY_URL.format(h.unique("t_my_missing")), "Unknown database"),
        (f"mysql://root@127.0.0.1:{h.closed_port()}/x", "cannot connect"),
    ]
    for url, text in cases:
        with pytest.raises(SourceError, match=text) as info:
            h.backup(connector_from_url(url), store, "bad", tmp_path / "stage")
        assert "\n" not in str(info.value)
    assert h.manifests(store) == []
    with pytest.raises(ConfigError, match="password in the database URL"):
        connector_from_url("mysql://root:hunter2@127.0.0.1/x")


def test_missing_dump_tool_fails_before_dumping(
    rich: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(SourceError, match="mariadb-dump / mysqldump not found"):
        h.backup(conn_for(rich), tmp_path / "store", "shop", tmp_path / "stage")
    assert h.manifests(tmp_path / "store") == []


def test_connection_killed_mid_dump_leaves_no_manifest(dbs: list[str], tmp_path: Path) -> None:
    name = h.unique("t_my_big")
    dbs.append(name)
    h.my_create(name)
    h.my_exec(
        name,
        "CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(200))",
        "INSERT INTO big SELECT seq, CONCAT(MD5(seq), REPEAT('x', 100)) FROM seq_1_to_300000",
    )

    killed: list[int] = []

    def kill_dump(_n: int) -> None:
        for _ in range(100 if not killed else 0):
            rows = h.my_exec(
                None,
                "SELECT id FROM information_schema.PROCESSLIST WHERE "
                f"db = '{name}' AND info LIKE 'SELECT /*!40001 SQL_NO_CACHE%'",
            )
            for (pid,) in rows:
                h.my_exec(None, f"KILL {pid}")
                killed.append(pid)
            if rows:
                return
            time.sleep(0.02)

    with pytest.raises(
        ToolFailed, match=r"mariadb-dump failed for database .* \(exit \d\): .*Lost connection"
    ):
        h.backup(conn_for(name), tmp_path / "store", "big", tmp_path / "stage", progress=kill_dump)
    assert h.manifests(tmp_path / "store") == []
    assert not list((tmp_path / "stage").iterdir())


@pytest.fixture
def pw_user(my_up: None) -> Iterator[tuple[str, str, str]]:
    """A user with a password and a database it owns; (user, password, database)."""
    user, password, db = h.unique("t_u"), "S3cret-" + h.unique("pw"), h.unique("t_my_pw")
    h.my_create(db)
    h.my_exec(
        None,
        f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'",
        f"GRANT ALL ON `{db}`.* TO '{user}'@'127.0.0.1'",
        f"GRANT ALL ON `{db}_r`.* TO '{user}'@'127.0.0.1'",
    )
    h.my_exec(
        db,
        "CREATE TABLE t (id INT PRIMARY KEY, pad TEXT)",
        "INSERT INTO t SELECT seq, REPEAT('y', 300) FROM seq_1_to_20000",
    )
    try:
        yield user, password, db
    finally:
        h.my_exec(None, f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
        h.my_drop(db)
        h.my_drop(db + "_r")


def test_wrong_password_fails_cleanly(
    pw_user: tuple[str, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password, db = pw_user
    monkeypatch.setenv("DB_BACKUP_MYSQL_PASSWORD", "wrong-" + password)
    with pytest.raises(SourceError, match="Access denied") as info:
        h.backup(
            connector_from_url(f"mysql://{user}@127.0.0.1:3306/{db}"),
            tmp_path / "store",
            "pw",
            tmp_path / "stage",
        )
    assert "\n" not in str(info.value) and password not in str(info.value)
    assert not is_transient(info.value)  # 1045: a retry cannot help
    assert h.manifests(tmp_path / "store") == []


def test_password_never_leaks(
    pw_user: tuple[str, str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not in child argv or environment, logs, manifests; no option file on disk.

    Also guards issue 12 item 11: the children's environment is allow-listed, so our
    passphrase and cloud keys never reach mariadb-dump / mariadb, and the option file
    is an in-memory /dev/fd/N.
    """
    user, password, db = pw_user
    others = {"DB_BACKUP_PASSPHRASE": h.unique("phrase"), "AWS_SECRET_ACCESS_KEY": h.unique("aws")}
    for key, value in others.items():
        monkeypatch.setenv(key, value)
    seen: list[str] = []
    option_files: list[str] = []

    def inspect_children(_n: int) -> None:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) != os.getpid():
                    continue
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
                environ = (proc / "environ").read_bytes().decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
            seen.append("\0".join(argv) + "\n" + environ)
            option_files.extend(
                a.split("=", 1)[1] for a in argv if a.startswith("--defaults-extra-file=")
            )
            for path in option_files:
                assert (os.stat(path).st_mode & 0o777) == 0o600

    monkeypatch.setenv("DB_BACKUP_MYSQL_PASSWORD", password)
    conn = connector_from_url(f"mysql://{user}@127.0.0.1:3306/{db}")
    manifest = h.backup(
        conn, tmp_path / "store", "pw", tmp_path / "stage", progress=inspect_children
    )
    assert seen and any("mariadb-dump" in s for s in seen)
    assert all(password not in s for s in seen)
    assert not [v for v in others.values() if any(v in s for s in seen)]
    assert option_files and all(p.startswith("/dev/fd/") for p in option_files)
    assert password not in manifest.to_json().decode()
    assert password not in repr(conn) and password not in caplog.text
    h.restore(
        connector_from_url(f"mysql://{user}@127.0.0.1:3306/{db}_r"),
        tmp_path / "store",
        manifest,
        tmp_path / "r",
    )
    restored = connector_from_url(f"mysql://{user}@127.0.0.1:3306/{db}_r")
    assert restored.row_counts() == {"t": 20000}
    for path in (tmp_path / "store").rglob("*"):
        assert not path.is_file() or password.encode() not in path.read_bytes()


def test_cli_backup_restore_and_errors(
    rich: str, dbs: list[str], cli: CliRunner, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    out = cli(
        "backup",
        "--type",
        "mysql",
        "--url",
        MY_URL.format(rich),
        "--name",
        "shop",
        "--storage",
        store,
    )
    assert out.returncode == 0, out.stderr
    listed = json.loads(cli("list", "--json", "--storage", store).stdout)
    assert listed[0]["engine"] == "mysql" and listed[0]["tables"] == 3
    target = h.unique("t_my_cli")
    dbs.append(target)
    out = cli(
        "restore",
        "latest",
        "--name",
        "shop",
        "--to",
        f"mariadb://root@127.0.0.1:3306/{target}",
        "--tables",
        "customers,orders",
        "--storage",
        store,
    )
    assert out.returncode == 0, out.stderr
    assert h.my_snapshot(target)["data"]["orders"] == h.my_snapshot(rich)["data"]["orders"]
    before = h.my_snapshot(target)
    out = cli(
        "restore", "latest", "--name", "shop", "--to", MY_URL.format(target), "--storage", store
    )
    assert out.returncode == 4 and "--force" in out.stderr and out.stderr.count("\n") == 1
    out = cli(
        "restore",
        "latest",
        "--name",
        "shop",
        "--to",
        MY_URL.format(target),
        "--tables",
        "nope",
        "--storage",
        store,
    )
    assert out.returncode == 2 and "nope" in out.stderr and out.stderr.count("\n") == 1
    assert h.my_snapshot(target) == before
    out = cli(
        "backup",
        "--type",
        "mysql",
        "--url",
        MY_URL.format(rich),
        "--name",
        "shop",
        "--storage",
        store,
        env={"PATH": str(tmp_path / "nobin")},
    )
    assert out.returncode == 3 and "mariadb-dump / mysqldump not found" in out.stderr
    # shrink guard: an emptied database fails the backup unless --allow-shrink
    h.my_exec(rich, "DELETE FROM orders", "DELETE FROM audit")
    out = cli(
        "backup",
        "--type",
        "mysql",
        "--url",
        MY_URL.format(rich),
        "--name",
        "shop",
        "--storage",
        store,
    )
    assert out.returncode == 3 and "--allow-shrink" in out.stderr
    assert len(h.manifests(Path(store))) == 1


# -- issue 12: input that escapes, secrets, honest failures ------------------------------
def test_option_injection_through_the_url_is_refused(
    my_up: None, dbs: list[str], cli: CliRunner, tmp_path: Path
) -> None:
    """Guards issue 12 item 9: a URL option value with a newline added an
    ``init-command`` line to the option file and the server ran it. The URL is now
    refused (exit 2) and the statement never runs."""
    pwned = h.unique("adv_pwned")
    dbs.append(pwned)
    source = h.unique("t_my_inj")
    dbs.append(source)
    h.my_create(source)
    h.my_exec(source, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    injected = quote(f"0\ninit-command=CREATE DATABASE {pwned}", safe="")
    url = f"mysql://root@127.0.0.1:3306/{source}?ssl-verify-server-cert={injected}"
    out = cli("backup", "--type", "mysql", "--url", url, "--storage", str(tmp_path / "store"))
    assert out.returncode == 2 and "ssl-verify-server-cert" in out.stderr, out.stderr
    assert h.manifests(tmp_path / "store") == []
    # the mariadb client (restore) honours init-command: the same URL as a target
    manifest = h.backup(conn_for(source), tmp_path / "store", "inj", tmp_path / "stage")
    target = h.unique("t_my_inj_r")
    dbs.append(target)
    with pytest.raises(ConfigError, match="ssl-verify-server-cert"):
        h.restore(
            connector_from_url(url.replace(source, target, 1)),
            tmp_path / "store",
            manifest,
            tmp_path / "r",
        )
    assert not h.my_exists(pwned) and not h.my_exists(target)


def test_odd_user_name_and_password_round_trip(
    dbs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards issue 12 item 9: the option file quotes and escapes the user name and the
    password, so legal but odd ones (quotes, backslash, '#', '=', spaces) log in as
    themselves, back up and restore."""
    tag = h.unique("u")[-6:]
    user = f"o'd \"u\\s#{tag}"
    password = f"p\"a\\ss #w'rd = {tag} "
    db = h.unique("t_my_odd")
    dbs.extend([db, db + "_r"])
    h.my_create(db)
    h.my_exec(db, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)", "INSERT INTO t VALUES (1, 'x')")
    conn = h.my_connect()
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (user, password))
            for name in (db, db + "_r"):
                cur.execute(f"GRANT ALL ON `{name}`.* TO %s@'127.0.0.1'", (user,))
        monkeypatch.setenv("DB_BACKUP_MYSQL_PASSWORD", password)
        url = "mysql://" + quote(user, safe="") + "@127.0.0.1:3306/{}"
        source = connector_from_url(url.format(db))
        assert isinstance(source, MySQLConnector) and source.user == user
        manifest = h.backup(source, tmp_path / "store", "odd", tmp_path / "stage")
        h.restore(
            connector_from_url(url.format(db + "_r")), tmp_path / "store", manifest, tmp_path / "r"
        )
        assert h.my_snapshot(db + "_r")["data"] == h.my_snapshot(db)["data"]
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'127.0.0.1'", (user,))
        conn.close()


KILLED_RUN = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from db_backup.connectors import connector_from_url
from tests import server_helpers as h

def hold(_n):
    print("dumping", flush=True)
    time.sleep(600)

h.backup(connector_from_url({url!r}), Path({store!r}), "killed", Path({stage!r}), progress=hold)
"""


def test_killed_run_leaves_no_password_file(pw_user: tuple[str, str, str], tmp_path: Path) -> None:
    """Guards issue 12 item 11: a run killed while mariadb-dump ran left its option file,
    password inside, in the temp directory. Now no file holding the password exists on
    disk at any time, so nothing is left to clean up after a kill."""
    user, password, db = pw_user
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = KILLED_RUN.format(
        root=str(Path(__file__).resolve().parents[1]),
        url=f"mysql://{user}@127.0.0.1:3306/{db}",
        store=str(tmp_path / "store"),
        stage=str(tmp_path / "stage"),
    )
    env = {**os.environ, "TMPDIR": str(tmp), "DB_BACKUP_MYSQL_PASSWORD": password}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"dumping\n"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    leftovers = [p for p in tmp.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert leftovers == []
    assert h.manifests(tmp_path / "store") == []


def test_connection_refused_is_transient_unknown_database_is_not(
    my_up: None, tmp_path: Path
) -> None:
    """Guards issue 12 item 12: MariaDB 2003 (can't connect: a server restarting) is
    transient, so the task's retries run; 1049 (unknown database) is not."""
    cases = [
        (f"mysql://root@127.0.0.1:{h.closed_port()}/x", True, "Can't connect"),
        (MY_URL.format(h.unique("t_my_missing")), False, "Unknown database"),
    ]
    for url, transient, text in cases:
        with pytest.raises(SourceError, match=text) as info:
            h.backup(connector_from_url(url), tmp_path / "store", "t", tmp_path / "stage")
        assert is_transient(info.value) is transient, url
        assert info.value.exit_code == 3


def test_failed_row_count_check_drops_the_database_the_restore_created(
    rich: str, dbs: list[str], tmp_path: Path
) -> None:
    """Guards issue 12 item 15 (MariaDB side): a restore whose row counts do not match
    the backup's drops the database it created, never one that was there before."""
    store = tmp_path / "store"
    manifest = h.backup(conn_for(rich), store, "shop", tmp_path / "stage")
    manifest.tables["orders"] += 1
    target = h.unique("t_my_count")
    dbs.append(target)
    with pytest.raises(IntegrityError, match="orders"):
        h.restore(conn_for(target), store, manifest, tmp_path / "r")
    assert not h.my_exists(target)
