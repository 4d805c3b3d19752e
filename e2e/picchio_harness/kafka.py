"""Apache Kafka 4.x on loopback, for ``python -m picchio_harness.bench_peers`` (``make bench-peers``).

Nothing of Kafka is committed or built here: :func:`fetch` has Maven (``mvn -q
dependency:copy-dependencies``, a generated minimal pom) copy ``org.apache.kafka:kafka_2.13``,
``kafka-tools`` and the log4j2/slf4j runtime of :data:`KAFKA_VERSION` from Maven Central into
``$PICCHIO_CACHE/kafka-<version>/lib`` (about a minute cold, 55 MB; skipped when there).
:func:`start_kafka` formats each node's storage with a random cluster id
(``kafka.tools.StorageTool format``) and starts ``kafka.Kafka`` in KRaft mode: one combined
controller+broker, or three combined nodes with a 3-voter quorum (static
``controller.quorum.voters``); free loopback ports, logs in the work directory, every wait with a
deadline.

The load comes from Kafka's own Java client (KafkaBench.java beside this file, compiled by
:func:`bench_classes` with the JDK's javac against the fetched jars): Kafka's native client, as
picchio's is Python and Woodpecker's Go.  ``KafkaBench produce`` keeps exactly N records in
flight (a semaphore released in the send callback), acks=all, linger.ms=0, no compression, and
a batch.size large enough that the records queued while earlier requests are in flight share one
batch — Kafka's group commit, as picchio groups the appends in flight into one block.
ProducerPerformance (kafka-tools) was not used for the figures: it sends as fast as the
producer's buffer accepts, so its latency includes time queued in the client and "16 in
flight" cannot be set; kafka-tools is fetched anyway for cross-checks by hand (here, on one
broker, loaded machine: ProducerPerformance 10 MB/s at 64 KiB records and 37 MB/s at 1 MiB, with
the same producer settings; KafkaBench 17–26 and 58 MB/s: the client is not the limit).  Python clients
(kafka-python) would spend the 2 cores in Python and measure the client, not Kafka.

Durability knobs (per topic, so one broker serves both): ``flush.messages=1`` is the topic form
of ``log.flush.interval.messages=1`` (fsync of the partition after every appended batch, before
the ack); without it Kafka acknowledges from the page cache and relies on replication.  With
three brokers and acks=all the leader waits for every replica in the ISR (all three while they
are healthy), min.insync.replicas=2 only says how few it may shrink to.

    python -m picchio_harness.kafka check   # fetch, one broker, 10 records acks=all, read back
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import ComponentMissing, Proc, cache_dir, free_port, port_open

KAFKA_VERSION = os.environ.get("PICCHIO_KAFKA_VERSION", "4.1.1")
LOG4J_VERSION, SLF4J_VERSION = "2.24.3", "2.0.17"  # what kafka 4.1 is built with
SOURCE = Path(__file__).with_name("KafkaBench.java")
#: 1 GiB heap per broker (Kafka's own kafka-server-start default) and per bench client
BROKER_HEAP, CLIENT_HEAP = "1G", "1G"


class KafkaMissing(ComponentMissing):
    """java/javac/mvn missing, or Maven could not fetch Kafka."""


def _say(msg: str) -> None:
    print(f"[kafka] {msg}", file=sys.stderr, flush=True)


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    return cache_dir() / f"kafka-{version}"


def _need(prog: str, hint: str) -> str:
    path = shutil.which(prog)
    if not path:
        raise KafkaMissing(f"{prog} not found: {hint}")
    return path


def _pom(version: str) -> str:
    deps = [("org.apache.kafka", "kafka_2.13", version), ("org.apache.kafka", "kafka-tools", version),
            ("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
            ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
            ("org.slf4j", "slf4j-api", SLF4J_VERSION)]  # else Maven's nearest-wins picks a 1.7 without the binding
    body = "".join(f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
                   for g, a, v in deps)
    return ('<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
            f'<groupId>picchio.local</groupId><artifactId>kafka-fetch</artifactId><version>{version}</version>'
            f'<packaging>pom</packaging><dependencies>{body}</dependencies></project>\n')


def fetch(version: str = KAFKA_VERSION, timeout: float = 900.0) -> Path:
    """The lib directory of Kafka ``version`` (its jars and their runtime), fetched from Maven
    Central once; a no-op when ``lib/.complete`` is there."""
    home = kafka_home(version)
    lib = home / "lib"
    if (lib / ".complete").exists():
        return lib
    _need("java", "Kafka needs a JRE 17+ (Debian: apt-get install openjdk-17-jdk-headless)")
    mvn = _need("mvn", "Kafka's jars are fetched from Maven Central with Maven (Debian: apt-get install maven)")
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(_pom(version))
    tmp = home / "lib.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _say(f"fetching kafka_2.13 {version} + kafka-tools + log4j2 from Maven Central into {lib} (≈ 1 min cold, 55 MB)")
    t0 = time.monotonic()
    try:
        p = subprocess.run([mvn, "-B", "-q", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
                            f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise KafkaMissing(f"mvn did not finish fetching Kafka {version} within {timeout:.0f}s") from e
    if p.returncode != 0 or not (tmp / f"kafka_2.13-{version}.jar").exists():
        raise KafkaMissing(f"mvn could not fetch Kafka {version} (exit {p.returncode}):\n{(p.stdout + p.stderr)[-3000:]}")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    (lib / ".complete").write_text(version + "\n")
    _say(f"fetched {len(list(lib.glob('*.jar')))} jars in {time.monotonic() - t0:.0f}s")
    return lib


def bench_classes(lib: Path) -> Path:
    """KafkaBench.java compiled against ``lib`` (cached by source hash)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    out = lib.parent / f"bench-classes-{digest}"
    if (out / "KafkaBench.class").exists():
        return out
    javac = _need("javac", "compiling the Kafka bench client needs a JDK 17+ (apt-get install openjdk-17-jdk-headless)")
    _say("compiling KafkaBench.java (Kafka's Java client, the load generator)")
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    p = subprocess.run([javac, "-nowarn", "-d", str(tmp), "-cp", f"{lib}/*", str(SOURCE)], capture_output=True,
                       text=True, timeout=300)
    if p.returncode != 0:
        raise KafkaMissing(f"javac KafkaBench.java failed:\n{p.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _log4j(path: Path, level: str) -> Path:
    path.write_text(f"""status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = warn
""")
    return path


def _java() -> str:
    return _need("java", "Kafka needs a JRE 17+ (Debian: apt-get install openjdk-17-jdk-headless)")


@dataclass
class KafkaCluster:
    """KRaft nodes (each a combined controller+broker) on loopback."""

    nodes: list[Proc]
    ports: list[int]
    lib: Path
    classes: Path
    workdir: Path
    client_log4j: Path

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    @property
    def brokers(self) -> int:
        return len(self.nodes)

    def java(self, *args: str) -> list[str]:
        """argv of KafkaBench with Kafka's client on the classpath."""
        return [_java(), f"-Xmx{CLIENT_HEAP}", "-cp", f"{self.classes}:{self.lib}/*",
                f"-Dlog4j2.configurationFile={self.client_log4j}", "KafkaBench", *args]

    def create_topics(self, *specs: str, timeout: float = 90.0) -> None:
        """``name:rf[:key=val,...]`` (one partition each); waits for the brokers, then for a
        leader and a full ISR."""
        p = subprocess.run(self.java("admin", self.bootstrap, str(self.brokers), str(timeout - 10), *specs),
                           capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0 or '"ready"' not in p.stdout:
            raise RuntimeError(f"creating topics {specs} failed (exit {p.returncode}):\n{p.stderr[-3000:]}\n"
                               f"{self.tail()}")

    def delete_topics(self, *topics: str, timeout: float = 90.0) -> None:
        """Delete ``topics`` (benchmarks write gigabytes)."""
        p = subprocess.run(self.java("delete", self.bootstrap, *topics), capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0 or '"deleted"' not in p.stdout:
            raise RuntimeError(f"deleting topics {topics} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")

    def tail(self, n: int = 20) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(n)}" for p in self.nodes)

    def stop(self) -> None:
        for p in self.nodes:
            p.stop(timeout=30)


def start_kafka(workdir: Path, brokers: int = 1, *, timeout: float = 120.0, version: str = KAFKA_VERSION,
                extra: dict[str, Any] | None = None) -> KafkaCluster:
    """``brokers`` combined KRaft nodes (1, or 3 with a 3-voter quorum) on free loopback ports;
    replication factor of the internal topics = ``brokers``, min.insync.replicas = 2 when 3.
    Ready = every broker port open and (by ``create_topics``) every broker registered."""
    lib = fetch(version)
    classes = bench_classes(lib)
    java = _java()
    workdir.mkdir(parents=True, exist_ok=True)
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    ports = [(free_port(), free_port()) for _ in range(brokers)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
    log4j = _log4j(workdir / "log4j2-server.properties", "INFO")
    client_log4j = _log4j(workdir / "log4j2-client.properties", "WARN")
    isr = 2 if brokers >= 3 else 1
    nodes: list[Proc] = []
    try:
        for i, (port, cport) in enumerate(ports):
            node = workdir / f"node-{i + 1}"
            (node / "data").mkdir(parents=True, exist_ok=True)
            props = {
                "process.roles": "broker,controller", "node.id": i + 1, "controller.quorum.voters": voters,
                "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "log.dirs": node / "data", "num.partitions": 1, "default.replication.factor": brokers,
                "min.insync.replicas": isr, "offsets.topic.replication.factor": brokers,
                "transaction.state.log.replication.factor": brokers, "transaction.state.log.min.isr": isr,
                "share.coordinator.state.topic.replication.factor": brokers,
                "share.coordinator.state.topic.min.isr": isr,
                "group.initial.rebalance.delay.ms": 0, "auto.create.topics.enable": "false",
                # 1 MiB records (+ batch overhead) exceed the 1 MiB default; batches of 16 of them
                "message.max.bytes": 64 << 20, "replica.fetch.max.bytes": 64 << 20,
                "replica.fetch.response.max.bytes": 64 << 20, "socket.request.max.bytes": 128 << 20,
                **(extra or {}),
            }
            conf = node / "server.properties"
            conf.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            fmt = subprocess.run([java, "-cp", f"{lib}/*", f"-Dlog4j2.configurationFile={client_log4j}",
                                  "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(conf)],
                                 capture_output=True, text=True, timeout=120)
            if fmt.returncode != 0:
                raise RuntimeError(f"kafka-storage format failed for node {i + 1}:\n{fmt.stdout[-2000:]}{fmt.stderr[-2000:]}")
            argv = [java, f"-Xms{BROKER_HEAP}", f"-Xmx{BROKER_HEAP}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                    "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
                    f"-Dkafka.logs.dir={node}", "-cp", f"{lib}/*", "kafka.Kafka", str(conf)]
            nodes.append(Proc(f"kafka-{i + 1}", argv, node / "server.log").start())
        for p, (port, _) in zip(nodes, ports):
            p.wait_ready(lambda port=port: port_open("127.0.0.1", port), timeout=timeout)
    except BaseException:
        for p in nodes:
            p.stop()
        raise
    _say(f"{brokers} KRaft node(s) up on 127.0.0.1:{','.join(str(p) for p, _ in ports)} (logs in {workdir})")
    return KafkaCluster(nodes, [p for p, _ in ports], lib, classes, workdir, client_log4j)


@dataclass
class KafkaProducer:
    """A long-lived ``KafkaBench produce`` JVM (warm across the slices of a workload)."""

    cluster: KafkaCluster
    topic: str
    size: int
    inflight: int
    log_path: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __enter__(self) -> "KafkaProducer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._err = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cluster.java("produce", self.cluster.bootstrap, self.topic, str(self.size),
                                                       str(self.inflight)),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True,
                                     start_new_session=True)
        self._expect("open", 60)
        return self

    def _expect(self, op: str, timeout: float) -> dict[str, Any]:
        """The next JSON line (it must be ``op``) within ``timeout`` seconds."""
        assert self.proc is not None and self.proc.stdout is not None
        box: list[str] = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(timeout)
        if not box or not box[0]:
            self.proc.kill()
            raise RuntimeError(f"KafkaBench produce: no {op!r} within {timeout:.0f}s (exit {self.proc.poll()}); "
                               f"log {self.log_path}:\n{_tail(self.log_path)}")
        d = json.loads(box[0])
        if d.get("op") != op:
            raise RuntimeError(f"KafkaBench produce: wanted {op!r}, got {box[0][:300]}")
        return d

    def _send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def warmup(self, n: int) -> None:
        self._send(f"warmup {n}")
        self._expect("warm", 120)

    def slice(self, seconds: float) -> dict[str, Any]:
        """Keep ``inflight`` records in flight for ``seconds`` → appends, seconds, errors, lat_ms."""
        self._send(f"run {seconds}")
        return self._expect("slice", seconds + 150)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            try:
                self._send("quit")
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait(10)
        self._err.close()


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def tail_bench(cluster: KafkaCluster, topic: str, entries: int, interval_ms: int, log_path: Path) -> dict[str, Any]:
    """One record at a time (acks=all) and a consumer in another JVM: per record the time from
    send to the other process printing it (``e2e_ms``), the ack latency and ack → seen."""
    with open(log_path, "ab") as err:
        p = subprocess.run(cluster.java("tail", cluster.bootstrap, topic, str(entries), str(interval_ms)),
                           stdout=subprocess.PIPE, stderr=err, text=True,
                           timeout=120 + entries * (interval_ms / 1e3 + 5))
    line = next((json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError(f"KafkaBench tail exited {p.returncode}; log {log_path}:\n{_tail(log_path)}")
    return line


def main(argv: list[str] | None = None) -> int:
    """``check``: fetch, one broker, 10 records acks=all, read back in another JVM."""
    import tempfile

    args = argv if argv is not None else sys.argv[1:]
    if args[:1] != ["check"]:
        print("usage: python -m picchio_harness.kafka check [WORKDIR]", file=sys.stderr)
        return 2
    workdir = Path(args[1]) if len(args) > 1 else Path(tempfile.mkdtemp(prefix="picchio-kafka-"))
    cluster = start_kafka(workdir, 1)
    try:
        cluster.create_topics("check:1")
        out = tail_bench(cluster, "check", 10, 10, workdir / "check.log")
        with KafkaProducer(cluster, "check", 4096, 4, workdir / "produce.log") as prod:
            prod.warmup(2)
            s = prod.slice(0.5)
        print(json.dumps({"tail_entries": out["entries"], "e2e_ms": out["e2e_ms"], "produced": s["appends"],
                          "errors": s["errors"]}))
        return 0 if out["entries"] == 10 and s["errors"] == 0 else 1
    finally:
        cluster.stop()
        if len(args) < 2:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
