#!/usr/bin/env bash
# Local base images made from debootstrap rootfs (no registry needed):
#
#   local/debian:bookworm              minbase
#   local/python:3.11-bookworm         + python3 (3.11 in bookworm), venv, CA certificates
#   local/debian-iptables:bookworm     + iptables, conntrack (kube-proxy's image base)
#   local/kind-node-base:bookworm-<h>  + systemd, containerd, runc, CNI plugins and the
#                                       tools a kind node needs (h = hash of the package list)
#
# Each image is built only when missing from the local docker.
#   e2e/kind/base-images.sh [debian|python|iptables|node ...]   (default: all)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib.sh"

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm

# Packages of the kind node base.  Changing this list changes the tag.
NODE_PACKAGES=(
  systemd systemd-sysv dbus
  containerd runc containernetworking-plugins
  iptables nftables conntrack ebtables iproute2 ethtool socat kmod
  util-linux mount procps psmisc ca-certificates libseccomp2
  lsof less
)
node_base_tag() {
  local h; h="$(printf '%s\n' "${NODE_PACKAGES[@]}" "$SUITE" | sha256sum | cut -c1-10)"
  echo "local/kind-node-base:$SUITE-$h"
}

# debootstrap_import IMAGE [extra packages...]
debootstrap_import() {
  local image="$1"; shift
  if image_exists "$image"; then echo "[ok] $image (cached)"; return 0; fi
  local dir; dir="$(mktemp -d /tmp/picchio-kind-rootfs-XXXXXX)"
  local include=""
  if [ $# -gt 0 ]; then include="--include=$(IFS=,; echo "$*")"; fi
  echo ">> debootstrap $SUITE ($image) into $dir"
  local t0=$SECONDS
  nice -n 10 debootstrap --variant=minbase $include "$SUITE" "$dir" "$MIRROR" > "$dir.log" 2>&1 \
    || { tail -30 "$dir.log" >&2; rm -rf "$dir" "$dir.log"; return 1; }
  # Smaller image: no package caches or lists (the images are rebuilt, never upgraded).
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* \
         "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
  echo "deb $MIRROR $SUITE main" > "$dir/etc/apt/sources.list"
  tar -C "$dir" --numeric-owner -c . | docker import - "$image" >/dev/null
  rm -rf "$dir" "$dir.log"
  echo "[built] $image in $((SECONDS - t0))s"
}

build_debian()   { debootstrap_import local/debian:bookworm; }
build_python()   { debootstrap_import local/python:3.11-bookworm python3 python3-venv ca-certificates; }
build_iptables() { debootstrap_import local/debian-iptables:bookworm iptables conntrack; }
build_node()     { debootstrap_import "$(node_base_tag)" "${NODE_PACKAGES[@]}"; }

main() {
  need_debootstrap
  local what=("$@")
  [ ${#what[@]} -gt 0 ] || what=(debian python iptables node)
  for w in "${what[@]}"; do "build_$w"; done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
