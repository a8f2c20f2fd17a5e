#!/usr/bin/env bash
# The main job: back up an embedded demo SQLite database to local storage,
# verify it, restore it, and compare the restored copy with the source.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
exec .venv/bin/python -m db_backup.demo "$@"
