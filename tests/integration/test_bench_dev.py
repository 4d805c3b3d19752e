"""Smoke tests of the commands that start things: ``picchio bench`` (its own
etcd, a raw limit measured in the same run, the ratio) and ``picchio dev``
(detached components that answer, and stop).  Short runs: they check the
commands work and say what they measured, not the figures."""
import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

import logstore

PICCHIO = [sys.executable, "-m", "logstore.cli.main"]


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(PICCHIO + args, capture_output=True, text=True, timeout=timeout, env=env)


def test_bench_append_local_measures_the_raw_limit_in_the_same_run(tmp_path):
    """Without --config it starts its own etcd; it prints picchio's figures,
    the raw write+fdatasync limit of the same directory and their ratio, and
    leaves no log behind.  Mutation caught: a ratio not computed from the two
    figures (``"ratio": 1.0``)."""
    r = run(["bench", "append", "--backend", "local", "--entry-size", "4Ki", "--concurrency", "4",
             "--seconds", "1", "--dir", str(tmp_path / "bench")])
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    ours, raw = out["picchio"], out["raw"]
    assert out["bench"] == "append" and out["backend"] == "local" and out["entry_size"] == 4096
    assert ours["entries"] > 0 and ours["mb_per_s"] > 0 and 0 < ours["ack_p50_ms"] <= ours["ack_p99_ms"]
    assert abs(ours["entries_per_s"] * ours["seconds"] - ours["entries"]) <= max(2, ours["entries"] * 0.01)
    assert "fdatasync" in raw["what"] and raw["mb_per_s"] > 0 and len(raw["mb_per_s_by_slice"]) == out["rounds"]
    assert out["ratio"] == pytest.approx(ours["mb_per_s"] / raw["mb_per_s"], abs=0.002)
    logs = [p for p in (tmp_path / "bench").rglob("data.log")]
    assert logs == [], f"the benchmark deletes its log: {logs}"


def test_bench_tail_local_reports_both_readers(tmp_path):
    r = run(["bench", "tail", "--backend", "local", "--entries", "20", "--interval", "0.01",
             "--dir", str(tmp_path / "bench")])
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["bench"] == "tail" and out["entries"] == 20
    assert 0 < out["same_process_p50_ms"] <= out["same_process_p99_ms"]
    assert 0 < out["other_process_p50_ms"] <= out["other_process_p99_ms"] <= out["other_process_max_ms"]


