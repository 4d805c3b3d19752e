"""``picchio logstore serve --config FILE``: the LogStore process.

Starts the gRPC service (TLS when configured), registers the node in etcd
under a lease, serves probes and metrics, and shuts down gracefully on
SIGTERM/SIGINT (deregisters, drains in-flight syncs)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Callable

import grpc

from ..config import Config
from ..errors import ConfigError, LogstoreError, MetadataError, StorageError
from ..tlsfiles import TLSFileError, WatchedFiles, check_pem
from ..redact import config_secrets, install as install_redaction, redact
from ..meta import MetaStore
from .http import serve_http
from .identity import load_or_create, lock_data_dir
from ..decommission import is_marked
from .membership import Registration, follow_decommission
from .metrics import Metrics
from .service import LogStoreService, generic_handler

log = logging.getLogger("picchio.logstore")


def server_credentials(cfg: Config) -> grpc.ServerCredentials | None:
    """TLS credentials that follow the files: every new handshake asks
    :func:`_fetcher` (gRPC's dynamic server credentials), which re-reads
    cert/key/CA once they change on disk — rotation without a restart."""
    if not cfg["woodpecker.logstore.tls.enabled"]:
        return None
    files = WatchedFiles([cfg["woodpecker.logstore.tls.certFile"], cfg["woodpecker.logstore.tls.keyFile"],
                          cfg["woodpecker.logstore.tls.caFile"]])
    need = bool(cfg["woodpecker.logstore.tls.requireClientCert"])
    for key in ("woodpecker.logstore.tls.certFile", "woodpecker.logstore.tls.keyFile"):
        if not cfg[key]:
            raise ConfigError(f"{key}: required with woodpecker.logstore.tls.enabled")
    try:
        first = _server_config(files, need)
    except OSError as e:
        key = next((k for k in ("certFile", "keyFile", "caFile") if cfg[f"woodpecker.logstore.tls.{k}"] == e.filename),
                   "certFile/keyFile/caFile")
        raise ConfigError(f"woodpecker.logstore.tls.{key}: cannot read {e.filename!r}: {e.strerror or e}") from None
    except TLSFileError as e:
        # gRPC only says "failed to bind" about unusable PEM: check it here, with a message that names it
        raise ConfigError(f"woodpecker.logstore.tls (certFile/keyFile/caFile): {e}") from None
    try:
        return grpc.dynamic_ssl_server_credentials(first, _fetcher(files, need), require_client_authentication=need)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"woodpecker.logstore.tls: unusable certificate or key: {e}") from None


def _server_config(files: WatchedFiles, need: bool) -> grpc.ServerCertificateConfiguration:
    cert, key, ca = files.read()
    assert cert is not None and key is not None
    check_pem(files.paths[0], files.paths[1], ca)
    if files.changed_since_read():
        raise TLSFileError("the files changed while being read")
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca if need else None)


def _fetcher(files: WatchedFiles, need: bool) -> Callable[[], grpc.ServerCertificateConfiguration | None]:
    """Called by gRPC before each handshake: None keeps the current
    configuration; a broken new set of files is logged (names, never
    contents) and the previous configuration stays in use."""
    def fetch() -> grpc.ServerCertificateConfiguration | None:
        try:
            if not files.changed():
                return None
            new = _server_config(files, need)
        except (OSError, TLSFileError) as e:
            log.warning("woodpecker.logstore.tls: new certificate files not usable, keeping the previous ones: %s",
                        f"{e.filename}: {e.strerror}" if isinstance(e, OSError) else e)
            return None
        except Exception as e:  # noqa: BLE001 - never let a handshake fail on our account
            log.warning("woodpecker.logstore.tls: reloading failed, keeping the previous files: %s",
                        type(e).__name__)
            return None
        log.info("woodpecker.logstore.tls: certificate files changed: new handshakes use them")
        return new
    return fetch


def advertised(cfg: Config, port: int) -> str:
    adv = cfg["woodpecker.logstore.advertiseAddress"]
    if adv:
        return adv
    host = cfg["woodpecker.logstore.host"]
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"{host}:{port}"


def check_port_free(host: str, port: int, key: str) -> None:
    """Bind ``host:port`` once without SO_REUSEPORT and let go: a port another
    process holds (a second LogStore on the same port, anything else) fails
    here with a one-line error.  gRPC binds without SO_REUSEPORT too
    (``grpc.so_reuseport`` 0), so a race past this check still fails."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"{key}: cannot resolve host {host!r}: {e.strerror or e}") from None
    family, type_, proto, _, addr = infos[0]
    with socket.socket(family, type_, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC and asyncio do: TIME_WAIT is no owner
        try:
            s.bind(addr)
        except OSError as e:
            raise ConfigError(f"{key}: cannot listen on {host}:{port}: {e.strerror or e}"
                              " (another LogStore or process holds it?)") from None


GRPC_OPTIONS = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20),
                # without this gRPC binds with SO_REUSEPORT and a second LogStore on the same port starts,
                # shares the traffic and registers under the same node id
                ("grpc.so_reuseport", 0)]


