#!/usr/bin/env bash
# mypy over the whole db_backup namespace. flows/, tasks/, blocks/ and
# deployments/ are installed as db_backup.flows etc. (see pyproject.toml), a
# mapping mypy cannot read, so we check a tree of symlinks laid out as installed.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck
rm -rf "$tree" && mkdir -p "$tree/db_backup"
for entry in db_backup/*; do
    ln -s "$PWD/$entry" "$tree/db_backup/$(basename "$entry")"
done
for pkg in flows tasks blocks deployments; do
    [ -d "$pkg" ] && ln -s "$PWD/$pkg" "$tree/db_backup/$pkg"
done
cd "$tree" && exec "$OLDPWD/.venv/bin/mypy" --config-file "$OLDPWD/pyproject.toml" db_backup
