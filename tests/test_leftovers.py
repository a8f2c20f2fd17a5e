"""Leftovers of killed runs (issue 12 item 14): recognisable names, swept by the next run
and by ``db-backup gc --leftovers``, never a live run's.

The end-to-end tests SIGKILL (or SIGSTOP) a real ``db-backup`` subprocess at the moment its
staging folder, SQLite restore file or PostgreSQL scratch database exists.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from db_backup import leftovers as lo
from tests import server_helpers as h
from tests.conftest import db_backup_executable, need_service
from tests.sqlite_helpers import dump_rows

DAY = 24 * 3600
PG_URL = "postgresql://root@127.0.0.1:5432/{}"


# -- names and judgement ----------------------------------------------------------------------
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A process of this host that is running (started before the tests make names)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    time.sleep(0.2)
    yield proc.pid
    proc.kill()
    proc.wait()


def test_names_carry_host_pid_and_time_and_parse_back() -> None:
    """Guards: every leftover kind is named with its owner so the next run recognises it."""
    now = int(time.time())
    for name in (lo.staging_name("backup"), lo.restore_file_name("shop.db")):
        assert f"-{lo.host_tag()}-{os.getpid()}-" in name
    scratch = lo.scratch_database_name("x" * 80)
    assert len(scratch.encode()) <= 63 and f"_{os.getpid()}_" in scratch
    item = lo.classify_database(scratch, "h:1")
    assert item is not None and item.owner is not None
    assert item.owner.pid == os.getpid() and abs(item.owner.stamp - now) <= 2
    assert not item.stale and "still running" in item.reason
    assert lo.classify_database("orders_dbb", "h:1") is None


def test_judge_removes_only_what_no_running_process_owns(live_pid: int) -> None:
    """Guards: stale = process gone (or pid reused), or another host's/unowned and > 1 day."""
    here, now = lo.host_tag(), int(time.time())
    gone = dead_pid()
    assert lo.judge(lo.Owner(here, gone, now), now) == (True, f"its process {gone} is gone")
    assert lo.judge(lo.Owner(here, live_pid, now), now)[0] is False
    # a live run's things are kept however old they look (a restore running for days)
    assert lo.judge(lo.Owner(here, live_pid, now), now - 3 * DAY, now)[0] is False
    reused = lo.Owner(here, live_pid, now - 3600)  # that pid started after the name was made
    stale, reason = lo.judge(reused, reused.stamp)
    assert stale and "another" in reason
    other = lo.Owner("zzzzzz", live_pid, now)
    assert lo.judge(other, now - 2 * DAY)[0] and not lo.judge(other, now - 3600)[0]
    assert lo.judge(None, now - 2 * DAY)[0] and not lo.judge(None, now - 60)[0]


def test_staging_dir_sweeps_dead_runs_folders_and_keeps_live_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_pid: int
) -> None:
    """Guards: a new staging folder is preceded by a sweep of stale ones, live ones kept.

    Before the fix staging folders were ``db-backup-backup-<random>`` and stayed forever.
    """
    from db_backup.staging import staging_dir

    monkeypatch.setenv("DB_BACKUP_STAGING", str(tmp_path))
    here, now = lo.host_tag(), int(time.time())
    dead = tmp_path / f"db-backup-backup-{here}-{dead_pid()}-{now}-abcd"
    live = tmp_path / f"db-backup-restore-{here}-{live_pid}-{now}-abcd"
    old = tmp_path / "db-backup-drill-k3j_x9a2"  # an older db-backup's name, two days old
    mine = tmp_path / "db-backup-notes"  # not ours
    for folder in (dead, live, old, mine):
        folder.mkdir()
        (folder / "dump.zst").write_bytes(b"x" * 1000)
    os.utime(old, (now - 2 * DAY, now - 2 * DAY))
    with staging_dir("backup") as path:
        assert path.name.startswith(f"db-backup-backup-{here}-{os.getpid()}-")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [live.name, mine.name, path.name]
        )
    assert not path.exists()