def test_bench_append_plot_draws_throughput_over_time_and_percentiles(tmp_path):
    """``--plot``: the JSON carries the timeline (100 ms buckets) and the ack percentiles the
    chart shows, and names the PNG it wrote."""
    png = tmp_path / "charts" / "append.png"
    r = run(["bench", "append", "--backend", "local", "--entry-size", "4Ki", "--concurrency", "4",
             "--seconds", "1", "--dir", str(tmp_path / "bench"), "--plot", str(png)])
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    tl = out["picchio"]["timeline"]
    assert tl["bucket_s"] == 0.1 and len(tl["t"]) == len(tl["mb_per_s"]) >= 5
    assert any(v for v in tl["mb_per_s"] if v is not None), tl
    pcts = out["picchio"]["ack_percentiles_ms"]
    assert pcts["50"] == out["picchio"]["ack_p50_ms"] and pcts["50"] <= pcts["99"] <= pcts["99.9"]
    assert out["plot"] == str(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def _exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            env[k] = v.strip("'\"")
    return env


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie of a detached child counts as gone
        return f.read().split(")")[-1].split()[0] == "Z"


def _wait_gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not _pid_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_dev_etcd_up_env_status_down(tmp_path, make_config):
    """``picchio dev etcd up`` leaves a detached etcd that the WAL can use
    through the printed environment; ``down`` stops exactly it."""
    wd = str(tmp_path / "dev-etcd")
    up = run(["dev", "--workdir", wd, "etcd", "up"])
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        env = _exports(up.stdout)
        assert env.get("ETCD_ENDPOINTS"), up.stdout
        again = run(["dev", "--workdir", wd, "etcd", "env"])
        assert again.returncode == 0 and _exports(again.stdout) == env
        st = run(["dev", "--workdir", wd, "etcd", "status"])
        assert st.returncode == 0 and "running" in st.stdout
        pid = int(st.stdout.split("pid")[1].split()[0])

        async def use() -> list:
            cfg = make_config("local", **{"etcd.endpoints": [env["ETCD_ENDPOINTS"]]})
            async with logstore.Client(cfg) as c:
                log = await c.create_log("dev")
                async with await log.open_writer() as w:
                    await w.append(b"hello")
                return await c.list_logs()

        assert asyncio.run(use()) == ["dev"]
    finally:
        down = run(["dev", "--workdir", wd, "etcd", "down"])
    assert down.returncode == 0 and "stopped" in down.stderr, down.stderr
    assert _wait_gone(pid), f"etcd (pid {pid}) still runs after `dev etcd down`"
    st = run(["dev", "--workdir", wd, "etcd", "status"])
    assert st.returncode != 0
    assert run(["dev", "--workdir", wd, "etcd", "env"]).returncode == 1


@pytest.mark.cluster
def test_dev_minio_up_env_down(tmp_path):
    """``picchio dev minio up`` (the MinIO build) answers S3 with the printed
    credentials; ``down`` stops it."""
    import boto3

    wd = str(tmp_path / "dev-minio")
    up = run(["dev", "--workdir", wd, "minio", "up"])
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        env = _exports(up.stdout)
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_REGION"])
        s3.create_bucket(Bucket="dev-smoke")
        s3.put_object(Bucket="dev-smoke", Key="k", Body=b"v")
        assert s3.get_object(Bucket="dev-smoke", Key="k")["Body"].read() == b"v"
        st = run(["dev", "--workdir", wd, "minio", "status"])
        pid = int(st.stdout.split("pid")[1].split()[0])
    finally:
        down = run(["dev", "--workdir", wd, "minio", "down"])
    assert down.returncode == 0 and "stopped" in down.stderr, down.stderr
    assert _wait_gone(pid), f"minio (pid {pid}) still runs after `dev minio down`"


def test_bench_without_minio_is_one_line_naming_the_fix(tmp_path):
    """No MinIO anywhere (empty cache, none on PATH): ``picchio bench
    --backend minio`` says what to build, exit 2, no traceback."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PICCHIO_CACHE=str(tmp_path / "cache"),
               PATH=os.path.dirname(sys.executable) + ":/usr/bin:/bin")
    env.pop("PICCHIO_MINIO_BIN", None)
    r = subprocess.run(PICCHIO + ["bench", "append", "--backend", "minio", "--seconds", "0.1",
                                  "--dir", str(tmp_path / "bench")], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "make components ONLY=minio" in r.stderr, r.stderr


def test_dev_plugin_service_up_status_down(tmp_path, capsys):
    """A service registered from outside the product (as the harness does
    with ``cluster``) gets the same up/env/status/down: its process outlives
    ``up``, ``down`` stops exactly the recorded PID; a start that cannot find
    its program is one line and exit 2."""
    import argparse
    from pathlib import Path

    from logstore.dev.cli import DevService, main as dev_main
    from logstore.dev.procs import ComponentMissing, Proc

    def start(workdir: Path, args: argparse.Namespace) -> dict:
        workdir.mkdir(parents=True, exist_ok=True)
        p = Proc("sleeper", ["/bin/sleep", str(args.seconds)], workdir / "sleeper.log").start().detach()
        return {"processes": [p.record()], "token": "t-1"}

    svc = DevService("sleeper", "a sleeping process", start, lambda s: [("SLEEPER_TOKEN", s["token"])],
                     add_arguments=lambda ap: ap.add_argument("--seconds", default="300"))
    wd = str(tmp_path / "dev")
    assert dev_main(["--workdir", wd, "sleeper", "up"], extra=[svc]) == 0
    assert "export SLEEPER_TOKEN=t-1" in capsys.readouterr().out
    assert dev_main(["--workdir", wd, "sleeper", "status"], extra=[svc]) == 0
    pid = int(capsys.readouterr().out.split("pid")[1].split()[0])
    assert not _pid_gone(pid)
    assert dev_main(["--workdir", wd, "sleeper", "down"], extra=[svc]) == 0
    assert "stopped sleeper" in capsys.readouterr().err
    assert _wait_gone(pid), f"sleep (pid {pid}) still runs after down"
    assert dev_main(["--workdir", wd, "sleeper", "env"], extra=[svc]) == 1
    assert "sleeper is not up" in capsys.readouterr().err

    def missing(workdir: Path, args: argparse.Namespace) -> dict:
        raise ComponentMissing("sleeper is not built: run `make sleeper`")

    broken = DevService("sleeper", "not built", missing, lambda s: [])
    assert dev_main(["--workdir", wd, "sleeper", "up"], extra=[broken]) == 2
    assert capsys.readouterr().err.strip() == "error: sleeper is not built: run `make sleeper`"
