"""The ``db-backup`` command line: the same flows the deployments run.

Every command prints one line ``error: ...`` to stderr and exits non-zero on
failure; stdout carries results only (the backup id last, or JSON).

Feature modules add their commands to :data:`app` when imported; each one is
listed once in ``FEATURE_MODULES``.
"""

from __future__ import annotations

import importlib

from db_backup.cli.app import app, main

FEATURE_MODULES: tuple[str, ...] = (
    # one line per feature module, e.g. "db_backup.cli.prune",
    "db_backup.cli.prune",
    "db_backup.cli.drill",
    "db_backup.cli.keys",
    "db_backup.cli.apply",
    "db_backup.cli.export",
)

for _module in FEATURE_MODULES:
    importlib.import_module(_module)

__all__ = ["app", "main"]
