"""What a killed run leaves behind: names that say whose it is, and the sweep.

Everything db-backup creates outside the store for the length of one run
carries its owner in its name, ``<host>-<pid>-<stamp>-<random>`` (``_`` instead
of ``-`` in database names): ``host`` is 6 hex digits of the host name's
sha256, ``pid`` the creating process, ``stamp`` its creation time (Unix
seconds, UTC). The kinds:

==================  =================================================  ===================
kind                name                                               where
==================  =================================================  ===================
staging             ``db-backup-<purpose>-<owner>/``                    ``$DB_BACKUP_STAGING``
                                                                        or the temp dir
restore-file        ``.<target>.restore-<owner>`` (+ ``-wal``,           next to a SQLite
                    ``-journal``, ``-shm``)                              restore target
scratch-database    ``<db>_dbb_<owner>``                                the PostgreSQL server
                                                                        of a ``--force``
                                                                        restore
==================  =================================================  ===================

A leftover is **stale** (safe to remove) when

* it was made on this host and its process is gone: no process has that pid,
  or the process that has it started after the leftover was made (the pid
  was reused);
* or it was made on another host, or has a name from an older db-backup
  without an owner, and is older than :data:`MAX_AGE` (a day).

A live run's leftovers are never stale: made here by a running process, they
are kept whatever their age. Each run sweeps stale leftovers of its own kind
before making its own (staging: the staging folder; a SQLite restore: the
target's folder; a PostgreSQL ``--force`` restore: the server), and
``db-backup gc --leftovers`` lists or removes them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
MAX_AGE = 24 * 3600.0
STAGING_PREFIX = "db-backup-"
STAGING_PURPOSES = ("backup", "restore", "drill")
SQLITE_SIDE_FILES = ("-wal", "-journal", "-shm")
_OWNER = r"(?P<host>[0-9a-f]{6})[-_](?P<pid>\d{1,10})[-_](?P<stamp>\d{9,11})[-_][0-9a-f]{4}"
_STAGING_RE = re.compile(rf"^db-backup-(?:{'|'.join(STAGING_PURPOSES)})-{_OWNER}$")
_STAGING_OLD_RE = re.compile(rf"^db-backup-(?:{'|'.join(STAGING_PURPOSES)})-[a-z0-9_]{{8}}$")
_RESTORE_RE = re.compile(rf"^\.(?P<target>.+)\.restore-{_OWNER}$")
_RESTORE_OLD_RE = re.compile(r"^\.(?P<target>.+)\.restore-[0-9a-f]{8}$")
_SCRATCH_RE = re.compile(rf"^(?P<target>.*)_dbb_{_OWNER}$")
_SCRATCH_OLD_RE = re.compile(r"^(?P<target>.*)_dbb_[0-9a-f]{8}$")


@dataclass(frozen=True)
class Owner:
    """Who made a leftover: host tag, process id, creation time (Unix seconds)."""

    host: str
    pid: int
    stamp: int


@dataclass
class Leftover:
    """One thing a run left behind, and whether it may be removed (and why)."""

    kind: str  # staging | restore-file | scratch-database
    where: str  # a path, or "database NAME on HOST:PORT"
    name: str
    owner: Owner | None
    stale: bool
    reason: str
    size: int = 0


def host_tag() -> str:
    """This host's 6-hex-digit tag (a hash of its name: names stay short and opaque)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def owner_tag(sep: str = "-") -> str:
    """The owner part of a new leftover's name, for this process, now."""
    parts = (host_tag(), str(os.getpid()), str(int(time.time())), secrets.token_hex(2))
    return sep.join(parts)


def staging_name(purpose: str) -> str:
    """The folder name of a new staging directory of ``purpose`` (backup, restore, drill)."""
    return f"{STAGING_PREFIX}{purpose}-{owner_tag()}"


def restore_file_name(target: str) -> str:
    """The hidden temporary file name a SQLite restore writes next to ``target``."""
    return f".{target}.restore-{owner_tag()}"


def scratch_database_name(target: str) -> str:
    """A PostgreSQL scratch database name beside ``target`` (at most 63 bytes)."""
    return f"{target[:28]}_dbb_{owner_tag('_')}"


