#!/usr/bin/env bash
# The test suite: lint, types, then pytest with coverage against real services.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
# Console scripts of the venv (prefect, moto_server, nx-27017, ...) come first on PATH.
export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"
echo "==> ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy" >&2
bash scripts/typecheck.sh
echo "==> pytest" >&2
exec .venv/bin/python -m pytest --cov --cov-report=term "$@"
