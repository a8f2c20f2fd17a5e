"""Running the engines' own tools (pg_dump, mariadb-dump, ...) safely.

Promises kept here for every server connector:

* every child's exit code is checked; a non-zero exit raises ToolFailed naming
  the tool, the database and the first useful line of its stderr;
* secrets never reach a child's argv or environment: they travel in an
  anonymous 0600 memory file the child opens as ``/dev/fd/N`` (see
  :func:`secret_path`), which vanishes with the last process holding it, so a
  killed run leaves no password on disk;
* children get an allow-listed environment (:func:`child_env`): PATH, HOME,
  locale, time zone, temp dir and the settings we set, never our secrets
  (passphrases, cloud keys, passwords);
* a failure caused by an unreachable or restarting server is raised as a
  transient error (:func:`transient_text`), so the task's retries handle it;
* stdout is streamed in 1 MiB blocks, so memory does not grow with the dump.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

from db_backup.errors import SourceError, TargetError, ToolFailed, TransientToolFailed
from db_backup.pipeline import COPY_CHUNK

_NOISE = re.compile(r"^(pg_dump|pg_restore|psql|mariadb-dump|mysqldump|mariadb|mysql): ")
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


class Secret:
    """A password that never shows itself in repr, str or logs."""

    def __init__(self, value: str | None) -> None:
        self._value = value or None

    def reveal(self) -> str | None:
        """The password itself: only for writing a 0600 file or a driver call."""
        return self._value

    def __bool__(self) -> bool:
        return self._value is not None

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret(None)"

    __str__ = __repr__


CHILD_ENV_NAMES = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "LD_LIBRARY_PATH",
)
CHILD_ENV_PREFIXES = ("LC_",)


def child_env(**settings: str) -> dict[str, str]:
    """An allow-listed environment for a child tool, plus ``settings``.

    Only PATH, HOME, the user's name, locale, time zone, temp dir and library
    path pass from ours: no passphrase, cloud key, password or engine setting
    of the caller's shell reaches pg_dump, mariadb-dump and their kin.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k in CHILD_ENV_NAMES or k.startswith(CHILD_ENV_PREFIXES)
    }
    env.update(settings)
    return env


# Failures a retry may cure: the server is down, restarting, or out of connection slots.
# (Bad passwords, unknown databases and missing privileges never match.)
_TRANSIENT = re.compile(
    "|".join(
        [
            r"connection refused",
            r"the database system is (?:starting up|shutting down|in recovery mode"
            r"|not yet accepting connections)",
            r"server closed the connection unexpectedly",
            r"terminating connection due to administrator command",
            r"connection to server was lost",
            r"too many clients already",
            r"timeout expired",
            r"on socket .* no such file or directory",
            r"can't connect to (?:local )?(?:mysql |mariadb )?server",
            r"lost connection to (?:mysql |mariadb )?server",
            r"server has gone away",
            r"server shutdown in progress",
            r"too many connections",
        ]
    ),
    re.IGNORECASE,
)


def transient_text(message: str) -> bool:
    """True when an engine's error text says the server was unreachable or restarting."""
    return _TRANSIENT.search(message) is not None


PIPE_SIZE = 1024 * 1024


def widen_pipe(stream: IO[bytes] | None) -> None:
    """Ask Linux for a 1 MiB pipe buffer (fewer wake-ups per MiB); harmless elsewhere."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if stream is None or set_size is None:
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(stream.fileno(), set_size, PIPE_SIZE)


def find_tool(names: Sequence[str], what: str) -> str:
    """The first of ``names`` on PATH; SourceError naming them all when none is."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise SourceError(
        f"{' / '.join(names)} not found on PATH: install the {what} client tools "
        "(e.g. apt-get install postgresql-client / mariadb-client)"
    )


