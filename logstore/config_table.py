"""The one table of configuration keys: names, types, units, defaults, docs.

Rows follow Woodpecker v0.1.35 (``config/woodpecker.yaml`` and the structs of
its ``common/config/configuration.go``), so Woodpecker's own file — and the
``woodpecker:``/``etcd:``/``minio:`` sections of a Milvus 2.6 ``milvus.yaml`` —
load unchanged.  Defaults are the shipped ``woodpecker.yaml``'s (Woodpecker's Go
code has a second, disagreeing set of built-in defaults; picchio has only this
table).  Parsing and validation live in :mod:`logstore.config`.

Each row has a *kind*:

- ``woodpecker`` — Woodpecker's key, with Woodpecker's meaning, used here;
- ``inert`` — Woodpecker's key, accepted, **no effect here** (listed at start-up
  and by ``picchio config check``);
- ``extra`` — picchio's own key (Woodpecker has nothing like it);
- ``alias`` — a deprecated or Milvus name for another key; the value goes to
  ``alias_of`` (parsed in the alias's own unit, so old files keep their meaning).

Units: a bare number given to a ``duration`` is in the row's ``unit`` (``ms`` or
``s``, as Woodpecker's ``DurationMilliseconds``/``DurationSeconds``); an ``int``
row with a unit (``retentionPolicy.ttl``) takes a plain number only, like
Woodpecker's ``int`` fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    key: str
    type: str  # str | int | float | bool | size | duration | list[str] | enum | any
    default: Any
    doc: str
    unit: str = ""  # durations: unit of a bare number ("ms" or "s"); other types: documentation only
    choices: tuple[str, ...] = ()  # enum, and str rows that take only these values
    minimum: float | None = None
    pattern: str = ""  # "endpoint": every item is [http(s)://]host:port
    kind: str = "woodpecker"  # woodpecker | inert | extra | alias
    alias_of: str = ""
    implies: tuple[tuple[str, Any], ...] = ()  # aliases: keys set along with the value (when it is non-empty)
    secret: bool = False  # masked by `picchio config check` and repr()

    @property
    def effective(self) -> bool:
        return self.kind in ("woodpecker", "extra")


def W(key: str, type: str, default: Any, doc: str, **kw: Any) -> Setting:
    """A Woodpecker key that picchio implements."""
    return Setting(key, type, default, doc, **kw)


def N(key: str, type: str, default: Any, doc: str, **kw: Any) -> Setting:
    """A Woodpecker key accepted with no effect here (the doc says why or what to use)."""
    return Setting(key, type, default, doc, kind="inert", **kw)


def X(key: str, type: str, default: Any, doc: str, **kw: Any) -> Setting:
    """picchio's own key."""
    return Setting(key, type, default, doc, kind="extra", **kw)


def A(key: str, alias_of: str, type: str, doc: str, **kw: Any) -> Setting:
    """Another name for ``alias_of``; ``default`` is irrelevant (the target's counts)."""
    return Setting(key, type, None, doc, kind="alias", alias_of=alias_of, **kw)


_WP = "woodpecker."
_C = _WP + "client."
_L = _WP + "logstore."
_SYNC = _L + "segmentSyncPolicy."

