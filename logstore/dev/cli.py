"""``picchio dev`` — start and stop real components on loopback for local work.

    picchio dev [--workdir D] etcd|minio|<plugin> up|down|env|status

``up`` starts the processes detached (they outlive this command) and records
their PIDs in a state file under the workdir (default
``$PICCHIO_CACHE/dev/<what>``), which is how a later ``down`` — from any
shell — finds exactly those processes and nothing else.  ``env`` prints
``export`` lines for ``eval "$(picchio dev … env)"``.

Why plugins: etcd and MinIO are what a user of the log needs, so the product
owns them; more services register under the entry-point group
``picchio.dev`` (the test harness adds ``cluster``: a Kubernetes control plane
with kwok nodes), so the product never imports the test harness.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .procs import ComponentMissing, cache_dir, pid_runs
from .state import read_state_file, state_alive, stop_from_state, write_state_file

State = dict[str, Any]
ENTRY_POINT_GROUP = "picchio.dev"


@dataclass(frozen=True)
class DevService:
    """One thing ``picchio dev`` can start.  ``start`` runs it detached and
    returns its state record (``processes``: what ``down`` stops);
    ``exports`` turns a record into environment variables (a ``PATH`` entry
    is prepended to $PATH)."""

    name: str
    help: str
    start: Callable[[Path, argparse.Namespace], State]
    exports: Callable[[State], list[tuple[str, str]]]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda ap: None
    describe: Callable[[State], str] = lambda state: ""

    @property
    def state_file(self) -> str:
        return f"{self.name}.json"


def _start_etcd(workdir: Path, _args: argparse.Namespace) -> State:
    from .etcd import start_etcd

    workdir.mkdir(parents=True, exist_ok=True)
    e = start_etcd(workdir)
    e.proc.detach()
    return {"kind": "etcd", "workdir": str(workdir), "endpoint": e.endpoint, "binary": e.binary,
            "processes": [e.proc.record()]}


def _start_minio(workdir: Path, _args: argparse.Namespace) -> State:
    from .s3 import start_s3

    workdir.mkdir(parents=True, exist_ok=True)
    s = start_s3(workdir, prefer="minio")
    s.proc.detach()
    return {"kind": "minio", "workdir": str(workdir), "endpoint": s.endpoint,
            "access_key": s.access_key, "secret_key": s.secret_key, "processes": [s.proc.record()]}


BUILTIN = [
    DevService("etcd", "etcd (cached 3.6 build, else Debian's etcd-server)", _start_etcd,
               lambda s: [("ETCD_ENDPOINTS", s["endpoint"]), ("ETCDCTL_ENDPOINTS", f"http://{s['endpoint']}")]),
    DevService("minio", "MinIO (S3) on loopback", _start_minio,
               lambda s: [("AWS_ENDPOINT_URL", s["endpoint"]), ("AWS_ACCESS_KEY_ID", s["access_key"]),
                          ("AWS_SECRET_ACCESS_KEY", s["secret_key"]), ("AWS_REGION", "us-east-1")]),
]


def services(extra: list[DevService] | None = None) -> tuple[dict[str, DevService], dict[str, str]]:
    """Built-in services, plugins from the ``picchio.dev`` entry points and
    ``extra``; plus the plugins that failed to load, with the reason."""
    found = {s.name: s for s in BUILTIN}
    broken: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            svc = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not take the built-in services down
            broken[ep.name] = f"{type(e).__name__}: {e}"
            continue
        found[svc.name] = svc
    for svc in extra or []:
        found[svc.name] = svc
        broken.pop(svc.name, None)
    return found, broken


def _print_env(svc: DevService, state: State) -> None:
    for k, v in svc.exports(state):
        print(f'export PATH={shlex.quote(v)}:"$PATH"' if k == "PATH" else f"export {k}={shlex.quote(v)}")


def cmd_up(svc: DevService, workdir: Path, args: argparse.Namespace) -> int:
    path = workdir / svc.state_file
    state = read_state_file(path)
    if state and state_alive(state):
        print(f"{svc.name} already up (state: {path})", file=sys.stderr)
        _print_env(svc, state)
        return 0
    if state:  # half-dead leftovers of an earlier run: clear them first
        stop_from_state(path)
    try:
        state = svc.start(workdir, args)
    except ComponentMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError, OSError) as e:  # a process that died or never became ready
        print(f"error: {svc.name} did not start: {e}", file=sys.stderr)
        return 1
    write_state_file(path, state)
    pids = ", ".join(f"{p['name']}={p['pid']}" for p in state["processes"])
    print(f"{svc.name} up: {pids}", file=sys.stderr)
    if svc.describe(state):
        print(svc.describe(state), file=sys.stderr)
    print(f"logs under {workdir}; stop with: picchio dev {svc.name} down", file=sys.stderr)
    _print_env(svc, state)
    return 0


def cmd_down(svc: DevService, workdir: Path, _args: argparse.Namespace) -> int:
    stopped = stop_from_state(workdir / svc.state_file)
    print(f"{svc.name} down" + (f": stopped {', '.join(stopped)}" if stopped else " (nothing was running)"),
          file=sys.stderr)
    return 0


def cmd_env(svc: DevService, workdir: Path, _args: argparse.Namespace) -> int:
    state = read_state_file(workdir / svc.state_file)
    if not state or not state_alive(state):
        print(f"{svc.name} is not up: run `picchio dev {svc.name} up`", file=sys.stderr)
        return 1
    _print_env(svc, state)
    return 0


def cmd_status(svc: DevService, workdir: Path, _args: argparse.Namespace) -> int:
    state = read_state_file(workdir / svc.state_file)
    if not state:
        print(f"{svc.name}: down")
        return 1
    for p in state.get("processes") or []:
        print(f"{p['name']:<24} pid {p['pid']:<8} {'running' if pid_runs(p['pid'], p.get('exe')) else 'GONE'}"
              f"  log {p.get('log', '')}")
    return 0 if state_alive(state) else 1


COMMANDS: dict[str, Callable[[DevService, Path, argparse.Namespace], int]] = {
    "up": cmd_up, "down": cmd_down, "env": cmd_env, "status": cmd_status,
}


def main(argv: list[str], extra: list[DevService] | None = None) -> int:
    """Entry point for ``picchio dev ...`` (argv without the leading 'dev')."""
    found, broken = services(extra)
    ap = argparse.ArgumentParser(
        prog="picchio dev", description="real components on loopback for development",
        epilog=f"more services register under the entry-point group {ENTRY_POINT_GROUP!r}: a checkout's "
               "test harness adds `cluster` (pip install -e . registers it)")
    ap.add_argument("--workdir", type=Path, help="state, data and logs (default: $PICCHIO_CACHE/dev/<what>)")
    sub = ap.add_subparsers(dest="what", required=True, metavar="{" + ",".join(sorted({*found, *broken})) + "}")
    for svc in found.values():
        sp = sub.add_parser(svc.name, help=svc.help)
        sp.add_argument("action", choices=sorted(COMMANDS))
        sp.add_argument("--workdir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        svc.add_arguments(sp)
    for name, why in broken.items():
        sub.add_parser(name, help=f"unavailable: {why}").add_argument("rest", nargs="*")
    args = ap.parse_args(argv)
    if args.what in broken:
        print(f"error: picchio dev {args.what} is unavailable: {broken[args.what]}", file=sys.stderr)
        return 2
    svc = found[args.what]
    workdir = (args.workdir or cache_dir() / "dev" / svc.name).resolve()
    return COMMANDS[args.action](svc, workdir, args)
