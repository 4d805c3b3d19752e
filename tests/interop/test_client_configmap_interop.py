"""The client ConfigMap (``<name>-client``) in the hands of the real Woodpecker v0.1.35 client,
on three ``picchio logstore serve`` with a real etcd and MinIO:

* ``woodpecker.yaml`` as rendered, loaded by Woodpecker's own ``config.NewConfiguration``
  (wpctl --config): its service-mode settings, quorum and storage locations work as they are;
* ``milvus.yaml`` turned into Woodpecker's configuration the way Milvus 2.6 does it (its
  ``walimpls/impls/wp/builder.go``: ``minio.rootPath`` + ``/wp``, quorumBufferPools decoded from
  JSON, durations parsed) — the same Woodpecker client then writes through it;

and picchio's client, reading with the same rendered woodpecker.yaml, gets every entry back.

Only two things are supplied from outside the files: credentials (never in a ConfigMap) and the
seeds, whose rendered value is a Kubernetes Service name (``<name>-server-client.<ns>.svc:18080``,
checked against the Service object in tests/operator/test_milvus_config.py) that does not
resolve on this machine."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml

import logstore
from logstore import EARLIEST, Config
from picchio_operator.model.config import render_client_config
from picchio_operator.model.spec import parse_cluster
from wp import SIZE_ARG, Wpctl, acks, check_picchio_read, unique

N = 12


def _cluster_for(cfg: Config, root: str) -> dict:
    """A service-mode WoodpeckerCluster on the test's etcd keyspace and MinIO,
    with ``spec.tls.enabled: false`` as the README tells Milvus users: Woodpecker's
    client (Milvus's) presents no client certificate to the LogStores."""
    return {"apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerCluster",
            "metadata": {"name": "wal", "namespace": "team-a", "uid": "u", "generation": 1},
            "spec": {"mode": "service", "replicas": 3, "tls": {"enabled": False},
                     "etcd": {"endpoints": list(cfg["etcd.endpoints"]), "rootPath": cfg["etcd.rootPath"]},
                     "storage": {"type": "minio", "bucket": cfg["minio.bucketName"], "rootPath": root,
                                 "endpoint": f"http://{cfg['minio.address']}:{cfg['minio.port']}",
                                 "credentialsSecret": "s3"},
                     "config": {"woodpecker": {"client": {"segmentRollingPolicy": {"maxInterval": "30s"}},
                                               "logstore": {"segmentSyncPolicy": {"maxInterval": 100}}}}}}


def woodpecker_config_as_milvus_builds_it(milvus: dict) -> dict:
    """Milvus 2.6's ``setCustomWpConfig``/``setQuorumConfig`` (milvus-io/milvus
    pkg/streaming/walimpls/impls/wp/builder.go), for the keys the rendered file has:
    the woodpecker.yaml Milvus hands Woodpecker, in Woodpecker's units."""
    wp, mi, et = milvus["woodpecker"], milvus["minio"], milvus["etcd"]
    rolling = Config.from_dict({"woodpecker": {"client": wp.get("client", {})}})
    sync = Config.from_dict({"woodpecker": {"logstore": wp.get("logstore", {})}})
    quorum = wp["client"]["quorum"]
    return {
        "etcd": {"endpoints": et["endpoints"].split(","), "rootPath": et["rootPath"]},
        "minio": {"address": mi["address"], "port": mi["port"], "bucketName": mi["bucketName"],
                  "useSSL": mi["useSSL"], "region": mi.get("region", ""), "createBucket": True,
                  "rootPath": f"{mi['rootPath']}/wp"},
        "woodpecker": {
            "storage": {"type": wp["storage"]["type"]},
            "client": {
                "segmentRollingPolicy": {
                    "maxInterval": int(rolling["woodpecker.client.segmentRollingPolicy.maxInterval"]),  # s
                    "maxSize": rolling["woodpecker.client.segmentRollingPolicy.maxSize"]},
                "quorum": {"quorumBufferPools": json.loads(quorum["quorumBufferPools"]),
                           "quorumSelectStrategy": {**quorum["quorumSelectStrategy"], "affinityMode": "soft"}}},
            "logstore": {"segmentSyncPolicy": {  # ms
                "maxInterval": round(sync["woodpecker.logstore.segmentSyncPolicy.maxInterval"] * 1000)}},
        },
        "log": {"level": "info", "stdout": False},
    }


async def _read_all(cfg: Config, name: str, n: int) -> list:
    async with logstore.Client(cfg) as c:
        r = await (await c.open_log(name)).open_reader(EARLIEST)
        return [await r.read_next(timeout=20) for _ in range(n)]


async def test_woodpecker_client_uses_the_rendered_client_configmap(service_cluster, wpctl_bin, tmp_path: Path):
    sc = service_cluster(3)
    async with logstore.Client(sc.config):
        pass  # creates the test's bucket, as the operator does for a cluster (the rendered files say createBucket: false)
    root = f"{sc.config['minio.rootPath']}/wp"  # a cluster laid out for Milvus: <minio.rootPath>/wp
    c = parse_cluster(_cluster_for(sc.config, root))
    rendered = render_client_config(c)
    wp_file, milvus_file = tmp_path / "woodpecker.yaml", tmp_path / "milvus.yaml"
    wp_file.write_text(rendered.text)
    milvus = yaml.safe_load(rendered.milvus)
    assert milvus["minio"]["rootPath"] == sc.config["minio.rootPath"]
    milvus_file.write_text(yaml.safe_dump(woodpecker_config_as_milvus_builds_it(milvus)))
    secrets = ["--access-key", sc.config["minio.accessKeyID"], "--secret-key", sc.config["minio.secretAccessKey"],
               "--seeds", ",".join(s.endpoint for s in sc.logstores)]
    reader_cfg = Config.from_yaml(wp_file).with_values({"minio.accessKeyID": sc.config["minio.accessKeyID"],
                                                        "minio.secretAccessKey": sc.config["minio.secretAccessKey"]})
    assert reader_cfg["woodpecker.storage.type"] == "service" and reader_cfg["minio.rootPath"] == root

    for label, path in (("woodpecker.yaml", wp_file), ("milvus.yaml", milvus_file)):
        w = Wpctl(wpctl_bin, path, tmp_path / f"{label}.log")
        name, tag = unique("cm"), unique("t")
        lines = await asyncio.to_thread(w.run, "write", "--log", name, "--create", "--count", str(N), "--size",
                                        SIZE_ARG, "--tag", tag, "--inflight", "4", *secrets)
        wp_acks = acks(lines)
        assert len(wp_acks) == N, (label, lines[-3:])
        check_picchio_read(await _read_all(reader_cfg, name, N), wp_acks, tag)
