"""db-backup: database backups as Prefect 3 flows.

The top-level package holds plain logic that imports no Prefect (connectors,
storage adapters, the manifest, the streaming pipeline). Prefect lives at the
edges, in ``db_backup.tasks``, ``db_backup.flows`` and ``db_backup.blocks``
(the repository's ``tasks/``, ``flows/`` and ``blocks/`` folders).
"""

__version__ = "0.1.0"
