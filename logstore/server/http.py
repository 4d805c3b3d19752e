"""A minimal HTTP endpoint for probes and scraping: /healthz, /readyz, /metrics."""
from __future__ import annotations

import asyncio
from typing import Callable


async def serve_http(host: str, port: int, ready: Callable[[], tuple[bool, str]],
                     metrics: Callable[[], str]) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            path = line.split()[1].decode() if len(line.split()) > 1 else "/"
            if path.startswith("/healthz"):
                status, body, ctype = 200, "ok\n", "text/plain"
            elif path.startswith("/readyz"):
                ok, why = ready()
                status, body, ctype = (200 if ok else 503), why + "\n", "text/plain"
            elif path.startswith("/metrics"):
                status, body, ctype = 200, metrics(), "text/plain; version=0.0.4"
            else:
                status, body, ctype = 404, "not found\n", "text/plain"
            data = body.encode()
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                         "Connection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
