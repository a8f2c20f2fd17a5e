"""Shared fixtures: a scrubbed environment, one Prefect test harness per session,
and a runner for the ``db-backup`` console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# Before anything imports Prefect: never talk to a server the developer has
# configured, keep Prefect's home private to this run, and stay offline-quiet.
for _key in list(os.environ):
    if _key.startswith("PREFECT_"):
        del os.environ[_key]
_PREFECT_HOME = tempfile.mkdtemp(prefix="db-backup-tests-prefect-")
os.environ.update(
    {
        "PREFECT_HOME": _PREFECT_HOME,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
)

SCRUBBED_PREFIXES = ("AWS_", "PG", "MYSQL", "MARIADB", "AZURE_", "GOOGLE_", "DB_BACKUP_", "MONGO")
SCRUBBED_NAMES = ("STORAGE_EMULATOR_HOST",)


@pytest.fixture(autouse=True)
def scrub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees credentials or settings from the developer's shell."""
    for key in list(os.environ):
        if key.startswith(SCRUBBED_PREFIXES) or key in SCRUBBED_NAMES:
            monkeypatch.delenv(key, raising=False)


def in_ci() -> bool:
    """True under CI, where a missing service is a failure, not a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_service(available: bool, what: str) -> None:
    """Skip locally, fail under CI, when a service a test needs is missing."""
    if available:
        return
    if in_ci():
        pytest.fail(f"{what} is required under CI=true but is not available")
    pytest.skip(f"{what} is not available")


def docker_available() -> bool:
    """True when a Docker daemon answers (testcontainers can start containers)."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def docker_daemon() -> None:
    """For tests marked ``docker``: skip locally, fail under CI, without a daemon.

    scripts/test.sh deselects those tests (``-m "not docker"``) when there is no
    daemon, and says so; once a container is asked for, any error is a failure.
    """
    need_service(docker_available(), "a Docker daemon (deselect these tests with -m 'not docker')")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under CI=true a skip is a failure: nothing may step aside unnoticed.

    Tests that cannot run in CI are deselected by marker instead (see ``docker``).
    """
    report: pytest.TestReport = yield
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where nothing may skip: {reason}"
    return report


_deselected_docker: list[str] = []


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected_docker.extend(i.nodeid for i in items if i.get_closest_marker("docker"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many Docker-only tests did not run, and why."""
    if _deselected_docker:
        why = "no Docker daemon" if not docker_available() else "deselected by -m"
        terminalreporter.write_line(
            f"deselected {len(_deselected_docker)} Docker-only tests: {why}"
        )


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One Prefect test harness (a real temporary API server) for the whole session."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        url = PREFECT_API_URL.value()
        assert url, "the Prefect test harness gave no API URL"
        yield str(url)


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def db_backup_executable() -> str:
    """The installed console script next to this interpreter."""
    exe = Path(sys.executable).with_name("db-backup")
    return str(exe) if exe.exists() else (shutil.which("db-backup") or "db-backup")


@pytest.fixture
def cli(prefect_api: str, tmp_path: Path) -> CliRunner:
    """Run ``db-backup ARGS`` in a subprocess against the session's Prefect API."""

    def run(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "PREFECT_API_URL": prefect_api, **(env or {})}
        return subprocess.run(
            [db_backup_executable(), *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd or tmp_path,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )

    return run


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB filesystem (tmpfs): writes past it fail with ENOSPC."""
    path = tmp_path / "tiny"
    if not _mount_tmpfs(path, "size=2m"):
        need_service(False, "mounting a tmpfs (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only filesystem: even root cannot write to it (EROFS)."""
    path = tmp_path / "ro"
    if not _mount_tmpfs(path, "ro,size=1m"):
        need_service(False, "mounting a tmpfs (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
