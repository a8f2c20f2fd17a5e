"""scripts/services.sh on a fresh host, simulated with throwaway servers.

A fresh Debian host has a PostgreSQL cluster whose pg_hba.conf asks for a password on
127.0.0.1 (scram-sha-256) and a MariaDB whose root logs in only over the socket
(unix_socket). These tests build exactly that on free ports (``pg_createcluster`` with
Debian's defaults, ``mariadb-install-db`` with its defaults), run the script's own
functions against them, and check what the tests need afterwards: root logs in over
127.0.0.1 without a password, as a superuser. They also check that a server that does
not come up makes the script fail loudly, with the server's log, and that the shared,
already configured servers are left exactly as they were.

The shared servers on 5432/3306 are only ever given the no-op form (their login
already works, so nothing is changed there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import server_helpers as h
from tests.conftest import need_service

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "services.sh"
PG_SOCKETS = "/var/run/postgresql"


def services(*call: str) -> subprocess.CompletedProcess[str]:
    """Run one function of scripts/services.sh (sourced, so its main part does not run)."""
    return subprocess.run(
        ["bash", "-c", 'source "$0" && "$@"', str(SCRIPT), *call],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def pg_root_login(port: int) -> subprocess.CompletedProcess[str]:
    """``psql -h 127.0.0.1 -U root`` with no password available; prints rolsuper."""
    return subprocess.run(
        ["psql", "-X", "-w", "-h", "127.0.0.1", "-p", str(port), "-U", "root", "-d", "postgres"]
        + ["-Atc", "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSFILE": "/dev/null"},
        timeout=30,
    )


def my_root_login(port: int) -> subprocess.CompletedProcess[str]:
    """``mariadb -h 127.0.0.1 -u root`` over TCP with no password; prints root's grants."""
    return subprocess.run(
        ["mariadb", "--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-P", str(port)]
        + ["-u", "root", "-Nse", "SHOW GRANTS"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _need_root_and(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    need_service(
        os.geteuid() == 0 and not missing,
        f"root and {', '.join(tools)} (throwaway servers for scripts/services.sh)",
    )


# -- PostgreSQL ----------------------------------------------------------------------------
@dataclass
class Cluster:
    version: str
    name: str
    port: int

    @property
    def conf(self) -> Path:
        return Path("/etc/postgresql") / self.version / self.name

    @property
    def log(self) -> Path:
        return Path(f"/var/log/postgresql/postgresql-{self.version}-{self.name}.log")


@pytest.fixture
def fresh_cluster() -> Iterator[Cluster]:
    """A stopped Debian cluster made by ``pg_createcluster`` with the stock pg_hba.conf."""
    _need_root_and("pg_createcluster", "pg_dropcluster", "pg_ctlcluster", "psql")
    version = sorted(os.listdir("/usr/lib/postgresql"), key=int)[-1]
    cluster = Cluster(version, f"dbb_fresh_{uuid.uuid4().hex[:8]}", h.closed_port())
    subprocess.run(
        ["pg_createcluster", version, cluster.name, "-p", str(cluster.port)],
        check=True,
        capture_output=True,
    )
    try:
        yield cluster
    finally:
        subprocess.run(
            ["pg_dropcluster", "--stop", version, cluster.name], capture_output=True, check=False
        )
        cluster.log.unlink(missing_ok=True)


def test_fresh_postgres_cluster_gets_a_root_login_without_password(
    fresh_cluster: Cluster,
) -> None:
    """Guards issue 12 item 17: on a fresh host (scram on host lines, no role root) the
    script starts the cluster and configures the login the tests use; a second run
    changes nothing."""
    hba = fresh_cluster.conf / "pg_hba.conf"
    assert "127.0.0.1/32            scram-sha-256" in hba.read_text()  # Debian's default

    started = services("pg_ensure_running", fresh_cluster.version, fresh_cluster.name)
    assert started.returncode == 0, started.stderr
    refused = pg_root_login(fresh_cluster.port)  # the simulation is a fresh host:
    assert refused.returncode == 2 and "no password supplied" in refused.stderr

    args = ("pg_ensure_login", str(fresh_cluster.port), PG_SOCKETS, str(fresh_cluster.log))
    configured = services(*args)
    assert configured.returncode == 0, configured.stderr
    login = pg_root_login(fresh_cluster.port)
    assert (login.returncode, login.stdout.strip()) == (0, "t"), login.stderr

    configured_hba = hba.read_text()
    again = services(*args)
    assert again.returncode == 0, again.stderr
    assert "root logs in without a password (unchanged)" in again.stderr
    assert hba.read_text() == configured_hba


def test_postgres_that_does_not_start_fails_loudly_with_its_log(fresh_cluster: Cluster) -> None:
    """Guards issue 12 item 17: a cluster that cannot start makes the script exit non-zero
    and show the server's log, instead of carrying on."""
    with (fresh_cluster.conf / "postgresql.conf").open("a") as conf:
        conf.write("shared_buffers = 'plenty'\n")
    started = services("pg_ensure_running", fresh_cluster.version, fresh_cluster.name)
    assert started.returncode == 1
    assert f"error: PostgreSQL {fresh_cluster.version}/{fresh_cluster.name} did not start" in (
        started.stderr
    )
    assert f"last lines of {fresh_cluster.log}" in started.stderr
    assert 'invalid value for parameter "shared_buffers"' in started.stderr


# -- MariaDB ------------------------------------------------------------------------------
@dataclass
class Mariadb:
    base: Path
    port: int

    @property
    def socket(self) -> str:
        return str(self.base / "mysqld.sock")

    @property
    def pidfile(self) -> str:
        return str(self.base / "mariadbd.pid")

    @property
    def log(self) -> str:
        return str(self.base / "error.log")

    def options(self, *extra: str) -> list[str]:
        """mariadbd options: no option files, everything in our own directory."""
        return [
            "--no-defaults",
            f"--datadir={self.base / 'data'}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.base / 'own.pid'}",
            *extra,
        ]

    def start(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return services(
            "mariadb_ensure_running", str(self.port), self.pidfile, self.log, *self.options(*extra)
        )

    def stop(self) -> None:
        pid = Path(self.pidfile)
        if pid.exists():
            subprocess.run(
                ["start-stop-daemon", "--stop", "--retry", "30", "--pidfile", str(pid)],
                capture_output=True,
                check=False,
            )


@pytest.fixture
def mariadb_dir() -> Iterator[Mariadb]:
    """An empty directory for a throwaway MariaDB that the mysql user can write to."""
    _need_root_and("mariadb-install-db", "mariadb", "mariadb-admin", "start-stop-daemon")
    base = Path(tempfile.mkdtemp(prefix="db-backup-fresh-mariadb-"))
    os.chmod(base, 0o755)
    (base / "data").mkdir()
    for path in (base, base / "data"):
        shutil.chown(path, "mysql", "mysql")
    server = Mariadb(base, h.closed_port())
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("resolve", ["", "--skip-name-resolve"], ids=["stock", "skip-name-resolve"])
def test_fresh_mariadb_gets_a_root_login_over_tcp_without_password(
    mariadb_dir: Mariadb, resolve: str
) -> None:
    """Guards issue 12 item 17: after mariadb-install-db (root by unix_socket only) the
    script lets root log in over 127.0.0.1 without a password, with all privileges, with
    and without name resolution (root@localhost vs root@127.0.0.1); a second run changes
    nothing."""
    subprocess.run(
        ["mariadb-install-db", "--no-defaults", "--user=mysql", "--skip-test-db"]
        + [f"--datadir={mariadb_dir.base / 'data'}"],
        check=True,
        capture_output=True,
    )
    started = mariadb_dir.start(*([resolve] if resolve else []))
    assert started.returncode == 0, started.stderr
    refused = my_root_login(mariadb_dir.port)  # the simulation is a fresh host:
    assert refused.returncode == 1
    assert "Access denied for user 'root'" in refused.stderr or (
        "Host '127.0.0.1' is not allowed to connect" in refused.stderr
    )

    args = ("mariadb_ensure_login", mariadb_dir.socket, str(mariadb_dir.port), mariadb_dir.log)
    configured = services(*args)
    assert configured.returncode == 0, configured.stderr
    login = my_root_login(mariadb_dir.port)
    assert login.returncode == 0, login.stderr
    assert "GRANT ALL PRIVILEGES ON *.* TO `root`@" in login.stdout
    assert "WITH GRANT OPTION" in login.stdout

    again = services(*args)
    assert again.returncode == 0, again.stderr
    assert "root logs in without a password (unchanged)" in again.stderr


def test_mariadb_that_exits_while_starting_fails_at_once_with_its_log(
    mariadb_dir: Mariadb,
) -> None:
    """Guards issue 12 item 17: mariadbd on an uninitialised data directory exits at once
    while start-stop-daemon reports success; the script must notice, exit non-zero and
    show the log, not wait out its loop and carry on."""
    started = mariadb_dir.start()
    assert started.returncode == 1
    assert f"error: MariaDB on 127.0.0.1:{mariadb_dir.port} exited while starting" in (
        started.stderr
    )
    assert f"last lines of {mariadb_dir.log}" in started.stderr
    assert "mysql.db" in started.stderr or "privilege tables" in started.stderr


def test_wait_gives_up_with_the_log_when_a_service_never_answers(tmp_path: Path) -> None:
    """Guards issue 12 item 17: the wait loops end in a failure, not a fall-through."""
    log = tmp_path / "server.log"
    log.write_text("FATAL: the reason the server is not there\n")
    waited = services("wait_for", "1", "a service", str(log), "", "false")
    assert waited.returncode == 1
    assert "error: a service did not come up within 1 s" in waited.stderr
    assert "FATAL: the reason the server is not there" in waited.stderr


# -- the shared servers: the no-op form only ----------------------------------------------
def test_configured_servers_are_left_unchanged() -> None:
    """Guards issue 12 item 17: on a host whose login already works (the shared servers),
    configuring again changes neither pg_hba.conf nor MariaDB's users."""
    need_service(h.pg_available(), "PostgreSQL on 127.0.0.1:5432")
    need_service(h.my_available(), "MariaDB on 127.0.0.1:3306")
    with h.pg_connect("postgres") as conn:
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
    users = "SELECT user, host, plugin, authentication_string FROM mysql.user ORDER BY 1, 2"
    before = (hba.read_bytes(), h.my_exec(None, users))

    pg = services("pg_ensure_login", "5432", PG_SOCKETS, "/dev/null")
    assert pg.returncode == 0, pg.stderr
    my = services("mariadb_ensure_login", "/run/mysqld/mysqld.sock", "3306", "/dev/null")
    assert my.returncode == 0, my.stderr
    assert "(unchanged)" in pg.stderr and "(unchanged)" in my.stderr
    assert (hba.read_bytes(), h.my_exec(None, users)) == before
