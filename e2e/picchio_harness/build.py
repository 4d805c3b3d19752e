"""Build the real components the tests run (Kubernetes control plane, kubectl,
etcd 3.6, kwok, MinIO, toxiproxy, Woodpecker) from their Go modules, into a version-keyed cache.

Why from Go modules: this workplace reaches the Go module proxy but no
release downloads or container registries, and Debian's builds are too old
(etcd 3.4, kubectl 1.20).  Why a wrapper module per component: the upstream
modules carry ``replace`` directives (Kubernetes' staging tree, etcd's
sibling modules), so ``go install pkg@version`` refuses them; a small module
of ours that requires them (and, for Kubernetes, replaces every staging module
by its published ``k8s.io/<name> v0.x`` tag) builds them with plain
``go build``.  Each component gets its own module so that MVS never mixes the
dependency graphs of MinIO, etcd and Kubernetes.

Usage::

    python -m picchio_harness.build [--only NAME ...] [--list]

Binaries land in ``$PICCHIO_CACHE/bin/<component>-<version>`` (default
``~/.cache/picchio``), GOMODCACHE/GOCACHE under ``$PICCHIO_CACHE/go``.  A
component whose binary exists is skipped, so a warm run is a no-op.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .procs import ComponentMissing, cache_dir

#: e2e/cluster holds versions.env and the wrapper modules (go/<module>/go.mod).
CLUSTER_DIR = Path(__file__).resolve().parent.parent / "cluster"
#: e2e/kind/go holds the modules of the offline kind node image (kind, CoreDNS,
#: local-path-provisioner, crictl wrappers, and our own pause and kindnetd).
KIND_GO_DIR = Path(__file__).resolve().parent.parent / "kind" / "go"
VERSIONS_FILE = CLUSTER_DIR / "versions.env"
PARALLELISM = "2"  # the machines have 2 cores; more only adds memory pressure


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """KEY=VALUE lines; '#' starts a comment.  Kept trivial on purpose so make
    and shell can include the same file."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def _k8s_ldflags(v: dict[str, str]) -> list[str]:
    """Stamp the version into both places Kubernetes reads it from: without
    it binaries report v0.0.0 and kwok/kubectl version skew checks misfire."""
    ver = v["KUBERNETES_VERSION"]
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", ver)
    if not m:
        raise ValueError(f"KUBERNETES_VERSION must be vMAJOR.MINOR.PATCH, got {ver!r}")
    fields = {
        "gitVersion": ver, "gitMajor": m.group(1), "gitMinor": m.group(2),
        "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
    }
    flags: list[str] = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={val}" for k, val in fields.items()]
    return flags


def _minio_ldflags(v: dict[str, str]) -> list[str]:
    """MinIO's own dev-build stamp (DEVELOPMENT.<commit time>), derived from
    the pseudo-version, so `minio --version` says which commit this is."""
    m = re.fullmatch(r"v0\.0\.0-(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)-([0-9a-f]{12})", v["MINIO_VERSION"])
    if not m:
        return []
    y, mo, d, h, mi, s, commit = m.groups()
    return [
        f"-X github.com/minio/minio/cmd.Version={y}-{mo}-{d}T{h}:{mi}:{s}Z",
        f"-X github.com/minio/minio/cmd.ReleaseTag=DEVELOPMENT.{y}-{mo}-{d}T{h}-{mi}-{s}Z",
        f"-X github.com/minio/minio/cmd.CommitID={commit}",
        f"-X github.com/minio/minio/cmd.ShortCommitID={commit}",
        f"-X github.com/minio/minio/cmd.CopyrightYear={y}",
    ]


def _kwok_ldflags(v: dict[str, str]) -> list[str]:
    return [f"-X sigs.k8s.io/kwok/pkg/consts.Version={v['KWOK_VERSION']}"]


def _toxiproxy_ldflags(v: dict[str, str]) -> list[str]:
    return [f"-X github.com/Shopify/toxiproxy/v2.Version={v['TOXIPROXY_VERSION']}"]


#: Modules the Go checksum database has no entry for (Woodpecker v0.1.35 answers 404 there):
#: verified against the committed go.sum only.
GONOSUMDB = "github.com/zilliztech/woodpecker"


