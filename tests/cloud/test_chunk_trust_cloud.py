"""A corrupted chunk is never reused by a backup (issue 12 item 4), on the S3 and GCS emulators."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests import chunk_trust_cases as cases
from tests.cloud import services
from tests.cloud.conftest import open_store, unique
from tests.sqlite_helpers import make_shop

KINDS = ["s3", "gcs"]


@pytest.mark.parametrize("kind", KINDS)
def test_verify_marks_the_chunk_and_the_next_backup_uploads_it_again(
    kind: str, cloud: Callable[[str], tuple[services.Service, str]], tmp_path: Path
) -> None:
    """Guards: on a cloud store too, a chunk verify found corrupted is uploaded again."""
    svc, bucket = cloud(kind)
    store = open_store(kind, svc.endpoint, bucket, unique("trust"))
    db = make_shop(tmp_path / "shop.db", rows=8000)
    cases.verify_then_backup_reuploads_the_bad_chunk(store, db, tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_backup_refuses_to_commit_on_a_chunk_found_bad_while_it_ran(
    kind: str, cloud: Callable[[str], tuple[services.Service, str]], tmp_path: Path
) -> None:
    """Guards: on a cloud store too, no manifest points at a chunk recorded bad."""
    svc, bucket = cloud(kind)
    store = open_store(kind, svc.endpoint, bucket, unique("trust"))
    db = make_shop(tmp_path / "shop.db", rows=8000)
    cases.no_commit_on_a_chunk_found_bad_meanwhile(store, db, tmp_path)