# -- killing real runs ----------------------------------------------------------------------
def start(prefect_api: str, cwd: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start ``db-backup ARGS`` against the session's Prefect API."""
    full = {**os.environ, "PREFECT_API_URL": prefect_api, **env}
    return subprocess.Popen(
        [db_backup_executable(), *args], cwd=cwd, env=full, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def stop_when(proc: subprocess.Popen[str], ready: Callable[[], bool], sig: int) -> None:
    """Send ``sig`` to ``proc`` the moment ``ready()`` holds; fail if it finished first."""
    deadline = time.monotonic() + 300
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended ({proc.returncode}) before the moment came: {err[-800:]}")
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.003)
    os.kill(proc.pid, sig)
    if sig == signal.SIGKILL:
        proc.communicate()


def run(prefect_api: str, cwd: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = start(prefect_api, cwd, *args, env=env)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def make_big(path: Path, megabytes: int = 24) -> Path:
    """A SQLite file of incompressible rows, big enough that a run takes a moment."""
    rng = random.Random(7)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    conn.executemany(
        "INSERT INTO blobs(data) VALUES (?)",
        ((rng.randbytes(64 * 1024),) for _ in range(megabytes * 16)),
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def work(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder with a big SQLite database and the env every run there gets."""
    make_big(tmp_path / "big.db")
    env = {"DB_BACKUP_STAGING": str(tmp_path / "staging"), "DB_BACKUP_STORAGE": "store"}
    return tmp_path, env


def test_killed_backup_leaves_a_staging_folder_the_next_run_and_gc_remove(
    prefect_api: str, work: tuple[Path, dict[str, str]]
) -> None:
    """Guards: a SIGKILLed backup's staging folder is listed by `gc --leftovers --dry-run`,
    removed by `gc --leftovers`, and (another one) by the next backup itself."""
    tmp, env = work
    staging = tmp / "staging"
    args = ("backup", "--type", "sqlite", "--database", "big.db")
    for attempt in range(2):
        proc = start(prefect_api, tmp, *args, env=env)
        stop_when(proc, lambda: any(staging.glob("db-backup-backup-*/*")), signal.SIGKILL)
        [left] = list(staging.glob("db-backup-backup-*"))
        assert f"-{proc.pid}-" in left.name
        if attempt == 0:
            code, out, err = run(prefect_api, tmp, "gc", "--leftovers", "--dry-run", env=env)
            assert code == 0, err
            assert f"would remove staging {left}" in out and f"process {proc.pid} is gone" in out
            assert left.exists()
            code, out, err = run(prefect_api, tmp, "gc", "--leftovers", env=env)
            assert code == 0 and f"removed staging {left}" in out, err
            assert not left.exists()
        else:
            code, out, err = run(prefect_api, tmp, *args, env=env)
            assert code == 0, err
            assert list(staging.iterdir()) == []
    assert len(list((tmp / "store").rglob("manifest.json"))) == 1  # only the run not killed


def test_killed_restore_file_is_swept_and_a_live_restore_is_never_touched(
    prefect_api: str, work: tuple[Path, dict[str, str]]
) -> None:
    """Guards: the hidden `.copy.db.restore-*` file of a SIGKILLed restore is removed by the
    next restore of that target; while a restore runs (here: stopped), gc keeps its file
    and the restore then completes equal to the source."""
    tmp, env = work
    code, _, err = run(
        prefect_api, tmp, "backup", "--type", "sqlite", "--database", "big.db", env=env
    )
    assert code == 0, err
    args = ("restore", "latest", "--name", "big", "--to", "out/copy.db")
    (tmp / "out").mkdir()

    def temp_files() -> list[Path]:
        return list((tmp / "out").glob(".copy.db.restore-*"))

    proc = start(prefect_api, tmp, *args, env=env)
    stop_when(proc, lambda: bool(temp_files()), signal.SIGKILL)
    [left] = temp_files()
    assert f"-{proc.pid}-" in left.name and not (tmp / "out" / "copy.db").exists()

    live = start(prefect_api, tmp, *args, env=env)
    stop_when(live, lambda: any(f.name != left.name for f in temp_files()), signal.SIGSTOP)
    try:
        assert not left.exists(), "the next restore of the target removes the dead one's file"
        [mine] = temp_files()
        code, out, err = run(prefect_api, tmp, "gc", "--leftovers", "--in", "out", env=env)
        assert code == 0, err
        assert f"kept restore-file {mine}" in out and f"process {live.pid} is still running" in out
        assert mine.exists()
    finally:
        os.kill(live.pid, signal.SIGCONT)
    out, err = live.communicate(timeout=600)
    assert live.returncode == 0, err
    assert dump_rows(tmp / "out" / "copy.db") == dump_rows(tmp / "big.db")
    assert temp_files() == []


def test_killed_postgres_force_restore_leaves_a_scratch_database_gc_drops(
    prefect_api: str, tmp_path: Path
) -> None:
    """Guards: the `<db>_dbb_<owner>` database of a SIGKILLed `restore --force` is named
    with the dead pid and dropped by `gc --leftovers --server`, the target left as it was."""
    need_service(h.pg_available(), "PostgreSQL on 127.0.0.1:5432")
    source, target = h.unique("lo_src"), h.unique("lo_tgt")
    env = {"DB_BACKUP_STAGING": str(tmp_path / "staging"), "DB_BACKUP_STORAGE": "store"}
    try:
        h.pg_create(source)
        h.pg_make_rich(source)
        with h.pg_connect(source) as conn:
            conn.execute(
                "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS t "
                "FROM generate_series(1, 100000) g"
            )
        h.pg_create(target)
        h.pg_make_rich(target)
        before = h.pg_snapshot(target)
        code, _, err = run(prefect_api, tmp_path, "backup", "--type", "postgres", "--url",
                           PG_URL.format(source), "--name", "src", env=env)  # fmt: skip
        assert code == 0, err
        proc = start(prefect_api, tmp_path, "restore", "latest", "--name", "src", "--to",
                     PG_URL.format(target), "--force", env=env)  # fmt: skip
        stop_when(proc, lambda: bool(scratch_of(target)), signal.SIGKILL)
        [left] = scratch_of(target)
        assert f"_{proc.pid}_" in left
        wait_unused(left)
        code, out, err = run(prefect_api, tmp_path, "gc", "--leftovers", "--server",
                             PG_URL.format("postgres"), env=env)  # fmt: skip
        assert code == 0, err
        assert f"removed scratch-database database {left}" in out, out
        assert scratch_of(target) == []
        assert h.pg_snapshot(target) == before
    finally:
        for name in (source, target, *scratch_of(target)):
            h.pg_drop(name)


def scratch_of(target: str) -> list[str]:
    with h.pg_connect("postgres") as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{target[:28]}\\_dbb\\_%",)
        ).fetchall()
    return [r[0] for r in rows]


def wait_unused(database: str) -> None:
    """Wait until the killed run's pg_restore child has let go of ``database``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with h.pg_connect("postgres") as conn:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
            ).fetchone()
        if busy and busy[0] == 0:
            return
        time.sleep(0.2)
    pytest.fail(f"{database} still has connections a minute after the kill")
