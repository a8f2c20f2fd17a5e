"""The plan of an apply: one :class:`Change` per object, applied in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from db_backup.deployments.fleet import LoadedFleet

SYMBOLS = {"create": "+", "update": "~", "unchanged": "=", "skip": "!"}


@dataclass
class Change:
    """One object the fleet wants, and what applying the fleet does to it."""

    kind: str
    target: str
    action: str
    detail: str = ""
    run: Callable[[], None] | None = field(default=None, repr=False)

    def describe(self) -> str:
        """``+ deployment backup-database/shop (new)`` and the like."""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{SYMBOLS[self.action]} {self.kind} {self.target}{detail}"


@dataclass
class Plan:
    """Every change of one fleet, in the order they are applied."""

    changes: list[Change]

    @property
    def pending(self) -> list[Change]:
        """The changes that create or update something."""
        return [c for c in self.changes if c.action in ("create", "update")]

    def summary(self) -> str:
        """``Plan: 2 to create, 1 to update, 5 unchanged.``"""
        count = {a: sum(c.action == a for c in self.changes) for a in SYMBOLS}
        return (
            f"Plan: {count['create']} to create, {count['update']} to update, "
            f"{count['unchanged']} unchanged"
            + (f", {count['skip']} skipped" if count["skip"] else "")
            + "."
        )


def plan_fleet(loaded: LoadedFleet, client: Any) -> Plan:
    """Compare the fleet with the server; nothing is written."""
    # Imported here: each of these modules builds Change objects from this one.
    from db_backup.deployments.apply.automations import _automation_changes
    from db_backup.deployments.apply.blocks import _block_changes
    from db_backup.deployments.apply.deployments import _deployment_changes, deployment_specs

    specs, notes = deployment_specs(loaded)
    changes = _block_changes(loaded)
    changes += _deployment_changes(client, specs)
    changes += _automation_changes(client, loaded, specs)
    changes += [
        Change("deployment", note.split(":")[0], "skip", note.split(": ", 1)[1]) for note in notes
    ]
    return Plan(changes)


def apply_plan(plan: Plan, report: Callable[[str], None] = print) -> int:
    """Apply the pending changes in order (blocks, deployments, automations)."""
    for change in plan.pending:
        assert change.run is not None
        change.run()
        report(f"applied: {change.describe()}")
    return len(plan.pending)
