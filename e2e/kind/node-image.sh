#!/usr/bin/env bash
# Assemble picchio's offline kind node image (`kind build node-image` always
# pulls images from registries, so it cannot run here).
#
#   e2e/kind/node-image.sh        # prints the image ref; builds only when an input changed
#
# Layers: local/kind-node-base (debootstrap: systemd, containerd, runc, CNI
# plugins, iptables...; e2e/kind/base-images.sh) + our files (e2e/kind/node/files:
# entrypoint, units, containerd config, kind manifests) + kubelet/kubeadm/kubectl/crictl
# from the Go modules + every image kubeadm/kind deploy, pre-imported into the
# node's containerd (ctr import --no-unpack, as kind's own builder does).
# Tag: picchio.local/kind-node:<k8s version>-<hash of every input>; the ref is
# also written to $PICCHIO_CACHE/kind/node-image.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib.sh"
source "$HERE/base-images.sh"   # node_base_tag (main is not run when sourced)

KIND_STATE="$PICCHIO_CACHE/kind"
mkdir -p "$KIND_STATE"

t0="$(stamp)"
"$HERE/base-images.sh" node iptables >&2
"$HERE/images.sh" >&2
source "$KIND_STATE/images.env"
mapfile -t IMAGES < "$KIND_STATE/node-images.txt"

BASE="$(node_base_tag)"
BINS=(kubelet kubeadm kubectl crictl)

# Cache key: the base image, our files, the binaries and the images' ids.
key="$( {
  docker image inspect -f '{{.Id}}' "$BASE"
  (cd "$HERE/node/files" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
  for b in "${BINS[@]}"; do f="$(bin "$b")"; echo "$f $(stat -c '%s %Y' "$f")"; done
  for i in "${IMAGES[@]}"; do echo "$i $(docker image inspect -f '{{.Id}}' "$i")"; done
  cat "$HERE/node-image.sh"
} | sha256sum | cut -c1-12)"
REF="picchio.local/kind-node:$KUBERNETES_VERSION-$key"

if image_exists "$REF"; then
  echo "[ok] $REF (cached)" >&2
  echo "$REF" > "$KIND_STATE/node-image"; echo "$REF"; exit 0
fi

echo ">> assembling $REF" >&2
WORK="$(mktemp -d /tmp/picchio-kind-node-XXXXXX)"
CID="picchio-kind-build-$$"
cleanup() { docker rm -f -v "$CID" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

# Our files, with the manifests' image placeholders filled in.
cp -a "$HERE/node/files" "$WORK/files"
sed -i -e "s|@KINDNETD_IMAGE@|$KINDNETD_IMAGE|g" \
       -e "s|@LOCAL_PATH_PROVISIONER_IMAGE@|$LOCAL_PATH_PROVISIONER_IMAGE|g" \
       -e "s|@LOCAL_PATH_HELPER_IMAGE@|$LOCAL_PATH_HELPER_IMAGE|g" \
       "$WORK"/files/kind/manifests/*.yaml
echo "$KUBERNETES_VERSION" > "$WORK/files/kind/version"
mkdir -p "$WORK/files/usr/bin"
for b in "${BINS[@]}"; do install -m 0755 "$(bin "$b")" "$WORK/files/usr/bin/$b"; done

# A plain (unprivileged) container to assemble in: like kind's builder.
# --init: containerd is re-parented to PID 1 when its shell exits; tini reaps it.
docker run -d --init --name "$CID" --entrypoint sleep "$BASE" infinity >/dev/null
tar -C "$WORK/files" --owner=root --group=root -c . | docker cp - "$CID:/"
docker exec "$CID" systemctl enable containerd.service kubelet.service >/dev/null 2>&1
# Units a node never needs (and that would fail in a container).
docker exec "$CID" sh -c 'systemctl mask getty.target systemd-udevd.service systemd-modules-load.service \
  systemd-firstboot.service >/dev/null 2>&1 || true'

echo ">> importing ${#IMAGES[@]} images into the node's containerd" >&2
docker save "${IMAGES[@]}" -o "$WORK/images.tar"
docker exec "$CID" sh -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
docker exec "$CID" sh -c 'for i in $(seq 1 50); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; cat /tmp/containerd.log; exit 1'
docker exec -i "$CID" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
  --all-platforms --no-unpack --digests - < "$WORK/images.tar" >/dev/null
docker exec "$CID" ctr --namespace=k8s.io images list -q > "$WORK/imported.txt"
for i in "${IMAGES[@]}"; do
  grep -qx "$i" "$WORK/imported.txt" || { echo "image $i missing after import:" >&2; cat "$WORK/imported.txt" >&2; exit 1; }
done
docker exec "$CID" sh -c 'pkill -x containerd; for i in $(seq 1 50); do pgrep -x containerd >/dev/null || exit 0; sleep 0.2; done; exit 1'
docker exec "$CID" rm -rf /tmp/containerd.log /var/log/apt /var/cache/debconf/*-old

docker commit \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
  --change 'CMD []' \
  --change 'ENV container=docker' \
  "$CID" "$REF-partial" >/dev/null
# docker commit/import cannot set STOPSIGNAL (Docker 20.10): one more tiny build.
printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\nLABEL picchio.kubernetes-version=%s\n' "$REF-partial" "$KUBERNETES_VERSION" \
  | docker build -q --network none -t "$REF" - >/dev/null
docker rmi "$REF-partial" >/dev/null
echo "$REF" > "$KIND_STATE/node-image"
echo "[built] $REF in $(elapsed "$t0")s" >&2
echo "$REF"
