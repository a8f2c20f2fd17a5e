"""Prefect tasks: thin wrappers over :mod:`db_backup.operations`, with retries
where a retry can help (I/O) and none where it cannot (pure computation)."""
