"""A store in a local (or mounted) directory.

Writes go to ``<key>.partial-<random>`` in the same directory, are fsynced,
then renamed into place, so a reader sees a whole object or none.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from db_backup.errors import ObjectNotFound, PermanentStorageError, StorageError
from db_backup.storage.base import ObjectInfo

PARTIAL_MARK = ".partial-"
_COPY_CHUNK = 1024 * 1024


class LocalStorage:
    """Storage in a directory; the backing of Prefect's ``LocalFileSystem`` block."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        clean = key.strip("/")
        if not clean or ".." in clean.split("/"):
            raise PermanentStorageError(f"storage key {key!r} is invalid")
        return self.root / clean

    def _ensure_dir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _map_os_error(exc, path) from exc
        if not os.access(path, os.W_OK):
            raise PermanentStorageError(f"storage directory {path} is not writable")

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as src:
            self._write(key, lambda dst: shutil.copyfileobj(src, dst, _COPY_CHUNK))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda dst: dst.write(data))

    def create_exclusive(self, key: str, data: bytes) -> bool:
        final = self._path(key)
        self._ensure_dir(final.parent)
        try:
            fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _map_os_error(exc, final) from exc
        try:
            with os.fdopen(fd, "wb") as dst:
                dst.write(data)
                dst.flush()
                os.fsync(dst.fileno())
            _fsync_dir(final.parent)
        except OSError as exc:
            final.unlink(missing_ok=True)
            raise _map_os_error(exc, final) from exc
        return True

    def _write(self, key: str, fill: object) -> None:
        final = self._path(key)
        self._ensure_dir(final.parent)
        tmp = final.with_name(f"{final.name}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as dst:
                fill(dst)  # type: ignore[operator]
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _map_os_error(exc, final) from exc

    def get_file(self, key: str, dest: Path) -> None:
        with self.open_read(key) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as src:
            return src.read()

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"object {key!r} not found in {self.root}") from exc
        except OSError as exc:
            raise _map_os_error(exc, path) from exc
        with handle:
            yield handle

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        base = self.root
        start = base / prefix.rsplit("/", 1)[0] if "/" in prefix else base
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for fname in sorted(filenames):
                if PARTIAL_MARK in fname:
                    continue
                full = Path(dirpath) / fname
                key = full.relative_to(base).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list_partials(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Leftover ``*.partial-*`` files from interrupted writes (for prune).

        Walks with os.walk, which skips directories removed while it runs (a
        prune or a write may be going on at the same time).
        """
        if not self.root.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for fname in filenames:
                if PARTIAL_MARK not in fname:
                    continue
                full = Path(dirpath) / fname
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue  # renamed into place (or removed) since the walk saw it
                if stat.S_ISREG(st.st_mode):
                    yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _map_os_error(exc, path) from exc
        _remove_empty_parents(path.parent, self.root)


def _remove_empty_parents(path: Path, stop: Path) -> None:
    while path != stop and stop in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _map_os_error(exc: OSError, path: Path) -> StorageError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermanentStorageError(f"storage path {path} is not writable: {reason}")
    if exc.errno == errno.ENOSPC:
        return PermanentStorageError(f"storage path {path}: no space left on device")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return PermanentStorageError(f"storage path {path} is not a directory: {reason}")
    return StorageError(f"storage path {path}: {reason}")
