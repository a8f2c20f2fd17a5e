"""What the flows share that needs Prefect: the id of the running flow run.

Staging and default names are plain logic in :mod:`db_backup.staging`; the
defaults live in :mod:`db_backup.defaults`.
"""

from __future__ import annotations

from prefect.runtime import flow_run


def current_flow_run_id() -> str | None:
    """The id of the running flow run, or None outside one."""
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None
