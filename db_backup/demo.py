"""The README's main job: a real backup and restore of a small demo database.

Creates ``demo-output/shop.db`` (customers, orders, an index, a trigger),
backs it up to ``demo-output/backups`` with the backup flow, verifies it,
restores it to ``demo-output/restored.db`` and compares every row.
"""

from __future__ import annotations

import random
import sqlite3
import sys
from pathlib import Path

from db_backup.cli.env import prepare_environment, quiet_prefect_console

OUT = Path("demo-output")


def make_demo_database(path: Path, customers: int = 2000, orders: int = 20000) -> None:
    """Write a small shop database with an index and a trigger."""
    path.unlink(missing_ok=True)
    rng = random.Random(42)
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE customers (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
                                    email TEXT UNIQUE, created_at TEXT);
            CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers,
                                 total_cents INTEGER, status TEXT, note BLOB);
            CREATE INDEX orders_by_customer ON orders(customer_id);
            CREATE TABLE audit (order_id INTEGER, old_status TEXT, new_status TEXT);
            CREATE TRIGGER orders_status AFTER UPDATE OF status ON orders
              BEGIN INSERT INTO audit VALUES (NEW.id, OLD.status, NEW.status); END;
            """
        )
        conn.executemany(
            "INSERT INTO customers(name, email, created_at) VALUES (?, ?, ?)",
            (
                (f"Customer {i} é", f"c{i}@example.com", f"2026-01-{1 + i % 28:02d}")
                for i in range(customers)
            ),
        )
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
            (
                (
                    i,
                    rng.randint(1, customers),
                    rng.randint(100, 99999),
                    rng.choice(["new", "paid", "shipped"]),
                    rng.randbytes(16),
                )
                for i in range(orders)
            ),
        )
        conn.execute("UPDATE orders SET status='refunded' WHERE id % 500 = 0")


def table_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, ordered, for comparison."""
    with sqlite3.connect(path) as conn:
        names = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        return {n: conn.execute(f'SELECT * FROM "{n}" ORDER BY rowid').fetchall() for n in names}


def main() -> int:
    """Run the demo; exit code 0 when the restored copy equals the source."""
    prepare_environment()
    from db_backup.flows.backup import backup_database
    from db_backup.flows.restore import restore_database, verify_backup

    quiet_prefect_console(verbose="-v" in sys.argv)
    OUT.mkdir(exist_ok=True)
    source, restored, store = OUT / "shop.db", OUT / "restored.db", str(OUT / "backups")
    make_demo_database(source)
    print(f"1. created {source} ({source.stat().st_size // 1024} KiB)")
    backup_id = backup_database(database=str(source), storage=store, name="shop")
    print(
        f"2. backed up as shop/{backup_id} in {store}   (db-backup backup --type sqlite "
        f"--database {source} --name shop --storage {store})"
    )
    verify_backup(name="shop", backup=backup_id, storage=store)
    print(f"3. verified sha256 of every object          (db-backup verify {backup_id} --name shop)")
    restore_database(name="shop", target=str(restored), backup=backup_id, storage=store, force=True)
    print(
        f"4. restored to {restored}                (db-backup restore latest --name shop "
        f"--to {restored} --force)"
    )
    same = table_rows(source) == table_rows(restored)
    integrity = sqlite3.connect(restored).execute("PRAGMA integrity_check").fetchone()[0]
    print(f"5. restored copy equals the source: {same}; integrity_check: {integrity}")
    return 0 if same and integrity == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
