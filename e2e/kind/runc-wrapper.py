#!/usr/bin/python3
"""runc wrapper for dockerd on these machines (see /work/shared/environment.md).

Root's capability bounding set here lacks CAP_SYS_RESOURCE, but Docker 20.10
asks for every capability under --privileged (and ignores --cap-drop), so
runc fails with "unable to apply caps: operation not permitted".  This wrapper
removes every capability the caller does not hold from the OCI spec runc is
about to apply -- the bundle's config.json (create/run) and the --process
file (exec) -- then execs the real runc with the same arguments.

Registered with: dockerd --add-runtime picchio-runc=<this> --default-runtime picchio-runc
"""
import json
import os
import sys

REAL_RUNC = os.environ.get("PICCHIO_REAL_RUNC", "/usr/sbin/runc")

# Linux capability numbers -> names (the ones the OCI spec can carry).
CAPS = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
]


def missing_caps() -> set[str]:
    """Capabilities absent from our own bounding set: no child can get them."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                bnd = int(line.split()[1], 16)
                return {"CAP_" + n for i, n in enumerate(CAPS) if not bnd >> i & 1}
    return set()


def strip(path: str, process_only: bool) -> None:
    try:
        with open(path) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return  # not ours to judge: let runc report it
    drop = missing_caps()
    proc = spec if process_only else spec.get("process") or {}
    caps = proc.get("capabilities") or {}
    changed = False
    for kind, names in list(caps.items()):
        if isinstance(names, list) and drop.intersection(names):
            caps[kind] = [n for n in names if n not in drop]
            changed = True
    if changed:
        tmp = path + ".picchio-tmp"
        with open(tmp, "w") as f:
            json.dump(spec, f)
        os.replace(tmp, path)


def option(args: list[str], *names: str) -> str | None:
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(n + "="):
                return a[len(n) + 1:]
    return None


def main() -> None:
    args = sys.argv[1:]
    # Global options come first; the subcommand is the first bare word after
    # them (global options that take a value: --root, --log, --log-format, --criu).
    takes_value = {"--root", "--log", "--log-format", "--criu", "--rootless"}
    i, cmd = 0, None
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            i += 2 if a in takes_value else 1
            continue
        cmd = a
        break
    rest = args[i + 1:] if cmd else []
    if cmd in ("create", "run"):
        bundle = option(rest, "--bundle", "-b") or os.getcwd()
        strip(os.path.join(bundle, "config.json"), process_only=False)
    elif cmd == "exec":
        proc = option(rest, "--process", "-p")
        if proc:
            strip(proc, process_only=True)
    os.execv(REAL_RUNC, [REAL_RUNC, *args])


if __name__ == "__main__":
    main()
