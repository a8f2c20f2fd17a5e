"""The ``db-backup`` command line: the same flows the deployments run.

Every command prints one line ``error: ...`` to stderr and exits non-zero on
failure; stdout carries results only (the backup id last, or JSON).
"""

from __future__ import annotations

from db_backup.cli.app import app, main

__all__ = ["app", "main"]
