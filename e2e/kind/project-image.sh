#!/usr/bin/env bash
# The project image, built offline: local/python:3.11-bookworm (debootstrap)
# as BASE_IMAGE and a wheelhouse of every dependency built on the host with
# `pip wheel` (PyPI is reachable from the host, not from `docker build`).
#
#   e2e/kind/project-image.sh [TAG]     # default picchio.local/picchio:dev; prints the ref
#
# The wheelhouse (./.wheelhouse, keyed by pyproject.toml) is rebuilt only when
# pyproject.toml changes; the image is rebuilt by docker's own layer cache.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib.sh"
REF="${1:-picchio.local/picchio:dev}"
BASE=local/python:3.11-bookworm
PY="${PYTHON:-python3}"

"$HERE/base-images.sh" python >&2

cd "$REPO_ROOT"
WH=.wheelhouse
key="$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat "$WH/.key" 2>/dev/null)" != "$key" ]; then
  echo ">> building the wheelhouse ($WH) with pip wheel" >&2
  rm -rf "$WH"; mkdir -p "$WH"
  # Wheels of picchio's dependencies (extras: operator) + the build backend,
  # so the image's pip builds picchio itself from the context with --no-index.
  "$PY" -m pip wheel -q --wheel-dir "$WH" ".[operator]" "setuptools>=68" wheel >&2
  rm -f "$WH"/picchio-*.whl   # the image installs picchio from the sources in the context
  echo "$key" > "$WH/.key"
fi

echo ">> docker build $REF (BASE_IMAGE=$BASE, offline)" >&2
old_id="$(docker image inspect -f '{{.Id}}' "$REF" 2>/dev/null || true)"
docker build -q --network none --build-arg "BASE_IMAGE=$BASE" -t "$REF" . >&2
# The image replaced by a rebuild would stay as a dangling ~400 MB image per
# source change (the disk fills, and LogStores on local-path volumes see it).
new_id="$(docker image inspect -f '{{.Id}}' "$REF")"
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then docker rmi "$old_id" >/dev/null 2>&1 || true; fi
echo "$REF"
