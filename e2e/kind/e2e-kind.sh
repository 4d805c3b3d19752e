#!/usr/bin/env bash
# Create a kind cluster from kind-config.yaml with the offline node image,
# check that every node is Ready and a pod (local busybox image) runs with
# cluster DNS and a volume from the default StorageClass, optionally run the
# project image in a pod, then delete the cluster.  Prints per-stage times.
#
#   e2e/kind/e2e-kind.sh                 # full run (starts/stops dockerd if it was not running)
#   KEEP_CLUSTER=1 e2e/kind/e2e-kind.sh  # leave the cluster (kubeconfig: $PICCHIO_CACHE/kind/kubeconfig)
#   PROJECT_IMAGE=0 e2e/kind/e2e-kind.sh # skip the project image stage (and the suite)
#   E2E_SUITE=0 e2e/kind/e2e-kind.sh     # cluster checks only, no pytest suite
#   PYTEST_ARGS="-k scale -x" e2e/kind/e2e-kind.sh   # extra pytest arguments
#
# With E2E_SUITE=1 (the default) the etcd and MinIO images are loaded and
# `pytest e2e/tests` runs against the cluster; the script exits with pytest's
# status after deleting the cluster.
#
# Networking stays on this machine: kind's docker network is created here
# with an explicit private subnet ($KIND_SUBNET) and the API server listens on 127.0.0.1.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib.sh"

CLUSTER="${KIND_CLUSTER_NAME:-picchio}"
KIND_SUBNET="${KIND_SUBNET:-172.30.99.0/24}"
KIND_GATEWAY="${KIND_GATEWAY:-172.30.99.1}"
KIND_STATE="$PICCHIO_CACHE/kind"
KUBECONFIG_FILE="$KIND_STATE/kubeconfig"
TIMES="$KIND_STATE/times.tsv"
mkdir -p "$KIND_STATE"

declare -a STAGES=()
stage() {  # stage NAME CMD...: run and time one stage
  local name="$1"; shift
  local t; t="$(stamp)"
  echo "=== $name"
  "$@"
  local s; s="$(elapsed "$t")"
  STAGES+=("$name $s")
  printf '%s\t%s\t%s\n' "$(date +%FT%T)" "$name" "$s" >> "$TIMES"
  echo "=== $name: ${s}s"
}
report() {
  echo; echo "stage times (s):"
  local l; for l in "${STAGES[@]}"; do printf '  %-22s %8s\n' ${l}; done
}

STARTED_DOCKERD=0
CREATED_NETWORK=0
CLUSTER_UP=0
finish() {
  local rc=$?
  if [ $rc -ne 0 ] && [ "$CLUSTER_UP" = 1 ]; then dump || true; fi
  if [ "$CLUSTER_UP" = 1 ] && [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    "$KIND" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" || true
  fi
  if [ "$CREATED_NETWORK" = 1 ] && [ "${KEEP_CLUSTER:-0}" != 1 ]; then docker network rm kind >/dev/null || true; fi
  if [ "$STARTED_DOCKERD" = 1 ] && [ "${KEEP_CLUSTER:-0}" != 1 ]; then "$HERE/dockerd.sh" stop || true; fi
  report
  exit $rc
}
trap finish EXIT

k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
dump() {
  echo "---- diagnostics"
  k get nodes -o wide || true
  k get pods -A -o wide || true
  k get events -A --sort-by=.lastTimestamp | tail -40 || true
  local n
  for n in $("$KIND" get nodes --name "$CLUSTER" 2>/dev/null); do
    echo "---- $n: failed units / kubelet"
    docker exec "$n" systemctl --failed --no-legend || true
    docker exec "$n" journalctl -u kubelet --no-pager -p warning -n 20 || true
  done
}

start_docker() {
  if ! "$HERE/dockerd.sh" status >/dev/null 2>&1; then
    "$HERE/dockerd.sh" start
    STARTED_DOCKERD=1
  fi
}

components() {
  PYTHONPATH="$REPO_ROOT/e2e" nice -n 10 python3 -m picchio_harness.build --only kind
}

node_image() { NODE_IMAGE="$(nice -n 10 "$HERE/node-image.sh")"; echo "node image: $NODE_IMAGE"; }

network() {
  if docker network inspect kind >/dev/null 2>&1; then
    echo "docker network kind: $(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' kind)"
    return 0
  fi
  docker network create -d bridge --subnet "$KIND_SUBNET" --gateway "$KIND_GATEWAY" \
    -o com.docker.network.bridge.enable_ip_masquerade=false \
    -o com.docker.network.driver.mtu=1500 kind >/dev/null
  CREATED_NETWORK=1
  echo "docker network kind: $KIND_SUBNET"
}

create_cluster() {
  "$KIND" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" >/dev/null 2>&1 || true
  CLUSTER_UP=1
  "$KIND" create cluster --name "$CLUSTER" --config "$REPO_ROOT/kind-config.yaml" \
    --image "$NODE_IMAGE" --kubeconfig "$KUBECONFIG_FILE" --retain
}

nodes_ready() {
  k wait --for=condition=Ready nodes --all --timeout=300s
  k get nodes -o wide
  local n; n="$(k get nodes --no-headers | wc -l)"
  [ "$n" -eq 3 ] || { echo "expected 3 nodes, got $n" >&2; return 1; }
  k -n kube-system rollout status deploy/coredns --timeout=180s
  k -n local-path-storage rollout status deploy/local-path-provisioner --timeout=180s
}

smoke_pod() {
  source "$KIND_STATE/images.env"
  k delete pod/picchio-smoke pod/picchio-smoke-web svc/picchio-smoke-web pvc/picchio-smoke --ignore-not-found --wait=true >/dev/null 2>&1 || true
  k apply -f - <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: picchio-smoke}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: picchio-smoke}
