"""What the flows share that needs Prefect: the id of the running flow run.

Staging and default names are plain logic in :mod:`db_backup.staging`; the
defaults live in :mod:`db_backup.defaults` (re-exported here for old imports).
"""

from __future__ import annotations

from prefect.runtime import flow_run

from db_backup.defaults import DEFAULT_STORAGE, STAGING_ENV, STORAGE_ENV
from db_backup.staging import default_name, staging_dir

__all__ = [
    "DEFAULT_STORAGE",
    "STAGING_ENV",
    "STORAGE_ENV",
    "current_flow_run_id",
    "default_name",
    "staging_dir",
]


def current_flow_run_id() -> str | None:
    """The id of the running flow run, or None outside one."""
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None