# -- is it stale? -------------------------------------------------------------------
def process_started(pid: int) -> float | None:
    """When process ``pid`` started (Unix seconds), None when no such process runs.

    Linux: from /proc; elsewhere only existence is known (reported as started at 0).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, owned by someone else
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return 0.0


def judge(owner: Owner | None, made: float, now: float | None = None) -> tuple[bool, str]:
    """(stale, reason) for a leftover made at ``made`` by ``owner`` (None: unknown owner)."""
    now = time.time() if now is None else now
    if owner is not None and owner.host == host_tag():
        started = process_started(owner.pid)
        if started is None:
            return True, f"its process {owner.pid} is gone"
        if started > owner.stamp + 2:  # /proc start times are whole seconds
            return True, f"its process {owner.pid} is gone (the pid now belongs to another)"
        return False, f"its process {owner.pid} is still running"
    age = now - made
    whose = "made on another host" if owner is not None else "made by an older db-backup"
    if age > MAX_AGE:
        return True, f"{whose} {age / 3600:.0f} h ago"
    return False, f"{whose} less than a day ago (its process cannot be checked)"


def _owner(match: re.Match[str]) -> Owner:
    return Owner(match["host"], int(match["pid"]), int(match["stamp"]))


def _file_leftover(kind: str, path: Path, match: re.Match[str] | None) -> Leftover:
    """A leftover file or folder; without an owner in its name (an old-style name),
    its age is its modification time."""
    owner = _owner(match) if match else None
    stale, reason = judge(owner, owner.stamp if owner else path.stat().st_mtime)
    return Leftover(kind, str(path), path.name, owner, stale, reason)


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# -- finding them ---------------------------------------------------------------------
def staging_base() -> Path:
    """Where staging directories are made: ``$DB_BACKUP_STAGING``, else the temp dir."""
    import tempfile

    from db_backup.defaults import STAGING_ENV

    return Path(os.environ.get(STAGING_ENV) or tempfile.gettempdir())


def find_staging(base: Path) -> list[Leftover]:
    """Staging directories of db-backup runs in ``base`` (live ones included, not stale)."""
    found = []
    for path in _entries(base):
        match = _STAGING_RE.match(path.name)
        if not (match or _STAGING_OLD_RE.match(path.name)) or not path.is_dir():
            continue
        found.append(_file_leftover("staging", path, match))
    return found


def find_restore_files(folder: Path, target: str | None = None) -> list[Leftover]:
    """Temporary files of SQLite restores in ``folder`` (of ``target`` only, when given)."""
    found = []
    for path in _entries(folder):
        name = path.name
        for side in SQLITE_SIDE_FILES:
            if name.endswith(side):
                name = name[: -len(side)]
        match = _RESTORE_RE.match(name)
        old = None if match else _RESTORE_OLD_RE.match(name)
        hit = match or old
        if hit is None or (target is not None and hit["target"] != target):
            continue
        if not path.is_file():
            continue
        found.append(_file_leftover("restore-file", path, match))
    return found


def classify_database(name: str, server: str) -> Leftover | None:
    """A PostgreSQL database name seen on ``server``, as a leftover (None: not ours).

    Scratch databases from an older db-backup (``_dbb_<8 hex>``) carry no time:
    they are listed, never judged stale (drop them by hand once no restore runs).
    """
    where = f"database {name} on {server}"
    match = _SCRATCH_RE.match(name)
    if match:
        owner = _owner(match)
        stale, reason = judge(owner, owner.stamp)
        return Leftover("scratch-database", where, name, owner, stale, reason)
    if _SCRATCH_OLD_RE.match(name):
        reason = "made by an older db-backup, age unknown: drop it by hand if no restore runs"
        return Leftover("scratch-database", where, name, None, False, reason)
    return None


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


# -- removing them ---------------------------------------------------------------------
def remove_path(item: Leftover) -> Leftover:
    """Remove a stale file or folder leftover; its size is recorded first. Never a live one."""
    if not item.stale:
        raise ValueError(f"{item.where} is not stale ({item.reason})")
    path = Path(item.where)
    try:
        item.size = _tree_size(path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        item.stale = False
        item.reason = f"cannot be removed: {exc.strerror or exc}"
    return item


def sweep(items: list[Leftover]) -> list[Leftover]:
    """Remove every stale file/folder among ``items``; the ones removed."""
    removable = [i for i in items if i.stale and i.kind != "scratch-database"]
    removed = [i for i in removable if remove_path(i).stale]
    for item in removed:
        log.info("Removed leftover %s %s (%s)", item.kind, item.where, item.reason)
    return removed


def sweep_staging(base: Path | None = None) -> list[Leftover]:
    """Remove stale staging directories (run at the start of every staged run)."""
    return sweep(find_staging(base or staging_base()))
