"""Real LogStore server processes (``picchio logstore serve``) on loopback,
sharing one etcd keyspace and one bucket, each with its own staging dir."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .procs import Proc, free_port


@dataclass
class LogStoreProc:
    name: str
    port: int
    http_port: int
    data_dir: Path
    config_path: Path
    log_path: Path
    proc: Proc | None = None
    extra: dict = field(default_factory=dict)
    paused: bool = False

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "LogStoreProc":
        ready = self.data_dir.parent / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        self.proc = Proc(self.name, logstore_argv(self.config_path, ready), self.log_path, env=logstore_env()).start()
        self.proc.wait_ready(ready.exists, timeout=timeout)
        return self

    def kill(self) -> None:
        if self.proc:
            self.resume()
            self.proc.kill()
            self.proc.popen.wait(10)

    def stop(self) -> None:
        if self.proc:
            self.resume()  # a stopped process would ignore SIGTERM until the SIGKILL fallback
            self.proc.stop()

    def pause(self) -> None:
        """SIGSTOP the server (a GC pause, a hung disk): connections stay open,
        nothing is answered until :meth:`resume`."""
        assert self.proc is not None and self.proc.alive()
        os.killpg(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.paused and self.proc is not None and self.proc.alive():
            os.killpg(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def wipe_and_restart(self, timeout: float = 30.0) -> "LogStoreProc":
        """SIGKILL, delete the data dir and start again on the same port with an
        empty dir — a replaced disk or node.  It comes back as a new instance."""
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        return self.start(timeout)

    def instance(self) -> str:
        """The instance id persisted in this LogStore's data dir ("" if none yet)."""
        try:
            return str(json.loads((self.data_dir / "picchio.instance").read_text())["instance"])
        except (OSError, ValueError, KeyError):
            return ""

    def alive(self) -> bool:
        return bool(self.proc and self.proc.alive())


def logstore_argv(config_path: Path, ready_file: Path | None = None) -> list[str]:
    """The command line of one LogStore server (this interpreter, this checkout)."""
    argv = [sys.executable, "-m", "logstore.server.main", "serve", "--config", str(config_path)]
    return argv + (["--ready-file", str(ready_file)] if ready_file else [])


def logstore_env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"}


def logstore_config(base: dict[str, Any], data_dir: Path, port: int, http_port: int, zone: str = "") -> dict:
    cfg = dict(base)
    cfg.update({"woodpecker.storage.type": "service", "woodpecker.storage.rootPath": str(data_dir),
                "woodpecker.logstore.host": "127.0.0.1", "woodpecker.logstore.port": port,
                "woodpecker.logstore.advertiseAddress": f"127.0.0.1:{port}", "woodpecker.logstore.httpPort": http_port,
                "woodpecker.logstore.zone": zone, "woodpecker.logstore.registrationTTL": "3s",
                # a budget of their own, so tests do not depend on how full this machine's disk is
                "woodpecker.logstore.disk.maxBytes": "16Gi"})
    return cfg


def start_logstores(workdir: Path, base: dict[str, Any], n: int = 3, **overrides: Any) -> list[LogStoreProc]:
    """``base``: the shared client settings (etcd, minio, quorum, tls) as a flat dict."""
    out = []
    for i in range(n):
        name = f"logstore-{i}"
        data = workdir / name
        data.mkdir(parents=True, exist_ok=True)
        port, http_port = free_port(), free_port()
        cfg = logstore_config(base, data, port, http_port)
        cfg.update(overrides)
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out.append(LogStoreProc(name, port, http_port, data, path, workdir / f"{name}.log"))
    for ls in out:
        ls.start()
    return out


def wait_registered(meta_prefix: str, etcd_endpoint: str, count: int, timeout: float = 20.0) -> None:
    """Poll etcd until ``count`` LogStores are registered."""
    import asyncio

    from .. import Config
    from ..meta import MetaStore
    from ..server.membership import live_logstores

    async def check() -> int:
        root, _, _ = meta_prefix.rpartition("/")
        m = MetaStore(Config({"etcd.endpoints": [etcd_endpoint], "etcd.rootPath": root}))
        await m.connect()
        try:
            return len(await live_logstores(m))
        finally:
            await m.close()

    import concurrent.futures

    deadline = time.monotonic() + timeout
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callers may be inside an event loop
        while time.monotonic() < deadline:
            if pool.submit(lambda: asyncio.run(check())).result() >= count:
                return
            time.sleep(0.1)
    raise TimeoutError(f"fewer than {count} LogStores registered after {timeout}s")
