"""A small nemesis library.  Every nemesis has inject() and heal(); heal() is
idempotent and the ``nemeses`` fixture heals everything in teardown, also when
the test failed.  Each one names the deadline that bounds the errors and stalls
it may cause (``deadline``: quorum | s3 | etcd | disk) and whether it takes a
LogStore out (``logstore_fault``: the quorum tolerates one at a time).

Kinds: pause (SIGSTOP/SIGCONT), kill (SIGKILL + restart on the same data),
wipe (SIGKILL + empty data dir + restart: a replaced disk), partition (veth
down/up), toxic (toxiproxy latency / bandwidth / half-open), diskfull (a
ballast file fills the tmpfs: ENOSPC), s3-hang and etcd-hang (SIGSTOP the
server process).
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faultenv import Lab, LabLogStore, NsProc, Tmpfs, sh

#: the typed errors an S3/etcd hang may surface (within its bound); a
#: single-LogStore fault may surface none (README: "One dead LogStore: no
#: error"); fencing/closed errors are never allowed (there is one writer).
TYPED = ("QuorumUnavailableError", "StorageError", "StorageFullError", "MetadataError")


@dataclass
class Nemesis:
    kind: str
    target: str = ""
    deadline: str = "quorum"
    logstore_fault: bool = False
    allowed_errors: tuple[str, ...] = ()
    t_inject: float | None = None
    t_heal: float | None = None
    active: bool = False
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind}({self.target})" if self.target else self.kind

    def inject(self) -> None:
        assert not self.active, f"{self.label} injected twice"
        self.t_inject = time.monotonic()  # the fault may bite as soon as injecting starts
        self.active = True  # heal() undoes a partial injection too
        self._inject()

    def heal(self) -> None:
        if not self.active:
            return
        self._heal()
        self.active = False
        self.t_heal = time.monotonic()

    def _inject(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _heal(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


# ------------------------------------------------------------------ processes
@dataclass
class Pause(Nemesis):
    """SIGSTOP a server (a GC pause, a hung disk, a frozen VM); SIGCONT heals."""
    proc: NsProc | None = None

    def _inject(self) -> None:
        self.proc.signal(signal.SIGSTOP)

    def _heal(self) -> None:
        self.proc.signal(signal.SIGCONT)


def pause_logstore(ls: LabLogStore) -> Pause:
    return Pause("pause", ls.name, "quorum", True, (), proc=ls.proc)


def hang_s3(lab: Lab) -> Pause:
    return Pause("s3-hang", lab.s3_flavour, "s3", False, TYPED, proc=lab.s3)


def hang_etcd(lab: Lab) -> Pause:
    return Pause("etcd-hang", "etcd", "etcd", False, TYPED, proc=lab.etcd)


@dataclass
class KillLogStore(Nemesis):
    """SIGKILL a LogStore; heal restarts it on the same data dir (``wipe``:
    on an emptied one — a replaced disk or node)."""
    ls: LabLogStore | None = None
    wipe: bool = False

    def _inject(self) -> None:
        self.ls.proc.kill()
        if self.wipe:
            for child in self.ls.data.path.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()

    def _heal(self) -> None:
        self.ls.start()


def kill_logstore(ls: LabLogStore) -> KillLogStore:
    return KillLogStore("kill", ls.name, "quorum", True, (), ls=ls)


def wipe_logstore(ls: LabLogStore) -> KillLogStore:
    return KillLogStore("wipe", ls.name, "quorum", True, (), ls=ls, wipe=True)


# ------------------------------------------------------------------ network
@dataclass
class Partition(Nemesis):
    """Cut a LogStore's veth (core side) down: it can reach nobody and nobody
    can reach it.  Heal brings the link back up."""
    lab: Lab | None = None
    link: str = ""

    def _inject(self) -> None:
        sh("ip", "-n", self.lab.core, "link", "set", self.link, "down")

    def _heal(self) -> None:
        sh("ip", "-n", self.lab.core, "link", "set", self.link, "up")


def partition_logstore(lab: Lab, ls: LabLogStore) -> Partition:
    return Partition("partition", ls.name, "quorum", True, (), lab=lab, link=ls.link)


@dataclass
class Toxic(Nemesis):
    """A toxiproxy toxic on one proxy (client side of a LogStore, or S3)."""
    lab: Lab | None = None
    proxy: str = ""
    toxic_type: str = "latency"
    attributes: dict[str, Any] = field(default_factory=dict)
    stream: str = "downstream"

    @property
    def toxic_name(self) -> str:
        return f"fault-{self.kind}"

    def _inject(self) -> None:
        code, body = self.lab.toxi("POST", f"/proxies/{self.proxy}/toxics",
                                   {"name": self.toxic_name, "type": self.toxic_type, "stream": self.stream,
                                    "toxicity": 1.0, "attributes": self.attributes})
        if code not in (200, 201):
            raise RuntimeError(f"toxiproxy: adding {self.toxic_type} to {self.proxy}: {code} {body!r}")
        self.detail = {"type": self.toxic_type, "attributes": self.attributes, "stream": self.stream}

    def _heal(self) -> None:
        code, body = self.lab.toxi("DELETE", f"/proxies/{self.proxy}/toxics/{self.toxic_name}")
        if code not in (200, 204, 404):
            raise RuntimeError(f"toxiproxy: removing {self.toxic_name} from {self.proxy}: {code} {body!r}")


def latency(lab: Lab, ls: LabLogStore, ms: int, jitter: int = 0) -> Toxic:
    return Toxic("latency", ls.name, "quorum", True, (), lab=lab, proxy=ls.proxy_name, toxic_type="latency",
                 attributes={"latency": ms, "jitter": jitter})


def bandwidth(lab: Lab, ls: LabLogStore, kb_per_s: int) -> Toxic:
    return Toxic("bandwidth", ls.name, "quorum", True, (), lab=lab, proxy=ls.proxy_name, toxic_type="bandwidth",
                 attributes={"rate": kb_per_s}, stream="upstream")


def half_open(lab: Lab, ls: LabLogStore) -> Toxic:
    """``timeout`` toxic with timeout 0: the connection stays open, no data
    passes in either direction until healed (a half-open TCP connection)."""
    return Toxic("half-open", ls.name, "quorum", True, (), lab=lab, proxy=ls.proxy_name, toxic_type="timeout",
                 attributes={"timeout": 0}, stream="upstream")


def s3_latency(lab: Lab, ms: int) -> Toxic:
    return Toxic("s3-latency", "s3", "s3", False, TYPED, lab=lab, proxy="s3", toxic_type="latency",
                 attributes={"latency": ms, "jitter": ms // 4})


# ------------------------------------------------------------------ disk
@dataclass
class DiskFull(Nemesis):
    """Fill a tmpfs with a ballast file until ENOSPC; heal deletes it."""
    fs: Tmpfs | None = None
    keep: int = 0  # bytes left free

    @property
    def ballast(self) -> Path:
        return self.fs.path / ".fault-ballast"

    def _inject(self) -> None:
        chunk = b"\0" * (1 << 20)
        try:
            fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            fd = -1  # not even an inode left: full already
        try:
            while fd >= 0:
                free = self.fs.free() - self.keep
                if free <= 0:
                    break
                try:
                    os.write(fd, chunk[:min(len(chunk), free)])  # unbuffered: ENOSPC surfaces here
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
        finally:
            if fd >= 0:
                os.close(fd)
        self.detail = {"free_after": self.fs.free()}

    def _heal(self) -> None:
        self.ballast.unlink(missing_ok=True)


def diskfull_logstore(ls: LabLogStore) -> DiskFull:
    return DiskFull("diskfull", ls.name, "quorum", True, (), fs=ls.data)


# ------------------------------------------------------------------ registry
class NemesisSet:
    """What the ``nemeses`` fixture hands a test: every nemesis made through it
    is healed at teardown, in reverse order, even after a failure."""

    def __init__(self) -> None:
        self.all: list[Nemesis] = []

    def add(self, n: Nemesis) -> Nemesis:
        self.all.append(n)
        return n

    def heal_all(self) -> list[str]:
        errors = []
        for n in reversed(self.all):
            try:
                n.heal()
            except Exception as e:  # noqa: BLE001 - heal the rest, report this one
                errors.append(f"{n.label}: {e!r}")
        return errors
