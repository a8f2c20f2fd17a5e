"""The backup flow: dump -> compress -> checksum -> upload, manifest last."""

from __future__ import annotations

from prefect import get_run_logger

from db_backup import operations as ops
from db_backup.blocks.resolve import resolve_database
from db_backup.chunks.incremental import check_mode
from db_backup.crypto.keys import manifest_record
from db_backup.defaults import DEFAULT_STORAGE
from db_backup.flows.alerting import alerting_flow
from db_backup.flows.artifacts import publish_backup_report
from db_backup.flows.common import current_flow_run_id
from db_backup.manifest import check_name
from db_backup.parsing import url_secret_problem
from db_backup.pipeline import DEFAULT_LEVEL
from db_backup.staging import default_name, staging_dir
from db_backup.tasks.backup import (
    allocate_id,
    checksum_file,
    dump_database,
    previous_backup,
    released_on_failure,
    upload_file,
    write_manifest,
)
from db_backup.tasks.encryption import prepare_encryption
from db_backup.tasks.incremental import dump_chunked, finish_incremental


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    database = str(params["database"])
    if not params.get("name") and url_secret_problem(database):
        return f"backup-refused-{flow_run.scheduled_start_time:%Y%m%dT%H%M%SZ}"  # fails at once
    name = params.get("name") or default_name(database)
    return f"backup-{name}-{flow_run.scheduled_start_time:%Y%m%dT%H%M%SZ}"


@alerting_flow("backup-database", flow_run_name=_run_name, log_prints=False)
def backup_database(
    database: str,
    storage: str = DEFAULT_STORAGE,
    name: str | None = None,
    compression_level: int = DEFAULT_LEVEL,
    compression_threads: int | None = None,
    allow_shrink: bool = False,
    min_size_ratio: float = 0.5,
    encrypt: bool = False,
    passphrase_secret: str | None = None,
    mode: str = "full",
    allow_empty: bool = False,
    allow_damaged: bool = False,
) -> str:
    """Back up ``database`` to ``storage`` and return the new backup id.

    ``database`` is a block reference (``sqlite-database/shop``), a URL or a
    SQLite path; ``storage`` a block reference, URL or directory. ``mode``
    "incremental" stores the dump as deduplicated chunks (docs/incremental.md). The manifest
    is written only after every object is stored and checked: a failed run
    leaves no manifest and never touches older backups.

    ``encrypt`` seals every object with the store's data key, unlocked by the
    passphrase in the Secret block ``passphrase_secret`` or, when that is not
    given, ``$DB_BACKUP_PASSPHRASE``; without a passphrase the run fails.
    """
    logger = get_run_logger()
    name = check_name(name or default_name(database))
    check_mode(mode)
    connector = resolve_database(database)
    previous = previous_backup(storage, name)
    key = prepare_encryption(storage, passphrase_secret) if encrypt else None
    backup_id = allocate_id(storage, name)
    with released_on_failure(storage, name, backup_id), staging_dir("backup") as staging:
        if mode == "incremental":
            outcome = dump_chunked(
                database,
                storage,
                str(staging),
                compression_level,
                key=key,
                allow_empty=allow_empty,
                allow_damaged=allow_damaged,
            )
        else:
            outcome = dump_database(
                database,
                str(staging),
                compression_level,
                compression_threads,
                key=key,
                allow_empty=allow_empty,
                allow_damaged=allow_damaged,
            )
        ops.check_shrink(previous, outcome, min_size_ratio, allow_shrink)
        stored = []
        for obj in outcome.objects:
            checked = checksum_file(obj)
            stored.append(
                upload_file(storage, checked, ops.object_key(name, backup_id, obj.filename))
            )
        manifest = ops.build_manifest(
            name=name,
            backup_id=backup_id,
            connector=connector,
            outcome=outcome,
            stored=stored,
            compression={"algorithm": "zstd", "level": compression_level},
            flow_run_id=current_flow_run_id(),
            encryption=manifest_record(key.key_id) if key else None,
        )
        if mode == "incremental":
            manifest = finish_incremental(storage, manifest, outcome.objects)
        write_manifest(storage, manifest)
    publish_backup_report(storage, manifest)
    logger.info("Backup %s/%s complete", name, backup_id)
    return backup_id