async def serve(cfg: Config, ready_file: str | None = None) -> None:
    """Every startup failure (port in use, unreadable TLS files, data dir not
    writable, etcd unreachable) raises a LogstoreError with one line of text,
    within etcd.requestTimeout + registrationTTL, and leaves nothing behind."""
    metrics = Metrics()
    svc = LogStoreService(cfg, metrics)
    host, gport, hport = (cfg["woodpecker.logstore.host"], cfg["woodpecker.logstore.port"],
                          cfg["woodpecker.logstore.httpPort"])
    creds = server_credentials(cfg)
    check_port_free(host, gport, "woodpecker.logstore.port")
    if hport:
        check_port_free(host, hport, "woodpecker.logstore.httpPort")
    server = grpc.aio.server(options=GRPC_OPTIONS)
    authorize = bool(creds and cfg["woodpecker.logstore.tls.requireClientCert"]
                     and cfg["woodpecker.logstore.tls.authorization"])
    server.add_generic_rpc_handlers((generic_handler(svc, authorize),))
    http = meta = reg = None
    follower: asyncio.Task | None = None
    lock_fd = -1
    started = False
    try:
        bind = f"{host}:{gport}"
        try:
            port = server.add_secure_port(bind, creds) if creds else server.add_insecure_port(bind)
        except RuntimeError:
            raise ConfigError(f"woodpecker.logstore.port: cannot listen on {bind} (in use, or TLS material "
                              "gRPC refuses?)") from None
        endpoint = advertised(cfg, port)
        node_id = cfg["woodpecker.logstore.nodeId"] or endpoint.replace(":", "-")
        # one LogStore per data dir, and its identity is durable before anything is served under it
        try:
            lock_fd = lock_data_dir(svc.root)
        except BlockingIOError as e:
            raise StorageError(f"woodpecker.storage.rootPath {str(svc.root)!r}: {e}") from None
        except OSError as e:
            raise StorageError(f"cannot use woodpecker.storage.rootPath {str(svc.root)!r}: {e.strerror or e}") from None
        try:
            svc.instance = await asyncio.to_thread(load_or_create, svc.root, node_id)
        except OSError as e:
            raise StorageError(f"cannot record this LogStore's identity in woodpecker.storage.rootPath "
                               f"{str(svc.root)!r}: {e.strerror or e}") from None

        def ready() -> tuple[bool, str]:
            if reg is None or not reg.registered:
                return False, "not registered in etcd"
            u = svc.usage_ratio()
            if u >= svc.hard:
                return False, f"disk above hard limit ({u:.0%})"
            return True, "ready"

        def render() -> str:
            svc.usage_ratio()  # the gauge as of this scrape, not of the last append
            return metrics.render()

        if hport:
            try:
                http = await serve_http(host, hport, ready, render)
            except OSError as e:
                raise ConfigError(f"woodpecker.logstore.httpPort: cannot listen on {host}:{hport}: "
                                  f"{e.strerror or e}") from None
        http_port = http.sockets[0].getsockname()[1] if http else 0
        await server.start()
        started = True
        cfg.warn_inert()
        meta = MetaStore(cfg)
        bound = cfg["etcd.requestTimeout"] + cfg["woodpecker.logstore.registrationTTL"]
        try:
            await asyncio.wait_for(meta.connect(), bound)
            svc.meta = meta
            # a LogStore restarted while marked as leaving refuses appends from its first registration on
            svc.decommissioning = await asyncio.wait_for(is_marked(meta, endpoint), bound)
            reg = Registration(meta, node_id, {"nodeId": node_id, "endpoint": endpoint, "instance": svc.instance,
                                               "zone": cfg["woodpecker.logstore.zone"], "tls": creds is not None,
                                               "decommissioning": svc.decommissioning},
                               cfg["woodpecker.logstore.registrationTTL"])
            await asyncio.wait_for(reg.start(), bound)
            follower = asyncio.create_task(follow_decommission(meta, reg, svc, metrics), name="picchio-decommission")
        except asyncio.TimeoutError:
            raise MetadataError(f"cannot register in etcd ({', '.join(cfg['etcd.endpoints'])}) within "
                                f"{bound:g}s") from None
        except LogstoreError:
            raise
        except Exception as e:  # noqa: BLE001 - aetcd/grpc errors: one line, not a traceback
            raise MetadataError(f"cannot register in etcd ({', '.join(cfg['etcd.endpoints'])}): "
                                f"{type(e).__name__}: {e}") from None
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
    finally:
        if follower is not None:
            follower.cancel()
        if reg is not None:
            await reg.stop()
        svc.subs.shutdown()  # tail subscriptions end now, not at the grace period's end
        await server.stop(grace=5 if started else None)
        if http:
            http.close()
        await svc.close()
        if meta is not None:
            await meta.close()
        if lock_fd >= 0:
            os.close(lock_fd)


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
        advertise = args.advertise_address or os.environ.get("PICCHIO_ADVERTISE_ADDRESS")
        flags = {"woodpecker.logstore.advertiseAddress": advertise, "woodpecker.logstore.nodeId": args.node_id,
                 "woodpecker.logstore.zone": args.zone}
        cfg = cfg.with_values({k: v for k, v in flags.items() if v})
    except LogstoreError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    secrets = config_secrets(cfg)
    install_redaction(secrets)  # every log line of this process, third-party text included
    try:
        asyncio.run(serve(cfg, args.ready_file))
    except KeyboardInterrupt:
        pass
    except LogstoreError as e:
        print(f"error: {redact(_one_line(e), secrets)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a LogStore exits with one line, never a traceback
        log.debug("unexpected failure", exc_info=True)
        print(f"error: {type(e).__name__}: {redact(_one_line(e), secrets)}", file=sys.stderr)
        return 1
    return 0


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