def tool_version(path: str) -> str:
    """The version a tool prints with --version (e.g. '15.20'), or '' when unknown."""
    try:
        out = subprocess.run(
            [path, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=child_env(),
        ).stdout
    except OSError:
        return ""
    # mariadb-dump prints 'Ver 10.19 Distrib 10.11.19-MariaDB': the distribution is what counts.
    distrib = re.search(r"Distrib\s+(\S+?)[,-]", out)
    if distrib:
        return distrib.group(1)
    match = _VERSION.search(out)
    return match.group(0) if match else ""


def major_of(version: str) -> tuple[int, int]:
    """(major, minor) of a version string; (0, 0) when it has none."""
    match = _VERSION.search(version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def first_error_line(stderr: str) -> str:
    """The most useful line of a tool's stderr: the first 'error'/'FATAL' line, else the first."""
    lines = [_NOISE.sub("", ln).strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        low = ln.lower()
        if "error" in low or "fatal" in low or "denied" in low or "unknown" in low:
            return ln[:500]
    return lines[0][:500] if lines else "no error message"


@contextlib.contextmanager
def secret_file(content: str, directory: Path | None = None) -> Iterator[Path]:
    """A file readable only by us (mode 0600) holding ``content``; removed afterwards."""
    fd, name = tempfile.mkstemp(prefix="db-backup-", suffix=".cnf", dir=directory)
    path = Path(name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
        yield path
    finally:
        path.unlink(missing_ok=True)


_FD_PATH = re.compile(r"^/dev/fd/(\d+)$")


@contextlib.contextmanager
def secret_path(content: str) -> Iterator[str]:
    """A path from which a child tool reads ``content`` (a password or option file).

    On Linux an anonymous memory file (memfd, mode 0600) that the child opens as
    ``/dev/fd/N``: nothing is ever written to disk, and it is gone with the last
    process holding it, even when the run is killed. The run helpers here pass
    it on to the child (:func:`inherited_fds`). Elsewhere: a 0600 file in a
    private 0700 directory, removed when the block ends.
    """
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None or not Path("/dev/fd").is_dir():
        with (
            tempfile.TemporaryDirectory(prefix="db-backup-") as private,
            secret_file(content, Path(private)) as path,
        ):
            yield str(path)
        return
    fd = memfd_create("db-backup-secret", getattr(os, "MFD_CLOEXEC", 1))
    try:
        os.fchmod(fd, 0o600)
        data = content.encode()
        while data:
            data = data[os.write(fd, data) :]
        yield f"/dev/fd/{fd}"
    finally:
        os.close(fd)


def inherited_fds(argv: Sequence[str], env: dict[str, str]) -> tuple[int, ...]:
    """The descriptors behind ``/dev/fd/N`` paths in ``argv`` and ``env`` (for pass_fds)."""
    fds: list[int] = []
    for item in [*argv, *env.values()]:
        value = item.split("=", 1)[1] if item.startswith("--") and "=" in item else item
        match = _FD_PATH.match(value)
        if match:
            fds.append(int(match.group(1)))
    return tuple(sorted(set(fds)))


def _fail(kind: type[Exception], tool: str, what: str, code: int, stderr: str) -> Exception:
    if kind is ToolFailed and transient_text(stderr):
        kind = TransientToolFailed
    return kind(f"{tool} failed for {what} (exit {code}): {first_error_line(stderr)}")


def run_capture(
    argv: list[str],
    env: dict[str, str],
    what: str,
    stdin: BinaryIO | None = None,
    error: type[Exception] = ToolFailed,
) -> str:
    """Run a tool to completion and return its stdout; raise ``error`` on a non-zero exit."""
    tool = Path(argv[0]).name
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            env=env,
            stdin=stdin,
            check=False,
            pass_fds=inherited_fds(argv, env),
        )
    except OSError as exc:
        raise error(f"{tool} cannot be started for {what}: {exc.strerror}") from exc
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise _fail(error, tool, what, proc.returncode, stderr)
    return proc.stdout.decode(errors="replace")


def stream_out(argv: list[str], env: dict[str, str], what: str, out: IO[bytes]) -> int:
    """Run a dump tool and copy its stdout into ``out``; ToolFailed on a non-zero exit.

    The child is killed if copying fails (a full staging disk), so no dump
    runs on unobserved. Returns the number of bytes copied.
    """
    tool = Path(argv[0]).name
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                pass_fds=inherited_fds(argv, env),
            )
        except OSError as exc:
            raise ToolFailed(f"{tool} cannot be started for {what}: {exc.strerror}") from exc
        widen_pipe(proc.stdout)
        total = 0
        try:
            assert proc.stdout is not None
            while block := proc.stdout.read(COPY_CHUNK):
                out.write(block)
                total += len(block)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
        if code != 0:
            err.seek(0)
            raise _fail(ToolFailed, tool, what, code, err.read().decode(errors="replace"))
    return total


def stream_in(
    argv: list[str], env: dict[str, str], what: str, source: IO[bytes], capture: bool = False
) -> str:
    """Feed ``source`` to a restore tool's stdin; TargetError on a non-zero exit.

    A tool that stops reading early (an SQL error with ON_ERROR_STOP, or
    ``pg_restore -l`` once it has the table of contents) breaks the pipe: the
    copy stops and the exit code decides. With ``capture`` the tool's stdout
    is returned (spooled to a file, so a large listing cannot deadlock).
    """
    tool = Path(argv[0]).name
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as outfile:
        stdout: IO[bytes] | int = outfile if capture else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=err,
                env=env,
                pass_fds=inherited_fds(argv, env),
            )
        except OSError as exc:
            raise TargetError(f"{tool} cannot be started for {what}: {exc.strerror}") from exc
        _feed(proc, source)
        code = proc.wait()
        if code != 0:
            err.seek(0)
            raise _fail(TargetError, tool, what, code, err.read().decode(errors="replace"))
        outfile.seek(0)
        return outfile.read().decode(errors="replace") if capture else ""


def _feed(proc: subprocess.Popen[bytes], source: IO[bytes]) -> None:
    assert proc.stdin is not None
    try:
        while block := source.read(COPY_CHUNK):
            proc.stdin.write(block)
    except BrokenPipeError:
        pass
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()


class RowCounter(threading.Thread):
    """Counts rows of ``tables`` with ``count(conn, table)`` while a dump runs.

    ``conn`` is a connection already inside the dump's snapshot, so the counts
    are exactly the rows the dump holds. :meth:`result` waits for the thread and
    raises SourceError (first useful line of the cause) when counting failed.
    """

    def __init__(
        self, name: str, conn: Any, tables: list[str], count: Callable[[Any, str], int]
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._conn = conn
        self._tables = tables
        self._count = count
        self._counts: dict[str, int] = {}
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            for table in self._tables:
                self._counts[table] = self._count(self._conn, table)
        except BaseException as exc:  # reported by result()
            self._error = exc

    def result(self) -> dict[str, int]:
        if self.is_alive():
            self.join()
        if self._error is not None:
            raise SourceError(
                f"counting rows in the dump's snapshot failed: {first_line(self._error)}"
            )
        return dict(self._counts)


def first_line(exc: BaseException) -> str:
    """The most telling line of an error (a FATAL/error line, else the first)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    for ln in lines:
        if "FATAL" in ln or "error" in ln.lower():
            return ln
    return lines[0] if lines else type(exc).__name__


def env_password(names: Sequence[str]) -> str | None:
    """The first non-empty password among the environment variables ``names``."""
    return next((os.environ[n] for n in names if os.environ.get(n)), None)