@dataclass(frozen=True)
class Component:
    name: str                 # binary prefix in the cache: <name>-<version>
    module: str               # wrapper module dir under e2e/cluster/go/
    upstream: str             # the module we require
    package: str              # the main package to build
    version_key: str          # key in versions.env ("" for our own source)
    ldflags: Callable[[dict[str, str]], list[str]] = lambda v: []
    root: Path = CLUSTER_DIR / "go"  # where the module dir lives
    #: our own main package inside the wrapper module (e.g. wpctl): the cache key is the
    #: upstream pin plus a hash of our source, so editing it rebuilds it
    own_source: bool = False

    @property
    def module_dir(self) -> Path:
        return self.root / self.module

    @property
    def local(self) -> bool:
        """Our own source (no upstream module to pin): versioned by content."""
        return not self.upstream

    def version(self, v: dict[str, str]) -> str:
        if self.local:
            return "src-" + _source_hash(self.module_dir)
        if self.own_source:
            return f"{v[self.version_key]}-src-{_source_hash(self.module_dir)}"
        return v[self.version_key]

    def upstream_version(self, v: dict[str, str]) -> str:
        return v[self.version_key] if self.own_source else self.version(v)

    def binary(self, v: dict[str, str]) -> Path:
        return cache_dir() / "bin" / f"{self.name}-{self.version(v)}"