SETTINGS: tuple[Setting, ...] = (
    # -- woodpecker.meta / storage ----------------------------------------------------------------
    W(_WP + "meta.type", "enum", "etcd", "metadata store (only etcd, as in Woodpecker)", choices=("etcd",)),
    W(_WP + "meta.prefix", "str", "woodpecker",
      "metadata prefix below etcd.rootPath; a keyspace under the legacy bare woodpecker/ wins (see the prefix rule)"),
    W(_WP + "storage.type", "enum", "minio", "where segment data lives; default (or '') = minio, as in Woodpecker",
      choices=("minio", "default", "", "local", "service")),
    W(_WP + "storage.rootPath", "str", "/var/lib/woodpecker", "local/shared file-system root (type local)"),
    # -- woodpecker.client ------------------------------------------------------------------------
    N(_C + "segmentAppend.queueSize", "int", 10000, "pending appends per log; here: see segmentSyncPolicy.maxEntries/maxBytes"),
    N(_C + "segmentAppend.maxRetries", "int", 3, "here: segmentSyncPolicy.maxFlushRetries bounds block retries"),
    N(_C + "segmentAppend.maxBatchEntries", "int", 1000, "service mode: appends per AddEntries (here blocks group-commit instead)"),
    N(_C + "segmentAppend.maxBatchBytes", "size", 2_000_000, "service mode: bytes per AddEntries batch"),
    W(_C + "segmentRollingPolicy.maxSize", "size", 256_000_000, "roll a segment at this many bytes", minimum=1),
    W(_C + "segmentRollingPolicy.maxInterval", "duration", 600.0, "roll a segment at this age", unit="s", minimum=0.001),
    W(_C + "segmentRollingPolicy.maxBlocks", "int", 1000, "roll a segment at this many blocks", minimum=1),
    N(_C + "auditor.maxInterval", "duration", 10.0, "Woodpecker's background auditor (GC here is `log gc` / collect_garbage)", unit="s"),
    N(_C + "sessionMonitor.checkInterval", "duration", 3.0, "etcd writer-session health checks (fencing here is in storage)", unit="s"),
    N(_C + "sessionMonitor.maxFailures", "int", 5, "see sessionMonitor.checkInterval"),
    N(_C + "directRead.enabled", "bool", True, "service mode: sealed segments are always read from object storage here"),
    N(_C + "directRead.maxBatchSize", "size", 16_777_216, "see directRead.enabled"),
    N(_C + "directRead.maxFetchThreads", "int", 4, "see directRead.enabled"),
    N(_C + "quorum.quorumBufferPools", "any", [{"name": "default-region-pool", "seeds": []}],
      "static LogStore seeds; here LogStores register in etcd (woodpecker.client.quorum.* extras)"),
    N(_C + "quorum.quorumSelectStrategy.affinityMode", "str", "soft", "here: woodpecker.client.quorum.strategy"),
    W(_C + "quorum.quorumSelectStrategy.replicas", "int", 3,
      "service mode: 3 or 5 (anything else: 3), as in Woodpecker; sets ensembleSize = writeQuorum = replicas and "
      "ackQuorum = replicas/2+1 unless those extras are set themselves"),
    N(_C + "quorum.quorumSelectStrategy.strategy", "str", "random", "here: woodpecker.client.quorum.strategy"),
    N(_C + "quorum.quorumSelectStrategy.customPlacement", "any", [], "here: woodpecker.client.quorum.strategy zone-spread"),
    X(_C + "reader.storagePollInterval", "duration", 0.02,
      "how often a reader at the tail of another process's segment looks at storage", unit="ms", minimum=0.001),
    X(_C + "reader.metaPollInterval", "duration", 1.0,
      "how often a reader at the tail reads segment metadata from etcd", unit="ms", minimum=0.05),
    X(_C + "tailPush.enabled", "bool", True,
      "wake readers at another process's tail at once (local: inotify; minio/service: an etcd watch of "
      "{prefix}/tail/{logId}, bumped by the writer) instead of at their next storagePollInterval, which stays "
      "as the fallback"),
    X(_C + "tailPush.etcdNotify", "bool", False,
      "minio/service writers bump {prefix}/tail/{logId} in etcd so that watching readers wake at once; off by "
      "default: one etcd write per acknowledged block (up to 1/minInterval per second) for every busy log grows "
      "etcd's write load with the number of logs"),
    X(_C + "tailPush.minInterval", "duration", 0.005,
      "minio/service: a writer bumps its log's tail key in etcd at most this often (coalesced, never on an "
      "append's path)", unit="ms", minimum=0.0),
    X(_C + "tailPush.pollInterval", "duration", 0.02,
      "how often a reader still looks at storage while its push is live (a safety net for writers that do not "
      "notify: Woodpecker's, or ones without etcdNotify); never more often than reader.storagePollInterval",
      unit="ms", minimum=0.001),
    X(_C + "tailSubscribe.enabled", "bool", True,
      "service mode: a reader waiting at an active segment's tail subscribes to the LogStores of its ensemble "
      "(SubscribeEntries), which stream the entries as the LAC moves; the poll (and tailPush) stays as the "
      "fallback for a stream that breaks or a LogStore without the RPC"),
    X(_C + "tailSubscribe.streamTimeout", "duration", 60.0,
      "service mode: the deadline of one subscription stream; a stream that reaches it is opened again from "
      "where it stopped", unit="s", minimum=1.0),
    X(_C + "producerExpiry", "duration", 604800.0,
      "idempotent producers idle this long are forgotten (their retries are no longer recognised)",
      unit="s", minimum=1.0),
    X(_C + "quorum.ensembleSize", "int", 3, "service mode: LogStores holding a segment", minimum=1),
    X(_C + "quorum.writeQuorum", "int", 3, "service mode: LogStores each entry is sent to", minimum=1),
    X(_C + "quorum.ackQuorum", "int", 2, "service mode: durable copies before an ack", minimum=1),
    X(_C + "quorum.strategy", "enum", "random", "service mode: ensemble choice", choices=("random", "zone-spread")),
    X(_C + "quorum.writeBatch", "bool", True,
      "service mode: the AddEntries and LAC updates of different segments bound for one LogStore in the same "
      "instant go in one WriteBatch call (picchio's LogStore; Woodpecker's answers UNIMPLEMENTED and then gets "
      "one call each); off: one call per block and replica"),
    X(_C + "quorum.requestTimeout", "duration", 5.0,
      "service mode: how long an append waits for its quorum before failing", unit="s", minimum=0.01),
    # -- woodpecker.logstore.segmentSyncPolicy ----------------------------------------------------
    W(_SYNC + "maxInterval", "duration", 0.2,
      "object storage: longest an entry waits before its block is flushed (a flush starts at once when idle)",
      unit="ms", minimum=0.0),
    W(_SYNC + "maxIntervalForLocalStorage", "duration", 0.01,
      "local storage: longest an entry waits before its block is synced (a sync starts at once when idle)",
      unit="ms", minimum=0.0),
    W(_SYNC + "maxIntervalForService", "duration", 0.001,
      "service mode: longest an entry waits on a LogStore before its block is synced", unit="ms", minimum=0.0),
    X(_SYNC + "groupSync", "enum", "auto",
      "local files (embedded local storage, and a LogStore's staged segments): blocks that many segments write at the same moment share one "
      "syncfs(2) instead of one fdatasync each (a group commit across logs); auto: on where syncfs is a durable "
      "flush (ext3/ext4/xfs/btrfs/f2fs, Linux >= 5.8), off elsewhere (FUSE and network file systems); off: one "
      "fdatasync per block", choices=("auto", "off")),
    W(_SYNC + "maxEntries", "int", 10_000, "most entries buffered before append() waits (back-pressure)", minimum=1),
    W(_SYNC + "maxBytes", "size", 256_000_000,
      "most bytes buffered before append() waits (back-pressure); also the largest local block", minimum=1),
    W(_SYNC + "maxFlushRetries", "int", 5,
      "attempts of one block write before the writer fails; differs from Woodpecker (retries after the first) "
      "because here the count includes the first attempt", minimum=1),
    W(_SYNC + "retryInterval", "duration", 1.0, "first back-off between block write attempts (doubles each time)",
      unit="ms", minimum=0.0),
    W(_SYNC + "maxFlushSize", "size", 2_000_000, "object storage: a block is closed once its payload reaches this size",
      minimum=1),
    W(_SYNC + "maxFlushThreads", "int", 32, "object storage: block uploads in flight at once (acknowledged in order)",
      minimum=1),
    # -- woodpecker.logstore: compaction, reads, retention, fencing, grpc ------------------------------
    W(_L + "segmentCompactionPolicy.maxBytes", "size", 2_000_000, "object storage: target size of a merged m_k.blk object",
      minimum=1),
    A(_L + "segmentCompactionPolicy.maxSize", _L + "segmentCompactionPolicy.maxBytes", "size",
      "Milvus 2.6 milvus.yaml's name for segmentCompactionPolicy.maxBytes"),
    N(_L + "segmentCompactionPolicy.maxParallelUploads", "int", 4, "compaction uploads in parallel"),
    N(_L + "segmentCompactionPolicy.maxParallelReads", "int", 8, "compaction reads in parallel"),
    N(_L + "segmentCompactionPolicy.timeout", "duration", 300.0, "compaction deadline (Woodpecker struct key, not in its yaml)",
      unit="s"),
    X(_L + "segmentCompactionPolicy.enabled", "bool", True, "object storage: compact completed segments into m_k.blk objects"),
    N(_L + "segmentReadPolicy.maxBatchSize", "size", 2_000_000, "bytes per read batch (readers here read whole blocks)"),
    N(_L + "segmentReadPolicy.maxFetchThreads", "int", 32, "parallel block fetches of a reader"),
    N(_L + "retentionPolicy.ttl", "int", 259200, "truncated segments are kept this long (here: `log gc` deletes them)",
      unit="s"),
    N(_L + "fencePolicy.conditionWrite", "enum", "auto",
      "here: object storage always fences with If-None-Match (conditional PUT)", choices=("auto", "enable", "disable")),
    N(_L + "grpc.serverMaxSendSize", "size", 536_870_912, "LogStore gRPC message limits"),
    N(_L + "grpc.serverMaxRecvSize", "size", 268_435_456, "see grpc.serverMaxSendSize"),
    N(_L + "grpc.clientMaxSendSize", "size", 268_435_456, "see grpc.serverMaxSendSize"),
    N(_L + "grpc.clientMaxRecvSize", "size", 536_870_912, "see grpc.serverMaxSendSize"),
    N(_L + "processorCleanupPolicy.cleanupInterval", "duration", 60.0, "idle segment processor scans", unit="s"),
    N(_L + "processorCleanupPolicy.maxIdleTime", "duration", 300.0, "see processorCleanupPolicy.cleanupInterval", unit="s"),
    N(_L + "processorCleanupPolicy.shutdownTimeout", "duration", 15.0, "see processorCleanupPolicy.cleanupInterval", unit="s"),
    N(_L + "maintenanceStrategy.deleteGracePeriod", "duration", 5.0, "local data of deleted logs (deleted at once here)",
      unit="s"),
    N(_L + "maintenanceStrategy.deleteReclaimInterval", "duration", 2.0, "see maintenanceStrategy.deleteGracePeriod", unit="s"),
    N(_L + "nodeSelectionPolicy.loadAwareEnabled", "bool", True, "load-aware ensembles (here: woodpecker.client.quorum.strategy)"),
    N(_L + "nodeSelectionPolicy.loadReportInterval", "duration", 10.0, "see nodeSelectionPolicy.loadAwareEnabled", unit="s"),
    N(_L + "nodeSelectionPolicy.loadTTL", "duration", 30.0, "see nodeSelectionPolicy.loadAwareEnabled", unit="s"),
    N(_L + "nodeSelectionPolicy.memSoftThreshold", "float", 0.85, "see nodeSelectionPolicy.loadAwareEnabled"),
    N(_L + "nodeSelectionPolicy.ewmaAlpha", "float", 0.5, "see nodeSelectionPolicy.loadAwareEnabled"),
    N(_L + "diskWatermarkPolicy.enabled", "bool", True, "here: woodpecker.logstore.disk.* (soft/hard limits of a byte budget)"),
    N(_L + "diskWatermarkPolicy.softThresholdRatio", "float", 0.80, "here: woodpecker.logstore.disk.softLimit"),
    N(_L + "diskWatermarkPolicy.hardThresholdRatio", "float", 0.90, "here: woodpecker.logstore.disk.hardLimit"),
    N(_L + "diskWatermarkPolicy.throttleEnabled", "bool", True, "see diskWatermarkPolicy.enabled"),
    N(_L + "diskWatermarkPolicy.minFreeBytes", "size", 1 << 30, "see diskWatermarkPolicy.enabled"),
    N(_L + "diskWatermarkPolicy.sampleInterval", "duration", 10.0, "see diskWatermarkPolicy.enabled", unit="s"),
    N(_WP + "runtime.opRegistry.capacity", "int", 1024, "in-flight operation registry (Woodpecker struct key)"),
    N(_WP + "runtime.opRegistry.warnAge", "duration", 30.0, "see runtime.opRegistry.capacity", unit="s"),
    # -- woodpecker.logstore: the LogStore server (service mode) ------------------------------------
    X(_L + "host", "str", "0.0.0.0", "LogStore: address the gRPC server binds"),
    X(_L + "port", "int", 18080, "LogStore: gRPC port", minimum=1),
    X(_L + "advertiseAddress", "str", "",
      "LogStore: host:port clients use (empty: host:port, with the pod/host name for 0.0.0.0)"),
    X(_L + "httpPort", "int", 9091, "LogStore: /healthz, /readyz and /metrics port", minimum=0),
    X(_L + "nodeId", "str", "", "LogStore: node id (empty: derived from the advertised address)"),
    X(_L + "zone", "str", "", "LogStore: availability zone, for zone-spread ensembles"),
    X(_L + "registrationTTL", "duration", 10.0, "LogStore: lease TTL of its registration in etcd", unit="s", minimum=1.0),
    X(_L + "disk.maxBytes", "size", 0, "LogStore: budget for staged data (0: the file system's size)", minimum=0),
    X(_L + "disk.softLimit", "float", 0.85,
      "LogStore: above this fraction of the budget, appends get a retriable push-back", minimum=0.0),
    X(_L + "disk.hardLimit", "float", 0.95, "LogStore: above this fraction of the budget, appends are rejected", minimum=0.0),
    X(_L + "tls.enabled", "bool", False, "TLS on the LogStore gRPC port"),
    X(_L + "tls.certFile", "str", "", "LogStore server certificate (PEM)"),
    X(_L + "tls.keyFile", "str", "", "LogStore server private key (PEM)"),
    X(_L + "tls.caFile", "str", "",
      "CA bundle: clients verify the server with it; the server verifies client certificates with it"),
    X(_L + "tls.requireClientCert", "bool", False, "LogStore demands client certificates"),
    X(_L + "tls.clientCertFile", "str", "", "client certificate for LogStores that demand one"),
    X(_L + "tls.clientKeyFile", "str", "", "client private key"),
    X(_L + "tls.serverName", "str", "", "name to verify in the server certificate (empty: host)"),
    X(_L + "tls.authorization", "bool", True,
      "LogStore: with requireClientCert, allow each RPC only to the roles of logstore/authz.py, read from the "
      "client certificate's CN '<role>:<name>' (admin, writer, reader)"),
    # -- log / trace (Woodpecker's process logging; picchio logs through Python logging) ---------------
    N("log.level", "str", "info", "Woodpecker's log level (here: Python logging)"),
    N("log.file.rootPath", "str", "", "see log.level"),
    N("log.file.maxSize", "int", 300, "see log.level", unit="MB"),
    N("log.file.maxAge", "int", 10, "see log.level", unit="day"),
    N("log.file.maxBackups", "int", 20, "see log.level"),
    N("log.format", "str", "text", "see log.level"),
    N("log.stdout", "bool", True, "see log.level"),
    N("trace.exporter", "str", "noop", "OpenTelemetry tracing (not implemented here)"),
    N("trace.sampleFraction", "float", 1.0, "see trace.exporter"),
    N("trace.jaeger.url", "str", "", "see trace.exporter"),
    N("trace.otlp.endpoint", "str", "127.0.0.1:4317", "see trace.exporter"),
    N("trace.otlp.method", "str", "grpc", "see trace.exporter"),
    N("trace.otlp.secure", "bool", False, "see trace.exporter"),
    N("trace.initTimeoutSeconds", "duration", 10.0, "see trace.exporter", unit="s"),
    # -- etcd -------------------------------------------------------------------------------------
    W("etcd.endpoints", "list[str]", ["localhost:2379"], "etcd client endpoints, host:port (a list, or one comma-separated string)",
      pattern="endpoint"),
    W("etcd.rootPath", "str", "by-dev", "etcd key root; metadata lives under {rootPath}/{woodpecker.meta.prefix}"),
    W("etcd.requestTimeout", "duration", 10.0, "deadline of one etcd call (retries included)", unit="ms", minimum=0.001),
    W("etcd.auth.enabled", "bool", False, "authenticate to etcd with auth.userName/auth.password (as in Woodpecker, "
      "the credentials are ignored while this is false)"),
    W("etcd.auth.userName", "str", "", "etcd user"),
    W("etcd.auth.password", "str", "", "etcd password", secret=True),
    A("etcd.username", "etcd.auth.userName", "str", "deprecated: use etcd.auth.userName (a non-empty value also sets "
      "etcd.auth.enabled: true, as this name always did)", implies=(("etcd.auth.enabled", True),)),
    A("etcd.password", "etcd.auth.password", "str", "deprecated: use etcd.auth.password", secret=True),
    N("etcd.metaSubPath", "str", "meta", "Milvus's own metadata sub-path (Woodpecker does not use it)"),
    N("etcd.kvSubPath", "str", "kv", "Milvus's own kv sub-path (Woodpecker does not use it)"),
    N("etcd.log.level", "str", "info", "embedded etcd's log (no embedded etcd here)"),
    N("etcd.log.path", "str", "stdout", "see etcd.log.level"),
    W("etcd.ssl.enabled", "bool", False,
      "TLS to etcd for endpoints without a scheme (as etcd's Go client: https:// endpoints always use TLS, "
      "http:// ones never)"),
    W("etcd.ssl.tlsCert", "str", "/path/to/etcd-client.pem",
      "client certificate (PEM file) for etcd's --client-cert-auth; '' or this placeholder: none (Woodpecker "
      "requires one; here TLS with auth.userName/password alone works too)"),
    W("etcd.ssl.tlsKey", "str", "/path/to/etcd-client-key.pem", "private key (PEM file) of etcd.ssl.tlsCert"),
    W("etcd.ssl.tlsCACert", "str", "/path/to/ca.pem",
      "CA bundle (PEM file) that signed etcd's server certificate; '' or this placeholder: the system CAs"),
    W("etcd.ssl.tlsMinVersion", "str", "1.3",
      "lowest TLS version etcd may offer (checked by a handshake at connect; gRPC itself speaks 1.2 and 1.3)",
      choices=("1.0", "1.1", "1.2", "1.3")),
    N("etcd.use.embed", "bool", False, "in-process etcd (not available here; `picchio dev etcd up` starts a real one)"),
    N("etcd.data.dir", "str", "default.etcd", "see etcd.use.embed"),
    # -- minio ------------------------------------------------------------------------------------
    W("minio.address", "str", "localhost", "S3 endpoint host"),
    W("minio.port", "int", 9000, "S3 endpoint port", minimum=1),
    W("minio.accessKeyID", "str", "minioadmin", "S3 access key", secret=True),
    W("minio.secretAccessKey", "str", "minioadmin", "S3 secret key", secret=True),
    W("minio.useSSL", "bool", False, "https to the S3 endpoint"),
    W("minio.bucketName", "str", "a-bucket", "bucket holding the log data"),
    W("minio.createBucket", "bool", True, "create the bucket at client start if it is missing"),
    W("minio.rootPath", "str", "files", "key prefix of all objects (and sub-directory for type local)"),
    W("minio.region", "str", "", "S3 region (empty: us-east-1)"),
    W("minio.requestTimeoutMs", "duration", 10.0, "deadline of one S3 request (botocore's retries included)",
      unit="ms", minimum=0.001),
    A("minio.requestTimeout", "minio.requestTimeoutMs", "duration",
      "deprecated: use minio.requestTimeoutMs (a bare number here is still seconds)", unit="s", minimum=0.001),
    W("minio.ssl.tlsCACert", "str", "/path/to/public.crt",
      "CA bundle (PEM file) that signed the S3 endpoint's certificate, with minio.useSSL; '' or this "
      "placeholder: the system CAs"),
    N("minio.useIAM", "bool", False, "IAM roles (here: access keys only)"),
    N("minio.cloudProvider", "str", "aws", "here: any S3 API with signature v4"),
    N("minio.gcpCredentialJSON", "str", "", "gcpnative provider (not implemented here)", secret=True),
    N("minio.iamEndpoint", "str", "", "see minio.useIAM"),
    N("minio.logLevel", "str", "fatal", "AWS SDK log level"),
    N("minio.useVirtualHost", "bool", False, "virtual-host bucket addressing (here: path style)"),
    N("minio.listObjectsMaxKeys", "int", 0, "page size of ListObjects (here: the server's default)"),
)
