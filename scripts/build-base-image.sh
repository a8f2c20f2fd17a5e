#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim-bookworm when no registry image can be
# pulled: a Debian 12 root file system from Debian's package registry (mmdebstrap),
# Debian's Python 3.11 with pip in a venv at /opt/python (first on PATH, so `python`
# and `pip` work as in the official image), imported into buildah's vfs store.
#
#   bash scripts/build-base-image.sh            # prints the image name; reuses it if present
#   REBUILD=1 bash scripts/build-base-image.sh  # build it again (e.g. for Debian's fixes)
#
# Needs root, buildah and mmdebstrap (Debian packages). Differences from the official
# image: Python 3.11.2 from Debian instead of python.org's latest 3.11 build; and the
# certificate authorities this host added in /usr/local/share/ca-certificates (a
# TLS-inspecting proxy, say) are trusted inside it, with PIP_CERT pointing pip at the
# system bundle, so that pip can reach PyPI from here. A local image only: releases
# build on the official base (.github/workflows/release.yml).
set -euo pipefail

IMAGE="${BASE_IMAGE_NAME:-localhost/db-backup-base:python3.11-bookworm}"
bah() { buildah --storage-driver vfs "$@"; }
log() { echo "==> $*" >&2; }

if [ -z "${REBUILD:-}" ] && bah inspect --type image "$IMAGE" >/dev/null 2>&1; then
    log "base image $IMAGE present: reused (REBUILD=1 to rebuild it)"
    echo "$IMAGE"
    exit 0
fi
for tool in buildah mmdebstrap; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install $tool)" >&2; exit 1; }
done

work="$(mktemp -d /var/tmp/db-backup-base.XXXXXX)"
ctr=""
cleanup() { [ -z "$ctr" ] || bah rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

hooks=()
pip_env=(env -i PATH=/opt/python/bin:/usr/bin:/bin HOME=/root)
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    log "trusting this host's extra certificate authorities inside the base image"
    hooks+=(--customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1"/usr/local/share/ca-certificates/'
            --customize-hook='chroot "$1" update-ca-certificates >/dev/null')
    pip_env+=(PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
    extra_env=(--env PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
else
    extra_env=()
fi

log "building a Debian bookworm root file system with Python 3.11 (mmdebstrap)"
# Like debian:bookworm-slim: no manuals, no documentation beyond copyright files, no
# translations; apt lists are removed by mmdebstrap's clean-up.
mmdebstrap --variant=minbase --mode=root --format=tar \
    --include=ca-certificates,python3.11,python3.11-venv,netbase,tzdata \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    "${hooks[@]}" \
    --customize-hook='chroot "$1" python3.11 -m venv /opt/python' \
    --customize-hook="chroot \"\$1\" ${pip_env[*]} /opt/python/bin/python -m pip install -q --no-cache-dir --upgrade pip" \
    --customize-hook='rm -rf "$1"/root/.cache' \
    bookworm "$work/rootfs.tar" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" </dev/null

log "importing it into buildah as $IMAGE"
ctr="$(bah from scratch)"
bah add "$ctr" "$work/rootfs.tar" / >/dev/null
bah config \
    --env PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --env PYTHON_VERSION=3.11 \
    "${extra_env[@]}" \
    --cmd python3 \
    --label org.opencontainers.image.description="Debian bookworm + Debian's Python 3.11 (local stand-in for python:3.11-slim-bookworm)" \
    "$ctr"
bah commit --rm --quiet "$ctr" "$IMAGE" >/dev/null
ctr=""
echo "$IMAGE"
