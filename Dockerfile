# db-backup worker / flow-run image: the project with every engine and store extra
# (`.[all]`), its Prefect integrations and the database client tools
# (pg_dump/pg_restore/psql 15, mariadb-dump/mariadb, mariadb-backup, sqlite3, zstd).
#
#   docker build -t db-backup:latest .
#   # another Debian 12 + Python 3.11 base (a mirror, or the local stand-in that
#   # scripts/build-base-image.sh makes where no registry can be reached):
#   docker build --build-arg BASE=registry.example/python:3.11-slim-bookworm -t db-backup .
#   # a process worker in a container:
#   docker run -e PREFECT_API_URL=http://prefect:4200/api db-backup:latest
#   # or use it as the image of a Docker / Kubernetes work pool (docs/deployments.md)
#
# The project is installed editable in /opt/db-backup, the directory prefect.yaml's
# pull step moves to ($DB_BACKUP_PROJECT_DIR): entrypoints such as
# flows/backup.py:backup_database load from there and import db_backup.* from the
# same files. The image runs as the non-root user db-backup (uid 10001).
# scripts/check-image.sh builds it and backs up and restores every engine inside it.
ARG BASE=python:3.11-slim-bookworm
# hadolint ignore=DL3006
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DB_BACKUP_PROJECT_DIR=/opt/db-backup \
    DB_BACKUP_STAGING=/var/lib/db-backup/staging \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1

# Client tools from Debian 12: PostgreSQL 15 client (pg_dump 15 dumps servers up to 15;
# use a newer postgresql-client from the PGDG repository for newer servers), MariaDB
# 10.11 client and mariadb-backup (physical MariaDB backups), sqlite3 and zstd. tini
# reaps the flow-run child processes.
# Versions are not pinned on purpose: a rebuild should pick up Debian's security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        mariadb-backup \
        mariadb-client \
        postgresql-client \
        sqlite3 \
        tini \
        zstd \
    && rm -rf /var/lib/apt/lists/*

# Not "backup": Debian's base-passwd already has a system user of that name (uid 34).
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin db-backup \
    && mkdir -p /opt/db-backup /var/lib/db-backup/staging \
    && chown -R db-backup:db-backup /opt/db-backup /var/lib/db-backup

WORKDIR /opt/db-backup
COPY --chown=db-backup:db-backup pyproject.toml README.md prefect.yaml ./
COPY --chown=db-backup:db-backup db_backup ./db_backup
COPY --chown=db-backup:db-backup flows ./flows
COPY --chown=db-backup:db-backup tasks ./tasks
COPY --chown=db-backup:db-backup blocks ./blocks
COPY --chown=db-backup:db-backup deployments ./deployments

# Same command as scripts/bootstrap.sh, without the test tools: every engine and store.
RUN python -m pip install --no-cache-dir -e ".[all]" \
    && db-backup --help > /dev/null \
    && prefect --version > /dev/null \
    && python -c "import db_backup.flows.backup, db_backup.deployments.apply, prefect_slack, psycopg, pymysql, pymongo"

USER 10001:10001
ENTRYPOINT ["tini", "--"]
CMD ["prefect", "worker", "start", "--pool", "db-backup-process", "--type", "process"]
