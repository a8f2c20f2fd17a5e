"""The framed encryption format: round trips, and every kind of tampering refused."""

from __future__ import annotations

import io
import os

import pytest

from db_backup.crypto import stream as crypto
from db_backup.crypto.stream import HEADER_SIZE, MIN_FRAME_SIZE, TAG_SIZE, DataKey
from db_backup.errors import EncryptionError

FRAME = MIN_FRAME_SIZE  # small frames: many of them in a few KiB
SEALED_FRAME = FRAME + TAG_SIZE


@pytest.fixture(scope="module")
def key() -> DataKey:
    return DataKey.generate()


def _seal(key: DataKey, data: bytes) -> bytes:
    return key.seal(data, frame_size=FRAME)


def _frames(blob: bytes) -> tuple[bytes, list[bytes]]:
    header, body = blob[:HEADER_SIZE], blob[HEADER_SIZE:]
    return header, [body[i : i + SEALED_FRAME] for i in range(0, len(body), SEALED_FRAME)]


@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME, 3 * FRAME + 17])
def test_round_trip_at_frame_boundaries(key: DataKey, size: int) -> None:
    data = os.urandom(size)
    blob = _seal(key, data)
    assert key.open(blob, "obj") == data
    # one final frame always exists; full frames before it
    frames = max(1, -(-size // FRAME))
    assert len(blob) == HEADER_SIZE + size + frames * TAG_SIZE


def test_streaming_writer_and_reader_match_bytes_api(key: DataKey) -> None:
    data = os.urandom(5 * FRAME + 123)
    out = io.BytesIO()
    with key.encrypt_to(out, FRAME) as writer:
        for i in range(0, len(data), 1000):  # odd-sized writes
            writer.write(data[i : i + 1000])
    reader = key.decrypt_from(io.BytesIO(out.getvalue()), "stream")
    got = b"".join(iter(lambda: reader.read(777), b""))
    assert got == data


def test_default_frame_size_round_trip(key: DataKey) -> None:
    data = os.urandom(2 * crypto.DEFAULT_FRAME_SIZE + 5)
    assert key.open(key.seal(data)) == data


def test_same_plaintext_encrypts_differently(key: DataKey) -> None:
    assert _seal(key, b"same") != _seal(key, b"same")


def test_no_plaintext_in_ciphertext(key: DataKey) -> None:
    secret = b"customer card 4111-1111-1111-1111 " * 500
    blob = _seal(key, secret)
    assert b"4111-1111" not in blob


def test_wrong_key_is_named(key: DataKey) -> None:
    blob = _seal(key, b"data")
    with pytest.raises(EncryptionError, match="wrong key"):
        DataKey.generate().open(blob, "obj")


def test_same_id_other_secret_fails_authentication(key: DataKey) -> None:
    impostor = DataKey(key.key_id, os.urandom(32))
    with pytest.raises(EncryptionError, match="failed authentication"):
        impostor.open(_seal(key, b"data"), "obj")


@pytest.mark.parametrize(
    "cut", [0, 5, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 10, HEADER_SIZE + SEALED_FRAME]
)
def test_truncation_is_detected(key: DataKey, cut: int) -> None:
    blob = _seal(key, os.urandom(3 * FRAME))
    with pytest.raises(EncryptionError):
        key.open(blob[:cut], "obj")


def test_cut_at_every_frame_boundary_is_detected(key: DataKey) -> None:
    header, frames = _frames(_seal(key, os.urandom(4 * FRAME + 9)))
    for keep in range(1, len(frames)):
        with pytest.raises(EncryptionError, match="failed authentication"):
            key.open(header + b"".join(frames[:keep]), "obj")


def test_dropped_frame_is_detected(key: DataKey) -> None:
    header, frames = _frames(_seal(key, os.urandom(4 * FRAME + 9)))
    with pytest.raises(EncryptionError, match="frame 1"):
        key.open(header + frames[0] + b"".join(frames[2:]), "obj")


def test_reordered_frames_are_detected(key: DataKey) -> None:
    header, frames = _frames(_seal(key, os.urandom(4 * FRAME + 9)))
    frames[1], frames[2] = frames[2], frames[1]
    with pytest.raises(EncryptionError, match="frame 1"):
        key.open(header + b"".join(frames), "obj")


def test_duplicated_frame_is_detected(key: DataKey) -> None:
    header, frames = _frames(_seal(key, os.urandom(4 * FRAME + 9)))
    with pytest.raises(EncryptionError):
        key.open(header + frames[0] + frames[0] + b"".join(frames[1:]), "obj")


def test_appended_bytes_are_detected(key: DataKey) -> None:
    blob = _seal(key, os.urandom(2 * FRAME))
    with pytest.raises(EncryptionError):
        key.open(blob + b"\x00" * 20, "obj")


def test_frames_swapped_between_objects_are_detected(key: DataKey) -> None:
    h1, f1 = _frames(_seal(key, os.urandom(2 * FRAME)))
    _h2, f2 = _frames(_seal(key, os.urandom(2 * FRAME)))
    with pytest.raises(EncryptionError, match="frame 0"):
        key.open(h1 + f2[0] + f1[1], "obj")


def test_every_bit_flip_position_class_is_detected(key: DataKey) -> None:
    blob = _seal(key, os.urandom(2 * FRAME + 50))
    # magic, version, algorithm, frame size, key id, salt, nonce prefix, frames, final tag
    positions = [0, 8, 9, 12, 14, 30, 46, HEADER_SIZE, HEADER_SIZE + FRAME, len(blob) - 1]
    for pos in positions:
        flipped = bytearray(blob)
        flipped[pos] ^= 0x01
        with pytest.raises(EncryptionError):
            key.open(bytes(flipped), f"flip@{pos}")


def test_unknown_version_is_refused_before_decrypting(key: DataKey) -> None:
    blob = bytearray(_seal(key, b"data"))
    blob[len(crypto.MAGIC)] = 2
    with pytest.raises(EncryptionError, match="format version 2.*upgrade"):
        key.open(bytes(blob), "obj")


def test_not_encrypted_input_is_named(key: DataKey) -> None:
    with pytest.raises(EncryptionError, match="not encrypted by db-backup"):
        key.open(b"plain zstd bytes, not ours" * 10, "obj")
    assert crypto.is_encrypted(_seal(key, b"x"))
    assert not crypto.is_encrypted(b"plain")


def test_frame_size_out_of_range_is_refused(key: DataKey) -> None:
    with pytest.raises(EncryptionError, match="frame size"):
        key.seal(b"x", frame_size=16)


def test_key_never_shows_its_bytes(key: DataKey) -> None:
    text = repr(key) + str(key)
    assert key.secret_bytes().hex() not in text
    assert "hidden" in text and key.key_id_hex in text


def test_chunk_id_is_keyed_and_stable(key: DataKey) -> None:
    import hashlib

    data = b"chunk contents"
    assert key.chunk_id(data) == key.chunk_id(data)
    assert key.chunk_id(data) != DataKey.generate().chunk_id(data)
    assert key.chunk_id(data) != hashlib.sha256(data).hexdigest()


def test_pipeline_layers_round_trip(key: DataKey, tmp_path: object) -> None:
    from pathlib import Path

    from db_backup.pipeline import DumpSink, open_decoded

    staging = Path(str(tmp_path))
    sink = DumpSink(staging, layers=[key.encode_layer()])
    data = b"row 42: Zoe, 12.50\n" * 100_000
    with sink.open("database", "x.sql", "sql") as out:
        out.write(data)
    obj = sink.objects[0]
    assert obj.encoding == ["zstd", "aes-256-gcm"]
    stored = obj.path.read_bytes()
    assert crypto.is_encrypted(stored) and b"row 42" not in stored
    layers = [key.decode_layer("x.sql")]
    with open_decoded(obj.path, "x.sql", obj.raw_size, obj.raw_sha256, layers) as stream:
        assert stream.read() == data
