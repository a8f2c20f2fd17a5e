"""Restore drills of PostgreSQL and MariaDB backups into scratch databases on the real servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from db_backup.connectors import connector_from_url
from db_backup.errors import TargetError
from tests import server_helpers as h
from tests.conftest import need_service

pytestmark = pytest.mark.usefixtures("prefect_api")


def _pg_drill_dbs() -> list[str]:
    with h.pg_connect("postgres") as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'dbbackup_drill_%'"
        ).fetchall()
    return sorted(r[0] for r in rows)


def _my_drill_dbs() -> list[str]:
    rows = h.my_exec(None, "SHOW DATABASES LIKE 'dbbackup\\_drill\\_%'")
    return sorted(r[0] for r in rows)


ENGINES: dict[str, dict[str, Callable[..., object]]] = {
    "postgres": {
        "available": h.pg_available,
        "create": h.pg_create,
        "rich": h.pg_make_rich,
        "drop": h.pg_drop,
        "drills": _pg_drill_dbs,
    },
    "mysql": {
        "available": h.my_available,
        "create": h.my_create,
        "rich": h.my_make_rich,
        "drop": h.my_drop,
        "drills": _my_drill_dbs,
    },
}
URLS = {
    "postgres": "postgresql://root@127.0.0.1:{port}/{db}",
    "mysql": "mysql://root@127.0.0.1:{port}/{db}",
}
PORTS = {"postgres": 5432, "mysql": 3306}


@pytest.fixture(params=["postgres", "mysql"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(engine, source URL, store) with a backup named 'drilled' already taken."""
    engine = request.param
    ops = ENGINES[engine]
    need_service(bool(ops["available"]()), f"{engine} on 127.0.0.1:{PORTS[engine]}")
    db = h.unique("t_drill")
    ops["create"](db)
    ops["rich"](db)
    url = URLS[engine].format(port=PORTS[engine], db=db)
    store = tmp_path / "store"
    h.backup(connector_from_url(url), store, "drilled", tmp_path / "stage")
    try:
        yield engine, url, store
    finally:
        ops["drop"](db)


def test_drill_restores_into_a_scratch_database_and_drops_it(
    source: tuple[str, str, Path],
) -> None:
    from db_backup.flows.drill import drill_backup

    engine, url, store = source
    before = ENGINES[engine]["drills"]()
    result = drill_backup(name="drilled", storage=str(store), scratch=url)
    assert result["ok"] is True
    tables = result["tables"]
    assert tables and all(t["manifest"] == t["restored"] for t in tables.values())
    assert sum(t["restored"] for t in tables.values()) > 0
    assert ENGINES[engine]["drills"]() == before  # the scratch database is gone
    assert list(store.glob("drilled/*/checks/*-drill.json"))


def test_drill_on_an_unreachable_server_fails_before_restoring(
    source: tuple[str, str, Path],
) -> None:
    from db_backup.flows.drill import drill_backup

    engine, url, store = source
    dead = URLS[engine].format(port=h.closed_port(), db="whatever")
    with pytest.raises(TargetError, match="127.0.0.1"):
        drill_backup(name="drilled", storage=str(store), scratch=dead)
    assert not list(store.glob("drilled/*/checks/*"))
