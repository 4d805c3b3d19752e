"""Small helpers the service-mode tests share: a LogStore's HTTP probes and a
poller with a deadline (never a bare sleep standing in for a condition)."""
from __future__ import annotations

import asyncio
import urllib.error
import urllib.request


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:{port}{path}; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def until(cond, what: str, timeout: float = 30.0, interval: float = 0.02):
    """Poll ``cond`` (sync or async) until truthy, with a deadline; return its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while True:
        got = cond()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        last = got
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)
