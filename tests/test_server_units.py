"""Pure logic of the server connectors: URLs, version checks, TOC selection, dump filter."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from db_backup.connectors import _proc, connector_from_url, reject_url_password
from db_backup.connectors.mysql.filter import filter_tables, filtered_stream
from db_backup.connectors.mysql.logical import MySQLConnector
from db_backup.connectors.mysql.logical import check_versions as my_check
from db_backup.connectors.postgres import toc as pg_toc
from db_backup.connectors.postgres.logical import PostgresConnector
from db_backup.connectors.postgres.logical import check_versions as pg_check
from db_backup.connectors.postgres.toc import resolve_tables
from db_backup.errors import ConfigError, SourceError
from db_backup.manifest import Manifest


def test_postgres_url_parts_and_ssl_options() -> None:
    c = connector_from_url(
        "postgresql://backup@db.local:6543/shop?sslmode=verify-full&sslrootcert=/ca.pem&globals=1"
    )
    assert isinstance(c, PostgresConnector)
    assert (c.host, c.port, c.user, c.database) == ("db.local", 6543, "backup", "shop")
    assert c.ssl == {"sslmode": "verify-full", "sslrootcert": "/ca.pem"} and c.include_globals
    assert c.describe() == "postgresql://backup@db.local:6543/shop"


def test_mysql_url_parts_and_aliases() -> None:
    c = connector_from_url("mariadb://app@127.0.0.1/shop?ssl-ca=/ca.pem")
    assert isinstance(c, MySQLConnector)
    assert (c.port, c.user, c.database, c.ssl) == (3306, "app", "shop", {"ssl-ca": "/ca.pem"})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://root:pw@127.0.0.1/x", "password in the database URL"),
        ("postgresql://root@127.0.0.1/", "names no database"),
        ("postgresql://root@127.0.0.1/x?colour=red", "unknown PostgreSQL URL option"),
        ("mysql://root:pw@127.0.0.1/x", "password in the database URL"),
        ("mysql://root@127.0.0.1", "names no database"),
        ("mysql://root@127.0.0.1/x?bogus=1", "unknown MySQL URL option"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        connector_from_url(url)
    assert ":pw@" not in str(info.value)


def test_reject_url_password_masks_the_password() -> None:
    reject_url_password("postgresql://root@h/db")
    reject_url_password("/some/sqlite.db")
    with pytest.raises(ConfigError) as info:
        reject_url_password("mysql://root:TopSecret@h/db")
    assert "TopSecret" not in str(info.value) and "***" in str(info.value)


def test_password_comes_from_env_and_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-libpq-env")
    c = connector_from_url("postgresql://u@h/db")
    assert isinstance(c, PostgresConnector)
    assert c._password.reveal() == "from-libpq-env"
    monkeypatch.setenv("DB_BACKUP_PG_PASSWORD", "ours-wins")
    c = connector_from_url("postgresql://u@h/db")
    assert isinstance(c, PostgresConnector)
    assert c._password.reveal() == "ours-wins"
    assert "ours-wins" not in repr(c) + str(c._password) + repr(c._password)
    env = _proc.child_env()
    assert "ours-wins" not in "".join(env.values()) and "from-libpq-env" not in "".join(
        env.values()
    )


def test_version_checks() -> None:
    pg_check("15.20", "15.4", "db")
    pg_check("16.1", "15.4", "db")
    with pytest.raises(SourceError, match="pg_dump 13.9 is older than PostgreSQL server 15.4"):
        pg_check("13.9", "15.4 (Debian)", "db")
    my_check("mariadb-dump", "10.11.19", "10.11.19-MariaDB-0+deb12u1", "db")
    my_check("mysqldump", "8.0.36", "8.0.30", "db")
    with pytest.raises(SourceError, match="mysqldump 5.7.44 is older than MySQL server 8.0.36"):
        my_check("mysqldump", "5.7.44", "8.0.36", "db")


def test_first_error_line_prefers_the_error() -> None:
    stderr = "pg_dump: warning: something\npg_dump: error: connection failed: FATAL: nope\nmore"
    assert _proc.first_error_line(stderr) == "error: connection failed: FATAL: nope"
    assert _proc.first_error_line("") == "no error message"


def _manifest(tables: dict[str, int], extra: dict[str, object] | None = None) -> Manifest:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return Manifest(
        backup_id="20260101T000000Z",
        name="n",
        engine="postgres",
        source="s",
        started_at=now,
        finished_at=now,
        tables=tables,
        extra=extra or {},
    )


def test_resolve_tables_qualifies_bare_names() -> None:
    m = _manifest({"public.orders": 1, "sales.orders": 2, "public.users": 3})
    assert resolve_tables(["users", "sales.orders"], m) == ["public.users", "sales.orders"]
    assert resolve_tables(None, m) is None
    with pytest.raises(ConfigError, match="'orders' is ambiguous"):
        resolve_tables(["orders"], m)
    with pytest.raises(ConfigError, match="'nope' is not in backup"):
        resolve_tables(["nope"], m)


TOC = """;
; Archive created at 2026-11-27 17:33:09 UTC
;
215; 1259 16390 TABLE public customers root
216; 1259 16389 SEQUENCE public customers_id_seq root
3340; 0 0 SEQUENCE OWNED BY public customers_id_seq root
217; 1259 16400 TABLE public orders root
218; 1259 16410 TABLE public audit root
5; 1255 16420 FUNCTION public log_order() root
6; 1247 16380 TYPE public mood root
7; 2615 16300 SCHEMA - sales root
3180; 2604 16393 DEFAULT public customers id root
3350; 0 16390 TABLE DATA public customers root
3351; 0 16400 TABLE DATA public orders root
3352; 0 16410 TABLE DATA public audit root
3360; 0 0 SEQUENCE SET public customers_id_seq root
3190; 2606 16395 CONSTRAINT public customers customers_pkey root
3191; 1259 16401 INDEX public orders_customer root
3192; 2620 16402 TRIGGER public orders orders_log root
3193; 2606 16403 FK CONSTRAINT public orders orders_customer_id_fkey root
3194; 0 0 COMMENT public TABLE customers root
3195; 0 0 ACL public TABLE audit root
"""
OBJECTS = {
    "indexes": {
        "public.orders_customer": "public.orders",
        "public.customers_pkey": "public.customers",
    },
    "sequences": {"public.customers_id_seq": "public.customers"},
    "fkeys": {"public.orders orders_customer_id_fkey": ["public.customers"]},
}


def test_toc_selection_keeps_a_tables_parts_and_dependencies() -> None:
    entries = pg_toc.parse_toc(TOC)
    assert entries[0].desc == "TABLE" and entries[0].tag == "customers"
    assert {e.desc for e in entries} >= {"SEQUENCE OWNED BY", "FK CONSTRAINT", "TABLE DATA"}
    keep = pg_toc.select_entries(entries, ["public.orders", "public.customers"], OBJECTS, set())
    ids = [e.line.split(";")[0] for e in keep]
    assert ids == [
        "215",
        "216",
        "3340",
        "217",
        "5",
        "6",
        "3180",
        "3350",
        "3351",
        "3360",
        "3190",
        "3191",
        "3192",
        "3193",
        "3194",
    ]
    only_orders = pg_toc.select_entries(
        entries, ["public.orders"], OBJECTS, {"FUNCTION public.log_order()", "TYPE public.mood"}
    )
    assert [e.line.split(";")[0] for e in only_orders] == ["217", "3351", "3191", "3192"]
    schema = pg_toc.select_entries(entries, [], OBJECTS, {"SCHEMA sales"}, schemas=["sales"])
    assert schema == []
    assert pg_toc.render(keep[:1]) == "215; 1259 16390 TABLE public customers root\n"


DUMP = b"""-- MariaDB dump 10.19
--
-- Host: 127.0.0.1    Database: shop
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;

