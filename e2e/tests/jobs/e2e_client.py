"""The e2e suite's in-cluster client (runs in a Job from the project image,
mounted from a ConfigMap).  One line per event on stdout, parsed by the tests:

  write LOG N [--prefix P] [--interval S] [--deadline S]
      ACK <i> <id> <payload>      an acknowledged append
      ERR <i> <error>             a failed append (retried with a new writer)
      DONE acked=<n> errors=<n>
  read LOG [--timeout S]
      READ <id> <payload>
      DONE read=<n>
  list                            LOG <name>  /  DONE logs=<n>
  objects PREFIX                  OBJ <key> <size>  /  DONE objects=<n> bytes=<n>
  served-cert HOST:PORT...        CERT <host:port> <serial hex> <issuer CN>  (the certificate each
                                  LogStore serves now, seen through a TLS handshake with the
                                  client's own certificate and CA from the configuration)

Configuration: the woodpecker.yaml in $PICCHIO_CONFIG plus PICCHIO_*
environment variables (credentials from Secrets), like any application.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import logstore


def out(*parts: object) -> None:
    print(*parts, flush=True)


def config() -> logstore.Config:
    return logstore.Config.from_yaml(os.environ.get("PICCHIO_CONFIG", "/etc/picchio/woodpecker.yaml")).with_env()


async def write(a: argparse.Namespace) -> int:
    acked = errors = 0
    deadline = time.monotonic() + a.deadline
    async with logstore.Client(config()) as c:
        h = await (c.open_log(a.log) if await c.log_exists(a.log) else c.create_log(a.log))
        w = None
        i = 0
        while i < a.count:
            if time.monotonic() > deadline:
                out(f"GAVEUP {i}")
                break
            try:
                if w is None:
                    w = await h.open_writer()
                payload = f"{a.prefix}-{i:06d}"
                mid = await asyncio.wait_for(w.append(payload.encode()), a.append_timeout)
                out(f"ACK {i} {mid} {payload}")
                acked += 1
                i += 1
                if a.interval:
                    await asyncio.sleep(a.interval)
            except Exception as e:  # noqa: BLE001 - any failure: report, new writer, same entry again
                errors += 1
                out(f"ERR {i} {type(e).__name__}: {e}".replace("\n", " "))
                if w is not None:
                    try:
                        await asyncio.wait_for(w.close(), 10)
                    except Exception:  # noqa: BLE001
                        pass
                    w = None
                await asyncio.sleep(1.0)
        if w is not None:
            await w.close()
    out(f"DONE acked={acked} errors={errors}")
    return 0 if acked == a.count else 1


async def read(a: argparse.Namespace) -> int:
    n = 0
    async with logstore.Client(config()) as c:
        h = await c.open_log(a.log)
        r = await h.open_reader(logstore.EARLIEST)
        while True:
            try:
                m = await r.read_next(timeout=a.timeout)
            except TimeoutError:
                break
            out(f"READ {m.id} {m.payload.decode(errors='backslashreplace')}")
            n += 1
    out(f"DONE read={n}")
    return 0


async def list_logs(a: argparse.Namespace) -> int:
    async with logstore.Client(config()) as c:
        names = await c.list_logs("")
    for n in names:
        out(f"LOG {n}")
    out(f"DONE logs={len(names)}")
    return 0


def objects(a: argparse.Namespace) -> int:
    import boto3

    cfg = config()
    scheme = "https" if cfg["minio.useSSL"] else "http"
    s3 = boto3.client("s3", endpoint_url=f"{scheme}://{cfg['minio.address']}:{cfg['minio.port']}",
                      aws_access_key_id=cfg["minio.accessKeyID"], aws_secret_access_key=cfg["minio.secretAccessKey"],
                      region_name=cfg["minio.region"] or "us-east-1")
    n = total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cfg["minio.bucketName"], Prefix=a.prefix):
        for o in page.get("Contents") or []:
            out(f"OBJ {o['Key']} {o['Size']}")
            n += 1
            total += o["Size"]
    out(f"DONE objects={n} bytes={total}")
    return 0


def served_cert(a: argparse.Namespace) -> int:
    import socket
    import ssl

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cfg = config()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cfg["woodpecker.logstore.tls.caFile"])
    ctx.load_cert_chain(cfg["woodpecker.logstore.tls.clientCertFile"], cfg["woodpecker.logstore.tls.clientKeyFile"])
    ctx.set_alpn_protocols(["h2"])  # what a gRPC client offers
    for target in a.targets:
        host, _, port = target.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as tls:
            cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        out(f"CERT {target} {cert.serial_number:x} {issuer.replace(' ', '_')}")
    out(f"DONE certs={len(a.targets)}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("write")
    p.add_argument("log")
    p.add_argument("count", type=int)
    p.add_argument("--prefix", default="e")
    p.add_argument("--interval", type=float, default=0.0)
    p.add_argument("--deadline", type=float, default=240.0)
    p.add_argument("--append-timeout", type=float, default=30.0)
    p = sub.add_parser("read")
    p.add_argument("log")
    p.add_argument("--timeout", type=float, default=5.0)
    sub.add_parser("list")
    p = sub.add_parser("objects")
    p.add_argument("prefix")
    p = sub.add_parser("served-cert")
    p.add_argument("targets", nargs="+")
    a = ap.parse_args()
    if a.cmd == "objects":
        return objects(a)
    if a.cmd == "served-cert":
        return served_cert(a)
    return asyncio.run({"write": write, "read": read, "list": list_logs}[a.cmd](a))


if __name__ == "__main__":
    sys.exit(main())
