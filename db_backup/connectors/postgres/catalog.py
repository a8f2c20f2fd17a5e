"""What the PostgreSQL connector reads from the system catalogue: user tables, the
objects that belong to each table (for selective restores), row counts, quoting.
"""

from __future__ import annotations

from typing import Any

SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema')"


def list_tables(conn: Any) -> list[str]:
    """User tables ('schema.table'), without system or extension-owned ones."""
    rows = conn.execute(
        f"""
        SELECT n.nspname || '.' || c.relname FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN {SYSTEM_SCHEMAS}
           AND n.nspname NOT LIKE 'pg\\_%%'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
         ORDER BY 1
        """.replace("%%", "%")
    ).fetchall()
    return [r[0] for r in rows]


def object_owners(conn: Any) -> dict[str, Any]:
    """Index -> table, owned sequence -> table, foreign key -> referenced tables."""
    indexes = conn.execute(
        """
        SELECT ni.nspname || '.' || ci.relname, nt.nspname || '.' || ct.relname
          FROM pg_index x
          JOIN pg_class ci ON ci.oid = x.indexrelid JOIN pg_namespace ni ON ni.oid = ci.relnamespace
          JOIN pg_class ct ON ct.oid = x.indrelid JOIN pg_namespace nt ON nt.oid = ct.relnamespace
         WHERE nt.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
        """
    ).fetchall()
    sequences = conn.execute(
        """
        SELECT ns.nspname || '.' || s.relname, nt.nspname || '.' || t.relname
          FROM pg_depend d
          JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
          JOIN pg_namespace ns ON ns.oid = s.relnamespace
          JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace nt ON nt.oid = t.relnamespace
         WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
           AND d.deptype IN ('a', 'i')
        """
    ).fetchall()
    fkeys = conn.execute(
        """
        SELECT n.nspname || '.' || t.relname || ' ' || c.conname,
               nr.nspname || '.' || r.relname
          FROM pg_constraint c
          JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
          JOIN pg_class r ON r.oid = c.confrelid JOIN pg_namespace nr ON nr.oid = r.relnamespace
         WHERE c.contype = 'f'
        """
    ).fetchall()
    refs: dict[str, list[str]] = {}
    for key, target in fkeys:
        refs.setdefault(key, []).append(target)
    return {"indexes": dict(indexes), "sequences": dict(sequences), "fkeys": refs}


def count_rows(conn: Any, table: str) -> int:
    """Exact rows of ``table`` ('schema.table') as ``conn``'s transaction sees them."""
    schema, name = table.split(".", 1)
    return int(conn.execute(f"SELECT count(*) FROM {ident(schema)}.{ident(name)}").fetchone()[0])


def existing_objects(conn: Any) -> set[str]:
    """'SCHEMA s', 'TYPE s.t', 'FUNCTION s.f(args)' present in ``conn``'s database."""
    rows = conn.execute(
        f"""
            SELECT 'SCHEMA ' || nspname FROM pg_namespace
            UNION ALL
            SELECT 'TYPE ' || n.nspname || '.' || t.typname FROM pg_type t
              JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname NOT IN {SYSTEM_SCHEMAS}
            UNION ALL
            SELECT 'FUNCTION ' || n.nspname || '.' || p.proname
                   || '(' || oidvectortypes(p.proargtypes) || ')'
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname NOT IN {SYSTEM_SCHEMAS}
            """
    ).fetchall()
    return {r[0] for r in rows}


def ident(name: str) -> str:
    """``name`` quoted as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
