"""``picchio dev`` — start and stop the real components for local work.

    python -m picchio_harness.cli cluster up|down|env|status [--workdir D] [--nodes N]
    python -m picchio_harness.cli minio   up|down|env|status [--workdir D]
    python -m picchio_harness.cli etcd    up|down|env|status [--workdir D]

``up`` starts the processes detached (they outlive this command) and records
their PIDs in a state file under the workdir (default
``$PICCHIO_CACHE/dev/<what>``), which is how a later ``down`` — from any
shell — finds exactly those processes and nothing else.  ``env`` prints
``export`` lines for ``eval "$(... env)"``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from . import k8s
from .build import MissingComponent, component_binary
from .procs import cache_dir

_STATE = {"cluster": k8s.STATE_FILE, "minio": "minio.json", "etcd": "etcd.json"}


def _default_workdir(what: str) -> Path:
    return cache_dir() / "dev" / what


def _write_state(workdir: Path, what: str, state: dict[str, Any]) -> None:
    path = workdir / _STATE[what]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def _kubectl_dir() -> Path | None:
    """A directory holding ``kubectl`` -> the pinned kubectl build, so the
    printed PATH gives a plain ``kubectl`` of the cluster's own version (the
    cache names it kubectl-<version>; a system kubectl may be missing or old)."""
    try:
        binary = component_binary("kubectl")
    except MissingComponent:
        return None
    d = cache_dir() / "dev" / "bin"
    d.mkdir(parents=True, exist_ok=True)
    link = d / "kubectl"
    if not (link.is_symlink() and os.readlink(link) == binary):
        tmp = d / ".kubectl.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(binary)
        os.replace(tmp, link)
    return d


def _exports(what: str, state: dict[str, Any]) -> list[tuple[str, str]]:
    if what == "cluster":
        out = [("KUBECONFIG", state["kubeconfig"])]
        kdir = _kubectl_dir()
        if kdir is not None:
            out.append(("PATH", str(kdir)))  # prepended, see _print_env
        return out
    if what == "minio":
        return [("AWS_ENDPOINT_URL", state["endpoint"]), ("AWS_ACCESS_KEY_ID", state["access_key"]),
                ("AWS_SECRET_ACCESS_KEY", state["secret_key"]), ("AWS_REGION", "us-east-1")]
    return [("ETCD_ENDPOINTS", state["endpoint"]), ("ETCDCTL_ENDPOINTS", f"http://{state['endpoint']}")]


def _print_env(what: str, state: dict[str, Any]) -> None:
    for k, v in _exports(what, state):
        if k == "PATH":
            print(f'export PATH={shlex.quote(v)}:"$PATH"')
        else:
            print(f"export {k}={shlex.quote(v)}")


def _start(what: str, workdir: Path, nodes: int) -> dict[str, Any]:
    """Start one service in the foreground of this call, detach it, and
    return its state record."""
    if what == "cluster":
        c = k8s.start_cluster(workdir, nodes=nodes)
        c.detach()
        return c.state()
    workdir.mkdir(parents=True, exist_ok=True)
    if what == "minio":
        from .s3 import start_s3

        s = start_s3(workdir, prefer="minio")
        s.proc.detach()
        return {"kind": "minio", "workdir": str(workdir), "endpoint": s.endpoint,
                "access_key": s.access_key, "secret_key": s.secret_key, "processes": [s.proc.record()]}
    from .etcd import etcd36_binary, etcd_binary, start_etcd

    try:
        binary = etcd36_binary()
    except MissingComponent:
        binary = etcd_binary()  # Debian's 3.4 is enough for the WAL's own metadata
    e = start_etcd(workdir, binary=binary)
    e.proc.detach()
    return {"kind": "etcd", "workdir": str(workdir), "endpoint": e.endpoint, "binary": binary,
            "processes": [e.proc.record()]}


def cmd_up(what: str, workdir: Path, nodes: int) -> int:
    state = k8s.read_state_file(workdir / _STATE[what])
    if state and k8s.state_alive(state):
        print(f"{what} already up (state: {workdir / _STATE[what]})", file=sys.stderr)
        _print_env(what, state)
        return 0
    if state:  # half-dead leftovers of an earlier run: clear them first
        k8s.stop_from_state(workdir, _STATE[what])
    try:
        state = _start(what, workdir, nodes)
    except MissingComponent as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _write_state(workdir, what, state)
    pids = ", ".join(f"{p['name']}={p['pid']}" for p in state["processes"])
    print(f"{what} up: {pids}", file=sys.stderr)
    if what == "cluster":
        print(f"kubeconfig: {state['kubeconfig']}  (server {state['server']}, nodes {', '.join(state['nodes'])})",
              file=sys.stderr)
    print(f"logs under {workdir}; stop with: picchio dev {what} down", file=sys.stderr)
    _print_env(what, state)
    return 0


def cmd_down(what: str, workdir: Path, _nodes: int) -> int:
    stopped = k8s.stop_from_state(workdir, _STATE[what])
    print(f"{what} down" + (f": stopped {', '.join(stopped)}" if stopped else " (nothing was running)"),
          file=sys.stderr)
    return 0


def cmd_env(what: str, workdir: Path, _nodes: int) -> int:
    state = k8s.read_state_file(workdir / _STATE[what])
    if not state or not k8s.state_alive(state):
        print(f"{what} is not up: run `picchio dev {what} up`", file=sys.stderr)
        return 1
    _print_env(what, state)
    return 0


def cmd_status(what: str, workdir: Path, _nodes: int) -> int:
    state = k8s.read_state_file(workdir / _STATE[what])
    if not state:
        print(f"{what}: down")
        return 1
    from .procs import pid_runs

    for p in state.get("processes") or []:
        print(f"{p['name']:<24} pid {p['pid']:<8} {'running' if pid_runs(p['pid'], p.get('exe')) else 'GONE'}"
              f"  log {p.get('log', '')}")
    return 0 if k8s.state_alive(state) else 1


_COMMANDS: dict[str, Callable[[str, Path, int], int]] = {
    "up": cmd_up, "down": cmd_down, "env": cmd_env, "status": cmd_status,
}


def main(argv: list[str]) -> int:
    """Entry point for ``picchio dev ...`` (argv without the leading 'dev')."""
    ap = argparse.ArgumentParser(prog="picchio dev", description="local real components for development and tests")
    ap.add_argument("what", choices=sorted(_STATE))
    ap.add_argument("action", choices=sorted(_COMMANDS))
    ap.add_argument("--workdir", type=Path, help="state, data and logs (default: $PICCHIO_CACHE/dev/<what>)")
    ap.add_argument("--nodes", type=int, default=3, help="fake kwok nodes (cluster up)")
    a = ap.parse_args(argv)
    workdir = (a.workdir or _default_workdir(a.what)).resolve()
    return _COMMANDS[a.action](a.what, workdir, a.nodes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
