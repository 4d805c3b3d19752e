"""Exactly-once appends (idempotent producers) on local disk and MinIO, real etcd."""
import asyncio
import sys
from pathlib import Path

import pytest

import logstore

sys.path.insert(0, str(Path(__file__).parent))
import producer_scenarios as sc  # noqa: E402

ROLL = {"woodpecker.client.segmentRollingPolicy.maxSize": 4000,
        "woodpecker.logstore.segmentSyncPolicy.maxFlushSize": 1000}


@pytest.mark.parametrize("scenario", [sc.retries_return_original_ids, sc.crashed_or_fenced_predecessor,
                                      sc.state_crosses_plain_writers_and_expiry], ids=lambda f: f.__name__)
async def test_producer(make_config, backend_kind, scenario):
    await scenario(make_config(backend_kind))


async def test_producer_across_rollover(make_config, backend_kind):
    await sc.rollover_keeps_ids(make_config(backend_kind, **ROLL))


def test_cli_append_with_producer_id_is_idempotent(make_config, tmp_path):
    """`picchio log append --producer-id ID --sequence N`: a re-run of the same
    command prints the same ids and appends nothing; a gap is a one-line error."""
    import json
    import os
    import subprocess

    import yaml

    cfg_path = tmp_path / "woodpecker.yaml"
    cfg_path.write_text(yaml.safe_dump(make_config("local").to_dict(nested=True)))

    def picchio(*args, input=None):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        return subprocess.run([sys.executable, "-m", "logstore.cli.main", "--config", str(cfg_path), *args],
                              input=input, capture_output=True, text=True, env=env, timeout=120)

    assert picchio("log", "create", "cli-idem").returncode == 0
    cmd = ("--json", "log", "append", "cli-idem", "--producer-id", "job-7", "--sequence", "0")
    first = picchio(*cmd, input="a\nb\nc\n")
    assert first.returncode == 0, first.stderr
    again = picchio(*cmd, input="a\nb\nc\n")
    assert json.loads(again.stdout) == json.loads(first.stdout) == ["0:0", "0:1", "0:2"]
    nxt = picchio("--json", "log", "append", "cli-idem", "--producer-id", "job-7", "--data", "d")  # last + 1
    assert json.loads(nxt.stdout) == ["2:0"]
    gap = picchio("log", "append", "cli-idem", "--producer-id", "job-7", "--sequence", "9", "--data", "x")
    assert gap.returncode == 1 and "skips 4..8" in gap.stderr and "Traceback" not in gap.stderr
    bad = picchio("log", "append", "cli-idem", "--sequence", "9", "--data", "x")
    assert bad.returncode == 1 and "--producer-id" in bad.stderr
    lines = picchio("--json", "log", "read", "cli-idem", "--timeout", "0.5").stdout.splitlines()
    assert [json.loads(x)["payload"] for x in lines] == ["a", "b", "c", "d"]


async def test_a_failed_block_fails_every_later_sequence_no_hole(make_config):
    """Object storage uploads blocks in parallel.  One block's upload fails (an
    injected storage error, after the blocks behind it were stored): the writer
    would normally re-send those later blocks to a new segment — for a producer
    that would leave a hole in its sequences.  They fail too; the producer goes
    on at last_sequence + 1 and the log holds 0..n once each, in order."""
    from logstore.errors import StorageError

    cfg = make_config("minio", **{"woodpecker.logstore.segmentSyncPolicy.maxFlushSize": 1,  # a block per entry
                                  "woodpecker.logstore.segmentSyncPolicy.maxFlushRetries": 1})
    async with logstore.Client(cfg) as c:
        log = await c.create_log("hole")
        w = await log.open_writer(producer_id="h")
        store = w._seg.store  # fault injection: this segment's block 3 fails once its successors are stored
        real = store.write_block

        async def flaky(header, *a, **kw):
            if header.block_number == 3:
                await asyncio.sleep(0.5)
                raise StorageError("injected: block 3 lost")
            return await real(header, *a, **kw)

        store.write_block = flaky
        results = await asyncio.gather(*(w.append(b"v%d" % s, sequence=s) for s in range(10)),
                                       return_exceptions=True)
        ok = [r for r in results if not isinstance(r, BaseException)]
        assert len(ok) == 3 and all(isinstance(r, StorageError) for r in results[3:]), results
        assert w.last_sequence == 2
        with pytest.raises(logstore.SequenceGapError):
            await w.append(b"v5", sequence=5)
        again = await asyncio.gather(*(w.append(b"v%d" % s, sequence=s) for s in range(3, 10)))
        assert again[0].segment_id > ok[-1].segment_id  # the broken segment was sealed at entry 2
        await w.close()
        got = await sc.read_all(log)
    assert sc.stamps(got) == [("h", s) for s in range(10)]
    assert [m.payload for m in got] == [b"v%d" % s for s in range(10)]


async def test_a_retry_after_the_caller_gave_up_gets_the_stored_id(make_config, backend_kind):
    """The classic retry: the first call timed out (cancelled) while its block
    was on the way.  The entry is stored once; the retry gets its id."""
    async with logstore.Client(make_config(backend_kind)) as c:
        log = await c.create_log("gaveup")
        w = await log.open_writer(producer_id="impatient")
        first = asyncio.ensure_future(w.append(b"once", sequence=0))
        await asyncio.sleep(0)  # queued, not yet durable
        first.cancel()
        mid = await w.append(b"once", sequence=0)
        assert await w.append(b"once", sequence=0) == mid
        await w.close()
        got = await sc.read_all(log)
    assert [m.payload for m in got] == [b"once"] and got[0].id == mid
