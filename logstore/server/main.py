"""``picchio logstore serve --config FILE``: the LogStore process.

Starts the gRPC service (TLS when configured), registers the node in etcd
under a lease, serves probes and metrics, and shuts down gracefully on
SIGTERM/SIGINT (deregisters, drains in-flight syncs)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path

import grpc

from ..config import Config
from ..errors import LogstoreError, StorageError
from ..meta import MetaStore
from .http import serve_http
from .identity import load_or_create
from .membership import Registration
from .metrics import Metrics
from .service import LogStoreService, generic_handler

log = logging.getLogger("picchio.logstore")


def server_credentials(cfg: Config) -> grpc.ServerCredentials | None:
    if not cfg["woodpecker.logstore.tls.enabled"]:
        return None
    key = Path(cfg["woodpecker.logstore.tls.keyFile"]).read_bytes()
    cert = Path(cfg["woodpecker.logstore.tls.certFile"]).read_bytes()
    ca = Path(cfg["woodpecker.logstore.tls.caFile"]).read_bytes() if cfg["woodpecker.logstore.tls.caFile"] else None
    need = cfg["woodpecker.logstore.tls.requireClientCert"]
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca if need else None,
                                       require_client_auth=bool(need))


def advertised(cfg: Config, port: int) -> str:
    adv = cfg["woodpecker.logstore.advertiseAddress"]
    if adv:
        return adv
    host = cfg["woodpecker.logstore.host"]
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"{host}:{port}"


async def serve(cfg: Config, ready_file: str | None = None) -> None:
    metrics = Metrics()
    svc = LogStoreService(cfg, metrics)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 256 << 20),
                                      ("grpc.max_send_message_length", 256 << 20)])
    server.add_generic_rpc_handlers((generic_handler(svc),))
    bind = f"{cfg['woodpecker.logstore.host']}:{cfg['woodpecker.logstore.port']}"
    creds = server_credentials(cfg)
    port = server.add_secure_port(bind, creds) if creds else server.add_insecure_port(bind)
    endpoint = advertised(cfg, port)
    node_id = cfg["woodpecker.logstore.nodeId"] or endpoint.replace(":", "-")
    # the data dir's identity is durable before anything is served under it
    try:
        svc.instance = await asyncio.to_thread(load_or_create, svc.root, node_id)
    except OSError as e:
        raise StorageError(f"cannot record this LogStore's identity in woodpecker.storage.rootPath "
                           f"{str(svc.root)!r}: {e}") from None
    await server.start()
    meta = MetaStore(cfg)
    await meta.connect()
    svc.meta = meta
    reg = Registration(meta, node_id, {"nodeId": node_id, "endpoint": endpoint, "instance": svc.instance,
                                       "zone": cfg["woodpecker.logstore.zone"], "tls": creds is not None},
                       cfg["woodpecker.logstore.registrationTTL"])
    await reg.start()

    def ready() -> tuple[bool, str]:
        if not reg.registered:
            return False, "not registered in etcd"
        u = svc.disk_usage()
        if u >= svc.hard:
            return False, f"disk above hard limit ({u:.0%})"
        return True, "ready"

    http = await serve_http(cfg["woodpecker.logstore.host"], cfg["woodpecker.logstore.httpPort"], ready,
                            metrics.render) if cfg["woodpecker.logstore.httpPort"] else None
    http_port = http.sockets[0].getsockname()[1] if http else 0
    log.info("logstore %s (instance %s) serving gRPC on %s (%s), http on %s", node_id, svc.instance, endpoint,
             "tls" if creds else "plaintext", http_port)
    if ready_file:
        Path(ready_file).write_text(f"{endpoint} {http_port}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await reg.stop()
    await server.stop(grace=5)
    if http:
        http.close()
    await svc.close()
    await meta.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="picchio logstore")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run a LogStore server")
    s.add_argument("--config", "-c", help="woodpecker.yaml-style configuration")
    s.add_argument("--ready-file", help="write 'endpoint httpPort' here once serving (for harnesses)")
    s.add_argument("--advertise-address", help="host:port clients use (e.g. $(POD_NAME).svc:18080 in a StatefulSet)")
    s.add_argument("--node-id", help="node id in etcd (default: derived from the advertised address)")
    s.add_argument("--zone", help="availability zone (for zone-spread ensembles)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        cfg = (Config.from_yaml(args.config) if args.config else Config()).with_env()
    except LogstoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import os
    advertise = args.advertise_address or os.environ.get("PICCHIO_ADVERTISE_ADDRESS")
    flags = {"woodpecker.logstore.advertiseAddress": advertise, "woodpecker.logstore.nodeId": args.node_id,
             "woodpecker.logstore.zone": args.zone}
    cfg = cfg.with_values({k: v for k, v in flags.items() if v})
    try:
        asyncio.run(serve(cfg, args.ready_file))
    except KeyboardInterrupt:
        pass
    except LogstoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
