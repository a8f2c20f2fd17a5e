"""Build and compare SQLite databases in tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def make_shop(path: Path, rows: int = 500, wal: bool = False) -> Path:
    """A database with several column types, an index, a trigger and AUTOINCREMENT."""
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(
        """
        CREATE TABLE customers (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, score REAL);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, note TEXT, payload BLOB,
                             total REAL, doubled INTEGER GENERATED ALWAYS AS (id * 2) VIRTUAL);
        CREATE INDEX orders_customer ON orders(customer_id);
        CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT);
        CREATE TRIGGER orders_event AFTER INSERT ON orders
            BEGIN INSERT INTO events(kind) VALUES ('order ' || NEW.id); END;
        """
    )
    conn.executemany(
        "INSERT INTO customers(name, score) VALUES (?, ?)",
        [(f"Zoë {i} 🚀", i / 7) for i in range(rows // 5)],
    )
    conn.executemany(
        "INSERT INTO orders(id, customer_id, note, payload, total) VALUES (?, ?, ?, ?, ?)",
        [(i, i % 97, f"note {i}", bytes([i % 256]) * 20, i * 1.25) for i in range(rows)],
    )
    conn.commit()
    conn.close()
    return path


def dump_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (sqlite_sequence included), ordered by rowid."""
    conn = sqlite3.connect(path)
    try:
        names = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        return {n: conn.execute(f'SELECT * FROM "{n}" ORDER BY rowid').fetchall() for n in names}
    finally:
        conn.close()


def schema(path: Path) -> list[tuple[str, str, str]]:
    """(type, name, sql) of every schema object, sorted."""
    conn = sqlite3.connect(path)
    try:
        return sorted(
            conn.execute("SELECT type, name, COALESCE(sql, '') FROM sqlite_master").fetchall()
        )
    finally:
        conn.close()
