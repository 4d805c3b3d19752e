"""Deletion is visible: a writer whose log another client deleted fails its
next append with LogNotFoundError; a reader of it gets LogNotFoundError instead
of waiting forever (issue 9, defect 7)."""
from __future__ import annotations

import asyncio
import time

import pytest

import logstore
from logstore import EARLIEST


async def test_writer_and_reader_of_a_deleted_log(make_config, backend_kind):
    cfg = make_config(backend_kind)
    async with logstore.Client(cfg) as c, logstore.Client(cfg) as other:
        log = await c.create_log("doomed")
        w = await log.open_writer()
        await w.append(b"before")
        r = await log.open_reader(EARLIEST)
        assert (await r.read_next(timeout=5)).payload == b"before"
        await other.delete_log("doomed")
        deadline = time.monotonic() + 3 * cfg["woodpecker.client.reader.metaPollInterval"] + 2
        acked_after = []
        with pytest.raises(logstore.LogNotFoundError):
            while time.monotonic() < deadline:  # local: the very next append; S3: within metaPollInterval
                acked_after.append(await w.append(b"after"))
                if backend_kind == "local":
                    break
                await asyncio.sleep(0.05)
        assert backend_kind != "local" or not acked_after, "a local writer is fenced by the deletion at once"
        with pytest.raises(logstore.LogNotFoundError):
            await w.append(b"again")
        with pytest.raises(logstore.LogNotFoundError):  # after at most what was acknowledged, the reader learns
            for _ in range(len(acked_after) + 1):
                m = await asyncio.wait_for(r.read_next(), 5)
                assert m.payload == b"after"
        await w.close()
