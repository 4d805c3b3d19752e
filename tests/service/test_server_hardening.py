"""LogStore server hardening, with real processes (etcd, LogStore servers):
one LogStore per port, disk watermarks that count what is accepted but not yet
written, a disk-usage gauge that is current when scraped, and startup failures
that end in one line of error and a non-zero exit within a bound — never a
traceback, a hang, or two servers silently sharing a port."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from logstore.rpc import AddEntriesRequest, Code, LogEntry, MarkLogDeletedRequest
from logstore.server.membership import live_logstores
from logstore.storage.service import Node, NodeError
from picchio_harness.logstores import (LogStoreProc, logstore_argv, logstore_config, logstore_env, start_logstores,
                                       wait_registered)
from picchio_harness.procs import free_port
from svcutil import http_get  # noqa: E402

BUDGET, SOFT, HARD = 200_000, 0.5, 0.8
EXIT_BOUND = 30.0  # a LogStore that cannot start says so and exits within this (etcd.requestTimeout 2s here)


@pytest.fixture
def logstores(make_config, tmp_path):
    """``logstores(n, **overrides)`` → (client Config, [LogStoreProc]) on a
    real etcd (this test's own keyspace); staging only, no object storage."""
    started: list[LogStoreProc] = []
    base = make_config("local", etcd__requestTimeout="2s")

    def start(n: int = 1, **overrides):
        stores = start_logstores(tmp_path / "ls", base.to_dict(), n, **overrides)
        started.extend(stores)
        wait_registered(base.meta_prefix, base["etcd.endpoints"][0], len(started))
        return base, stores

    yield start
    for s in started:
        s.stop()


def _gauge(port: int, name: str, missing: float | None = None) -> float | None:
    for ln in http_get(port, "/metrics")[1].splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    return missing


async def _poll(cond, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(cond)
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def _registered(cfg) -> list[dict]:
    from logstore.meta import MetaStore
    m = MetaStore(cfg)
    await m.connect()
    try:
        return await live_logstores(m)
    finally:
        await m.close()


def _run_to_exit(tmp_path: Path, name: str, cfg: dict, timeout: float = EXIT_BOUND) -> tuple[int, str, float]:
    """Start ``picchio logstore serve`` with ``cfg`` and wait (bounded) for it to
    exit; a server still running at the deadline fails the test (and is killed)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    import os
    env = dict(os.environ, **logstore_env())
    t0 = time.monotonic()
    p = subprocess.Popen(logstore_argv(path, tmp_path / f"{name}.ready"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, start_new_session=True, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=10)
        pytest.fail(f"{name}: still running after {timeout}s (it should have refused to start); "
                    f"stderr tail: {err[-2000:]}")
    return p.returncode, out + err, time.monotonic() - t0


def _assert_one_line_error(name: str, rc: int, output: str, *needles: str) -> str:
    assert rc != 0, f"{name}: exit status 0; output: {output[-2000:]}"
    assert "Traceback" not in output, f"{name}: a traceback instead of one line:\n{output[-3000:]}"
    errors = [ln for ln in output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, f"{name}: expected exactly one 'error: …' line; output:\n{output[-3000:]}"
    for n in needles:
        assert n in errors[0], f"{name}: {n!r} not in {errors[0]!r}"
    return errors[0]


# -- 1. one port, one LogStore ------------------------------------------------------------------


def test_free_port_never_repeats():
    """The harness never hands out one port twice in a process, even though the
    kernel readily reuses a port that was closed again."""
    ports = [free_port() for _ in range(3000)]
    dups = len(ports) - len(set(ports))
    assert dups == 0, f"free_port handed out {dups} ports twice"


@pytest.mark.parametrize("which", ["grpc", "http"])
async def test_second_logstore_on_a_taken_port_refuses_to_start(logstores, tmp_path, which):
    """A second LogStore configured with the first one's gRPC (or HTTP) port
    exits non-zero with one line naming the setting — it neither shares the port
    (gRPC's default SO_REUSEPORT) nor registers a second node under the same id;
    the first keeps serving."""
    base, [first] = logstores(1)
    data = tmp_path / "second"
    data.mkdir()
    port = first.port if which == "grpc" else free_port()
    http_port = first.http_port if which == "http" else free_port()
    cfg = logstore_config(base.to_dict(), data, port, http_port)
    rc, output, took = await asyncio.to_thread(_run_to_exit, tmp_path, "second", cfg)
    key = "woodpecker.logstore.port" if which == "grpc" else "woodpecker.logstore.httpPort"
    _assert_one_line_error("second LogStore", rc, output, key)
    assert first.alive(), "the first LogStore must keep running"
    nodes = await _registered(base)
    assert [n["endpoint"] for n in nodes] == [first.endpoint], nodes
    assert [n["instance"] for n in nodes] == [first.instance()], "the registration is the first LogStore's"
    assert http_get(first.http_port, "/readyz")[0] == 200


async def test_second_logstore_on_the_same_data_dir_refuses_to_start(logstores, tmp_path):
    """Two LogStores on one data dir would interleave their writes to the same
    segment files and share one instance id: the second exits non-zero with one
    line naming rootPath, the first keeps serving and stays the only one registered."""
    base, [first] = logstores(1)
    cfg = logstore_config(base.to_dict(), first.data_dir, free_port(), free_port())
    rc, output, _ = await asyncio.to_thread(_run_to_exit, tmp_path, "same-dir", cfg)
    _assert_one_line_error("second LogStore on the same data dir", rc, output, "rootPath", "in use")
    assert first.alive()
    nodes = await _registered(base)
    assert [n["endpoint"] for n in nodes] == [first.endpoint], nodes
    # the lock dies with its holder: after a SIGKILL the same dir starts again at once
    first.kill()
    first.start()
    assert http_get(first.http_port, "/readyz")[0] == 200 or await _poll(
        lambda: http_get(first.http_port, "/readyz")[0] == 200, "the restarted LogStore to be ready")


# -- 2. the disk check counts what is accepted, not only what is written -------------------------


def _disk_overrides() -> dict:
    return {"woodpecker.logstore.disk.maxBytes": BUDGET, "woodpecker.logstore.disk.softLimit": SOFT,
            "woodpecker.logstore.disk.hardLimit": HARD}


async def test_an_append_that_would_pass_the_hard_limit_is_refused(logstores):
    """Soft limit 50 %, hard 80 %: at 45 % an append of another 45 % is refused
    (DISK_FULL naming the hard limit) instead of carrying the LogStore from below
    the soft limit to 90 %; the LogStore stays ready and keeps the first append."""
    base, [ls] = logstores(1, **_disk_overrides())
    node = Node(ls.endpoint, base)
    try:
        await node.call("AddEntries", AddEntriesRequest("b", "r", 1, [LogEntry(0, 0, b"a" * 90_000)]), 10)
        with pytest.raises(NodeError) as e:
            await node.call("AddEntries", AddEntriesRequest("b", "r", 1, [LogEntry(0, 1, b"b" * 90_000)]), 10)
        assert e.value.code == Code.DISK_FULL and "hard limit" in str(e.value), e.value
        u = await asyncio.to_thread(_gauge, ls.http_port, "picchio_logstore_disk_usage_ratio")
        assert u is not None and 0.44 <= u < SOFT, u
        assert http_get(ls.http_port, "/readyz")[0] == 200
        # what fits is still accepted (20 % more: 65 % < 80 %)
        await node.call("AddEntries", AddEntriesRequest("b", "r", 1, [LogEntry(0, 1, b"c" * 40_000)]), 10)
    finally:
        await node.channel.close()


async def test_a_burst_of_queued_appends_cannot_jump_past_the_hard_limit(logstores):
    """A lagging replica receives three appends of 35 % each at once (entries 2
    and 1 first: they wait for entry 0).  What is accepted and not yet written
    counts: entry 0 is pushed back (70 % accepted ≥ the 50 % soft limit), so the
    LogStore never holds more than 70 % — it used to accept all three at 0 % and
    end at 105 %, past the hard limit, not ready."""
    base, [ls] = logstores(1, **_disk_overrides())
    node = Node(ls.endpoint, base)
    size = 70_000

    async def add(eid: int):
        req = AddEntriesRequest("b", "r", 2, [LogEntry(0, eid, bytes([eid]) * size)])
        try:
            await node.call("AddEntries", req, 20)
            return "ok"
        except NodeError as e:
            return e.code

    try:
        late = [asyncio.create_task(add(2))]
        await _poll(lambda: _gauge(ls.http_port, "picchio_logstore_disk_accepted_bytes", 0.0) >= size,
                    "entry 2 to be accepted (waiting for entry 0)", 10)
        late.append(asyncio.create_task(add(1)))
        await _poll(lambda: _gauge(ls.http_port, "picchio_logstore_disk_accepted_bytes", 0.0) >= 2 * size,
                    "entry 1 to be accepted (waiting for entry 0)", 10)
        u = await asyncio.to_thread(_gauge, ls.http_port, "picchio_logstore_disk_usage_ratio")
        assert u is not None and u >= 2 * size / BUDGET - 0.01, f"accepted bytes count in the gauge: {u}"
        first = await add(0)
        assert first == Code.DISK_SOFT_LIMIT, f"entry 0 at 70 % accepted: {first}"
        rest = await asyncio.gather(*late)
        assert rest == [Code.OUT_OF_ORDER, Code.OUT_OF_ORDER], rest  # entry 0 never came
        u = await asyncio.to_thread(_gauge, ls.http_port, "picchio_logstore_disk_usage_ratio")
        assert u is not None and u < 0.01, f"nothing was written, nothing is accepted any more: {u}"
        assert http_get(ls.http_port, "/readyz")[0] == 200
        # written + queued: three appends in order are checked against what is already accepted too
        results = await asyncio.gather(*(add(i) for i in range(3)))
        assert results.count("ok") <= 2 and (Code.DISK_SOFT_LIMIT in results or Code.DISK_FULL in results), results
        u = await asyncio.to_thread(_gauge, ls.http_port, "picchio_logstore_disk_usage_ratio")
        assert u is not None and u < HARD, u
        assert http_get(ls.http_port, "/readyz")[0] == 200
    finally:
        await node.channel.close()


async def test_staged_bytes_count_after_a_restart(logstores):
    """Staged segments count against the budget from the moment a LogStore
    starts, not once a request happens to open them: at 60 % before a restart,
    the restarted LogStore shows 60 % and pushes back at the soft limit (it used
    to start at 0 % and accept the budget all over again)."""
    base, [ls] = logstores(1, **_disk_overrides())
    node = Node(ls.endpoint, base)
    try:
        for i in range(2):
            await node.call("AddEntries", AddEntriesRequest("b", "r", 4, [LogEntry(0, i, b"s" * 60_000)]), 10)
    finally:
        await node.channel.close()
    ls.kill()
    ls.start()
    u = await asyncio.to_thread(_gauge, ls.http_port, "picchio_logstore_disk_usage_ratio")
    assert u is not None and 0.59 <= u < 0.7, f"staged bytes after the restart: {u}"
    node = Node(ls.endpoint, base)
    try:
        with pytest.raises(NodeError) as e:  # another log: its segment was never opened before
            await node.call("AddEntries", AddEntriesRequest("b", "r", 5, [LogEntry(0, 0, b"t" * 10_000)]), 10)
        assert e.value.code == Code.DISK_SOFT_LIMIT, e.value
        # deleting the staged log frees its bytes although it was never opened in this process
        await node.call("MarkLogDeleted", MarkLogDeletedRequest("b", "r", 4), 10)
        await _poll(lambda: _gauge(ls.http_port, "picchio_logstore_disk_usage_ratio", 1.0) < 0.01,
                    "the gauge to drop after the staged log was deleted", 10)
        await node.call("AddEntries", AddEntriesRequest("b", "r", 5, [LogEntry(0, 0, b"t" * 10_000)]), 10)
    finally:
        await node.channel.close()


# -- 3. the gauge is current when scraped -----------------------------------------------------------


async def test_disk_usage_gauge_follows_freed_space_without_appends(logstores):
    """Staged bytes are dropped (the log is deleted): the next /metrics scrape
    shows the lower usage, with no append in between to refresh it."""
    base, [ls] = logstores(1, **_disk_overrides())
    node = Node(ls.endpoint, base)
    try:
        await node.call("AddEntries", AddEntriesRequest("b", "r", 3, [LogEntry(0, 0, b"x" * 60_000)]), 10)
        u = await asyncio.to_thread(_gauge, ls.http_port, "picchio_logstore_disk_usage_ratio")
        assert u is not None and 0.29 <= u < 0.4, u
        await node.call("MarkLogDeleted", MarkLogDeletedRequest("b", "r", 3), 10)
        await _poll(lambda: _gauge(ls.http_port, "picchio_logstore_disk_usage_ratio", 1.0) < 0.01,
                    "the gauge to drop after the staged bytes were freed", 10)
        # a readiness probe refreshes it as well
        assert http_get(ls.http_port, "/readyz")[0] == 200
        assert _gauge(ls.http_port, "picchio_logstore_disk_usage_ratio", 1.0) < 0.01
    finally:
        await node.channel.close()


# -- 4. startup failures: one line, non-zero, bounded -----------------------------------------------


def _cfg(make_config, tmp_path: Path, **over) -> dict:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    cfg = logstore_config(make_config("local", etcd__requestTimeout="2s").to_dict(), data, free_port(), free_port())
    cfg.update(over)
    return cfg


def test_etcd_unreachable_at_start(make_config, tmp_path):
    """No etcd at the configured endpoint: one line naming etcd, exit ≠ 0, within
    etcd.requestTimeout + registrationTTL (plus process start), not a hang."""
    dead = f"127.0.0.1:{free_port()}"
    cfg = _cfg(make_config, tmp_path, **{"etcd.endpoints": [dead]})
    rc, output, took = _run_to_exit(tmp_path, "no-etcd", cfg)
    _assert_one_line_error("no etcd", rc, output, "etcd", dead)
    assert took < 2 + 3 + 10, f"took {took:.1f}s"


def test_etcd_that_never_answers_at_start(make_config, tmp_path):
    """An etcd endpoint that accepts connections and never answers (a hung
    etcd): the same bounded, one-line failure."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        ep = f"127.0.0.1:{hung.getsockname()[1]}"
        cfg = _cfg(make_config, tmp_path, **{"etcd.endpoints": [ep]})
        rc, output, took = _run_to_exit(tmp_path, "hung-etcd", cfg)
    _assert_one_line_error("hung etcd", rc, output, "etcd")
    assert took < 2 + 3 + 10, f"took {took:.1f}s"


def test_data_dir_not_writable(make_config, tmp_path):
    """woodpecker.storage.rootPath below a regular file (as unwritable as it gets
    for root): one line naming rootPath, exit ≠ 0, nothing registered."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = _cfg(make_config, tmp_path)
    cfg["woodpecker.storage.rootPath"] = str(blocker / "data")
    rc, output, _ = _run_to_exit(tmp_path, "bad-dir", cfg)
    _assert_one_line_error("unwritable data dir", rc, output, "rootPath")


@pytest.mark.parametrize("bad", ["unknown-key", "wrong-type", "not-yaml", "missing-file", "missing-tls-file",
                                 "bad-tls-file", "bad-host"])
def test_bad_configuration(make_config, tmp_path, bad):
    """Every kind of bad configuration: one line, exit ≠ 0, at once."""
    cfg = _cfg(make_config, tmp_path)
    path = tmp_path / "bad.yaml"
    needle = ""
    if bad == "unknown-key":
        cfg["woodpecker.logstore.nosuchkey"] = 1
        needle = "nosuchkey"
    elif bad == "wrong-type":
        cfg["woodpecker.logstore.port"] = "eighty"
        needle = "woodpecker.logstore.port"
    elif bad in ("missing-tls-file", "bad-tls-file"):
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate")
        f = str(tmp_path / "nope.pem") if bad == "missing-tls-file" else str(junk)
        cfg.update({"woodpecker.logstore.tls.enabled": True, "woodpecker.logstore.tls.certFile": f,
                    "woodpecker.logstore.tls.keyFile": f})
        needle = "woodpecker.logstore.tls"
    elif bad == "bad-host":
        cfg["woodpecker.logstore.host"] = "no-such-host.invalid"
        needle = "woodpecker.logstore"
    if bad == "not-yaml":
        path.write_text("etcd: [unclosed\n  : :")
        needle = "YAML"
    elif bad == "missing-file":
        path = tmp_path / "does-not-exist.yaml"
        needle = "does-not-exist.yaml"
    else:
        path.write_text(yaml.safe_dump(cfg))
    import os
    p = subprocess.run(logstore_argv(path), capture_output=True, text=True, timeout=EXIT_BOUND,
                       env=dict(os.environ, **logstore_env()), stdin=subprocess.DEVNULL)
    _assert_one_line_error(bad, p.returncode, p.stdout + p.stderr, needle)


async def test_appends_checked_in_one_turn_count_against_each_other(logstores):
    """Three appends of 35 % each (soft limit 50 %), for three segments, in one WriteBatch: the
    LogStore checks all three in one turn of its event loop.  Each must count
    against the next one's check at once — they all passed at 0 % when the
    bytes were counted only once each append's task had started, and the
    LogStore went past its hard limit (what a burst from many clients did under
    load)."""
    base, [ls] = logstores(1, **_disk_overrides())
    node = Node(ls.endpoint, base)
    try:
        futs = [node.write("AddEntries", AddEntriesRequest("b", "r", 10 + i, [LogEntry(0, 0, b"q" * 70_000)]), 20,
                           "", (10 + i, 0)) for i in range(3)]
        got = await asyncio.gather(*futs, return_exceptions=True)
        assert node.batches == 1, "the three appends should have gone in one call"
        codes = ["ok" if not isinstance(g, BaseException) else getattr(g, "code", repr(g)) for g in got]
        # 35 % + 35 % fit under the soft limit's check (usage below 50 % when each arrived); the third
        # comes at 70 %: pushed back
        assert codes.count("ok") == 2 and set(codes) - {"ok"} <= {Code.DISK_SOFT_LIMIT, Code.DISK_FULL}, codes
        u = await asyncio.to_thread(_gauge, ls.http_port, "picchio_logstore_disk_usage_ratio")
        assert u is not None and u < HARD, u
    finally:
        await node.close()
