"""LocalStorage keeps the storage promises on a real directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from db_backup.errors import ConfigError, ObjectNotFound, PermanentStorageError
from db_backup.storage import LocalStorage, open_storage


def test_put_get_list_exists_delete(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    store.put_file("a/1/f.bin", src)
    store.put_bytes("a/1/manifest.json", b"{}")
    store.put_bytes("b/2/manifest.json", b"{}")
    dest = tmp_path / "back.bin"
    store.get_file("a/1/f.bin", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert store.get_bytes("a/1/manifest.json") == b"{}"
    assert [i.key for i in store.list("a/")] == ["a/1/f.bin", "a/1/manifest.json"]
    assert {i.key for i in store.list()} == {"a/1/f.bin", "a/1/manifest.json", "b/2/manifest.json"}
    assert store.exists("a/1/f.bin") and not store.exists("a/1/nope")
    store.delete("a/1/f.bin")
    store.delete("a/1/f.bin")  # deleting twice is fine
    assert not store.exists("a/1/f.bin")
    with pytest.raises(ObjectNotFound, match="a/1/f.bin"):
        store.get_bytes("a/1/f.bin")


def test_objects_being_written_are_not_listed(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    (tmp_path / "a" / "1").mkdir(parents=True)
    (tmp_path / "a" / "1" / "x.zst.partial-1234abcd").write_bytes(b"half")
    store.put_bytes("a/1/y", b"whole")
    assert [i.key for i in store.list()] == ["a/1/y"]
    assert [i.key for i in store.list_partials()] == ["a/1/x.zst.partial-1234abcd"]


def test_overwrite_replaces_whole_object(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.put_bytes("k", b"one")
    store.put_bytes("k", b"two")
    assert store.get_bytes("k") == b"two"


def test_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "root")
    with pytest.raises(PermanentStorageError, match="invalid"):
        store.put_bytes("../evil", b"x")


def test_unwritable_directory_is_a_clear_error(readonly_dir: Path) -> None:
    with pytest.raises(PermanentStorageError, match=f"{readonly_dir}.* not writable"):
        LocalStorage(readonly_dir).put_bytes("a/b", b"x")


def test_storage_below_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermanentStorageError, match="not a directory|not writable"):
        LocalStorage(blocker).put_bytes("a/b", b"x")


def test_open_storage_parses_locations(tmp_path: Path) -> None:
    assert isinstance(open_storage(tmp_path), LocalStorage)
    assert open_storage(f"file://{tmp_path}").describe() == str(tmp_path)
    with pytest.raises(ConfigError, match="unknown scheme 'ftp'"):
        open_storage("ftp://host/x")
    with pytest.raises(ConfigError, match="empty"):
        open_storage("  ")
