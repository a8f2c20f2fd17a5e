"""PostgreSQL backups against the real server on 127.0.0.1:5432 (and a throwaway
password-protected cluster for authentication and crash tests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from db_backup.connectors import connector_from_url
from db_backup.connectors.postgres.logical import PostgresConnector
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

PG_URL = "postgresql://root@127.0.0.1:5432/{}"


@pytest.fixture(scope="module")
def pg_up() -> None:
    need_service(h.pg_available(), "PostgreSQL on 127.0.0.1:5432")


@pytest.fixture
def dbs(pg_up: None) -> Iterator[list[str]]:
    """Names of databases this test creates; all dropped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        h.pg_drop(name)


@pytest.fixture
def rich(dbs: list[str]) -> str:
    name = h.unique("t_pg_src")
    dbs.append(name)
    h.pg_create(name)
    h.pg_make_rich(name)
    return name


def conn_for(name: str) -> PostgresConnector:
    c = connector_from_url(PG_URL.format(name))
    assert isinstance(c, PostgresConnector)
    return c


def test_round_trip_into_new_database_is_equal(rich: str, dbs: list[str], tmp_path: Path) -> None:
    manifest = h.backup(conn_for(rich), tmp_path / "store", "shop", tmp_path / "stage")
    assert manifest.tables == {
        "public.audit": 400,
        "public.customers": 61,
        "public.orders": 400,
        "sales.regions": 2,
    }
    assert manifest.server_version.startswith("15") and manifest.tool == "pg_dump"
    assert manifest.objects[0].format == "pg_dump-custom"
    target = h.unique("t_pg_dst")
    dbs.append(target)
    h.restore(conn_for(target), tmp_path / "store", manifest, tmp_path / "rstage")
    assert h.pg_snapshot(target) == h.pg_snapshot(rich)
    assert conn_for(target).check() == []


