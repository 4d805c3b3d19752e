#!/usr/bin/env bash
# Start/stop Debian's dockerd by hand for the kind e2e (no systemd on the CI
# machines).  See /work/shared/environment.md for why each flag is here.
#
#   e2e/kind/dockerd.sh start   # install docker.io if missing, start dockerd, wait for it
#   e2e/kind/dockerd.sh stop    # stop it (and the containerd it manages)
#   e2e/kind/dockerd.sh status
#
# - runc wrapper (e2e/kind/runc-wrapper.py, installed under $PICCHIO_CACHE/docker/):
#   drops capabilities missing from root's bounding set (CAP_SYS_RESOURCE)
#   so `docker run --privileged` (kind's node containers) works.
# - --bridge=none --iptables=false: no docker0 and no host iptables rules;
#   kind's own network is created by e2e/kind/network.sh with an explicit subnet.
# - Debian's engine client is /usr/bin/docker (20.10); /usr/local/bin/docker
#   (28.x) may come first in PATH, so scripts use $PICCHIO_DOCKER_BINDIR first.
set -euo pipefail

CACHE="${PICCHIO_CACHE:-$HOME/.cache/picchio}"
STATE="$CACHE/docker"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WRAPPER="$STATE/runc-wrapper"
PIDFILE=/var/run/docker.pid
LOG="$STATE/dockerd.log"
SOCK=/var/run/docker.sock

docker_ok() { /usr/bin/docker -H "unix://$SOCK" version >/dev/null 2>&1; }

install_engine() {
  if ! command -v dockerd >/dev/null 2>&1 || [ ! -x /usr/bin/docker ]; then
    echo ">> installing docker.io (Debian)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io) >/dev/null
  fi
}

start() {
  if docker_ok; then echo "dockerd already running"; return 0; fi
  install_engine
  mkdir -p "$STATE"
  install -m 0755 "$HERE/runc-wrapper.py" "$WRAPPER"
  echo ">> starting dockerd (log: $LOG)"
  # setsid + exec: the recorded PID is dockerd's own, not a wrapper shell's.
  setsid bash -c "exec dockerd \
      --host unix://$SOCK --pidfile $PIDFILE \
      --add-runtime picchio-runc=$WRAPPER --default-runtime picchio-runc \
      --bridge=none --iptables=false --ip-masq=false \
      --storage-driver overlay2" >>"$LOG" 2>&1 < /dev/null &
  for _ in $(seq 1 120); do
    if docker_ok; then echo "dockerd up (pid $(cat $PIDFILE))"; return 0; fi
    sleep 0.5
  done
  echo "dockerd did not answer within 60s; last log lines:" >&2
  tail -20 "$LOG" >&2
  return 1
}

stop() {
  if [ ! -s "$PIDFILE" ]; then echo "dockerd not running"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  if ! kill -0 "$pid" 2>/dev/null; then echo "dockerd not running (stale pidfile)"; rm -f "$PIDFILE"; return 0; fi
  echo ">> stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { echo "dockerd stopped"; return 0; }
    sleep 0.5
  done
  echo "dockerd still running after 30s; sending SIGKILL" >&2
  kill -KILL "$pid" || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if docker_ok; then echo "running (pid $(cat $PIDFILE))"; else echo "stopped"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
