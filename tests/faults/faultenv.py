"""The fault suite's own world: network namespaces + veth pairs it creates
itself, small tmpfs mounts, and its own etcd, S3 (MinIO),
toxiproxy and three LogStores — so pausing, cutting or filling any of them
never hurts another test.

Topology (``L`` = this lab's number, every address inside namespaces we made)::

    netns <p>core : lo 127.0.0.1 + 10.201.L.253/32  etcd :2379, S3 :9000,
                    toxiproxy API 127.0.0.1:8474, proxies 10.201.L.253:2000i -> LogStore i,
                    10.201.L.253:9100 -> S3; the writer/reader subprocesses run here
      veth <p>c<i> 10.201.L.(4i+1)/30  <-->  veth <p>l<i> 10.201.L.(4i+2)/30
    netns <p>ls<i>: LogStore i on 10.201.L.(4i+2):18080, default route via core

Clients reach LogStore i only through its toxiproxy proxy (its advertised
address), so latency/bandwidth/half-open toxics sit between the client and the
LogStore; ``ip link set <p>c<i> down`` partitions LogStore i from the client,
etcd and S3.  The pytest process stays in the root namespace and talks to the
lab through a thread that ``setns``'d into the core namespace (NetnsThread),
or through ``ip netns exec`` subprocesses.

Nothing is skipped: a missing kernel facility (netns, veth, tmpfs) raises
LabError naming the command and its error, and the test fails with it.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from picchio_harness.procs import Proc

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
CLONE_NEWNET = 0x40000000
SUBNET = "10.201"


class LabError(RuntimeError):
    """A kernel facility or component the fault suite needs is missing."""


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise LabError(f"`{' '.join(argv)}`: {e} (install iproute2 / util-linux)") from e
    if check and r.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


def wait_until(what: str, fn: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Poll ``fn`` until truthy; AssertionError naming ``what`` and the last
    value/error at the deadline."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            got = fn()
            if got:
                return got
            last = got
        except LabError:
            raise
        except Exception as e:  # noqa: BLE001 - not ready yet
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


# ---------------------------------------------------------------- namespaces
_libc = ctypes.CDLL(None, use_errno=True)


def _enter_netns(name: str) -> None:
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsThread:
    """Runs callables in one thread that lives in a network namespace
    (setns affects the calling thread only), for plain blocking socket I/O
    from the pytest process: HTTP health checks, toxiproxy's API."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"netns-{ns}",
                                                            initializer=_enter_netns, initargs=(ns,))

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30) -> T:
        return self._pool.submit(fn, *args).result(timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def http(method: str, url: str, body: Any = None, timeout: float = 5) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw)
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------- tmpfs
@dataclass
class Tmpfs:
    """A small tmpfs (we are root): the ENOSPC nemesis fills it with a ballast
    file and heals by deleting it; ``resize`` remounts with another size."""

    path: Path
    size: str

    def mount(self) -> "Tmpfs":
        self.path.mkdir(parents=True, exist_ok=True)
        sh("mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "picchio-fault", str(self.path))
        return self

    def resize(self, size: str) -> None:
        sh("mount", "-o", f"remount,size={size}", str(self.path))
        self.size = size

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def unmount(self) -> None:
        if os.path.ismount(self.path):
            r = sh("umount", str(self.path), check=False)
            if r.returncode != 0:  # a process still has files open there: detach it
                sh("umount", "-l", str(self.path), check=False)


# ---------------------------------------------------------------- components
def component(name: str) -> str | None:
    from picchio_harness.build import MissingComponent, component_binary
    try:
        return component_binary(name)
    except MissingComponent:
        return None


def toxiproxy_binary() -> str:
    b = component("toxiproxy")
    if not b:
        raise LabError("toxiproxy is not built: run `make components` "
                       "(or `PYTHONPATH=e2e python -m picchio_harness.build --only toxiproxy`)")
    return b


@dataclass
class NsProc:
    """A server process inside a network namespace, started with
    ``ip netns exec`` (which execs, so the PID is the server's own)."""

    name: str
    ns: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: Proc | None = None

    def start(self) -> "NsProc":
        self.proc = Proc(self.name, ["ip", "netns", "exec", self.ns, *self.argv], self.log_path, env=self.env).start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return bool(self.proc and self.proc.alive())

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        if self.proc and self.alive():
            self.proc.kill()
            self.proc.popen.wait(10)

    def stop(self) -> None:
        if self.proc:
            import signal as _s
            self.signal(_s.SIGCONT)  # a stopped process cannot handle SIGTERM
            self.proc.stop(timeout=10)


@dataclass
class LabLogStore:
    index: int
    ns: str
    addr: str            # inside its namespace
    port: int
    proxy: str           # host:port of its toxiproxy proxy (advertised)
    proxy_name: str
    link: str            # core-side veth
    data: Tmpfs
    config_path: Path
    log_path: Path
    ready_path: Path
    proc: NsProc | None = None

    @property
    def name(self) -> str:
        return f"logstore-{self.index}"

    @property
    def endpoint(self) -> str:
        return self.proxy

    def start(self, timeout: float = 40) -> None:
        self.ready_path.unlink(missing_ok=True)
        env = {"PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"}
        self.proc = NsProc(self.name, self.ns, [sys.executable, "-m", "logstore.server.main", "serve", "--config",
                                                str(self.config_path), "--ready-file", str(self.ready_path)],
                           self.log_path, env=env).start()
        self.proc.proc.wait_ready(self.ready_path.exists, timeout=timeout)

    def alive(self) -> bool:
        return bool(self.proc and self.proc.alive())


@dataclass
class Lab:
    """One isolated service cluster (see the module docstring)."""

    workdir: Path
    number: int
    deadlines: dict[str, float]
    n_logstores: int = 3
    prefix: str = ""
    core: str = ""
    namespaces: list[str] = field(default_factory=list)
    mounts: list[Tmpfs] = field(default_factory=list)
    procs: list[NsProc] = field(default_factory=list)
    logstores: list[LabLogStore] = field(default_factory=list)
    etcd: NsProc | None = None
    s3: NsProc | None = None
    s3_flavour: str = ""
    toxiproxy: NsProc | None = None
    nt: NetnsThread | None = None

    # -- addresses
    @property
    def hub(self) -> str:
        return f"{SUBNET}.{self.number}.253"

    @property
    def etcd_endpoint(self) -> str:
        return f"{self.hub}:2379"

    @property
    def toxi_api(self) -> str:
        return "http://127.0.0.1:8474"

    # -- lifecycle
    def up(self) -> "Lab":
        self.prefix = f"pf{self.number}"
        self.core = f"{self.prefix}core"
        try:
            self._net()
            self.nt = NetnsThread(self.core)
            self._etcd()
            self._s3()
            self._toxiproxy()
            self._logstores()
        except BaseException:
            self.down()
            raise
        return self

    def _ns(self, name: str) -> None:
        sh("ip", "netns", "del", name, check=False)
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _net(self) -> None:
        self._ns(self.core)
        sh("ip", "-n", self.core, "addr", "add", f"{self.hub}/32", "dev", "lo")
        for i in range(self.n_logstores):
            ns, host, inner = f"{self.prefix}ls{i}", f"{self.prefix}c{i}", f"{self.prefix}l{i}"
            self._ns(ns)
            sh("ip", "link", "add", host, "netns", self.core, "type", "veth", "peer", "name", inner, "netns", ns)
            a, b = f"{SUBNET}.{self.number}.{4 * i + 1}", f"{SUBNET}.{self.number}.{4 * i + 2}"
            sh("ip", "-n", self.core, "addr", "add", f"{a}/30", "dev", host)
            sh("ip", "-n", ns, "addr", "add", f"{b}/30", "dev", inner)
            sh("ip", "-n", self.core, "link", "set", host, "up")
            sh("ip", "-n", ns, "link", "set", inner, "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", a)

    def _start(self, name: str, ns: str, argv: list[str], env: dict | None = None) -> NsProc:
        p = NsProc(name, ns, argv, self.workdir / f"{name}.log", env=env).start()
        self.procs.append(p)
        return p

    def _etcd(self) -> None:
        from picchio_harness.etcd import etcd_binary
        b = etcd_binary()
        data = self.workdir / "etcd.data"
        shutil.rmtree(data, ignore_errors=True)
        argv = [b, "--name", "fault-etcd", "--data-dir", str(data),
                "--listen-client-urls", f"http://127.0.0.1:2379,http://{self.hub}:2379",
                "--advertise-client-urls", f"http://{self.hub}:2379",
                "--listen-peer-urls", "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                "--initial-cluster", "fault-etcd=http://127.0.0.1:2380"]
        if "3.4." not in sh(b, "--version").stdout:
            argv.append("--unsafe-no-fsync")
        self.etcd = self._start("etcd", self.core, argv, env={"ETCD_UNSUPPORTED_ARCH": ""})

        def healthy() -> bool:
            if not self.etcd.alive():
                raise LabError("etcd died:\n" + self.etcd.proc.tail())
            return http("GET", "http://127.0.0.1:2379/health", timeout=1)[1].get("health") == "true"
        self.nt.call(wait_until, "etcd /health", healthy, 30, timeout=40)

    def _s3(self) -> None:
        """MinIO, the Go-module build — never a stand-in (a fault suite on a fake
        S3 would prove nothing about the real one)."""
        from picchio_harness.s3 import ACCESS_KEY, SECRET_KEY, minio_binary
        mb = minio_binary()
        if not mb:
            raise LabError("MinIO is not built: run `make components ONLY=minio`")
        data = self.workdir / "minio.data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        env = {"MINIO_ROOT_USER": ACCESS_KEY, "MINIO_ROOT_PASSWORD": SECRET_KEY, "MINIO_BROWSER": "off",
               "MINIO_UPDATE": "off"}
        self.s3 = self._start("minio", self.core, [mb, "server", str(data), "--address", f"{self.hub}:9000",
                                                   "--console-address", "127.0.0.1:9001", "--quiet"], env=env)
        self.s3_flavour, self.s3_keys = "minio", (ACCESS_KEY, SECRET_KEY)
        url = f"http://{self.hub}:9000/minio/health/ready"

        def ready() -> bool:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200 and r.headers.get("x-minio-server-status") != "offline"

        def check() -> bool:
            if not self.s3.alive():
                raise LabError(f"{self.s3_flavour} died:\n{self.s3.proc.tail()}")
            return ready()
        self.nt.call(wait_until, f"{self.s3_flavour} ready", check, 60, timeout=70)

    def _toxiproxy(self) -> None:
        self.toxiproxy = self._start("toxiproxy", self.core,
                                     [toxiproxy_binary(), "-host", "127.0.0.1", "-port", "8474"])
        self.nt.call(wait_until, "toxiproxy API", lambda: http("GET", self.toxi_api + "/version", timeout=1)[0] == 200,
                     20, timeout=30)
        self.add_proxy("s3", f"{self.hub}:9100", f"{self.hub}:9000")

    def add_proxy(self, name: str, listen: str, upstream: str) -> None:
        code, body = self.nt.call(http, "POST", self.toxi_api + "/proxies",
                                  {"name": name, "listen": listen, "upstream": upstream, "enabled": True})
        if code not in (200, 201):
            raise LabError(f"toxiproxy: creating proxy {name}: {code} {body!r}")

    def base_config(self) -> dict[str, Any]:
        d = self.deadlines
        return {
            "etcd.endpoints": [self.etcd_endpoint],
            "etcd.requestTimeout": f"{d['etcd']}s",
            "minio.address": self.hub, "minio.port": 9000,
            "minio.accessKeyID": self.s3_keys[0], "minio.secretAccessKey": self.s3_keys[1],
            "minio.bucketName": "picchio-faults", "minio.createBucket": True,
            "minio.requestTimeoutMs": f"{d['s3']}s",
            "woodpecker.client.quorum.requestTimeout": f"{d['quorum']}s",
            # small segments: completions, uploads and rolls happen during faults too
            "woodpecker.client.segmentRollingPolicy.maxSize": "2M",
            "woodpecker.client.segmentRollingPolicy.maxInterval": "4s",
        }

    def client_config(self, storage: str = "service", **extra: Any) -> dict[str, Any]:
        """The writer's/reader's config: the LogStores' etcd root (tests use
        their own log names), S3 through its toxiproxy proxy.  ``storage``
        minio: embedded mode on the lab's S3 (its hangs and toxics apply)."""
        cfg = self.base_config()
        cfg.update({"etcd.rootPath": "faults", "minio.rootPath": "files" if storage == "service" else "embedded",
                    "woodpecker.storage.type": storage, "minio.port": 9100})
        cfg.update(extra)
        return cfg

    def _logstores(self) -> None:
        for i in range(self.n_logstores):
            ns = f"{self.prefix}ls{i}"
            addr = f"{SUBNET}.{self.number}.{4 * i + 2}"
            data = Tmpfs(self.workdir / f"logstore-{i}.data", "96M").mount()
            self.mounts.append(data)
            proxy = f"{self.hub}:{20000 + i}"
            self.add_proxy(f"logstore-{i}", proxy, f"{addr}:18080")
            cfg = self.base_config()
            cfg.update({"etcd.rootPath": "faults", "minio.rootPath": "files",
                        "woodpecker.storage.type": "service", "woodpecker.storage.rootPath": str(data.path),
                        "woodpecker.logstore.host": addr, "woodpecker.logstore.port": 18080,
                        "woodpecker.logstore.advertiseAddress": proxy, "woodpecker.logstore.httpPort": 18081,
                        "woodpecker.logstore.registrationTTL": "3s",
                        "woodpecker.logstore.disk.maxBytes": "96Mi"})
            path = self.workdir / f"logstore-{i}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            ls = LabLogStore(i, ns, addr, 18080, proxy, f"logstore-{i}", f"{self.prefix}c{i}", data, path,
                             self.workdir / f"logstore-{i}.log", self.workdir / f"logstore-{i}.ready")
            self.logstores.append(ls)
        for ls in self.logstores:
            ls.start()
            self.procs.append(ls.proc)
        self.wait_registered(self.n_logstores)

    def registered(self) -> str:
        """Diagnostics: which LogStores etcd lists as registered right now."""
        code = ("import asyncio,sys\nfrom logstore import Config\nfrom logstore.meta import MetaStore\n"
                "from logstore.server.membership import live_logstores\n"
                "async def m():\n  s=MetaStore(Config({'etcd.endpoints':[sys.argv[1]],'etcd.rootPath':'faults'}))\n"
                "  await s.connect()\n  try: print(sorted(i.get('endpoint') for i in await live_logstores(s)))\n"
                "  finally: await s.close()\nasyncio.run(m())\n")
        r = self.exec_py(code, self.etcd_endpoint, timeout=15)
        return (r.stdout.strip() or r.stderr.strip()[-300:])

    def wait_registered(self, n: int, timeout: float = 30) -> None:
        code = ("import asyncio,sys\nfrom logstore import Config\nfrom logstore.meta import MetaStore\n"
                "from logstore.server.membership import live_logstores\n"
                "async def m():\n  s=MetaStore(Config({'etcd.endpoints':[sys.argv[1]],'etcd.rootPath':'faults'}))\n"
                "  await s.connect()\n  try: print(len(await live_logstores(s)))\n  finally: await s.close()\n"
                "asyncio.run(m())\n")
        wait_until(f"{n} LogStores registered",
                   lambda: int(self.exec_py(code, self.etcd_endpoint, timeout=15).stdout.strip() or 0) >= n, timeout)

    def ensure_healthy(self) -> list[str]:
        """After a test: every LogStore alive and registered, links up, no
        toxics left.  A LogStore that does not come back registered is
        restarted (and that is returned as a problem: it did not recover)."""
        import signal as _s
        notes: list[str] = []
        for p in self.procs:
            if p.alive():
                p.signal(_s.SIGCONT)
        for ls in self.logstores:
            sh("ip", "-n", self.core, "link", "set", ls.link, "up", check=False)
            code, body = self.toxi("GET", f"/proxies/{ls.proxy_name}/toxics")
            for t in (body if code == 200 and isinstance(body, list) else []):
                self.toxi("DELETE", f"/proxies/{ls.proxy_name}/toxics/{t['name']}")
                notes.append(f"toxic {t['name']} left on {ls.proxy_name}")
            (ls.data.path / ".fault-ballast").unlink(missing_ok=True)
            if not ls.alive():
                notes.append(f"{ls.name} was dead")
                ls.start()
        try:
            self.wait_registered(len(self.logstores), timeout=20)
        except AssertionError as e:
            notes.append(f"LogStores did not re-register after healing ({e}); restarted them")
            for ls in self.logstores:
                ls.proc.stop()
                ls.start()
            self.wait_registered(len(self.logstores), timeout=30)
        return notes

    def exec_py(self, code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        return subprocess.run(["ip", "netns", "exec", self.core, sys.executable, "-c", code, *args],
                              capture_output=True, text=True, timeout=timeout, env=env)

    def popen_py(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PYTHONUNBUFFERED="1")
        return subprocess.Popen(["ip", "netns", "exec", self.core, sys.executable, *argv], env=env,
                                start_new_session=True, **kw)

    def toxi(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.nt.call(http, method, self.toxi_api + path, body)

    def down(self) -> None:
        import signal as _s
        procs = list(self.procs)
        procs += [ls.proc for ls in self.logstores if ls.proc is not None and ls.proc not in procs]
        for p in procs:
            try:
                p.signal(_s.SIGCONT)
            except ProcessLookupError:
                pass
        for p in reversed(procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        if self.nt:
            self.nt.close()
        for m in self.mounts:
            m.unmount()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)  # deleting a namespace removes its veth ends
        self.namespaces.clear()


_LAB_COUNTER = [0]


def lab_number() -> int:
    """A third octet no other lab on this machine uses right now."""
    used = sh("ip", "netns", "list", check=False).stdout
    for k in range(250):
        n = (os.getpid() + _LAB_COUNTER[0] + k) % 250 + 1
        if f"pf{n}core" not in used:
            _LAB_COUNTER[0] += 1
            return n
    raise LabError("no free lab number (250 fault labs exist?)")
