"""Authenticated, framed encryption of stored objects (no Prefect here).

Every encrypted object, big or small, has the same layout::

    header  = MAGIC (8) | version (1) | algorithm (1) | frame size (4, big endian)
              | key id (16) | salt (16) | nonce prefix (7)            = 53 bytes
    frames  = AES-256-GCM(plaintext frame) | tag (16), repeated

* The plaintext is cut into frames of ``frame size`` bytes (1 MiB by default);
  every frame but the last is full, the last holds 0..frame size bytes, and
  there is always a last frame (an empty object has one empty frame).
* Each object gets its own key: HKDF-SHA256(data key, salt, key id), so nonces
  never repeat across objects whatever their number.
* Frame ``i`` is sealed with nonce ``nonce prefix | i (4) | final flag (1)`` and
  associated data ``header | i (8) | final flag``: a frame moved, dropped,
  duplicated, a stream cut at a frame boundary or extended after its last
  frame, a changed header or a flipped bit all fail authentication
  (:class:`~db_backup.errors.EncryptionError`), and a header version this code
  does not know is refused before any decryption.
* Memory is bounded by one frame on either side.

Public API (what the incremental chunk store and the backup pipeline use)::

    key = DataKey.generate()                 # or keys.unlock_key(storage, key_id, passphrase)
    blob = key.seal(b"small object")         # bytes -> encrypted bytes (same format)
    data = key.open(blob, what="index ab12") # raises EncryptionError on any tampering
    chunk_id = key.chunk_id(data)            # keyed digest: dedup ids that leak no content

    with key.encrypt_to(raw_file) as w:      # streaming: write plaintext, close to finish
        w.write(...)
    reader = key.decrypt_from(stream, what)  # streaming: a readable of the plaintext

    DumpSink(..., layers=[key.encode_layer()])      # pipeline integration
    open_decoded(..., layers=[key.decode_layer(what)])

``what`` names the object in error messages. A :class:`DataKey` never shows
its bytes in ``repr`` or in any message.

Getting the key: plain code calls :func:`db_backup.crypto.keys.unlock_key` (store,
key id, passphrase); Prefect tasks receive a :class:`db_backup.crypto.keys.KeySource`
(no secret in it: store, key id, Secret block name) from the
``prepare_encryption`` task and call ``db_backup.tasks.encryption.load_data_key``.
Record ``keys.manifest_record(key_id)`` as the manifest's ``encryption`` field
and ``"aes-256-gcm"`` (:data:`ALGORITHM`) in each encrypted object's ``encoding``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from db_backup.errors import EncryptionError

ALGORITHM = "aes-256-gcm"
FORMAT_NAME = "db-backup-stream"
FORMAT_VERSION = 1
MAGIC = b"\x89DBBKENC"
ALGORITHM_IDS = {ALGORITHM: 1}
DEFAULT_FRAME_SIZE = 1024 * 1024
MIN_FRAME_SIZE = 4096
MAX_FRAME_SIZE = 64 * 1024 * 1024
KEY_SIZE = 32
KEY_ID_SIZE = 16
SALT_SIZE = 16
NONCE_PREFIX_SIZE = 7
TAG_SIZE = 16
_HEADER = struct.Struct(f">8sBBI{KEY_ID_SIZE}s{SALT_SIZE}s{NONCE_PREFIX_SIZE}s")
HEADER_SIZE = _HEADER.size
MAX_FRAMES = 2**32 - 1


def is_encrypted(data: bytes) -> bool:
    """True when ``data`` starts like an object in this format (any version)."""
    return data[: len(MAGIC)] == MAGIC


def header_key_id(data: bytes) -> str | None:
    """The key id (hex) in the clear header of an encrypted object, None when ``data``
    is not encrypted; no key needed (GC uses it to tell which key an index needs).

    Only a hint: nothing is authenticated until the object is opened with the key.
    """
    if not is_encrypted(data) or len(data) < HEADER_SIZE:
        return None
    return _HEADER.unpack(data[:HEADER_SIZE])[4].hex()  # type: ignore[no-any-return]


class DataKey:
    """A repository's random 256-bit data key and its public id.

    The key bytes are never part of ``repr``/``str`` and never leave this
    object except through :mod:`db_backup.crypto.keys` (wrapped under a passphrase).
    """

    __slots__ = ("key_id", "_secret", "_id_key")

    def __init__(self, key_id: bytes, secret: bytes) -> None:
        if len(key_id) != KEY_ID_SIZE or len(secret) != KEY_SIZE:
            raise EncryptionError("a data key needs a 16-byte id and 32 secret bytes")
        self.key_id = key_id
        self._secret = secret
        self._id_key = _hkdf(secret, b"", b"db-backup chunk-id v1")

    @classmethod
    def generate(cls) -> DataKey:
        """A fresh random key with a fresh random id."""
        return cls(os.urandom(KEY_ID_SIZE), os.urandom(KEY_SIZE))

    @property
    def key_id_hex(self) -> str:
        """The key id as it appears in manifests and key file names."""
        return self.key_id.hex()

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id_hex!r}, secret=<hidden>)"

    __str__ = __repr__

    def secret_bytes(self) -> bytes:
        """The raw key, for wrapping only (db_backup.crypto.keys). Never log or store it."""
        return self._secret

    def object_key(self, salt: bytes) -> AESGCM:
        """The per-object cipher for ``salt``."""
        return AESGCM(_hkdf(self._secret, salt, b"db-backup object v1" + self.key_id))

    # -- bytes API -------------------------------------------------------------
    def seal(self, data: bytes, frame_size: int = DEFAULT_FRAME_SIZE) -> bytes:
        """Encrypt a small object whole (same format as the streams)."""
        out = io.BytesIO()
        with self.encrypt_to(out, frame_size) as writer:
            writer.write(data)
        return out.getvalue()

    def open(self, blob: bytes, what: str = "object") -> bytes:
        """Decrypt and authenticate a sealed object; EncryptionError when altered."""
        reader = DecryptingReader(io.BytesIO(blob), self, what)
        return b"".join(iter(lambda: reader.read(DEFAULT_FRAME_SIZE), b""))

    def chunk_id(self, data: bytes | memoryview) -> str:
        """A keyed sha256 (HMAC) of ``data``: stable for dedup, reveals nothing without the key."""
        return hmac.new(self._id_key, data, hashlib.sha256).hexdigest()

    # -- streams ---------------------------------------------------------------
    @contextlib.contextmanager
    def encrypt_to(
        self, below: BinaryIO, frame_size: int = DEFAULT_FRAME_SIZE
    ) -> Iterator[EncryptingWriter]:
        """A writer that encrypts into ``below``; finished (last frame) on clean exit."""
        writer = EncryptingWriter(below, self, frame_size)
        yield writer
        writer.close()

    def decrypt_from(self, source: BinaryIO, what: str = "object") -> io.BufferedReader:
        """A readable of the plaintext of ``source``; EncryptionError on any tampering."""
        return io.BufferedReader(DecryptingReader(source, self, what), DEFAULT_FRAME_SIZE)

    def encode_layer(self) -> tuple[str, Callable[[BinaryIO], BinaryIO]]:
        """A (name, factory) pair for :class:`db_backup.pipeline.DumpSink` ``layers``."""
        return ALGORITHM, lambda below: EncryptingWriter(below, self)  # type: ignore[return-value]

    def decode_layer(self, what: str = "object") -> Callable[[BinaryIO], BinaryIO]:
        """A decode layer for :func:`db_backup.pipeline.open_decoded`."""
        return lambda source: DecryptingReader(source, self, what)  # type: ignore[return-value]


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt or None, info=info).derive(
        secret
    )


def _nonce(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if final else 0)


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">QB", index, 1 if final else 0)


class EncryptingWriter(io.RawIOBase):
    """Writable stream: plaintext in, header and sealed frames out to ``below``.

    ``close()`` seals the last frame and does not close ``below``. A frame is
    only sealed once more data follows it, so the last one can carry the final flag.
    """

    def __init__(self, below: BinaryIO, key: DataKey, frame_size: int = DEFAULT_FRAME_SIZE) -> None:
        _check_frame_size(frame_size)
        self._below = below
        self._frame_size = frame_size
        salt, self._prefix = os.urandom(SALT_SIZE), os.urandom(NONCE_PREFIX_SIZE)
        self._cipher = key.object_key(salt)
        self._header = _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            ALGORITHM_IDS[ALGORITHM],
            frame_size,
            key.key_id,
            salt,
            self._prefix,
        )
        self._buffer = bytearray()
        self._index = 0
        self._finished = False
        below.write(self._header)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self._finished:
            raise ValueError("write to a finished encrypted stream")
        self._buffer += data
        size = self._frame_size
        if len(self._buffer) > size:
            view = memoryview(self._buffer)
            start = 0
            while len(self._buffer) - start > size:
                self._seal(view[start : start + size], final=False)
                start += size
            view.release()
            del self._buffer[:start]
        return len(data)

    def _seal(self, plain: bytes | memoryview, final: bool) -> None:
        if self._index > MAX_FRAMES:
            raise EncryptionError("encrypted stream is too long (over 2^32 frames)")
        nonce = _nonce(self._prefix, self._index, final)
        self._below.write(
            self._cipher.encrypt(nonce, plain, _aad(self._header, self._index, final))
        )
        self._index += 1

    def close(self) -> None:
        if not self._finished and not self.closed:
            self._finished = True
            self._seal(bytes(self._buffer), final=True)
            self._buffer.clear()
        super().close()


class DecryptingReader(io.RawIOBase):
    """Readable stream of the plaintext; every frame is authenticated before use.

    Raises EncryptionError naming ``what`` on an unknown version, another key,
    a truncated, reordered or altered stream.
    """

    def __init__(self, source: BinaryIO, key: DataKey, what: str) -> None:
        self._source = source
        self._key = key
        self._what = what
        self._header = b""
        self._cipher: AESGCM | None = None
        self._prefix = b""
        self._frame_size = 0
        self._index = 0
        self._buf = bytearray()
        self._have = 0
        self._plain = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._plain and not self._done:
            self._next_frame()
        n = min(len(buffer), len(self._plain))
        buffer[:n] = self._plain[:n]
        self._plain = self._plain[n:]
        return n

    def _read_into(self, buf: bytearray, have: int) -> int:
        """Fill ``buf`` from ``have`` on; return how many bytes it holds (short at EOF)."""
        while have < len(buf):
            block = self._source.read(len(buf) - have)
            if not block:
                break
            buf[have : have + len(block)] = block
            have += len(block)
        return have

    def _start(self) -> None:
        header = bytearray(HEADER_SIZE)
        got = self._read_into(header, 0)
        self._header = bytes(header[:got])
        self._cipher, self._prefix, self._frame_size = parse_header(
            self._header, self._key, self._what
        )
        # one sealed frame plus one byte of look-ahead (is this frame the last?)
        self._buf = bytearray(self._frame_size + TAG_SIZE + 1)
        self._have = 0

    def _next_frame(self) -> None:
        if self._cipher is None:
            self._start()
        assert self._cipher is not None
        full = self._frame_size + TAG_SIZE
        got = self._read_into(self._buf, self._have)
        final = got <= full
        sealed_len = min(got, full)
        if sealed_len < TAG_SIZE:
            raise EncryptionError(
                f"{self._what} is truncated: encrypted frame {self._index} is incomplete"
            )
        try:
            plain = self._cipher.decrypt(
                _nonce(self._prefix, self._index, final),
                memoryview(self._buf)[:sealed_len],
                _aad(self._header, self._index, final),
            )
        except InvalidTag as exc:
            raise EncryptionError(
                f"{self._what} failed authentication at encrypted frame {self._index}: "
                "it was truncated, reordered or altered after it was written"
            ) from exc
        if not final:
            self._buf[0] = self._buf[full]
        self._have = 0 if final else 1
        self._index += 1
        self._plain = memoryview(plain)
        self._done = final


def parse_header(header: bytes, key: DataKey, what: str) -> tuple[AESGCM, bytes, int]:
    """Check a header against ``key``; return (object cipher, nonce prefix, frame size)."""
    if len(header) < len(MAGIC) + 1 or header[: len(MAGIC)] != MAGIC:
        raise EncryptionError(f"{what} is not encrypted by db-backup (no encryption header)")
    version = header[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise EncryptionError(
            f"{what} has encryption format version {version}; this db-backup reads version "
            f"{FORMAT_VERSION} only (upgrade db-backup to read it)"
        )
    if len(header) < HEADER_SIZE:
        raise EncryptionError(f"{what} is truncated inside its encryption header")
    _magic, _v, algorithm, frame_size, key_id, salt, prefix = _HEADER.unpack(header)
    if algorithm not in ALGORITHM_IDS.values():
        raise EncryptionError(f"{what} uses unknown encryption algorithm id {algorithm}")
    if not MIN_FRAME_SIZE <= frame_size <= MAX_FRAME_SIZE:
        raise EncryptionError(f"{what} has an invalid encryption frame size {frame_size}")
    if key_id != key.key_id:
        raise EncryptionError(
            f"{what} was encrypted with key {key_id.hex()}, not with the key given "
            f"({key.key_id_hex}): wrong key"
        )
    return key.object_key(salt), prefix, frame_size


def _check_frame_size(frame_size: int) -> None:
    if not MIN_FRAME_SIZE <= frame_size <= MAX_FRAME_SIZE:
        raise EncryptionError(
            f"encryption frame size {frame_size} is outside {MIN_FRAME_SIZE}..{MAX_FRAME_SIZE}"
        )
