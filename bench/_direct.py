"""db-backup's backup pipeline in-process, without Prefect: connector -> zstd -> store.

Usage: _direct.py URL STORE LEVEL. Runs exactly the steps the backup flow's
tasks run (operations.py), so its time is the pipeline's own cost.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from db_backup import operations as ops
from db_backup.connectors import connector_from_url
from db_backup.manifest import new_backup_id
from db_backup.pipeline import DumpSink
from db_backup.storage.local import LocalStorage


def main() -> None:
    url, store, level = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    connector = connector_from_url(url)
    storage = LocalStorage(store)
    with tempfile.TemporaryDirectory(prefix="bench-direct-") as staging:
        sink = DumpSink(
            Path(staging), level=level, threads=getattr(connector, "compress_threads", 0)
        )
        outcome = ops.stage_dump(connector, sink)
        backup_id = new_backup_id()
        stored = []
        for obj in outcome.objects:
            ops.verify_staged(obj)
            stored.append(
                ops.upload_staged(storage, obj, ops.object_key("bench", backup_id, obj.filename))
            )
        manifest = ops.build_manifest(
            name="bench",
            backup_id=backup_id,
            connector=connector,
            outcome=outcome,
            stored=stored,
            compression={"algorithm": "zstd", "level": level},
            flow_run_id=None,
        )
        ops.commit_manifest(storage, manifest)


if __name__ == "__main__":
    main()
