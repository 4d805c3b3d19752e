"""Woodpecker's legacy etcd prefix rule, on a real etcd.

A keyspace laid out under the bare ``woodpecker/`` is found and used whatever
``etcd.rootPath`` says; a fresh keyspace goes under ``{rootPath}/{meta.prefix}``.
These tests write under the bare ``woodpecker/`` of the session's etcd, which
every other test would then treat as legacy: the ``bare_root`` fixture removes
it before and after each test.
"""
import json

import pytest

from logstore import Client, Config
from logstore.cli.main import main as cli_main
from logstore.meta import MetaStore
from logstore.meta.prefix import LEGACY_DIRS, LEGACY_KEYS


async def _wipe_bare(cfg: Config) -> None:
    meta = MetaStore(cfg)
    await meta.connect(init_keyspace=False)
    try:
        await meta.client.delete_prefix(b"woodpecker/")
    finally:
        await meta.close()


@pytest.fixture
async def bare_root(make_config):
    """A config whose configured prefix is the bare ``woodpecker`` (how an old
    Woodpecker keyspace is laid out); the bare prefix is empty before and after."""
    cfg = make_config("local", **{"etcd.rootPath": ""})
    assert cfg.meta_prefix == "woodpecker"
    await _wipe_bare(cfg)
    yield cfg
    await _wipe_bare(cfg)


async def _keys(cfg: Config, prefix: bytes) -> list[bytes]:
    meta = MetaStore(cfg)
    await meta.connect(init_keyspace=False)
    try:
        return [kv.key for kv in await meta.client.get_prefix(prefix)]
    finally:
        await meta.close()


async def test_a_legacy_keyspace_is_used_whatever_root_path_says(bare_root, make_config):
    async with Client(bare_root) as old:
        await old.create_log("from-old-woodpecker")
    cfg = make_config("local")  # etcd.rootPath test-<uid>: configured prefix test-<uid>/woodpecker
    root = cfg["etcd.rootPath"]
    async with Client(cfg) as c:
        choice = c.meta.prefix_choice
        assert (choice.prefix, choice.configured) == ("woodpecker", f"{root}/woodpecker")
        assert "legacy" in choice.reason
        assert await c.list_logs() == ["from-old-woodpecker"]
        await c.create_log("new")
    assert b"woodpecker/logs/new" in await _keys(cfg, b"woodpecker/logs/")
    assert await _keys(cfg, f"{root}/".encode()) == []  # no second keyspace beside the legacy one


@pytest.mark.parametrize("key", [f"woodpecker/{k}" for k in LEGACY_KEYS]
                         + [f"woodpecker/{d}/x/y" for d in LEGACY_DIRS])
async def test_any_one_legacy_key_decides(bare_root, make_config, key):
    meta = MetaStore(bare_root)
    await meta.connect(init_keyspace=False)
    try:
        await meta.client.put(key.encode(), b"1")
    finally:
        await meta.close()
    probe = MetaStore(make_config("local"))
    await probe.connect(init_keyspace=False)
    await probe.close()
    assert probe.prefix_choice.prefix == "woodpecker", key


@pytest.mark.parametrize("key", ["woodpecker/logs", "woodpecker/unrelated", "woodpeckers/logs/a", "x/woodpecker/instance"])
async def test_near_misses_are_not_legacy(bare_root, make_config, key):
    """Only the exact keys and the ``<dir>/`` prefixes count, as in Woodpecker."""
    meta = MetaStore(bare_root)
    await meta.connect(init_keyspace=False)
    try:
        await meta.client.put(key.encode(), b"1")
        cfg = make_config("local")
        async with Client(cfg) as c:
            assert c.meta.prefix_choice.prefix == cfg.meta_prefix != "woodpecker"
    finally:
        await meta.client.delete(key.encode())
        await meta.close()


async def test_a_fresh_keyspace_uses_root_path_and_meta_prefix(bare_root, make_config):
    cfg = make_config("local", **{"woodpecker.meta.prefix": "wp"})
    async with Client(cfg) as c:
        assert c.meta.prefix_choice.prefix == f"{cfg['etcd.rootPath']}/wp"
        await c.create_log("fresh")
    keys = await _keys(cfg, f"{cfg['etcd.rootPath']}/wp/".encode())
    assert f"{cfg['etcd.rootPath']}/wp/logs/fresh".encode() in keys
    assert f"{cfg['etcd.rootPath']}/wp/instance".encode() in keys
    assert await _keys(cfg, b"woodpecker/") == []  # the rule never creates a legacy keyspace


def test_config_check_says_which_prefix_is_in_effect(bare_root, make_config, tmp_path, capsys):
    import asyncio
    import yaml

    cfg = make_config("local")
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(nested=True)))
    assert cli_main(["--json", "config", "check", str(path), "--etcd"]) == 0
    fresh = json.loads(capsys.readouterr().out)["etcd"]
    assert fresh["prefix"] == cfg.meta_prefix and "no legacy" in fresh["reason"]

    async def make_legacy() -> None:
        async with Client(bare_root):
            pass
    asyncio.run(make_legacy())
    assert cli_main(["config", "check", str(path), "--etcd"]) == 0
    out = capsys.readouterr().out
    assert "etcd prefix in effect: woodpecker/ (legacy: etcd holds woodpecker/" in out
    # `config check --etcd` only looks: nothing was created under the configured prefix
    assert asyncio.run(_keys(cfg, f"{cfg.meta_prefix}/".encode())) == []