def test_row_counts_come_from_the_dumps_snapshot(
    rich: str, dbs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows committed while the backup counts are neither counted nor dumped."""
    from db_backup.connectors.postgres import catalog

    real_count = catalog.count_rows

    def count_after_a_commit(conn: object, table: str) -> int:
        with h.pg_connect(rich) as writer:
            writer.execute(
                "INSERT INTO sales.regions SELECT 'Z' || count(*), 'late' FROM sales.regions"
            )
        return real_count(conn, table)

    monkeypatch.setattr(catalog, "count_rows", count_after_a_commit)
    manifest = h.backup(conn_for(rich), tmp_path / "s", "snap", tmp_path / "st")
    monkeypatch.undo()
    assert manifest.tables["sales.regions"] == 2
    assert conn_for(rich).row_counts()["sales.regions"] == 6  # four commits happened
    target = h.unique("t_pg_snap")
    dbs.append(target)
    h.restore(conn_for(target), tmp_path / "s", manifest, tmp_path / "r")
    assert conn_for(target).row_counts()["sales.regions"] == 2


def test_selective_restore_of_two_tables_into_new_database(
    rich: str, dbs: list[str], tmp_path: Path
) -> None:
    manifest = h.backup(conn_for(rich), tmp_path / "store", "shop", tmp_path / "stage")
    target = h.unique("t_pg_sel")
    dbs.append(target)
    result = h.restore(
        conn_for(target),
        tmp_path / "store",
        manifest,
        tmp_path / "r",
        tables=["customers", "orders"],
    )
    assert result.tables == ["public.customers", "public.orders"]
    src, dst = h.pg_snapshot(rich), h.pg_snapshot(target)
    assert set(dst["data"]) == {"public.customers", "public.orders"}
    for table in ("public.customers", "public.orders"):
        assert dst["data"][table] == src["data"][table]
    # indexes, constraints (the FK too: both ends restored), trigger and its function
    assert [i for i in src["indexes"] if "audit" not in i[1] and "regions" not in i[1]] == dst[
        "indexes"
    ]
    assert {c[1] for c in dst["constraints"]} >= {"orders_customer_id_fkey", "customers_pkey"}
    assert [t[0] for t in dst["triggers"]] == ["orders_log"]
    assert ("public", "orders_id_seq") in {s[:2] for s in dst["sequences"]}
    assert dst["sequences"] == [
        s for s in src["sequences"] if s[1] != "audit_id_seq" and s[1] != "invoice_no"
    ]


def test_selective_restore_of_a_schema(rich: str, dbs: list[str], tmp_path: Path) -> None:
    manifest = h.backup(conn_for(rich), tmp_path / "store", "shop", tmp_path / "stage")
    target = h.unique("t_pg_schema")
    dbs.append(target)
    h.restore(conn_for(target), tmp_path / "store", manifest, tmp_path / "r", schemas=["sales"])
    assert conn_for(target).row_counts() == {"sales.regions": 2}


def test_parallel_restore_with_jobs(rich: str, dbs: list[str], tmp_path: Path) -> None:
    manifest = h.backup(conn_for(rich), tmp_path / "store", "shop", tmp_path / "stage")
    target = h.unique("t_pg_jobs")
    dbs.append(target)
    h.restore(conn_for(target), tmp_path / "store", manifest, tmp_path / "r", jobs=2)
    assert h.pg_snapshot(target) == h.pg_snapshot(rich)
    assert not list((tmp_path / "r").glob("*.pgdump"))  # the decoded copy is removed


def test_restore_refuses_database_with_data_and_leaves_it_unchanged(
    rich: str, dbs: list[str], tmp_path: Path
) -> None:
    manifest = h.backup(conn_for(rich), tmp_path / "store", "shop", tmp_path / "stage")
    other = h.unique("t_pg_busy")
    dbs.append(other)
    h.pg_create(other)
    with h.pg_connect(other) as c:
        c.execute("CREATE TABLE customers (keep int); INSERT INTO customers VALUES (42)")
    before = h.pg_snapshot(other)
    with pytest.raises(TargetError, match="already holds 1 table"):
        h.restore(conn_for(other), tmp_path / "store", manifest, tmp_path / "r")
    with pytest.raises(TargetError, match="already has table"):
        h.restore(
            conn_for(other), tmp_path / "store", manifest, tmp_path / "r", tables=["customers"]
        )
    assert h.pg_snapshot(other) == before
    # selective with force: atomic; the differently shaped table makes it fail cleanly
    with pytest.raises(TargetError, match="pg_restore failed"):
        h.restore(
            conn_for(other),
            tmp_path / "store",
            manifest,
            tmp_path / "r",
            tables=["customers"],
            force=True,
        )
    assert h.pg_snapshot(other) == before
    # full restore with force: restored beside the target, then swapped in
    h.restore(conn_for(other), tmp_path / "store", manifest, tmp_path / "r", force=True)
    assert h.pg_snapshot(other) == h.pg_snapshot(rich)
    with h.pg_connect("postgres") as c:
        assert not c.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (other[:28] + "_dbb_%",)
        ).fetchall()


def test_failed_restore_into_new_database_leaves_nothing(
    rich: str, dbs: list[str], tmp_path: Path
) -> None:
    """pg_restore fails (the table's owner role is gone): the new database is dropped again."""
    role = h.unique("t_owner")
    with h.pg_connect(rich) as c:
        c.execute(f'CREATE ROLE "{role}"; ALTER TABLE sales.regions OWNER TO "{role}"')
    try:
        manifest = h.backup(conn_for(rich), tmp_path / "store", "shop", tmp_path / "stage")
    finally:
        with h.pg_connect(rich) as c:
            c.execute(f'REASSIGN OWNED BY "{role}" TO root; DROP OWNED BY "{role}"')
            c.execute(f'DROP ROLE "{role}"')
    target = h.unique("t_pg_fail")
    dbs.append(target)
    with pytest.raises(TargetError, match=f"pg_restore failed for database '{target}'.*{role}"):
        h.restore(conn_for(target), tmp_path / "store", manifest, tmp_path / "r")
    assert not h.pg_exists(target)
    with pytest.raises(ConfigError, match="'nope' is not in backup"):
        h.restore(conn_for(target), tmp_path / "store", manifest, tmp_path / "r", tables=["nope"])
    # --no-owner style restore works without the role
    h.restore(conn_for(target), tmp_path / "store", manifest, tmp_path / "r", no_owner=True)
    assert conn_for(target).row_counts() == manifest.tables


def test_bad_sources_fail_with_one_line_and_no_manifest(pg_up: None, tmp_path: Path) -> None:
    store = tmp_path / "store"
    cases = [
        (PG_URL.format(h.unique("t_pg_missing")), SourceError, "does not exist"),
        (f"postgresql://root@127.0.0.1:{h.closed_port()}/postgres", SourceError, "cannot connect"),
    ]
    for url, kind, text in cases:
        with pytest.raises(kind, match=text) as info:
            h.backup(connector_from_url(url), store, "bad", tmp_path / "stage")
        assert "\n" not in str(info.value)
    assert h.manifests(store) == []
    with pytest.raises(ConfigError, match="password in the database URL"):
        connector_from_url("postgresql://root:hunter2@127.0.0.1/x")


def test_missing_pg_dump_fails_before_dumping(
    rich: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(SourceError, match="pg_dump not found on PATH"):
        h.backup(conn_for(rich), tmp_path / "store", "shop", tmp_path / "stage")
    assert h.manifests(tmp_path / "store") == []
    assert not list((tmp_path / "stage").iterdir())


def test_backend_killed_mid_dump_leaves_no_manifest(dbs: list[str], tmp_path: Path) -> None:
    name = h.unique("t_pg_big")
    dbs.append(name)
    h.pg_create(name)
    with h.pg_connect(name) as c:
        c.execute(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat('x', 80) AS pad "
            "FROM generate_series(1, 300000) g"
        )

    def kill_dump(_n: int) -> None:
        with h.pg_connect("postgres") as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = 'db-backup-tool'",
                (name,),
            )

    with pytest.raises(ToolFailed, match=r"pg_dump failed for database .* \(exit 1\)"):
        h.backup(conn_for(name), tmp_path / "store", "big", tmp_path / "stage", progress=kill_dump)
    assert h.manifests(tmp_path / "store") == []
    assert not list((tmp_path / "stage").iterdir())  # the partial staged file is gone


def test_shrunken_dump_fails_unless_allowed(rich: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    h.backup(conn_for(rich), store, "shop", tmp_path / "s1")
    with h.pg_connect(rich) as c:
        c.execute("TRUNCATE orders, audit")
    with pytest.raises(SourceError, match="allow-shrink"):
        h.backup(conn_for(rich), store, "shop", tmp_path / "s2")
    assert len(h.manifests(store)) == 1
    h.backup(conn_for(rich), store, "shop", tmp_path / "s3", allow_shrink=True)
    assert len(h.manifests(store)) == 2


# -- a throwaway cluster with password authentication ------------------------------------
@pytest.fixture(scope="module")
def pw_cluster(pg_up: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A private PostgreSQL cluster (scram-sha-256) on a free port; password in the dict."""
    initdb = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if initdb is None or os.geteuid() != 0 or shutil.which("runuser") is None:
        need_service(False, "initdb as root with runuser (throwaway cluster)")
    # pytest's temporary root is private to root: postgres needs a directory of its own.
    base = Path(tempfile.mkdtemp(prefix="db-backup-pgcluster-"))
    os.chmod(base, 0o755)
    data = base / "data"
    password = "S3cret-" + h.unique("pw")
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    shutil.chown(base, "postgres")
    shutil.chown(pwfile, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    bindir = initdb.parent
    subprocess.run(
        [
            *as_pg,
            str(initdb),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            f"--pwfile={pwfile}",
        ],
        check=True,
        capture_output=True,
    )
    port = h.closed_port()
    subprocess.run(
        [
            *as_pg,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(base / "log"),
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base}",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield {
            "port": str(port),
            "password": password,
            "data": str(data),
            "pg_ctl": str(bindir / "pg_ctl"),
        }
    finally:
        subprocess.run(
            [*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


def test_wrong_password_fails_cleanly(
    pw_cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{pw_cluster['port']}/postgres"
    monkeypatch.setenv("DB_BACKUP_PG_PASSWORD", "wrong-" + pw_cluster["password"])
    with pytest.raises(SourceError, match="password authentication failed") as info:
        h.backup(connector_from_url(url), tmp_path / "store", "pw", tmp_path / "stage")
    assert "\n" not in str(info.value) and pw_cluster["password"] not in str(info.value)
    assert h.manifests(tmp_path / "store") == []


def test_password_never_leaks(
    pw_cluster: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not in child argv or environment, logs, exceptions, manifests; no passfile on disk.

    Also guards issue 12 item 11: the children's environment is allow-listed, so our
    passphrase and cloud keys never reach pg_dump / pg_restore (the old filter only
    dropped names containing PASSWORD), and the passfile is an in-memory /dev/fd/N.
    """
    password = pw_cluster["password"]
    others = {
        "DB_BACKUP_PASSPHRASE": h.unique("phrase"),
        "AWS_SECRET_ACCESS_KEY": h.unique("aws"),
        "AZURE_STORAGE_KEY": h.unique("azure"),
    }
    for key, value in others.items():
        monkeypatch.setenv(key, value)
    url = f"postgresql://postgres@127.0.0.1:{pw_cluster['port']}/postgres"
    seen: list[str] = []
    passfiles: list[str] = []

    def inspect_children(_n: int) -> None:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) != os.getpid():
                    continue
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
                environ = (proc / "environ").read_bytes().decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
            seen.append(cmdline + "\n" + environ)
            passfiles.extend(
                v.split("=", 1)[1] for v in environ.split("\0") if v.startswith("PGPASSFILE=")
            )

    monkeypatch.setenv("DB_BACKUP_PG_PASSWORD", password)
    conn = connector_from_url(url)
    with h.pg_connect(
        "postgres", port=int(pw_cluster["port"]), user="postgres", password=password
    ) as c:
        c.execute(
            "CREATE TABLE IF NOT EXISTS t AS SELECT g, repeat('y', 200) AS pad "
            "FROM generate_series(1, 20000) g"
        )
    manifest = h.backup(
        conn, tmp_path / "store", "pw", tmp_path / "stage", progress=inspect_children
    )
    assert seen and any("pg_dump" in s for s in seen)
    assert all(password not in s for s in seen)
    assert not [v for v in others.values() if any(v in s for s in seen)]
    assert passfiles and all(p.startswith("/dev/fd/") for p in passfiles)
    assert password not in manifest.to_json().decode()
    assert password not in repr(conn) and password not in conn.describe()
    assert password not in caplog.text
    target_db = h.unique("t_pg_pwr")
    target_url = f"postgresql://postgres@127.0.0.1:{pw_cluster['port']}/{target_db}"
    h.restore(connector_from_url(target_url), tmp_path / "store", manifest, tmp_path / "r")
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes()


def test_globals_restore_creates_roles_with_attributes_and_memberships(
    rich: str, pw_cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards issue 12 item 19: a restore with globals creates the source's roles with their
    attributes, password and memberships (the old test restored where the roles already
    existed, so it proved nothing). The target is a cluster that has none of them; a table
    owned by one of them comes back with its owner and the data equal to the source."""
    group, member, secret = h.unique("t_grp"), h.unique("t_mbr"), "pw-" + h.unique("r")
    with h.pg_connect(rich) as c:
        c.execute(f'CREATE ROLE "{group}" NOLOGIN')
        c.execute(
            f'CREATE ROLE "{member}" LOGIN CREATEDB CONNECTION LIMIT 7 '
            f"PASSWORD '{secret}' IN ROLE \"{group}\""
        )
        c.execute(f'ALTER TABLE sales.regions OWNER TO "{member}"')
    try:
        conn = connector_from_url(PG_URL.format(rich) + "?globals=true")
        manifest = h.backup(conn, tmp_path / "store", "g", tmp_path / "stage")
    finally:
        with h.pg_connect(rich) as c:
            c.execute("ALTER TABLE sales.regions OWNER TO root")
            c.execute(f'DROP ROLE "{member}"')
            c.execute(f'DROP ROLE "{group}"')
    assert [o.part for o in manifest.objects] == ["database", "globals"]

    monkeypatch.setenv("DB_BACKUP_PG_PASSWORD", pw_cluster["password"])
    target = h.unique("t_pg_glob")
    target_url = f"postgresql://postgres@127.0.0.1:{pw_cluster['port']}/{target}"
    h.restore(
        connector_from_url(target_url), tmp_path / "store", manifest, tmp_path / "r", globals=True
    )

    there = {"port": int(pw_cluster["port"]), "user": "postgres"}
    with h.pg_connect("postgres", **there, password=pw_cluster["password"]) as c:
        roles = c.execute(
            "SELECT rolname, rolcanlogin, rolcreatedb, rolconnlimit, rolsuper FROM pg_roles "
            "WHERE rolname IN (%s, %s) ORDER BY rolname = %s",
            (group, member, member),
        ).fetchall()
        memberships = c.execute(
            "SELECT g.rolname, m.rolname FROM pg_auth_members a "
            "JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member "
            "WHERE m.rolname = %s",
            (member,),
        ).fetchall()
    assert roles == [(group, False, False, -1, False), (member, True, True, 7, False)]
    assert memberships == [(group, member)]
    with h.pg_connect(target, **{**there, "user": member}, password=secret) as c:  # its password
        owner = c.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'sales' AND tablename = 'regions'"
        ).fetchone()
    assert owner == (member,)
    assert h.pg_snapshot(target, **there, password=pw_cluster["password"]) == h.pg_snapshot(rich)


def test_server_stopped_mid_dump(
    pw_cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs last in the module: it stops the throwaway cluster."""
    monkeypatch.setenv("DB_BACKUP_PG_PASSWORD", pw_cluster["password"])
    with h.pg_connect(
        "postgres", port=int(pw_cluster["port"]), user="postgres", password=pw_cluster["password"]
    ) as c:
        c.execute(
            "CREATE TABLE IF NOT EXISTS big AS SELECT g, md5(g::text) || repeat('z', 100) "
            "AS pad FROM generate_series(1, 300000) g"
        )
    url = f"postgresql://postgres@127.0.0.1:{pw_cluster['port']}/postgres"

    def stop_server(_n: int) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                pw_cluster["pg_ctl"],
                "-D",
                pw_cluster["data"],
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        time.sleep(0.2)

    with pytest.raises(SourceError) as info:
        h.backup(
            connector_from_url(url),
            tmp_path / "store",
            "crash",
            tmp_path / "stage",
            progress=stop_server,
        )
    assert "\n" not in str(info.value)
    assert h.manifests(tmp_path / "store") == []


# -- through the CLI (subprocess, real flows) ------------------------------------------
def test_cli_backup_restore_and_errors(
    rich: str, dbs: list[str], cli: CliRunner, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    out = cli(
        "backup",
        "--type",
        "postgres",
        "--url",
        PG_URL.format(rich),
        "--name",
        "shop",
        "--storage",
        store,
    )
    assert out.returncode == 0, out.stderr
    listed = json.loads(cli("list", "--json", "--storage", store).stdout)
    assert listed[0]["engine"] == "postgres" and listed[0]["tables"] == 4
    target = h.unique("t_pg_cli")
    dbs.append(target)
    out = cli(
        "restore",
        "latest",
        "--name",
        "shop",
        "--to",
        PG_URL.format(target),
        "--tables",
        "customers,orders",
        "--storage",
        store,
    )
    assert out.returncode == 0, out.stderr
    assert (
        h.pg_snapshot(target)["data"]["public.orders"]
        == h.pg_snapshot(rich)["data"]["public.orders"]
    )
    # unknown table: one line, exit 2, target untouched
    before = h.pg_snapshot(target)
    out = cli(
        "restore",
        "latest",
        "--name",
        "shop",
        "--to",
        PG_URL.format(target),
        "--tables",
        "nope",
        "--storage",
        store,
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "nope" in out.stderr
    # data in the target without --force: exit 4
    out = cli(
        "restore", "latest", "--name", "shop", "--to", PG_URL.format(target), "--storage", store
    )
    assert out.returncode == 4 and "--force" in out.stderr and out.stderr.count("\n") == 1
    assert h.pg_snapshot(target) == before
    # missing pg_dump: exit 3, no new manifest
    out = cli(
        "backup",
        "--type",
        "postgres",
        "--url",
        PG_URL.format(rich),
        "--name",
        "shop",
        "--storage",
        store,
        env={"PATH": str(tmp_path / "nobin")},
    )
    assert out.returncode == 3 and "pg_dump not found" in out.stderr
    # a password in the URL is refused before anything runs, and never echoed
    out = cli(
        "backup",
        "--type",
        "postgres",
        "--url",
        f"postgresql://root:hunter2@127.0.0.1:5432/{rich}",
        "--storage",
        store,
    )
    assert out.returncode == 2 and "hunter2" not in out.stderr + out.stdout
    assert len(h.manifests(Path(store))) == 1


# -- issue 12: input that escapes, honest failures ------------------------------------
def _tables_and_keep(name: str) -> tuple[dict[str, int], list[tuple[int, ...]]]:
    """Row counts of every table of ``name`` and the rows of its table ``keep``."""
    with h.pg_connect(name) as c:
        rows = [tuple(r) for r in c.execute("SELECT v FROM keep ORDER BY v").fetchall()]
    return conn_for(name).row_counts(), rows


def test_target_name_is_a_name_never_a_connection_string(
    rich: str, dbs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards issue 12 item 8: a target database named ``dbname=V host=H port=P`` made
    pg_restore connect to another server (with a passfile matching any host), and one
    named ``dbname=V`` restored into V past the "target holds data" guard. Such names are
    legal PostgreSQL names: the restore must create and fill exactly that literal
    database, connect nowhere else, and leave V as it was."""
    monkeypatch.setenv("DB_BACKUP_PG_PASSWORD", "never-sent-elsewhere")
    store = tmp_path / "store"
    manifest = h.backup(conn_for(rich), store, "shop", tmp_path / "stage")
    victim = h.unique("t_pg_victim")
    dbs.append(victim)
    h.pg_create(victim)
    with h.pg_connect(victim) as c:
        c.execute("CREATE TABLE keep (v int); INSERT INTO keep VALUES (42)")
    before = _tables_and_keep(victim)
    elsewhere = h.Listener()
    try:
        for name in (
            f"dbname={victim} host=127.0.0.1 port={elsewhere.port}",
            f"x host=127.0.0.1 port={elsewhere.port}",
            f"dbname={victim}",
        ):
            dbs.append(name)
            target = connector_from_url(PG_URL.format(quote(name, safe="")))
            assert target.database == name
            h.restore(target, store, manifest, tmp_path / "r")
            assert h.pg_snapshot(name)["data"] == h.pg_snapshot(rich)["data"]
            with pytest.raises(TargetError, match="already holds"):
                h.restore(target, store, manifest, tmp_path / "r")
    finally:
        elsewhere.close()
    assert elsewhere.accepted == 0
    assert _tables_and_keep(victim) == before


def test_connection_failures_are_transient_bad_input_is_not(pg_up: None, tmp_path: Path) -> None:
    """Guards issue 12 item 12: "connection refused" (a server restarting at 02:30) was a
    permanent failure, so the task's retries never ran. A closed port is now transient;
    an unknown database or role stays permanent."""
    cases = [
        (f"postgresql://root@127.0.0.1:{h.closed_port()}/postgres", True, "Connection refused"),
        (PG_URL.format(h.unique("t_pg_missing")), False, "does not exist"),
        (f"postgresql://{h.unique('nobody')}@127.0.0.1:5432/postgres", False, "does not exist"),
    ]
    for url, transient, text in cases:
        with pytest.raises(SourceError, match=text) as info:
            h.backup(connector_from_url(url), tmp_path / "store", "t", tmp_path / "stage")
        assert is_transient(info.value) is transient, url
        assert info.value.exit_code == 3
    assert h.manifests(tmp_path / "store") == []


def test_backup_retries_until_a_restarting_server_accepts_connections(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards issue 12 item 12 end to end: the backup flow's dump task meets a server
    that is down (connection refused); the server is started only after that first
    attempt failed, and the task's own retry (delays shortened here) completes the backup."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        need_service(False, "initdb as root with runuser (throwaway cluster)")
    from db_backup.catalog import list_backups
    from db_backup.flows import backup as backup_flow
    from db_backup.storage.local import LocalStorage
    from db_backup.tasks.policy import retry_transient

    base = Path(tempfile.mkdtemp(prefix="db-backup-pgretry-"))
    cluster = h.pg_cluster_init(base)
    failures: list[str] = []

    def start_server_then_decide(task: object, task_run: object, state: object) -> bool:
        failures.append(str(state.result(raise_on_failure=False)))  # type: ignore[attr-defined]
        if len(failures) == 1:
            h.pg_cluster_ctl(cluster, "start")
            with h.pg_connect("postgres", port=int(cluster["port"]), user="postgres") as c:
                c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 5) g")
        return retry_transient(task, task_run, state)

    dump = backup_flow.dump_database.with_options(
        retry_delay_seconds=0.2, retry_jitter_factor=0, retry_condition_fn=start_server_then_decide
    )
    monkeypatch.setattr(backup_flow, "dump_database", dump)
    store = tmp_path / "store"
    try:
        backup_id = backup_flow.backup_database(
            database=f"postgresql://postgres@127.0.0.1:{cluster['port']}/postgres",
            storage=str(store),
            name="restarted",
        )
    finally:
        h.pg_cluster_ctl(cluster, "stop")
        shutil.rmtree(base, ignore_errors=True)
    assert len(failures) == 1 and "Connection refused" in failures[0]
    [manifest] = list_backups(LocalStorage(store), "restarted")
    assert manifest.backup_id == backup_id and manifest.tables == {"public.t": 5}


def test_missing_select_privilege_is_reported_as_permission_denied(
    dbs: list[str], tmp_path: Path
) -> None:
    """Guards issue 12 item 15: a user lacking SELECT on one table got "could not import
    the requested snapshot"; the error now names the table and the missing privilege
    (exit 3), and no manifest is written."""
    name, role = h.unique("t_pg_priv"), h.unique("t_reader")
    dbs.append(name)
    h.pg_create(name)
    with h.pg_connect(name) as c:
        c.execute(
            "CREATE TABLE open_t AS SELECT g FROM generate_series(1, 50) g;"
            "CREATE TABLE secret_t AS SELECT g FROM generate_series(1, 50) g;"
            f'CREATE ROLE "{role}" LOGIN; GRANT SELECT ON open_t TO "{role}"'
        )
    try:
        url = f"postgresql://{role}@127.0.0.1:5432/{name}"
        with pytest.raises(SourceError, match=r"permission denied for table public\.secret_t"):
            h.backup(connector_from_url(url), tmp_path / "store", "priv", tmp_path / "stage")
        assert h.manifests(tmp_path / "store") == []
    finally:
        with h.pg_connect(name) as c:
            c.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')


def test_failed_row_count_check_drops_only_the_database_the_restore_created(
    rich: str, dbs: list[str], tmp_path: Path
) -> None:
    """Guards issue 12 item 15: when the restored row counts do not match the backup's,
    the database the restore created is dropped (as the docs say; it was left behind),
    and a --force restore over an existing database leaves that database as it was."""
    store = tmp_path / "store"
    manifest = h.backup(conn_for(rich), store, "shop", tmp_path / "stage")
    manifest.tables["public.orders"] += 1  # counts the restored data cannot match
    target = h.unique("t_pg_count")
    dbs.append(target)
    with pytest.raises(IntegrityError, match="public.orders"):
        h.restore(conn_for(target), store, manifest, tmp_path / "r")
    assert not h.pg_exists(target)
    other = h.unique("t_pg_keep")
    dbs.append(other)
    h.pg_create(other)
    with h.pg_connect(other) as c:
        c.execute("CREATE TABLE keep (v int); INSERT INTO keep VALUES (7)")
    before = _tables_and_keep(other)
    with pytest.raises(IntegrityError, match="public.orders"):
        h.restore(conn_for(other), store, manifest, tmp_path / "r", force=True)
    assert _tables_and_keep(other) == before
    with h.pg_connect("postgres") as c:
        assert not c.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (other[:40] + "_dbb_%",)
        ).fetchall()
