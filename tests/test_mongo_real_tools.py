"""Our MongoDB archives against MongoDB's own tools 100.8.0 (issue 12 item 7).

The files inside our archive must be what ``mongodump`` writes for the same
data, and ``mongorestore`` must restore them to the same collections. The
collection names include the ones escaping gets wrong (``a+b`` and ``a b``
together, ``a%b``, unicode, names long enough to be truncated). nx-27017
refuses such names, so the :class:`~tests.mongo_relay.WireRelay` in front of it
stores them under plain names; both our connector and the tools talk to the
relay, so they see the same server.
"""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

from db_backup.connectors.mongodb.logical import MongoConnector
from db_backup.pipeline import DumpSink, open_decoded
from tests.conftest import need_service
from tests.mongo_helpers import assert_same_collection, nx_executable, start_nx
from tests.mongo_relay import WireRelay, extract_tools, relay, tools_tarball

# client-side collection name -> the name nx-27017 stores it under
ODD_NAMES = {
    "a+b": "c_plus",
    "a b": "c_space",
    "a%b": "c_percent",
    "Zoë ✓ 🚀": "c_unicode",
    "é" * 150: "c_long_unicode",  # 900 characters escaped: truncated with a hash
}
PLAIN_NAMES = ["orders", "n" * 300]  # the long one is truncated too
SOURCE = "src"


@pytest.fixture(scope="session")
def mongo_tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mongodump, mongorestore and bsondump 100.8.0, unpacked once per session."""
    tarball = tools_tarball()
    need_service(tarball is not None, "mongo-tools 100.8.0 tarball (../shared/tools) and zstd")
    assert tarball is not None
    return extract_tools(tarball, tmp_path_factory.mktemp("mongo-tools"))


@pytest.fixture(scope="module")
def nx_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An nx-27017 server holding database ``src`` (odd names stored under plain ones)."""
    need_service(nx_executable() is not None, "nx-27017 (pip install nx-27017)")
    proc, url = start_nx(tmp_path_factory.mktemp("nx-tools"))
    port = int(url.rsplit(":", 1)[1].strip("/"))
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(url)
    try:
        for i, stored in enumerate([*ODD_NAMES.values(), *PLAIN_NAMES]):
            coll = client[SOURCE][stored]
            coll.insert_many(
                [{"_id": n, "k": i * 1000 + n, "text": f"doc {n} ✓", "blob": b"\x00\xff" * n}
                 for n in range(40 + i)]
            )  # fmt: skip
            coll.create_index("k")
        yield port
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def gateway(nx_port: int) -> Iterator[WireRelay]:
    """The relay every client of this module talks to."""
    with relay(nx_port, ODD_NAMES) as r:
        yield r


def our_files(port: int, work: Path) -> Path:
    """Back ``src`` up with our connector and unpack the archive; the database folder."""
    staging, out = work / "staging", work / "ours"
    staging.mkdir()
    out.mkdir()
    sink = DumpSink(staging)
    MongoConnector(f"mongodb://127.0.0.1:{port}/{SOURCE}").dump(sink)
    (obj,) = sink.objects
    with (
        open_decoded(obj.path, "archive", obj.raw_size, obj.raw_sha256) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        tar.extractall(out, filter="data")
    return out / SOURCE


def run_tool(tools: Path, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one of MongoDB's tools; fail the test with its stderr when it fails."""
    done = subprocess.run(
        [str(tools / tool), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{tool} failed ({done.returncode}): {done.stderr[-2000:]}"
    return done


def test_our_files_equal_mongodump_output_for_odd_collection_names(
    mongo_tools: Path, gateway: WireRelay, tmp_path: Path
) -> None:
    """Guards: every file name and byte of our archive is what mongodump 100.8.0 writes.

    Before the fix, ``a+b`` was stored as ``a+b.bson`` (mongodump: ``a%2Bb.bson``) and
    ``a b`` as ``a%20b.bson`` (mongodump: ``a+b.bson``).
    """
    port = str(gateway.port)
    run_tool(mongo_tools, "mongodump", "--host", "127.0.0.1", "--port", port,
             "--db", SOURCE, "--out", str(tmp_path / "theirs"))  # fmt: skip
    theirs = tmp_path / "theirs" / SOURCE
    ours = our_files(gateway.port, tmp_path)
    names = sorted(p.name for p in theirs.iterdir())
    assert len(names) == 2 * (len(ODD_NAMES) + len(PLAIN_NAMES))
    assert sorted(p.name for p in ours.iterdir()) == names
    for name in names:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name


def test_bsondump_objcheck_accepts_our_files(
    mongo_tools: Path, gateway: WireRelay, tmp_path: Path
) -> None:
    """Guards: every .bson file we write passes MongoDB's own validator, document count right."""
    ours = our_files(gateway.port, tmp_path)
    files = sorted(ours.glob("*.bson"))
    assert len(files) == len(ODD_NAMES) + len(PLAIN_NAMES)
    for path in files:
        done = run_tool(mongo_tools, "bsondump", "--objcheck", "--outFile", "/dev/null", str(path))
        assert " objects found" in done.stderr, done.stderr


def test_mongorestore_restores_our_archive_to_the_same_collections(
    mongo_tools: Path, gateway: WireRelay, nx_port: int, tmp_path: Path
) -> None:
    """Guards: mongorestore reads back every collection under its own name, documents
    byte for byte and indexes equal. Before the fix ``a+b`` came back as ``a b`` and,
    with both present, one of the two collections was lost."""
    ours = our_files(gateway.port, tmp_path)
    target = f"copy{gateway.port}"
    run_tool(mongo_tools, "mongorestore", "--host", "127.0.0.1", "--port", str(gateway.port),
             "--nsFrom", f"{SOURCE}.*", "--nsTo", f"{target}.*", str(ours.parent))  # fmt: skip
    direct: pymongo.MongoClient[Any] = pymongo.MongoClient(f"mongodb://127.0.0.1:{nx_port}")
    try:
        stored = sorted([*ODD_NAMES.values(), *PLAIN_NAMES])
        assert sorted(direct[target].list_collection_names()) == stored
        for name in stored:
            assert assert_same_collection(direct[SOURCE], direct[target], name) >= 40
    finally:
        direct.drop_database(target)
        direct.close()
