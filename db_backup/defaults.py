"""One constant per default: where backups go, how long garbage waits.

Flows, tasks, the CLI and the fleet file import these instead of spelling
their own copy, so a default changes in one place.
"""

from __future__ import annotations

from datetime import timedelta

#: The store used when none is given: the flag, then ``$DB_BACKUP_STORAGE``, then this.
DEFAULT_STORAGE = "./backups"
STORAGE_ENV = "DB_BACKUP_STORAGE"
#: Where staging directories go (else the system temporary directory).
STAGING_ENV = "DB_BACKUP_STAGING"

#: How old a chunk-index entry may get before a backup re-uploads the chunk.
REFRESH_AGE = timedelta(days=7)
#: The longest a backup may run; a chunk it uploaded stays safe from GC this long.
MAX_BACKUP_TIME = timedelta(days=2)
#: Chunks no backup references are deleted only once older than this (9 days).
GC_GRACE = REFRESH_AGE + MAX_BACKUP_TIME
GC_GRACE_HOURS = GC_GRACE.total_seconds() / 3600
GC_GRACE_TEXT = f"{GC_GRACE.days}d"

#: Orphans of interrupted backups are removed by prune only once older than this.
ORPHAN_GRACE = timedelta(hours=24)