--
-- Table structure for table `a`
--

CREATE TABLE `a` (id int);

--
-- Dumping data for table `a`
--

INSERT INTO `a` VALUES (1),(2);

--
-- Table structure for table `we``ird`
--

CREATE TABLE `we``ird` (id int);

--
-- Dumping data for table `we``ird`
--

INSERT INTO `we``ird` VALUES (3);
CREATE TRIGGER t_weird BEFORE INSERT ON `we``ird` FOR EACH ROW SET NEW.id = NEW.id;

--
-- Temporary table structure for view `v`
--

CREATE VIEW `v` AS SELECT 1;

--
-- Dumping routines for database 'shop'
--
CREATE FUNCTION f() RETURNS int RETURN 1;
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

-- Dump completed
"""


def test_mysql_filter_keeps_chosen_tables_with_their_triggers() -> None:
    out = b"".join(filter_tables(io.BytesIO(DUMP), {"we`ird"}))
    assert b"-- Host: 127.0.0.1" in out and b"SQL_NOTES=0" in out  # header kept
    assert b"CREATE TABLE `we``ird`" in out and b"CREATE TRIGGER t_weird" in out
    assert b"CREATE TABLE `a`" not in out and b"INSERT INTO `a`" not in out
    assert b"CREATE VIEW" not in out and b"CREATE FUNCTION" not in out
    assert out.endswith(b"-- Dump completed\n")  # footer kept
    assert filtered_stream(io.BytesIO(DUMP), {"a"}).read().count(b"INSERT INTO") == 1
    assert b"".join(filter_tables(io.BytesIO(DUMP), set())).count(b"CREATE") == 0


def test_blocks_build_connectors_with_their_secret() -> None:
    from pydantic import SecretStr

    from db_backup.blocks.databases import MySQLDatabase, PostgresDatabase

    pg = PostgresDatabase(database="shop", user="u", password=SecretStr("s3"), sslmode="require")
    c = pg.connector(database="other")
    assert c.database == "other" and c.ssl == {"sslmode": "require"}
    assert c._password.reveal() == "s3" and "s3" not in repr(c)
    my = MySQLDatabase(database="shop", ssl_ca="/ca.pem")
    m = my.connector()
    assert m.database == "shop" and m.ssl == {"ssl-ca": "/ca.pem"} and not m._password


# -- issue 12, items 8, 9, 11, 12 ----------------------------------------------------


def test_pg_passfile_is_scoped_to_one_host_port_database_and_user() -> None:
    """Guards issue 12 item 8: the passfile used to say ``*:*:*:*:pw``, so a database name
    that smuggled ``host=...`` into pg_restore's connection string got the password sent
    to another server. Now it names this host, port, database and user (':' and '\\'
    escaped), lives in memory (/dev/fd/N) and is readable by us only."""
    c = PostgresConnector(
        host="127.0.0.1",
        port=5432,
        user="ro:ot",
        database="dbname=x host=127.0.0.1 port=5545",
        password="p:w\\d",
    )
    with c._tool_env() as env:
        path = env["PGPASSFILE"]
        mode = stat.S_IMODE(os.stat(path).st_mode)
        line = Path(path).read_text()
    assert line == "127.0.0.1:5432:dbname=x host=127.0.0.1 port=5545:ro\\:ot:p\\:w\\\\d\n"
    assert mode == 0o600
    assert env["PGDATABASE"] == "dbname=x host=127.0.0.1 port=5545"


@pytest.mark.parametrize("name", ["shop\nx", "a\x00b", "tab\there", "x" * 64, "é" * 32, ""])
def test_pg_database_names_with_control_characters_or_too_long_are_refused(name: str) -> None:
    """Guards issue 12 item 8: names PostgreSQL cannot hold literally (control characters,
    more than 63 bytes, which the server silently truncates) are refused up front."""
    with pytest.raises(ConfigError, match="PostgreSQL database name"):
        PostgresConnector(database=name)


@pytest.mark.parametrize(
    "query",
    [
        "ssl-verify-server-cert=0%0Ainit-command%3DCREATE%20DATABASE%20adv_pwned",
        "ssl-ca=/ca.pem%0Ainit-command%3DDROP%20DATABASE%20x",
        "ssl=maybe",
        "connect_timeout=5%0Ax",
        "init-command=SELECT%201",
    ],
)
def test_mysql_url_options_are_validated(query: str) -> None:
    """Guards issue 12 item 9: URL option values went into the option file unescaped, so
    a newline added ``init-command=...`` and ran it. Only known options with valid values
    are accepted."""
    with pytest.raises(ConfigError, match="MySQL URL option"):
        connector_from_url(f"mysql://root@127.0.0.1/db?{query}")


def test_mysql_option_file_quotes_every_value() -> None:
    """Guards issue 12 item 9: user name, password and options are double-quoted and
    escaped in the option file, so none of them can add a line."""
    from db_backup.connectors.mysql.logical import option_value

    c = connector_from_url("mysql://we%22ird%0Auser%5C@127.0.0.1/db?ssl-verify-server-cert=no")
    assert isinstance(c, MySQLConnector)
    assert c.user == 'we"ird\nuser\\' and c.ssl == {"ssl-verify-server-cert": "0"}
    c._password = _proc.Secret("pw\ninit-command=x")
    with c._defaults_file() as argv:
        text = Path(argv[0].split("=", 1)[1]).read_text()
    lines = text.splitlines()
    assert lines[0] == "[client]" and all(ln.split("=", 1)[1].startswith('"') for ln in lines[1:])
    assert 'user="we\\"ird\\nuser\\\\"' in lines
    assert 'password="pw\\ninit-command=x"' in lines
    assert not any(ln.startswith("init-command") for ln in lines)
    assert option_value('a"b\\c\td') == '"a\\"b\\\\c\\td"'


def test_child_environment_is_allow_listed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Guards issue 12 item 11: children (even ``pg_dump --version``) got our whole
    environment minus names containing PASSWORD, so the passphrase and cloud keys
    reached every tool. Now only an allow-list passes."""
    secrets = {
        "DB_BACKUP_PASSPHRASE": "passphrase-42",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-42",
        "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=azure-42",
        "PGPASSWORD": "pg-42",
        "MYSQL_PWD": "my-42",
        "GITHUB_TOKEN": "gh-42",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = _proc.child_env(PGHOST="h")
    assert env["PGHOST"] == "h" and env["LC_ALL"] == "C.UTF-8" and "PATH" in env
    assert not set(secrets) & set(env)
    # a tool's --version sees the same allow-listed environment
    seen = tmp_path / "env.txt"
    tool = tmp_path / "fake_dump"
    tool.write_text(f"#!/bin/sh\nenv > {seen}\necho 'fake_dump (PostgreSQL) 15.4'\n")
    tool.chmod(0o755)
    assert _proc.tool_version(str(tool)) == "15.4"
    dumped = seen.read_text()
    assert not [v for v in secrets.values() if v in dumped]


def test_transient_classification_of_engine_messages() -> None:
    """Guards issue 12 item 12: a server that is down or restarting is worth a retry;
    bad passwords, unknown databases and missing privileges are not."""
    transient = [
        'connection to server at "127.0.0.1", port 5999 failed: Connection refused',
        "FATAL:  the database system is starting up",
        "FATAL:  the database system is shutting down",
        "server closed the connection unexpectedly",
        "Got error: 2003: \"Can't connect to server on '127.0.0.1' (111)\" when trying to connect",
        "ERROR 2002 (HY000): Can't connect to local server through socket '/x.sock' (2)",
        "Lost connection to server during query",
    ]
    permanent = [
        'FATAL:  password authentication failed for user "u"',
        'FATAL:  database "nope" does not exist',
        "ERROR:  permission denied for table secret",
        "Got error: 1045: \"Access denied for user 'u'@'127.0.0.1'\" when trying to connect",
        "Got error: 1049: \"Unknown database 'nope'\" when selecting the database",
    ]
    assert all(_proc.transient_text(m) for m in transient)
    assert not any(_proc.transient_text(m) for m in permanent)


def test_secret_path_leaves_nothing_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards issue 12 item 11: the password file is an in-memory /dev/fd/N that never
    appears in the temp directory (a killed run cannot leave it behind)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with _proc.secret_path("top-secret\n") as path:
        assert path.startswith("/dev/fd/") and Path(path).read_text() == "top-secret\n"
        assert list(tmp_path.iterdir()) == []
        assert _proc.inherited_fds(["x", f"--defaults-extra-file={path}"], {}) == (
            int(path.rsplit("/", 1)[1]),
        )
