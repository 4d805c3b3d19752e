"""``picchio config check FILE``: the effective configuration, key by key.

Prints every key with its value (units shown, secrets masked), where the value
came from (default, file, env) and whether it has an effect here — so a
Woodpecker or Milvus user sees at once which of their settings picchio ignores.
With ``--etcd`` it also connects (read-only) and says which etcd prefix is in
effect and why (Woodpecker's legacy-prefix rule)."""
from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from ..config import Config, describe
from ..meta import MetaStore


def add_config_parser(sub: Any) -> None:
    p = sub.add_parser("config", help="check a woodpecker.yaml: effective values, units, sources, no-effect keys")
    csub = p.add_subparsers(dest="verb", required=True)
    c = csub.add_parser("check", help="print the effective configuration of FILE (env overrides applied)")
    c.add_argument("file")
    c.add_argument("--etcd", action="store_true", help="also connect to etcd and show the prefix in effect")


async def _prefix(cfg: Config) -> dict[str, str]:
    meta = MetaStore(cfg)
    try:
        await meta.connect(init_keyspace=False)
        choice = meta.prefix_choice
        assert choice is not None
        return {"prefix": choice.prefix, "configured": choice.configured, "reason": choice.reason}
    finally:
        await meta.close()


def run_config(args: argparse.Namespace) -> int:
    cfg = Config.from_yaml(args.file).with_env()
    rows = describe(cfg)
    inert = cfg.inert_keys()
    data: dict[str, Any] = {"file": args.file, "settings": rows, "noEffect": inert,
                            "configuredPrefix": cfg.meta_prefix}
    if args.etcd:
        data["etcd"] = asyncio.run(_prefix(cfg))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    from .main import _table
    print(_table([{**r, "effect": "✗ no effect" if r["effect"] else ""} for r in rows],
                 ["key", "value", "source", "effect"]))
    print(f"\n{len(inert)} key(s) set in {args.file} or the environment have no effect here"
          + (": " + ", ".join(inert) if inert else "."))
    if args.etcd:
        e = data["etcd"]
        print(f"etcd prefix in effect: {e['prefix']}/ ({e['reason']})")
    else:
        print(f"etcd prefix: {cfg.meta_prefix}/ unless etcd holds a legacy woodpecker/ keyspace "
              "(--etcd checks)")
    return 0
