# Shared helpers for the e2e/kind scripts (sourced, not run).
PICCHIO_CACHE="${PICCHIO_CACHE:-$HOME/.cache/picchio}"
PICCHIO_BIN="$PICCHIO_CACHE/bin"
KIND_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$KIND_DIR/../.." && pwd)"

# Debian's engine client first: /usr/local/bin/docker may be a newer client.
PICCHIO_DOCKER_BINDIR="$PICCHIO_CACHE/docker/bin"
mkdir -p "$PICCHIO_DOCKER_BINDIR"
[ -e "$PICCHIO_DOCKER_BINDIR/docker" ] || ln -sf /usr/bin/docker "$PICCHIO_DOCKER_BINDIR/docker"
case ":$PATH:" in *":$PICCHIO_DOCKER_BINDIR:"*) ;; *) export PATH="$PICCHIO_DOCKER_BINDIR:$PATH" ;; esac

# Version pins: e2e/cluster/versions.env (KEY=VALUE).
set -a; source "$REPO_ROOT/e2e/cluster/versions.env"; set +a

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

need_debootstrap() {
  command -v debootstrap >/dev/null 2>&1 || {
    echo ">> installing debootstrap (Debian)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap) >/dev/null
  }
}

# bin NAME: the pinned binary built by `make components` (picchio_harness.build).
bin() {
  local var="${2:-}"
  local f
  f="$(PYTHONPATH="$REPO_ROOT/e2e" python3 -c "from picchio_harness.build import component_binary as c; print(c('$1'))")" || return 1
  echo "$f"
}

stamp() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(stamp)"; }
