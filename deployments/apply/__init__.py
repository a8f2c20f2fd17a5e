"""Turn a fleet file into blocks, deployments, schedules and automations, idempotently.

``check_fleet`` asks the server (read only) whether everything the file refers
to exists: storage and database blocks, Secret blocks, environment variables,
the Slack block and the work pool. ``plan_fleet`` compares what the file wants
with what the server holds and returns one :class:`Change` per object; only
``create`` and ``update`` changes do anything when applied, so a second apply
of the same file changes nothing.

Names on the server, for a database ``shop``:

- blocks ``sqlite-database/shop`` (SQLite), ``secret/db-backup-shop-password``
  (a password given as ``{env: NAME}``), the ``slack-webhook`` block;
- deployments ``backup-database/shop``, ``verify-backup/shop`` (with
  ``verify_schedule``), ``prune-backups/shop`` (with ``retention``, when the
  prune flow is installed);
- automations ``db-backup: failures to <slack block>`` (one per Slack block,
  matching deployments tagged ``db-backup:slack:<block>``) and
  ``db-backup: no successful backup of shop`` (the dead man's switch).

One module per concern: ``checks`` (read-only), ``blocks``, ``deployments``,
``automations`` and ``plan`` (the changes, in the order they are applied).
"""

from __future__ import annotations

from db_backup.deployments.apply.automations import automation_fingerprint, default_window
from db_backup.deployments.apply.checks import check_fleet
from db_backup.deployments.apply.deployments import DeploymentSpec, deployment_specs
from db_backup.deployments.apply.plan import Change, Plan, apply_plan, plan_fleet

__all__ = [
    "Change",
    "DeploymentSpec",
    "Plan",
    "apply_plan",
    "automation_fingerprint",
    "check_fleet",
    "default_window",
    "deployment_specs",
    "plan_fleet",
]
