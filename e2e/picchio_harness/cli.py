"""``picchio dev cluster`` — a local Kubernetes control plane with kwok nodes,
registered by the harness as a ``picchio.dev`` plugin (pyproject.toml entry
point) so the product's CLI never imports the harness.

    picchio dev cluster up|down|env|status [--nodes N]
    python -m picchio_harness.cli cluster|etcd|minio up|down|env|status   # same, without the entry point
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from logstore.dev.cli import DevService
from logstore.dev.cli import main as dev_main

from .build import MissingComponent, component_binary
from .procs import cache_dir


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


def _exports(state: dict[str, Any]) -> list[tuple[str, str]]:
    out = [("KUBECONFIG", state["kubeconfig"])]
    kdir = _kubectl_dir()
    return out + ([("PATH", str(kdir))] if kdir is not None else [])


def _start(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from . import k8s

    c = k8s.start_cluster(workdir, nodes=args.nodes)
    c.detach()
    return c.state()


CLUSTER = DevService(
    "cluster", "etcd 3.6 + kube-apiserver, controller-manager, scheduler + kwok nodes", _start, _exports,
    add_arguments=lambda ap: ap.add_argument("--nodes", type=int, default=3, help="fake kwok nodes (up)"),
    describe=lambda s: f"kubeconfig: {s['kubeconfig']}  (server {s['server']}, nodes {', '.join(s['nodes'])})",
)


def main(argv: list[str]) -> int:
    return dev_main(argv, extra=[CLUSTER])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