spec:
  nodeSelector: {node-role.kubernetes.io/control-plane: ""}
  tolerations: [{operator: Exists}]
  restartPolicy: Never
  containers:
  - name: smoke
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: ["sh", "-c", "echo ok > /data/probe && nslookup kubernetes.default.svc.cluster.local && sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: picchio-smoke}
YAML
  # A second pod on a worker, reached across nodes by pod IP and by service DNS.
  k apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata: {name: picchio-smoke-web, labels: {app: picchio-smoke-web}}
spec:
  nodeSelector: {kubernetes.io/hostname: ${CLUSTER}-worker}
  containers:
  - name: web
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Service
metadata: {name: picchio-smoke-web}
spec:
  selector: {app: picchio-smoke-web}
  ports: [{port: 80, targetPort: 8080}]
YAML
  k wait --for=condition=Ready pod/picchio-smoke pod/picchio-smoke-web --timeout=180s
  k get pods -o wide
  k exec picchio-smoke -- cat /data/probe
  k get pvc picchio-smoke
  local ip; ip="$(k get pod picchio-smoke-web -o jsonpath='{.status.podIP}')"
  # busybox-static's wget segfaults (static glibc); nc speaks enough HTTP.
  k exec picchio-smoke -- sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 $ip 8080 | grep -qx hello"
  echo "pod -> pod on another node: ok"
  k exec picchio-smoke -- sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 picchio-smoke-web.default.svc.cluster.local 80 | grep -qx hello"
  echo "pod -> service by cluster DNS name: ok"
  k delete pod picchio-smoke picchio-smoke-web --wait=false
  k delete svc/picchio-smoke-web pvc/picchio-smoke --wait=false
}

PROJECT_REF=""
project_image() {
  local ref; ref="$(nice -n 10 "$HERE/project-image.sh")"
  PROJECT_REF="$ref"
  "$KIND" load docker-image "$ref" --name "$CLUSTER"
  k delete pod picchio-help --ignore-not-found >/dev/null
  k run picchio-help --image="$ref" --image-pull-policy=Never --restart=Never -- --help
  local phase=""
  for _ in $(seq 1 120); do
    phase="$(k get pod picchio-help -o jsonpath='{.status.phase}')"
    case "$phase" in Succeeded|Failed) break ;; esac
    sleep 1
  done
  k logs picchio-help | sed -n 1,20p  # not head: under pipefail its early exit kills kubectl with SIGPIPE (141)
  [ "$phase" = Succeeded ] || { echo "picchio --help pod: $phase" >&2; return 1; }
}

load_deps() {
  source "$KIND_STATE/images.env"
  "$KIND" load docker-image "$ETCD_IMAGE" "$MINIO_IMAGE" --name "$CLUSTER"
}

SUITE_RC=0
run_suite() {
  source "$KIND_STATE/images.env"
  local rc=0
  # shellcheck disable=SC2086
  (cd "$REPO_ROOT" && KUBECONFIG="$KUBECONFIG_FILE" KUBECTL="$KUBECTL" PICCHIO_IMAGE="$PROJECT_REF" \
    ETCD_IMAGE="$ETCD_IMAGE" MINIO_IMAGE="$MINIO_IMAGE" E2E_DUMP_DIR="$KIND_STATE/e2e-dumps" \
    "${PYTHON:-python3}" -m pytest -p no:cacheprovider -rA --durations=0 e2e/tests ${PYTEST_ARGS:-}) || rc=$?
  SUITE_RC=$rc
  echo "e2e suite: pytest exit $rc"
}

delete_cluster() {
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then echo "keeping cluster $CLUSTER (KUBECONFIG=$KUBECONFIG_FILE)"; return 0; fi
  "$KIND" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE"
  CLUSTER_UP=0
}

stage dockerd start_docker
stage components components
KIND="$(bin kind)"
KUBECTL="$(bin kubectl)"
stage node-image node_image
stage network network
stage create-cluster create_cluster
stage nodes-ready nodes_ready
stage smoke-pod smoke_pod
if [ "${PROJECT_IMAGE:-1}" = 1 ]; then stage project-image project_image; fi
if [ "${PROJECT_IMAGE:-1}" = 1 ] && [ "${E2E_SUITE:-1}" = 1 ]; then
  stage load-deps load_deps
  stage e2e-suite run_suite
fi
stage delete-cluster delete_cluster
exit "$SUITE_RC"
