"""Human-readable reports of prune, verify and drill runs (Markdown and plain rows).

The flows publish these as Prefect artifacts; the CLI prints the same rows.
Plain functions of plain data, so they are tested without a server.
"""

from __future__ import annotations

import re
from typing import Any

from db_backup.checks.drill import DrillReport
from db_backup.checks.records import VerifyOutcome
from db_backup.manifest import Manifest, backup_prefix
from db_backup.retention.prune import PrunePlan, PruneResult
from db_backup.units import human_bytes

_KEY_RE = re.compile(r"[^a-z0-9-]+")


def artifact_key(kind: str, name: str) -> str:
    """A Prefect artifact key (lower-case letters, digits, dashes) such as ``prune-shop``."""
    return _KEY_RE.sub("-", f"{kind}-{name}".lower()).strip("-")[:100]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def prune_rows(plan: PrunePlan) -> list[dict[str, Any]]:
    """One row per backup and per orphan: id, created, action, size, reasons."""
    rows: list[dict[str, Any]] = [
        {
            "id": d.backup_id,
            "created_at": d.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "action": d.action,
            "size_bytes": plan.size_of(d.backup_id),
            "reasons": list(d.reasons),
        }
        for d in plan.decisions
    ]
    grace = f"{plan.orphan_grace.total_seconds() / 3600:g} h"
    for o in plan.orphans:
        rows.append(_orphan_row(o.backup_id, o.size, "remove", f"orphan older than {grace}"))
    for o in plan.young_orphans:
        why = f"orphan newer than {grace}: may be a backup being written"
        rows.append(_orphan_row(o.backup_id, o.size, "keep", why))
    for p in plan.partials:
        rows.append(_orphan_row(p.key, p.size, "remove", f"partial write older than {grace}"))
    return rows


def _orphan_row(ident: str, size: int, action: str, why: str) -> dict[str, Any]:
    return {"id": ident, "created_at": "", "action": action, "size_bytes": size, "reasons": [why]}


def prune_markdown(plan: PrunePlan, result: PruneResult | None) -> str:
    """The prune artifact: policy, a table of decisions, what was deleted."""
    mode = "applied" if result is not None else "dry run (nothing deleted)"
    lines = [
        f"# Prune of `{plan.name}` in `{plan.store}`: {mode}",
        "",
        f"Policy: `{plan.policy.describe()}`",
        "",
        "| backup | created (UTC) | action | size | why |",
        "|---|---|---|---:|---|",
    ]
    for row in prune_rows(plan):
        lines.append(
            f"| {row['id']} | {row['created_at']} | **{row['action']}** | "
            f"{human_bytes(row['size_bytes'])} | {_cell('; '.join(row['reasons']))} |"
        )
    lines += [f"- warning: {_cell(w)}" for w in plan.warnings]
    if result is not None:
        lines += ["", *_result_lines(result)]
    return "\n".join(lines) + "\n"


def _result_lines(result: PruneResult) -> list[str]:
    lines = [
        f"Removed {len(result.removed)} backup(s), {len(result.orphans_removed)} orphan(s), "
        f"{len(result.partials_removed)} partial file(s): {result.deleted_objects} object(s), "
        f"{human_bytes(result.freed_bytes)} freed."
    ]
    return lines + [f"- error: {_cell(e)}" for e in result.errors]


def verify_markdown(name: str, store: str, outcomes: list[VerifyOutcome]) -> str:
    """The verify artifact: one row per backup, every failure listed."""
    bad = sum(1 for o in outcomes if not o.ok)
    lines = [
        f"# Verify of `{name}` in `{store}`: {len(outcomes) - bad} ok, {bad} failed",
        "",
        "| backup | objects | size | result |",
        "|---|---:|---:|---|",
    ]
    for o in outcomes:
        result = "ok" if o.ok else "**FAILED**: " + _cell("; ".join(o.problems))
        lines.append(f"| {o.backup_id} | {o.objects} | {human_bytes(o.stored_bytes)} | {result} |")
    return "\n".join(lines) + "\n"


def drill_markdown(report: DrillReport) -> str:
    """The drill artifact: verdict, per-table counts, engine check."""
    verdict = "passed" if report.ok else "**FAILED**"
    lines = [
        f"# Restore drill of `{report.name}/{report.backup_id}`: {verdict}",
        "",
        f"Scratch target: `{report.scratch}` (dropped); {report.seconds:.1f} s",
        "",
        "| table | rows in manifest | rows restored |",
        "|---|---:|---:|",
    ]
    for table, counts in report.tables.items():
        want, got = counts["manifest"], counts["restored"]
        mark = "" if want == got else " ⚠"
        lines.append(f"| {_cell(table)} | {_show(want)} | {_show(got)}{mark} |")
    lines += ["", f"Engine check: {'ok' if not report.check_problems else 'problems found'}"]
    lines += [f"- problem: {_cell(p)}" for p in report.problems]
    return "\n".join(lines) + "\n"


def _show(value: int | None) -> str:
    return "-" if value is None else str(value)


def backup_artifact_key(name: str) -> str:
    """The artifact key for backups of ``name`` (lowercase letters, digits and dashes)."""
    return "backup-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unnamed")


def backup_rows(manifest: Manifest, location: str) -> list[tuple[str, str]]:
    """The facts of one finished backup, as (field, value) rows."""
    seconds = max((manifest.finished_at - manifest.started_at).total_seconds(), 0.0)
    raw, stored = manifest.logical_bytes, manifest.stored_bytes
    ratio = f"{raw / stored:.2f}x" if stored else "n/a"
    speed = f"{human_bytes(int(raw / seconds))}/s" if seconds > 0 else "n/a"
    return [
        ("Database", f"{manifest.name} ({manifest.engine}: {manifest.source})"),
        ("Backup id", manifest.backup_id),
        ("Raw size", f"{human_bytes(raw)} ({raw} bytes)"),
        ("Stored size", f"{human_bytes(stored)} ({stored} bytes)"),
        ("Compression ratio", ratio),
        ("Duration", f"{seconds:.1f} s"),
        ("Throughput (raw)", speed),
        ("Tables", str(len(manifest.tables))),
        ("Storage location", f"{location}/{backup_prefix(manifest.name, manifest.backup_id)}"),
    ]


def backup_markdown(manifest: Manifest, location: str) -> str:
    """A markdown table of :func:`backup_rows`, with a title naming the backup."""
    lines = [
        f"### Backup {manifest.name}/{manifest.backup_id}",
        "",
        "| Field | Value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_escape_pipes(v)} |" for k, v in backup_rows(manifest, location)]
    return "\n".join(lines) + "\n"


def _escape_pipes(value: str) -> str:
    return value.replace("|", "\\|")