def _source_hash(mdir: Path) -> str:
    """Content hash of a module of ours: editing it makes a new cache key."""
    import hashlib
    h = hashlib.sha256()
    for f in sorted(mdir.rglob("*")):
        if f.is_file() and (f.suffix == ".go" or f.name in ("go.mod", "go.sum")):
            h.update(str(f.relative_to(mdir)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _k8s(name: str) -> Component:
    return Component(name, "kubernetes", "k8s.io/kubernetes", f"k8s.io/kubernetes/cmd/{name}",
                     "KUBERNETES_VERSION", _k8s_ldflags)


#: Build order: quick ones first, so MinIO/etcd are usable while the
#: control plane (the bulk of a cold build) still compiles.
COMPONENTS: list[Component] = [
    Component("etcd", "etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3", "ETCD_VERSION"),
    Component("kwok", "kwok", "sigs.k8s.io/kwok", "sigs.k8s.io/kwok/cmd/kwok", "KWOK_VERSION", _kwok_ldflags),
    Component("minio", "minio", "github.com/minio/minio", "github.com/minio/minio", "MINIO_VERSION", _minio_ldflags),
    # toxiproxy-server: the fault-injection suite's userspace proxy (tests/faults/).
    Component("toxiproxy", "toxiproxy", "github.com/Shopify/toxiproxy/v2", "github.com/Shopify/toxiproxy/v2/cmd/server",
              "TOXIPROXY_VERSION", _toxiproxy_ldflags),
    # The real Woodpecker (tests/interop/): its LogStore server (`woodpecker server ...`) and wpctl,
    # our small CLI over its client (write/read/tail/bench; wrapper module e2e/cluster/go/woodpecker).
    Component("woodpecker", "woodpecker", "github.com/zilliztech/woodpecker", "github.com/zilliztech/woodpecker/cmd",
              "WOODPECKER_VERSION"),
    Component("wpctl", "woodpecker", "github.com/zilliztech/woodpecker", "picchio.local/e2e/cluster/woodpecker/wpctl",
              "WOODPECKER_VERSION", own_source=True),
    _k8s("kube-apiserver"),
    _k8s("kube-controller-manager"),
    _k8s("kube-scheduler"),
    _k8s("kubectl"),
    # Node-side binaries for the offline kind node image (e2e/kind/).
    _k8s("kubelet"),
    _k8s("kubeadm"),
    _k8s("kube-proxy"),
    # kind itself, the node image's add-ons, and our own pause/kindnetd.
    Component("kind", "kind", "sigs.k8s.io/kind", "sigs.k8s.io/kind", "KIND_VERSION", root=KIND_GO_DIR),
    Component("coredns", "coredns", "github.com/coredns/coredns", "github.com/coredns/coredns",
              "COREDNS_VERSION", root=KIND_GO_DIR),
    Component("local-path-provisioner", "local-path-provisioner", "github.com/rancher/local-path-provisioner",
              "github.com/rancher/local-path-provisioner", "LOCAL_PATH_PROVISIONER_VERSION", root=KIND_GO_DIR),
    Component("crictl", "cri-tools", "sigs.k8s.io/cri-tools", "sigs.k8s.io/cri-tools/cmd/crictl",
              "CRI_TOOLS_VERSION", root=KIND_GO_DIR),
    Component("pause", "pause", "", "picchio.local/e2e/kind/pause", "", root=KIND_GO_DIR),
    Component("kindnetd", "kindnetd", "", "picchio.local/e2e/kind/kindnetd", "", root=KIND_GO_DIR),
]
GROUPS: dict[str, list[str]] = {
    "kubernetes": ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"],
    "cluster": ["etcd", "kwok", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"],
    "interop": ["etcd", "minio", "woodpecker", "wpctl"],  # tests/interop: the real Woodpecker beside picchio
    "node": ["kubelet", "kubeadm", "kube-proxy"],
    # Everything the offline kind node image (e2e/kind/node-image.sh) needs.
    "kind": ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl",
             "kubelet", "kubeadm", "kube-proxy", "kind", "coredns", "local-path-provisioner",
             "crictl", "pause", "kindnetd"],
}


#: Only the kind stage (`make kind-image`, `make e2e-kind`) uses these: `make test` and
#: `make demo` never build them (the node image is the only consumer).
KIND_ONLY = {"kubelet", "kubeadm", "kube-proxy", "kind", "coredns", "local-path-provisioner", "crictl",
             "pause", "kindnetd"}
#: What `make test` builds: everything the tests below tests/ start, i.e. all but the kind-only pieces.
GROUPS["test"] = [c.name for c in COMPONENTS if c.name not in KIND_ONLY]


class MissingComponent(ComponentMissing):
    """A component the caller needs has not been built yet."""


def component_binary(name: str) -> str:
    """The binary for ``name`` at the version pinned in versions.env.

    ``$PICCHIO_<NAME>_BIN`` (e.g. PICCHIO_KUBE_APISERVER_BIN) overrides it.
    Exactly the pinned build, not "the newest cached one": a stale build of
    an older pin must not silently stand in for the one the tests expect."""
    env_var = "PICCHIO_" + name.upper().replace("-", "_") + "_BIN"
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    comp = next((c for c in COMPONENTS if c.name == name), None)
    if comp is None:
        raise KeyError(name)
    path = comp.binary(read_versions())
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingComponent(f"{name} is not built ({path} is missing): run `make components` "
                               f"(or `make components ONLY={name}`; cold builds take 20-40 min)")
    return str(path)


def go_binary() -> str:
    """$GO, else `go` on PATH, else the tarball install location."""
    for cand in (os.environ.get("GO"), shutil.which("go"), "/usr/local/go/bin/go"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("no Go toolchain: install Go >= 1.24 (e.g. /usr/local/go) or set $GO")


def go_env() -> dict[str, str]:
    """Everything Go writes goes under the picchio cache, keyed by nothing but
    content, so repeated builds and other projects' caches never interfere.
    GOTOOLCHAIN=local: a go.mod `toolchain` line must not trigger a download."""
    root = cache_dir() / "go"
    env = dict(os.environ)
    env.update({
        "GOMODCACHE": str(root / "mod"),
        "GOCACHE": str(root / "build"),
        "GOPATH": str(root / "path"),
        "CGO_ENABLED": "0",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "GONOSUMDB": ",".join(x for x in (os.environ.get("GONOSUMDB"), GONOSUMDB) if x),
    })
    return env


def _run(argv: list[str], cwd: Path, timeout: float) -> None:
    print("  $ " + " ".join(argv), flush=True)
    subprocess.run(argv, cwd=cwd, env=go_env(), check=True, timeout=timeout)


def _gomod(module_dir: Path) -> dict:
    out = subprocess.run([go_binary(), "mod", "edit", "-json"], cwd=module_dir, env=go_env(),
                         check=True, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


def _required(mod: dict, path: str) -> str | None:
    for r in mod.get("Require") or []:
        if r["Path"] == path:
            return r["Version"]
    return None


def staging_modules(k8s_version: str) -> list[str]:
    """The staging modules k8s.io/kubernetes replaces with ./staging/src/...,
    read from its own go.mod so a new minor's additions are picked up."""
    out = subprocess.run([go_binary(), "mod", "download", "-json", f"k8s.io/kubernetes@{k8s_version}"],
                         env=go_env(), check=True, capture_output=True, text=True, timeout=1800,
                         cwd=CLUSTER_DIR)
    gomod = Path(json.loads(out.stdout)["GoMod"]).read_text()
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", gomod, re.M)))


def sync_module(comp: Component, versions: dict[str, str], group: list[Component]) -> None:
    """Make the wrapper module require the pinned version.  A no-op when the
    committed go.mod already matches versions.env (the usual case), so
    builds stay reproducible from the committed go.mod/go.sum."""
    mdir = comp.module_dir
    if comp.local:
        return  # our own module: its go.mod/go.sum are maintained by hand
    want = comp.upstream_version(versions)
    gomod = mdir / "go.mod"
    if gomod.exists() and _required(_gomod(mdir), comp.upstream) == want:
        return
    print(f"[sync] {comp.module}: pinning {comp.upstream}@{want}", flush=True)
    go = go_binary()
    mdir.mkdir(parents=True, exist_ok=True)
    if not gomod.exists():
        _run([go, "mod", "init", f"picchio.local/e2e/{comp.root.parent.name}/{comp.module}"], mdir, 60)
        # `go mod init` writes the local toolchain's version; start low and let
        # tidy raise it only as far as the dependencies demand.
        _run([go, "mod", "edit", "-go=1.24.0"], mdir, 60)
    _run([go, "mod", "edit", f"-require={comp.upstream}@{want}"], mdir, 60)
    if comp.upstream == "k8s.io/kubernetes":
        minor = re.sub(r"^v1\.", "v0.", want)  # v1.34.4 -> v0.34.4
        edits = [f"-replace={m}={m}@{minor}" for m in staging_modules(want)]
        _run([go, "mod", "edit", *edits], mdir, 60)
    for c in group:
        if not c.own_source:  # our own packages live in the module itself
            _run([go, "mod", "edit", f"-tool={c.package}"], mdir, 60)
    _run([go, "mod", "tidy"], mdir, 3600)


class _Heartbeat:
    """Prints 'still building' every 30 s, next to how long the last build of
    it took here: a cold control-plane build is silent for 20+ minutes
    otherwise, which looks like a hang."""

    def __init__(self, label: str, every: float = 30.0, expected: float | None = None) -> None:
        self.label, self.every = label, every
        self.hint = f" (last build here: {expected:.0f}s)" if expected else ""
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            print(f"  ... {self.label}: {time.monotonic() - self._t0:.0f}s{self.hint}", flush=True)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def build(comp: Component, versions: dict[str, str]) -> float:
    """Build one component into the cache; returns the wall time in seconds."""
    out = comp.binary(versions)
    out.parent.mkdir(parents=True, exist_ok=True)
    mdir = comp.module_dir
    tmp = out.with_name(f".{out.name}.partial")  # hidden: never matches find_binary's <name>-* glob
    ldflags = " ".join(["-s", "-w", *comp.ldflags(versions)])
    argv = [go_binary(), "build", "-p", PARALLELISM, "-trimpath", "-ldflags", ldflags,
            "-o", str(tmp), comp.package]
    t0 = time.monotonic()
    with _Heartbeat(f"{comp.name} {comp.version(versions)}", expected=last_build_seconds(comp.name)):
        _run(argv, mdir, 4 * 3600)
    os.replace(tmp, out)  # atomic: a half-written binary is never found
    return time.monotonic() - t0


def _record(name: str, version: str, seconds: float) -> None:
    """Append to build-times.tsv so cold/warm figures can be reported later."""
    log = cache_dir() / "build-times.tsv"
    with open(log, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{name}\t{version}\t{seconds:.1f}\n")


def last_build_seconds(name: str) -> float | None:
    """How long the newest recorded build of ``name`` took (build-times.tsv),
    so a build can say how long to expect instead of going silent."""
    try:
        rows = [ln.split("\t") for ln in (cache_dir() / "build-times.tsv").read_text().splitlines()]
    except OSError:
        return None
    secs = [float(r[3]) for r in rows if len(r) == 4 and r[1] == name]
    return secs[-1] if secs else None


def select(only: list[str] | None) -> list[Component]:
    if not only:
        return list(COMPONENTS)
    names: set[str] = set()
    for n in only:
        if n in GROUPS:
            names.update(GROUPS[n])
        elif any(c.name == n for c in COMPONENTS):
            names.add(n)
        else:
            known = [c.name for c in COMPONENTS] + list(GROUPS)
            raise SystemExit(f"unknown component {n!r}; known: {', '.join(known)}")
    return [c for c in COMPONENTS if c.name in names]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m picchio_harness.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="component or group (kubernetes, cluster, test, kind); repeatable")
    ap.add_argument("--list", action="store_true", help="print each binary path and whether it is built")
    args = ap.parse_args(argv)
    versions = read_versions()
    todo = select(args.only)
    if args.list:
        for c in todo:
            b = c.binary(versions)
            print(f"{'built  ' if b.exists() else 'missing'} {b}")
        return 0
    t_all = time.monotonic()
    missing = [c for c in todo if not c.binary(versions).exists()]
    for c in todo:
        if c not in missing:
            print(f"[ok] {c.name} {c.version(versions)} (cached: {c.binary(versions)})", flush=True)
    synced: set[str] = set()
    for c in missing:
        t0 = time.monotonic()  # a component's time includes its module sync/download
        if c.module not in synced:
            group = [x for x in COMPONENTS if x.module == c.module]
            sync_module(c, versions, group)
            synced.add(c.module)
        last = last_build_seconds(c.name)
        print(f"[build] {c.name} {c.version(versions)} -> {c.binary(versions)} "
              f"({f'last build here took {last:.0f}s' if last else 'no earlier build recorded here'})", flush=True)
        build(c, versions)
        secs = time.monotonic() - t0
        _record(c.name, c.version(versions), secs)
        print(f"[done] {c.name} in {secs:.0f}s", flush=True)
    print(f"components ready in {time.monotonic() - t_all:.1f}s ({len(missing)} built)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
