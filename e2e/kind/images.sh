#!/usr/bin/env bash
# Container images built from the Go-module binaries (make components), for
# the offline kind node image and the e2e suite.  No registry involved.
#
#   e2e/kind/images.sh            # build what is missing or stale; print the node's image list
#
# Control-plane images carry the names kubeadm v$KUBERNETES_VERSION deploys
# (read from `kubeadm config images list`, so nothing is pulled):
#   registry.k8s.io/{kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy}:vX,
#   registry.k8s.io/etcd:<kubeadm's tag>, registry.k8s.io/coredns/coredns:<tag>,
#   registry.k8s.io/pause:<tag>
# NOTE: registry.k8s.io/etcd carries etcd $ETCD_VERSION (our pin) under
# kubeadm's tag; the image label org.opencontainers.image.version says which.
# Add-ons and e2e images: picchio.local/{kindnetd,local-path-provisioner,busybox,etcd,minio}:<version>.
#
# Each image is labelled picchio.key=<hash of its Dockerfile and inputs>, and
# rebuilt only when that changes.  The node's list goes to $KIND_STATE/node-images.txt.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib.sh"

KIND_STATE="$PICCHIO_CACHE/kind"
mkdir -p "$KIND_STATE"
WORK="$(mktemp -d /tmp/picchio-kind-images-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# A minimal filesystem for the FROM-scratch images.
make_skeleton() {
  local root="$1"
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/usr/local/bin" "$root/var/run"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > "$root/etc/group"
  echo 'hosts: files dns' > "$root/etc/nsswitch.conf"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"; fi
}

# build_image REF DIR VERSION FILE... : FILE is "src=dest-in-rootfs"
build_image() {
  local ref="$1" dir="$2" version="$3"; shift 3
  local key_input="$(cat "$HERE/images/$dir/Dockerfile")|$version"
  local spec src
  for spec in "$@"; do
    src="${spec%%=*}"
    key_input+="|$spec|$(stat -c '%s %Y' "$src")"
  done
  local base
  base="$(sed -n 's/^ARG BASE_IMAGE=//p' "$HERE/images/$dir/Dockerfile")"
  if [ -n "$base" ]; then key_input+="|$(docker image inspect -f '{{.Id}}' "$base")"; fi
  local key; key="$(printf '%s' "$key_input" | sha256sum | cut -c1-16)"
  local have; have="$(docker image inspect -f '{{index .Config.Labels "picchio.key"}}' "$ref" 2>/dev/null || true)"
  if [ "$have" = "$key" ]; then echo "[ok] $ref"; return 0; fi
  local ctx="$WORK/$dir-$RANDOM"
  mkdir -p "$ctx/rootfs"
  [ -n "$base" ] || make_skeleton "$ctx/rootfs"
  for spec in "$@"; do
    mkdir -p "$(dirname "$ctx/rootfs/${spec#*=}")"
    cp "${spec%%=*}" "$ctx/rootfs/${spec#*=}"
  done
  cp "$HERE/images/$dir/Dockerfile" "$ctx/Dockerfile"
  docker build -q --network none --label "picchio.key=$key" --build-arg "VERSION=$version" -t "$ref" "$ctx" >/dev/null
  echo "[built] $ref ($version)"
}

busybox_binary() {
  local out="$KIND_STATE/busybox-static"
  if [ ! -x "$out/bin/busybox" ]; then
    echo ">> fetching Debian's busybox-static" >&2
    rm -rf "$out"; mkdir -p "$out"
    (cd "$WORK" && apt-get download busybox-static >/dev/null 2>&1) || {
      apt-get update -qq >/dev/null && (cd "$WORK" && apt-get download busybox-static >/dev/null); }
    dpkg-deb -x "$WORK"/busybox-static_*.deb "$out/root"
    mkdir -p "$out/bin"; cp "$out/root/bin/busybox" "$out/bin/busybox"
    dpkg-deb -f "$WORK"/busybox-static_*.deb Version > "$out/version"
    rm -rf "$out/root"
  fi
  echo "$out"
}

main() {
  local list=()
  local kubeadm; kubeadm="$(bin kubeadm)"
  local ref name
  while read -r ref; do
    [ -n "$ref" ] || continue
    name="${ref##*/}"; name="${name%%:*}"   # registry.k8s.io/coredns/coredns:v1 -> coredns
    case "$name" in
      kube-apiserver|kube-controller-manager|kube-scheduler|kube-proxy)
        build_image "$ref" "$name" "$KUBERNETES_VERSION" "$(bin "$name")=usr/local/bin/$name" ;;
      etcd)    build_image "$ref" etcd "$ETCD_VERSION" "$(bin etcd)=usr/local/bin/etcd" ;;
      coredns) build_image "$ref" coredns "$COREDNS_VERSION" "$(bin coredns)=usr/local/bin/coredns" ;;
      pause)   build_image "$ref" pause "${ref##*:}" "$(bin pause)=usr/local/bin/pause" ;;
      *) echo "kubeadm wants an image this script does not know: $ref" >&2; return 1 ;;
    esac
    list+=("$ref")
  done < <("$kubeadm" config images list --kubernetes-version "$KUBERNETES_VERSION" 2>/dev/null)

  local kindnetd; kindnetd="$(bin kindnetd)"
  local kindnetd_ref="picchio.local/kindnetd:${kindnetd##*/kindnetd-}"
  build_image "$kindnetd_ref" kindnetd "${kindnetd##*/kindnetd-}" "$kindnetd=usr/local/bin/kindnetd"
  local lpp_ref="picchio.local/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION"
  build_image "$lpp_ref" local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" \
    "$(bin local-path-provisioner)=usr/local/bin/local-path-provisioner"
  local bb; bb="$(busybox_binary)"
  local bb_ver; bb_ver="$(sed 's/[^A-Za-z0-9_.-]/_/g' "$bb/version")"
  local busybox_ref="picchio.local/busybox:$bb_ver"
  build_image "$busybox_ref" busybox "$bb_ver" "$bb/bin/busybox=bin/busybox"
  list+=("$kindnetd_ref" "$lpp_ref" "$busybox_ref")

  # In-cluster dependencies of the e2e suite (not preloaded in the node: `kind load`).
  build_image "picchio.local/etcd:$ETCD_VERSION" etcd "$ETCD_VERSION" "$(bin etcd)=usr/local/bin/etcd"
  build_image "picchio.local/minio:$MINIO_VERSION" minio "$MINIO_VERSION" "$(bin minio)=usr/local/bin/minio"

  printf '%s\n' "${list[@]}" > "$KIND_STATE/node-images.txt"
  {
    echo "KINDNETD_IMAGE=$kindnetd_ref"
    echo "LOCAL_PATH_PROVISIONER_IMAGE=$lpp_ref"
    echo "LOCAL_PATH_HELPER_IMAGE=$busybox_ref"
    echo "BUSYBOX_IMAGE=$busybox_ref"
    echo "ETCD_IMAGE=picchio.local/etcd:$ETCD_VERSION"
    echo "MINIO_IMAGE=picchio.local/minio:$MINIO_VERSION"
  } > "$KIND_STATE/images.env"
}

main "$@"
