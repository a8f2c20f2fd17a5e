"""Build BSON documents and MongoDB databases for tests, and compare them."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions
from bson.datetime_ms import DatetimeMS
from bson.raw_bson import RawBSONDocument

RAW = CodecOptions(document_class=RawBSONDocument)
BIG_DOCUMENT = 16 * 1024 * 1024  # the server's maxBsonObjectSize


def _cstring(text: str) -> bytes:
    return text.encode() + b"\x00"


def _string(text: str) -> bytes:
    data = text.encode() + b"\x00"
    return len(data).to_bytes(4, "little") + data


def raw_document(elements: bytes) -> bytes:
    """A BSON document from already-encoded elements."""
    return (len(elements) + 5).to_bytes(4, "little") + elements + b"\x00"


def deprecated_types_document() -> bytes:
    """undefined (0x06), DBPointer (0x0C) and symbol (0x0E): types pymongo cannot encode."""
    elements = (
        b"\x10" + _cstring("_id") + (900).to_bytes(4, "little")
        + b"\x06" + _cstring("undefined")
        + b"\x0c" + _cstring("dbpointer") + _string("db.coll") + bytes(range(12))
        + b"\x0e" + _cstring("symbol") + _string("a symbol ✓")
    )  # fmt: skip
    return raw_document(elements)


def every_type_documents() -> list[bytes]:
    """Documents covering every BSON type and every binary subtype, as raw bytes."""
    when = dt.datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=dt.UTC)
    docs: list[dict[str, Any]] = [
        {
            "_id": ObjectId("65f0c0ffee00000000000001"),
            "double": 1.5,
            "nan": float("nan"),
            "inf": float("-inf"),
            "negzero": -0.0,
            "string": "Zoë ✓ 🚀 \u0000inside",
            "doc": {"a": {"b": {"c": 1}}},
            "array": [1, "two", [3, [4, {"five": 5}]], [], {}],
            "bool": [True, False],
            "date": when,
            "date_far": DatetimeMS(-(2**62)),
            "null": None,
            "regex": Regex("^a.*b$", "imsux"),
            "dbref": DBRef("coll", 1, "otherdb", extra="x"),
            "code": Code("function () { return 1; }"),
            "code_w_scope": Code("function () { return y; }", {"y": 1}),
            "int32": [2**31 - 1, -(2**31)],
            "int64": [Int64(2**63 - 1), Int64(-(2**63))],
            "timestamp": Timestamp(1_700_000_000, 7),
            "decimal": [Decimal128("1.000000000000000000000000000000001"), Decimal128("-NaN")],
            "decimal_inf": Decimal128("Infinity"),
            "minkey": MinKey(),
            "maxkey": MaxKey(),
        },
        {
            "_id": uuid.UUID("12345678-1234-5678-1234-567812345678").bytes,
            "generic": Binary(b"\x00\x01\x02", 0),
            "function": Binary(b"f", 1),
            "old_binary": Binary(b"old", 2),
            "uuid_legacy": Binary(uuid.uuid4().bytes, 3),
            "uuid": Binary(uuid.UUID("00112233-4455-6677-8899-aabbccddeeff").bytes, 4),
            "md5": Binary(bytes(16), 5),
            "encrypted": Binary(b"\x01ciphertext", 6),
            "column": Binary(b"\x00col", 7),
            "sensitive": Binary(b"secret", 8),
            "vector": Binary(b"\x03\x00\x01\x02\x03", 9),
            "user_defined": Binary(b"user", 0x80),
        },
    ]
    raw = [bson.encode(d) for d in docs]
    raw.append(deprecated_types_document())
    raw.append(_nested_arrays(40))
    return raw


def _nested_arrays(depth: int) -> bytes:
    value: Any = ["leaf", Int64(1)]
    for i in range(depth):
        value = [i, value, {"at": i}]
    return bson.encode({"_id": "nested", "value": value})


def near_limit_document(size: int = BIG_DOCUMENT) -> bytes:
    """A document of exactly ``size`` bytes, filled with incompressible bytes."""
    head = bson.encode({"_id": "big", "blob": Binary(b"", 0)})
    payload = size - len(head)
    doc = bson.encode({"_id": "big", "blob": Binary(os.urandom(payload), 0)})
    assert len(doc) == size
    return doc


# -- a real wire-protocol server ----------------------------------------------------
def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nx_executable() -> str | None:
    """The nx-27017 script next to this interpreter, or on PATH."""
    exe = Path(sys.executable).with_name("nx-27017")
    return str(exe) if exe.exists() else shutil.which("nx-27017")


def start_nx(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start nx-27017 on a free loopback port; return the process and its base URL."""
    exe = nx_executable()
    assert exe is not None
    port = free_port()
    log = open(workdir / "nx.out", "wb")  # noqa: SIM115 - closed when the process ends
    proc = subprocess.Popen(
        [exe, "--data-dir", "memory", "--host", "127.0.0.1", "-p", str(port)]
        + ["--log-file", str(workdir / "nx.log"), "--pid-file", str(workdir / "nx.pid")],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
    )
    url = f"mongodb://127.0.0.1:{port}"
    _wait_ready(proc, url)
    return proc, url


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 30.0) -> None:
    import pymongo

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nx-27017 exited with {proc.returncode}")
        try:
            with pymongo.MongoClient(url, serverSelectionTimeoutMS=300) as client:
                client.admin.command("ping")
                return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"nx-27017 did not answer on {url} within {timeout} s")


