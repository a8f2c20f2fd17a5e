"""Pure logic of the server connectors: URLs, version checks, TOC selection, dump filter."""

from __future__ import annotations

import io

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
    env = _proc.child_env(("PG",))
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
