#!/usr/bin/env bash
# Build the sdist, then the wheel from that sdist (proves the sdist is complete), check
# both with `twine check --strict` (what PyPI would refuse), install the wheel into a
# brand-new virtual environment and run the installed console script: a SQLite backup
# and restore whose restored data must equal the source. Proves the distribution is
# self-contained and publishable.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
.venv/bin/python -m build --outdir "$out/dist" . >"$out/build.log" 2>&1 \
    || { tail -30 "$out/build.log" >&2; echo "error: python -m build failed" >&2; exit 1; }
ls "$out"/dist/*.tar.gz "$out"/dist/*.whl >/dev/null
echo "built: $(cd "$out/dist" && ls | tr '\n' ' ')"
.venv/bin/python -m twine check --strict "$out"/dist/*
python3 -m venv "$out/venv"
"$out/venv/bin/pip" install --quiet "$out"/dist/*.whl >"$out/pip.log" 2>&1 \
    || { tail -30 "$out/pip.log" >&2; echo "error: installing the wheel failed" >&2; exit 1; }
echo "top-level packages in the wheel:"
unzip -Z1 "$out"/dist/*.whl | cut -d/ -f1 | sort -u | grep -v dist-info
# grep -q on a pipe would close it early, and pipefail turns unzip's SIGPIPE into a failure.
members="$(unzip -Z1 "$out"/dist/*.whl)"
grep -q 'dist-info/licenses/LICENSE$' <<<"$members" \
    || { echo "error: the wheel carries no LICENSE" >&2; exit 1; }
# Every source module is in the wheel (a package missing from [tool.setuptools] packages
# would be left out silently), under db_backup/ or mapped into it (flows/ -> db_backup/flows/).
python3 - "$out"/dist/*.whl <<'PY'
import pathlib, sys, zipfile
shipped = set(zipfile.ZipFile(sys.argv[1]).namelist())
mapped = {"db_backup": "db_backup", "flows": "db_backup/flows", "tasks": "db_backup/tasks",
          "blocks": "db_backup/blocks", "deployments": "db_backup/deployments"}
missing = [str(src) for top, dest in mapped.items() for src in pathlib.Path(top).rglob("*.py")
           if "__pycache__" not in src.parts
           and f"{dest}/{src.relative_to(top).as_posix()}" not in shipped]
if missing:
    sys.exit(f"error: the wheel lacks {len(missing)} module(s): {', '.join(sorted(missing))}")
print("every source module is in the wheel")
PY
cd "$out"
"$out/venv/bin/db-backup" --help >/dev/null
"$out/venv/bin/python" -c "import db_backup.flows.backup, db_backup.tasks.backup, db_backup.blocks; print('imports ok')"
python3 - <<'PY'
import sqlite3
c = sqlite3.connect("w.db")
c.execute("create table t(x, y)")
c.executemany("insert into t values (?, ?)", [(i, f"row {i}") for i in range(500)])
c.commit()
PY
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
"$out/venv/bin/db-backup" backup --type sqlite --database w.db --storage st | tail -1
"$out/venv/bin/db-backup" restore latest --name w --to r.db --storage st
python3 - <<'PY'
import sqlite3
dump = lambda p: list(sqlite3.connect(p).iterdump())
assert dump("w.db") == dump("r.db"), "restored database differs from the source"
print("restored data equals the source")
PY
echo "wheel check passed"
