"""``picchio`` — the command line.  Thin: parsing and printing only; every verb
calls the ``logstore`` API (or the operator / dev harness) and prints a human
table or, with ``--json``, one JSON document."""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from typing import Any

from .. import EARLIEST, LATEST, Client, Config, LogstoreError, MessageId
from ..dev.procs import ComponentMissing
from ..errors import InvalidArgumentError
from ..redact import config_secrets, redact
from ..seek import format_time, parse_time
from ..writer import check_entry


def _load_config(path: str | None) -> Config:
    return (Config.from_yaml(path) if path else Config()).with_env()


def _position(text: str) -> MessageId:
    t = text.strip().lower()
    if t in ("earliest", "start", "beginning"):
        return EARLIEST
    if t in ("latest", "end"):
        return LATEST
    return MessageId.parse(text)


def _props(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise InvalidArgumentError(f"--prop wants KEY=VALUE, got {it!r}")
        out[k] = v
    return out


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    """Rows as a terminal table (rich), never wrapped or cut: a pipe into grep
    or awk gets whole values, one row a line."""
    if not rows:
        return "(none)"
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for c in cols:
        t.add_column(c.upper(), no_wrap=True, overflow="ignore")
    for r in rows:
        t.add_row(*(str(r.get(c, "")) for c in cols))
    con = Console(width=1_000_000, color_system=None, highlight=False)
    with con.capture() as cap:
        con.print(t)
    return "\n".join(ln.rstrip() for ln in cap.get().splitlines())


def _emit(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else human)


async def _log_cmd(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)
    async with Client(cfg) as c:
        verb = args.verb
        if verb == "create":
            h = await c.create_log(args.name)
            _emit(args, {"name": h.name, "logId": h.log_id}, f"created log {h.name} (id {h.log_id})")
        elif verb == "list":
            names = await c.list_logs(args.prefix)
            _emit(args, names, "\n".join(names) if names else "(no logs)")
        elif verb == "stat":
            h = await c.open_log(args.name)
            segs = [s.as_dict() for s in await h.segments(times=True)]
            data = {"name": h.name, "logId": h.log_id, "lastId": str(await h.last_id() or ""),
                    "truncatedId": str(await h.truncated_id() or ""), "segments": segs,
                    "bytes": sum(s["size"] for s in segs)}
            human = (f"log {h.name} (id {h.log_id}) last={data['lastId'] or '-'} truncated={data['truncatedId'] or '-'} "
                     f"bytes={data['bytes']}\n" + _table([{**s, "first_time": format_time(s["first_time"]),
                                                              "last_time": format_time(s["last_time"])} for s in segs],
                                                            ["id", "state", "first_entry_id", "last_entry_id", "size",
                                                             "first_time", "last_time"]))
            _emit(args, data, human)
        elif verb == "append":
            return await _append(args, c)
        elif verb in ("read", "tail"):
            h = await c.open_log(args.name)
            r = await (h.open_reader(at=args.from_time) if args.from_time is not None
                       else h.open_reader(_position(args.start)))
            n = 0
            while args.count is None or n < args.count:
                try:
                    m = await r.read_next(timeout=None if verb == "tail" else args.timeout)
                except TimeoutError:
                    break
                n += 1
                if args.json:
                    print(json.dumps({"id": str(m.id), "payload": m.payload.decode(errors="backslashreplace"),
                                      "properties": m.properties}), flush=True)
                else:
                    props = " ".join(f"{k}={v}" for k, v in m.properties.items())
                    print(f"{m.id}\t{m.payload.decode(errors='backslashreplace')}" + (f"\t{props}" if props else ""),
                          flush=True)
        elif verb == "truncate":
            target = MessageId.parse(args.id)  # bad input fails before any I/O
            h = await c.open_log(args.name)
            t = await h.truncate(target)
            _emit(args, {"truncatedId": str(t)}, f"truncated {h.name} at {t}")
        elif verb == "gc":
            h = await c.open_log(args.name)
            rep = await h.collect_garbage(dry_run=args.dry_run)
            what = "would delete" if rep.dry_run else "deleted"
            _emit(args, rep.as_dict(), f"{what} segments {rep.segments or '[]'}: {rep.objects} objects, {rep.bytes} bytes")
        elif verb == "orphans":
            from ..orphans import scan_orphans
            rep = await scan_orphans(c, args.grace, delete=args.delete)
            _emit(args, rep.as_dict(), f"scanned {rep.scanned} objects: {rep.objects} orphans ({rep.bytes} bytes"
                  f"{f', {rep.deleted} deleted' if args.delete else ''}), {rep.young} unreferenced within the grace "
                  f"period, {rep.foreign} foreign; {len(rep.missing_segments)} segments missing their objects"
                  + "".join(f"\n  missing {m}" for m in rep.missing_segments)
                  + "".join(f"\n  orphan {k}" for k in rep.examples))
        elif verb == "delete":
            n, b = await c.delete_log(args.name)
            _emit(args, {"deleted": args.name, "objects": n, "bytes": b}, f"deleted log {args.name}: {n} objects, {b} bytes")
    return 0


def _payloads(args: argparse.Namespace) -> list[bytes]:
    """Every entry to append, checked before anything is written: a bad line
    means nothing is appended (a retry then cannot duplicate half of it)."""
    if args.data is not None:
        payloads = [args.data.encode()]
    elif args.file:
        try:
            with open(args.file, "rb") as f:
                payloads = [f.read()]
        except OSError as e:
            raise InvalidArgumentError(f"--file {args.file}: {e.strerror or e}") from None
    else:
        payloads = [line.rstrip(b"\n") for line in sys.stdin.buffer]
    props = _props(args.prop)
    for n, p in enumerate(payloads, 1):
        check_entry(p, props)  # raises InvalidArgumentError naming the problem
    if not payloads:
        raise InvalidArgumentError("nothing to append (no --data, --file or stdin lines)")
    return payloads


async def _append(args: argparse.Namespace, c: Client) -> int:
    """Append and print the id of every acknowledged entry — also when a later
    one fails, so nothing is written unreported."""
    payloads = _payloads(args)
    props = _props(args.prop)
    if args.sequence is not None and args.producer_id is None:
        raise InvalidArgumentError("--sequence needs --producer-id")
    h = await c.open_log(args.name)
    w = await h.open_writer(producer_id=args.producer_id)
    seqs: list[int | None] = [None] * len(payloads)
    if args.producer_id is not None:
        first = w.last_sequence + 1 if args.sequence is None else args.sequence
        seqs = list(range(first, first + len(payloads)))
    results = await asyncio.gather(*(w.append(p, props, sequence=s) for p, s in zip(payloads, seqs)),
                                   return_exceptions=True)
    close_error: BaseException | None = None
    try:
        await w.close()
    except LogstoreError as e:
        close_error = e
    ids = [str(r) for r in results if not isinstance(r, BaseException)]
    _emit(args, ids, "\n".join(ids))
    errors = [r for r in results if isinstance(r, BaseException)] + ([close_error] if close_error else [])
    if errors:
        failed = sum(isinstance(r, BaseException) for r in results)
        print(f"error: {failed} of {len(payloads)} entries not appended ({len(ids)} acknowledged, ids above): "
              f"{errors[0]}", file=sys.stderr)
        return 1
    return 0


def _timeout(text: str) -> float:
    """--timeout: a finite number of seconds ≥ 0 (argparse turns the error into a usage message)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds ≥ 0, got {text!r}")
    return v


def _time(text: str) -> int:
    try:
        return parse_time(text)
    except InvalidArgumentError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="picchio", description="picchio: a cloud-native write-ahead log")
    ap.add_argument("--config", "-c", help="woodpecker.yaml-style configuration file")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    sub = ap.add_subparsers(dest="cmd", required=True)

    lg = sub.add_parser("log", help="create, write, read, truncate and collect logs")
    lsub = lg.add_subparsers(dest="verb", required=True)
    for verb in ("create", "stat", "delete"):
        lsub.add_parser(verb).add_argument("name")
    p = lsub.add_parser("list")
    p.add_argument("--prefix", default="")
    p = lsub.add_parser("append", help="append --data, --file, or one entry per stdin line")
    p.add_argument("name")
    p.add_argument("--data")
    p.add_argument("--file")
    p.add_argument("--prop", action="append", metavar="KEY=VALUE")
    p.add_argument("--producer-id", help="idempotent: entries are stamped with this producer's sequences, and a "
                   "re-run with the same sequences returns the stored ids instead of appending again")
    p.add_argument("--sequence", type=int, metavar="N",
                   help="sequence of the first entry (the next ones follow); default: last_sequence + 1")
    for verb in ("read", "tail"):
        p = lsub.add_parser(verb)
        p.add_argument("name")
        where = p.add_mutually_exclusive_group()
        where.add_argument("--from", dest="start", default="earliest", help="earliest | latest | SEG:ENTRY")
        where.add_argument("--from-time", dest="from_time", type=_time, metavar="TIME",
                           help="the first entry appended at or after TIME: ISO 8601 with a zone "
                                "(2026-11-29T10:00:00Z) or unix epoch milliseconds")
        p.add_argument("--count", type=int)  # (negative: argparse accepts; the loop reads none)
        p.add_argument("--timeout", type=_timeout, default=1.0, help="read: stop after this long without entries")
    p = lsub.add_parser("truncate", help="truncate up to and including SEG:ENTRY")
    p.add_argument("name")
    p.add_argument("id")
    p = lsub.add_parser("gc", help="delete segments at or below the truncation point")
    p.add_argument("name")
    p.add_argument("--dry-run", action="store_true")
    p = lsub.add_parser("orphans", help="stored objects no log or segment knows, and segments whose objects "
                                        "are gone (every log of the keyspace)")
    p.add_argument("--delete", action="store_true", help="delete the orphan objects (default: report only)")
    p.add_argument("--grace", type=_timeout, default=3600.0,
                   help="seconds: younger unreferenced objects may belong to a writer at work (default 3600)")

    from .bench import add_bench_parser
    add_bench_parser(sub)
    from .config_cmd import add_config_parser
    add_config_parser(sub)
    sub.add_parser("dev", help="local real components (etcd, MinIO, Kubernetes) for development", add_help=False)
    sub.add_parser("operator", help="the Kubernetes operator (picchio operator run)", add_help=False)
    sub.add_parser("logstore", help="the LogStore server (service mode)", add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # pass-through groups with parsers of their own: find the first positional word
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in ("--config", "-c") else 1
    if i < len(argv) and argv[i] in ("dev", "operator", "logstore"):
        return _passthrough(argv[i], argv[:i], argv[i + 1:])
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:  # `picchio … | head`: the reader has gone, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except Exception as e:  # noqa: BLE001 - a user never gets a traceback (PICCHIO_DEBUG=1 shows it)
        if os.environ.get("PICCHIO_DEBUG") and not isinstance(e, (LogstoreError, ComponentMissing)):
            raise
        # the last line of defence: whatever the error text, the configuration's secrets never reach stderr
        msg = redact(str(e), _secrets(args))
        prefix = "" if isinstance(e, (LogstoreError, ComponentMissing)) else f"unexpected {type(e).__name__}: "
        suffix = "" if prefix == "" else " (PICCHIO_DEBUG=1 shows the traceback)"
        print(f"error: {prefix}{msg}{suffix}", file=sys.stderr)
        return 2 if isinstance(e, ComponentMissing) else 1
    except KeyboardInterrupt:
        return 130


def _secrets(args: argparse.Namespace) -> list[str]:
    """The secrets of the configuration this command used (file + environment), if it loads."""
    try:
        return config_secrets(_load_config(getattr(args, "config", None) or getattr(args, "file", None)))
    except Exception:  # noqa: BLE001 - an unloadable config has no secrets we could know of
        return []


def _run(args: argparse.Namespace) -> int:
    """Run the verb; errors propagate to :func:`main`, which prints them redacted."""
    if args.cmd == "log":
        return asyncio.run(_log_cmd(args))
    if args.cmd == "config":
        from .config_cmd import run_config
        return run_config(args)
    if args.cmd == "bench":
        from .bench import run_bench
        return run_bench(args)
    return 2


def _passthrough(group: str, head: list[str], rest: list[str]) -> int:
    if group == "dev":
        from ..dev.cli import main as dev_main
        return dev_main(rest)
    if group == "operator":
        if not rest or rest[0] != "run":
            print("usage: picchio operator run [options]   (see picchio operator run --help)", file=sys.stderr)
            return 2
        from picchio_operator.main import run
        return run(rest[1:])
    from ..server.main import main as logstore_main
    cfg = [a for i, a in enumerate(head) if a in ("--config", "-c") or i and head[i - 1] in ("--config", "-c")]
    return logstore_main(rest + cfg if "serve" in rest and "--config" not in rest else rest)


if __name__ == "__main__":
    sys.exit(main())
