#!/usr/bin/env bash
# Build the wheel and install it into a brand-new virtual environment, then run
# the installed console script: proves the distribution is self-contained.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
.venv/bin/python -m build --wheel --outdir "$out/dist" . >/dev/null
python3 -m venv "$out/venv"
"$out/venv/bin/pip" install --quiet "$out"/dist/*.whl
echo "top-level packages in the wheel:"
unzip -Z1 "$out"/dist/*.whl | cut -d/ -f1 | sort -u | grep -v dist-info
cd "$out"
"$out/venv/bin/db-backup" --help >/dev/null
"$out/venv/bin/python" -c "import db_backup.flows.backup, db_backup.tasks.backup, db_backup.blocks; print('imports ok')"
python3 - <<'PY'
import sqlite3
c = sqlite3.connect("w.db"); c.execute("create table t(x)"); c.execute("insert into t values (1)"); c.commit()
PY
PREFECT_SERVER_ANALYTICS_ENABLED=false "$out/venv/bin/db-backup" backup --type sqlite --database w.db --storage st | tail -1
PREFECT_SERVER_ANALYTICS_ENABLED=false "$out/venv/bin/db-backup" restore latest --name w --to r.db --storage st
echo "wheel check passed"
