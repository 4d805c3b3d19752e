"""A minimal HTTP endpoint for probes and scraping: /healthz, /readyz, /metrics."""
from __future__ import annotations

import asyncio
from typing import Callable

_REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


async def serve_http(host: str, port: int, ready: Callable[[], tuple[bool, str]],
                     metrics: Callable[[], str]) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            path = line.split()[1].decode() if len(line.split()) > 1 else "/"
            try:
                status, body, ctype = _answer(path, ready, metrics)
            except Exception as e:  # noqa: BLE001 - a probe that cannot be answered is a 500, not a dropped socket
                status, body, ctype = 500, f"{type(e).__name__}: {e}\n", "text/plain"
            data = body.encode()
            writer.write(f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, IndexError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


def _answer(path: str, ready: Callable[[], tuple[bool, str]], metrics: Callable[[], str]) -> tuple[int, str, str]:
    if path.startswith("/healthz"):
        return 200, "ok\n", "text/plain"
    if path.startswith("/readyz"):
        ok, why = ready()
        return (200 if ok else 503), why + "\n", "text/plain"
    if path.startswith("/metrics"):
        return 200, metrics(), "text/plain; version=0.0.4"
    return 404, "not found\n", "text/plain"