# -- data sets ------------------------------------------------------------------------
def shop_documents(kind: str, n: int) -> Iterator[dict[str, Any]]:
    """Documents of types nx-27017 stores (no Decimal128/Timestamp/Regex/MinKey/MaxKey)."""
    base = dt.datetime(2024, 1, 1)
    for i in range(n):
        if kind == "orders":
            yield {
                "_id": i,
                "customer": i % 5000,
                "total": i * 1.25,
                "note": f"order {i} ✓",
                "items": [{"sku": f"s{i % 97}", "qty": i % 7}],
                "paid": i % 2 == 0,
                "at": base + dt.timedelta(seconds=i),
                "big": Int64(i) * 1_000_000_000,
            }
        elif kind == "customers":
            yield {
                "_id": ObjectId(),
                "n": i,
                "name": f"Zoë {i}",
                "blob": Binary(bytes([i % 256]) * 16),
                "tags": ["a", "b", i],
                "none": None,
            }
        else:
            yield {"k": i % 13, "payload": {"deep": {"x": [i, [i, {"y": str(i)}]]}}}


def load_shop(db: Any, orders: int, customers: int, events: int) -> None:
    """Three collections with secondary indexes (one unique, one compound)."""
    for kind, n in (("orders", orders), ("customers", customers), ("events", events)):
        batch: list[dict[str, Any]] = []
        for doc in shop_documents(kind, n):
            batch.append(doc)
            if len(batch) == 20_000:
                db[kind].insert_many(batch)
                batch = []
        if batch:
            db[kind].insert_many(batch)
    db.orders.create_index([("customer", 1), ("at", 1)])
    db.customers.create_index("name", unique=True)
    db.events.create_index("k")


def raw_documents(db: Any, name: str) -> list[bytes]:
    """Every document of a collection as raw bytes, sorted by those bytes.

    Sorting here, not on the server, keeps the comparison order-independent
    without asking nx-27017 to sort 100k documents; with unique ``_id`` values
    equal sorted lists mean the same documents, byte for byte.
    """
    docs: list[bytes] = []
    for batch in db[name].find_raw_batches():
        pos = 0
        while pos < len(batch):
            size = int.from_bytes(batch[pos : pos + 4], "little")
            docs.append(bytes(batch[pos : pos + size]))
            pos += size
    return sorted(docs)


def index_shapes(db: Any, name: str) -> set[tuple[str, bool]]:
    """Index keys and uniqueness (names are left out: nx-27017 renames indexes)."""
    return {
        (repr(list(ix["key"].items())), bool(ix.get("unique"))) for ix in db[name].list_indexes()
    }


def assert_same_collection(src_db: Any, dst_db: Any, name: str) -> int:
    """Every document byte for byte, and the same indexes; returns the document count."""
    src, dst = raw_documents(src_db, name), raw_documents(dst_db, name)
    assert len(dst) == len(src), f"{name}: {len(dst)} documents restored, {len(src)} in source"
    for i, (a, b) in enumerate(zip(src, dst, strict=True)):
        assert a == b, f"{name}: document {i} differs"
    assert index_shapes(dst_db, name) == index_shapes(src_db, name)
    return len(src)
