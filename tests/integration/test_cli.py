"""The ``picchio`` command line, end to end against real etcd + storage, and a
reader in another process following a log across segment rollovers."""
import asyncio
import json
import os
import subprocess
import sys

import yaml

import logstore


def _cfg_file(tmp_path, cfg) -> str:
    p = tmp_path / "woodpecker.yaml"
    p.write_text(yaml.safe_dump(cfg.to_dict(nested=True)))
    return str(p)


def _picchio(cfg_path, *args, input=None, check=True):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "logstore.cli.main", "--config", cfg_path, *args], input=input,
                       capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_cli_verbs(make_config, tmp_path, backend_kind):
    cfg = make_config(backend_kind, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 1})
    path = _cfg_file(tmp_path, cfg)
    assert json.loads(_picchio(path, "--json", "log", "create", "cli").stdout)["name"] == "cli"
    assert _picchio(path, "log", "create", "cli", check=False).returncode == 1
    ids = json.loads(_picchio(path, "--json", "log", "append", "cli", input="one\ntwo\nthree\n").stdout)
    assert ids == ["0:0", "0:1", "0:2"]
    _picchio(path, "log", "append", "cli", "--data", "four", "--prop", "k=v")
    lines = _picchio(path, "--json", "log", "read", "cli", "--timeout", "0.5").stdout.splitlines()
    msgs = [json.loads(x) for x in lines]
    assert [m["payload"] for m in msgs] == ["one", "two", "three", "four"]
    assert msgs[-1]["properties"] == {"k": "v"} and msgs[-1]["id"] == "1:0"
    stat = json.loads(_picchio(path, "--json", "log", "stat", "cli").stdout)
    assert stat["lastId"] == "1:0" and [s["id"] for s in stat["segments"]] == [0, 1]
    assert "STATE" in _picchio(path, "log", "stat", "cli").stdout
    assert json.loads(_picchio(path, "--json", "log", "truncate", "cli", "0:2").stdout)["truncatedId"] == "0:2"
    dry = json.loads(_picchio(path, "--json", "log", "gc", "cli", "--dry-run").stdout)
    assert dry["dry_run"] and dry["segments"] == [0]
    gc = json.loads(_picchio(path, "--json", "log", "gc", "cli").stdout)
    assert gc["segments"] == [0] and gc["bytes"] == dry["bytes"] > 0
    assert _picchio(path, "log", "read", "cli", "--timeout", "0.5").stdout.startswith("1:0\tfour")
    assert json.loads(_picchio(path, "--json", "log", "list").stdout) == ["cli"]
    _picchio(path, "log", "delete", "cli")
    bad = _picchio(path, "log", "stat", "cli", check=False)
    assert bad.returncode == 1 and "does not exist" in bad.stderr
    bad = _picchio(path, "log", "truncate", "cli", "zz", check=False)
    assert bad.returncode == 1 and "SEG:ENTRY" in bad.stderr


async def test_reader_in_another_process_follows_rollovers(make_config, tmp_path, backend_kind):
    cfg = make_config(backend_kind, **{"woodpecker.client.segmentRollingPolicy.maxBlocks": 2})
    path = _cfg_file(tmp_path, cfg)
    async with logstore.Client(cfg) as c:
        log = await c.create_log("follow")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "logstore.cli.main", "--config", path, "--json", "log", "tail", "follow",
            stdout=asyncio.subprocess.PIPE, env=env)
        try:
            async with await log.open_writer() as w:
                ids = [await w.append(b"p%d" % i) for i in range(12)]  # six segments
                got = []
                for _ in ids:
                    line = await asyncio.wait_for(child.stdout.readline(), 15)
                    got.append(json.loads(line))
            assert [g["id"] for g in got] == [str(i) for i in ids]
            assert [g["payload"] for g in got] == ["p%d" % i for i in range(12)]
            assert len({i.segment_id for i in ids}) == 6
        finally:
            child.kill()
            await child.wait()


