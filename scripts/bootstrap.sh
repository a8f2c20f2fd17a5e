#!/usr/bin/env bash
# Create (or refresh) ./.venv with db-backup, its integrations and the test tools.
# Re-installs only when pyproject.toml changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "error: db-backup needs Python 3.11 or newer ($PY is $("$PY" -V 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $("$PY" -V)" >&2
    "$PY" -m venv .venv
fi
stamp=.venv/.db-backup-installed
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-64)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "==> installing db-backup and its dependencies into .venv (about a minute)" >&2
    log=.venv/install.log
    if ! { .venv/bin/python -m pip install --quiet --upgrade pip &&
           .venv/bin/python -m pip install --quiet -e ".[all,test]"; } >"$log" 2>&1; then
        grep -v "is ignored: it is neither" "$log" | tail -40 >&2
        echo "error: installing db-backup into .venv failed (full log: $log)" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
