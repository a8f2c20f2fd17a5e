"""Upload and download throughput of db-backup's storage adapters against each
emulator, next to the same transfer done with the bare SDK in the same run.

    .venv/bin/python bench/bench_storage.py                 # 1 GiB, s3 gcs azure
    .venv/bin/python bench/bench_storage.py --size 256MiB --backends s3

Each transfer runs in its own child process so its peak RSS (ru_maxrss) is its
own. Both sides use the same part size and concurrency (DB_BACKUP_PART_SIZE,
DB_BACKUP_UPLOAD_CONCURRENCY or their defaults). The adapter additionally
hashes every byte (sha256 of the file, and per part sha256 / md5) and checks
what the store reports; the bare SDK does whatever it does by default.
ratio = adapter seconds / bare SDK seconds (<= 1.1 is the target).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from db_backup.storage.cloud import TransferSettings, parse_size  # noqa: E402
from tests.cloud import services  # noqa: E402

BUCKET = "bench-bucket"


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 8 << 20)
            fh.write(os.urandom(n))
            left -= n


# -- one transfer, in a child process ------------------------------------------------------
def child(backend: str, side: str, direction: str, endpoint: str, src: str, dest: str) -> None:
    settings = TransferSettings.from_env()
    t0 = time.perf_counter()
    run = {"s3": _s3, "gcs": _gcs, "azure": _azure}[backend]
    run(side, direction, endpoint, Path(src), Path(dest), settings)
    seconds = time.perf_counter() - t0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mib": rss_mib}))


def _s3(side: str, direction: str, endpoint: str, src: Path, dest: Path, s: TransferSettings):
    from db_backup.storage.s3 import S3Storage, s3_client

    client = s3_client(s, endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x")
    key = f"{side}/obj"
    if side == "ours":
        store = S3Storage(client, BUCKET, "", s)
        store.put_file(key, src) if direction == "up" else store.get_file(key, dest)
        return
    from boto3.s3.transfer import TransferConfig

    cfg = TransferConfig(
        multipart_threshold=s.part_size,
        multipart_chunksize=s.part_size,
        max_concurrency=s.concurrency,
    )
    if direction == "up":
        client.upload_file(str(src), BUCKET, key, Config=cfg)
    else:
        client.download_file(BUCKET, key, str(dest), Config=cfg)


def _gcs(side: str, direction: str, endpoint: str, src: Path, dest: Path, s: TransferSettings):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from db_backup.storage.gcs import GcsStorage

    client = storage.Client(
        project="bench",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )
    key = f"{side}/obj"
    if side == "ours":
        store = GcsStorage(client, BUCKET, "", s)
        store.put_file(key, src) if direction == "up" else store.get_file(key, dest)
        return
    blob = client.bucket(BUCKET).blob(key, chunk_size=s.part_size)
    if direction == "up":
        blob.upload_from_filename(str(src))
    else:
        blob.download_to_filename(str(dest))


def _azure(side: str, direction: str, endpoint: str, src: Path, dest: Path, s: TransferSettings):
    from db_backup.storage.azure import AzureBlobStorage, container_client

    conn = services.azurite_connection_string(endpoint)
    container = container_client(BUCKET, s, connection_string=conn)
    key = f"{side}/obj"
    if side == "ours":
        store = AzureBlobStorage(container, "", s)
        store.put_file(key, src) if direction == "up" else store.get_file(key, dest)
        return
    blob = container.get_blob_client(key)
    if direction == "up":
        with open(src, "rb") as fh:
            blob.upload_blob(fh, overwrite=True, max_concurrency=s.concurrency)
    else:
        with open(dest, "wb") as fh:
            blob.download_blob(max_concurrency=s.concurrency).readinto(fh)


# -- the driver ---------------------------------------------------------------------------
def transfer(backend: str, side: str, direction: str, endpoint: str, src: Path, dest: Path):
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            backend,
            side,
            direction,
            endpoint,
            str(src),
            str(dest),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{backend} {side} {direction} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def emulator(backend: str):
    return {"s3": services.moto_server, "gcs": services.gcs_emulator, "azure": services.azurite}[
        backend
    ]()


def create_bucket(backend: str, endpoint: str) -> None:
    s = TransferSettings()
    if backend == "s3":
        from db_backup.storage.s3 import s3_client

        s3_client(
            s, endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x"
        ).create_bucket(Bucket=BUCKET)
    elif backend == "gcs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        storage.Client(
            project="bench",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        ).create_bucket(BUCKET)
    else:
        from db_backup.storage.azure import container_client

        conn = services.azurite_connection_string(endpoint)
        container_client(BUCKET, s, connection_string=conn).create_container()


def bench_backend(backend: str, src: Path, size: int, work: Path) -> list[dict[str, object]]:
    rows = []
    with emulator(backend) as svc:
        create_bucket(backend, svc.endpoint)
        for direction in ("up", "down"):
            results = {}
            for side in ("bare", "ours"):  # bare first: the emulator warms up on it
                dest = work / f"{backend}-{side}.out"
                results[side] = transfer(backend, side, direction, svc.endpoint, src, dest)
                if direction == "down":
                    assert dest.stat().st_size == size, f"{backend} {side}: short download"
                    dest.unlink()
            rows.append(row(backend, direction, size, results))
            print(format_row(rows[-1]), flush=True)
    return rows


def row(
    backend: str, direction: str, size: int, r: dict[str, dict[str, float]]
) -> dict[str, object]:
    mib = size / 2**20
    return {
        "backend": backend,
        "direction": direction,
        "bare_s": r["bare"]["seconds"],
        "ours_s": r["ours"]["seconds"],
        "bare_mib_s": mib / r["bare"]["seconds"],
        "ours_mib_s": mib / r["ours"]["seconds"],
        "ratio": r["ours"]["seconds"] / r["bare"]["seconds"],
        "bare_rss_mib": r["bare"]["rss_mib"],
        "ours_rss_mib": r["ours"]["rss_mib"],
    }


def format_row(r: dict[str, object]) -> str:
    sides = [
        f"{side} {r[f'{side}_s']:7.1f} s {r[f'{side}_mib_s']:7.1f} MiB/s "
        f"rss {r[f'{side}_rss_mib']:6.0f} MiB"
        for side in ("bare", "ours")
    ]
    return f"{r['backend']:<6} {r['direction']:<5} {' | '.join(sides)} | ratio {r['ratio']:.2f}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:8])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB", help="object size (default 1GiB)")
    parser.add_argument("--backends", default="s3,gcs,azure")
    args = parser.parse_args()
    size = parse_size(args.size, 1 << 30)
    s = TransferSettings.from_env()
    print(
        f"size {size / 2**20:.0f} MiB, part {s.part_size / 2**20:.0f} MiB, "
        f"concurrency {s.concurrency}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="db-backup-bench-") as tmp:
        work = Path(tmp)
        src = work / "payload.bin"
        make_file(src, size)
        rows = []
        for backend in args.backends.split(","):
            rows += bench_backend(backend.strip(), src, size, work)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