def _no_traceback(r):
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    return r


def test_cli_append_with_a_bad_line_writes_nothing(make_config, tmp_path):
    """One empty stdin line: exit 1 naming it, and none of the valid lines were
    written (a retry cannot duplicate them)."""
    cfg = make_config("local")
    path = _cfg_file(tmp_path, cfg)
    _picchio(path, "log", "create", "strict")
    r = _no_traceback(_picchio(path, "log", "append", "strict", input="one\n\nthree\n", check=False))
    assert r.returncode == 1 and "non-empty payload" in r.stderr and r.stdout.strip() == ""
    assert _picchio(path, "log", "read", "strict", "--timeout", "0.3").stdout == ""
    ids = json.loads(_picchio(path, "--json", "log", "append", "strict", input="one\nthree\n").stdout)
    assert ids == ["0:0", "0:1"]


def test_cli_bad_input_is_one_line_error_not_traceback(make_config, tmp_path):
    cfg = make_config("local")
    path = _cfg_file(tmp_path, cfg)
    _picchio(path, "log", "create", "x")
    for endpoints in (["127.0.0.1"], ["127.0.0.1:port"], ["localhost:99999"]):
        bad = tmp_path / "bad.yaml"
        d = cfg.to_dict(nested=True)
        d["etcd"]["endpoints"] = endpoints
        bad.write_text(yaml.safe_dump(d))
        r = _no_traceback(_picchio(str(bad), "log", "list", check=False))
        assert r.returncode == 1 and "etcd.endpoints" in r.stderr and "host:port" in r.stderr
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    r = _no_traceback(_picchio(str(binary), "log", "list", check=False))
    assert r.returncode == 1 and "not a text" in r.stderr
    for f in (str(tmp_path / "missing.bin"), str(tmp_path)):
        r = _no_traceback(_picchio(path, "log", "append", "x", "--file", f, check=False))
        assert r.returncode == 1 and "--file" in r.stderr
    for t in ("nan", "inf", "-1", "soon"):
        r = _no_traceback(_picchio(path, "log", "read", "x", "--timeout", t, check=False))
        assert r.returncode == 2 and "--timeout" in r.stderr
    assert _picchio(path, "log", "read", "x", "--timeout", "0.2").stdout == ""


def test_config_check_shows_woodpeckers_file_with_units_sources_and_no_effect_marks(tmp_path):
    """`picchio config check` on Woodpecker's own shipped file: every key, its
    value in Woodpecker's units, where it came from, and what is ignored here."""
    from pathlib import Path
    shipped = str(Path(__file__).parents[1] / "unit" / "data" / "woodpecker-v0.1.35.yaml")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PICCHIO_ETCD_AUTH_PASSWORD="s3cr3t-from-env")
    r = subprocess.run([sys.executable, "-m", "logstore.cli.main", "config", "check", shipped], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line.startswith(("etcd.", "log."))}
    assert rows["etcd.requestTimeout"] == ["10s", "file"]                  # 10000 ms
    assert rows["etcd.auth.password"] == ["***", "env"] and "s3cr3t-from-env" not in r.stdout
    assert rows["log.level"][-2:] == ["no", "effect"] and rows["log.level"][1] == "file"
    inert = logstore.Config.from_yaml(shipped).inert_keys()
    assert f"{len(inert)} key(s) set in {shipped} or the environment have no effect here: {', '.join(inert)}" in r.stdout
    assert "etcd prefix: by-dev/woodpecker/" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("woodpecker:\n  client:\n    segmentAppend:\n      queueSiz: 1\n")
    r = _no_traceback(subprocess.run([sys.executable, "-m", "logstore.cli.main", "config", "check", str(bad)],
                                     env=env, capture_output=True, text=True, timeout=60))
    assert r.returncode == 1 and "woodpecker.client.segmentAppend.queueSiz: unknown configuration key" in r.stderr
