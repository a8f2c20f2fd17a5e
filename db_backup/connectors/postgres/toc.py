"""Choosing entries of a pg_dump custom archive for a selective restore.

``pg_restore -t`` restores a table without its indexes, constraints and
triggers, so a selective restore here builds a ``-L`` list instead: it keeps,
in archive order, each chosen table with its data, column defaults, owned
sequences (and their values), indexes, constraints, triggers, rules,
policies, comments and grants; foreign keys only when the referenced table is
restored too; and the types and functions the target does not have yet.
Index and sequence owners and foreign-key targets come from the dump's own
snapshot (``extra['pg_objects']`` in the manifest): ``pg_restore -l`` names an
index but not its table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from db_backup.errors import ConfigError
from db_backup.manifest import Manifest

# Longest first, so "TABLE DATA" wins over "TABLE".
DESCS = sorted(
    [
        "TABLE DATA",
        "TABLE",
        "SEQUENCE OWNED BY",
        "SEQUENCE SET",
        "SEQUENCE",
        "FK CONSTRAINT",
        "CONSTRAINT",
        "CHECK CONSTRAINT",
        "INDEX ATTACH",
        "INDEX",
        "TRIGGER",
        "DEFAULT ACL",
        "DEFAULT",
        "RULE",
        "POLICY",
        "ROW SECURITY",
        "COMMENT",
        "ACL",
        "TYPE",
        "DOMAIN",
        "FUNCTION",
        "PROCEDURE",
        "AGGREGATE",
        "SCHEMA",
        "VIEW",
        "MATERIALIZED VIEW DATA",
        "MATERIALIZED VIEW",
        "EXTENSION",
        "ENCODING",
        "STDSTRINGS",
        "SEARCHPATH",
        "DATABASE PROPERTIES",
        "DATABASE",
    ],
    key=len,
    reverse=True,
)
_LINE = re.compile(r"^\s*(\d+);\s+(\d+)\s+(\d+)\s+(.*)$")
TABLE_PARTS = {"TABLE", "TABLE DATA", "DEFAULT", "CONSTRAINT", "CHECK CONSTRAINT", "TRIGGER"}
TABLE_PARTS |= {"RULE", "POLICY", "ROW SECURITY"}
NEEDED_KINDS = {"TYPE", "DOMAIN", "FUNCTION", "PROCEDURE", "AGGREGATE"}


@dataclass
class TocEntry:
    """One line of ``pg_restore -l``."""

    line: str
    desc: str
    namespace: str
    tag: str


def parse_toc(listing: str) -> list[TocEntry]:
    """The entries of a ``pg_restore -l`` listing (comment lines skipped)."""
    entries: list[TocEntry] = []
    for line in listing.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        rest = match.group(4)
        desc = next((d for d in DESCS if rest.startswith(d + " ")), rest.split(" ", 1)[0])
        fields = rest[len(desc) :].strip()
        namespace, _, tag_owner = fields.partition(" ")
        # The owner is the last word; some entries (EXTENSION) have none, which only
        # matters for kinds we never match by tag.
        tag = tag_owner.rsplit(" ", 1)[0] if " " in tag_owner else tag_owner
        entries.append(TocEntry(line, desc, namespace, tag))
    return entries


def select_entries(
    entries: list[TocEntry],
    tables: list[str],
    objects: dict[str, Any],
    existing: set[str],
    schemas: list[str] | None = None,
) -> list[TocEntry]:
    """Entries restoring ``tables`` (qualified names) and/or whole ``schemas``.

    ``objects`` is the dump-time map (indexes, sequences, fkeys -> owning table);
    ``existing`` holds 'KIND schema.tag' of types/functions/schemas already in
    the target, which are left out rather than created twice.
    """
    chosen = set(tables)
    wanted_schemas = set(schemas or [])
    indexes: dict[str, str] = objects.get("indexes", {})
    sequences: dict[str, str] = objects.get("sequences", {})
    fkeys: dict[str, list[str]] = objects.get("fkeys", {})
    needed_ns = {t.split(".", 1)[0] for t in chosen} | wanted_schemas
    keep: list[TocEntry] = []
    for e in entries:
        if e.namespace in wanted_schemas or _belongs(e, chosen, indexes, sequences, fkeys):
            if not (e.desc in NEEDED_KINDS | {"SCHEMA"} and _exists(e, existing)):
                keep.append(e)
        elif _needed(e, needed_ns) and not _exists(e, existing):
            keep.append(e)
    return keep


def _needed(e: TocEntry, namespaces: set[str]) -> bool:
    """Types, functions and schemas the chosen tables may depend on."""
    if e.desc == "SCHEMA":
        return e.tag in namespaces
    return e.desc in NEEDED_KINDS and e.namespace in namespaces


def _exists(e: TocEntry, existing: set[str]) -> bool:
    if e.desc == "SCHEMA":
        return f"SCHEMA {e.tag}" in existing
    kind = "FUNCTION" if e.desc in ("FUNCTION", "PROCEDURE", "AGGREGATE") else "TYPE"
    return f"{kind} {e.namespace}.{e.tag}" in existing


def _belongs(
    e: TocEntry,
    chosen: set[str],
    indexes: dict[str, str],
    sequences: dict[str, str],
    fkeys: dict[str, list[str]],
) -> bool:
    qualified = f"{e.namespace}.{e.tag}"
    owner = f"{e.namespace}.{e.tag.split(' ', 1)[0]}"
    if e.desc in TABLE_PARTS:
        return (qualified if e.desc in ("TABLE", "TABLE DATA") else owner) in chosen
    if e.desc == "FK CONSTRAINT":
        refs = fkeys.get(qualified, [])
        return owner in chosen and all(r in chosen for r in refs)
    if e.desc == "INDEX":
        return indexes.get(qualified) in chosen
    if e.desc.startswith("SEQUENCE"):
        return sequences.get(qualified) in chosen
    if e.desc in ("COMMENT", "ACL"):
        kind, _, name = e.tag.partition(" ")
        if kind == "TABLE":
            return f"{e.namespace}.{name}" in chosen
        if kind == "COLUMN":
            return f"{e.namespace}.{name.split('.', 1)[0]}" in chosen
    return False


def render(entries: list[TocEntry]) -> str:
    """A ``-L`` list file for pg_restore, in archive order."""
    return "".join(e.line + "\n" for e in entries)


def resolve_tables(tables: list[str] | None, manifest: Manifest) -> list[str] | None:
    """Qualified names for ``tables`` ('orders' -> 'public.orders'); ConfigError if unknown.

    A name that matches exactly wins; otherwise it is read as PostgreSQL reads an
    identifier ('"Base"' is exactly Base, unquoted Base is base).
    """
    if tables is None:
        return None
    known = set(manifest.tables)
    out: list[str] = []
    for name in tables:
        if name in known:
            out.append(name)
            continue
        matches = sorted(t for t in known if t.split(".", 1)[1] == name)
        if not matches:  # PostgreSQL's reading: '"Base"' is exactly Base, Base is base
            name = _identifier(name)
            matches = sorted(t for t in known if name in (t, t.split(".", 1)[1]))
        if len(matches) != 1:
            why = "is ambiguous" if matches else "is not"
            raise ConfigError(
                f"table {name!r} {why} in backup {manifest.name}/{manifest.backup_id} "
                f"(it has: {', '.join(sorted(known)) or 'no tables'})"
            )
        out.append(matches[0])
    return out


def _identifier(name: str) -> str:
    """A table name as PostgreSQL reads it: '"Base"' is exactly Base, Base is base."""
    if len(name) > 1 and name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name.lower()
