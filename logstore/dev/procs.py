"""Process plumbing shared by every component starter: free ports, spawning
with a PID we own, readiness polling with a deadline, and reliable teardown.

It lives in the product (not the test harness) because ``picchio bench`` and
``picchio dev`` start real components too; the harness reuses it."""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

_LIVE: list["Proc"] = []
T = TypeVar("T")


class ComponentMissing(RuntimeError):
    """A program a component needs is not installed or built; the message
    names the command that provides it (``picchio dev`` prints it as one line)."""


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.25) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` and
    the last value or error at the deadline (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = fn()
            if got:
                return got
            last = got
        except Exception as e:  # noqa: BLE001 - transient states count as "not yet"
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


_HANDED_OUT: set[int] = set()
_PORT_LOCK = threading.Lock()


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (closed again at once),
    never one this process handed out before: two components started in one
    test must not be given the same port (the kernel may reuse a closed one)."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with _PORT_LOCK:
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    raise RuntimeError(f"no fresh port after 1000 tries ({len(_HANDED_OUT)} handed out by this process)")


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Proc:
    """One server process started in its own session so that stop() reaches it
    and everything it forked, never a wrapper shell."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: str | None = None
    popen: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> "Proc":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.popen = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=self.cwd, start_new_session=True,
        )
        log.close()
        _LIVE.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_ready(self, check: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll ``check`` until it holds; fail early (with the log tail) if the
        process died, or when the deadline passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                rc = self.popen.returncode if self.popen else None
                raise RuntimeError(f"{self.name} exited with {rc}:\n{self.tail()}")
            try:
                if check():
                    return
            except Exception:  # noqa: BLE001 - readiness probes fail in many ways while starting
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(timeout)
        if self in _LIVE:
            _LIVE.remove(self)

    def detach(self) -> "Proc":
        """Let the process outlive this interpreter (``picchio dev ... up``):
        it leaves the at-exit teardown list; whoever recorded its PID (a state
        file) stops it later with :func:`stop_pid`."""
        if self in _LIVE:
            _LIVE.remove(self)
        return self

    def record(self) -> dict[str, object]:
        """What another process needs to stop this one safely (see stop_pid)."""
        return {"name": self.name, "pid": self.pid, "exe": self.argv[0], "log": str(self.log_path)}


def pid_runs(pid: int, exe: str | None = None) -> bool:
    """Is ``pid`` alive (and, if ``exe`` is given, still running that program)?
    The exe check guards against a recycled PID after a reboot or a long pause:
    we must never signal a stranger's process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    if exe is None:
        return True
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie is as good as gone
        return False
    return argv0 == exe


def stop_pid(pid: int, exe: str | None = None, timeout: float = 10.0) -> bool:
    """Stop a process started (in its own session) by another interpreter:
    SIGTERM to its process group, SIGKILL after ``timeout``.  Returns whether
    it was running.  Only the recorded PID's group is signalled, never a name."""
    if not pid_runs(pid, exe):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_runs(pid, exe):
                return True
            time.sleep(0.05)
    return True


@atexit.register
def _stop_all() -> None:
    for p in list(reversed(_LIVE)):
        try:
            p.stop(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def cache_dir() -> Path:
    """Where built binaries live: $PICCHIO_CACHE or ~/.cache/picchio."""
    return Path(os.environ.get("PICCHIO_CACHE", Path.home() / ".cache" / "picchio"))


def find_binary(env_var: str, cached_prefix: str, fallbacks: list[str]) -> str | None:
    """An explicit $ENV path, else the newest cached build, else a system binary."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    bindir = cache_dir() / "bin"
    if bindir.is_dir():
        hits = sorted(p for p in bindir.glob(f"{cached_prefix}-*") if p.is_file() and os.access(p, os.X_OK))
        if hits:
            return str(hits[-1])
    for f in fallbacks:
        if os.access(f, os.X_OK):
            return f
    return None
