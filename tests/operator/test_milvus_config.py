"""The client ConfigMap's ``milvus.yaml`` (model/milvus.py): only Woodpecker's key names, in the
forms Milvus parses, pointing at the same etcd keyspace, bucket prefix and LogStores as the
cluster's own ``woodpecker.yaml``.  (A real Woodpecker client runs on both files in
tests/interop/test_client_configmap_interop.py.)"""
from __future__ import annotations

import json

import pytest
import yaml
from opsupport import check_golden, cluster_body, sample

from logstore.config import SETTINGS, Config
from logstore.errors import ConfigError
from picchio_operator.model import constants as k
from picchio_operator.model.cluster import client_configmap, client_service
from picchio_operator.model.config import render_client_config
from picchio_operator.model.spec import parse_cluster

_BY_KEY = {s.key: s for s in SETTINGS}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, v in d.items():
        if isinstance(v, dict) and f"{prefix}{key}" not in _BY_KEY:
            out.update(_flat(v, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = v
    return out


def milvus_cluster(**spec):
    """A cluster laid out for Milvus: bucket prefix <Milvus minio.rootPath>/wp, Milvus's etcd root."""
    body = cluster_body()
    body["spec"]["storage"] = {**body["spec"]["storage"], "rootPath": "files/wp"}
    body["spec"]["etcd"] = {**body["spec"]["etcd"], "rootPath": "by-dev"}
    body["spec"]["config"] = {"woodpecker": {
        "client": {"segmentRollingPolicy": {"maxSize": "128M", "maxInterval": "5m"}},
        "logstore": {"segmentSyncPolicy": {"maxInterval": 200}, "retentionPolicy": {"ttl": 86400}}}}
    body["spec"].update(spec)
    return parse_cluster(body)


def test_milvus_yaml_golden() -> None:
    check_golden("service-milvus.yaml", render_client_config(milvus_cluster()).milvus)


def test_only_woodpecker_keys_no_extras_no_secrets() -> None:
    doc = yaml.safe_load(render_client_config(milvus_cluster()).milvus)
    assert doc.pop("mq") == {"type": "woodpecker"}
    keys = _flat(doc)
    for key in keys:
        assert _BY_KEY[key].kind in ("woodpecker", "inert"), f"{key} is picchio's {_BY_KEY[key].kind}"
        assert not _BY_KEY[key].secret
    assert "minio.createBucket" not in keys and "woodpecker.logstore.disk.maxBytes" not in keys
    assert not any(".ensembleSize" in key or ".ackQuorum" in key for key in keys)


def test_milvus_yaml_reaches_the_same_cluster_as_woodpecker_yaml() -> None:
    """Read as Milvus builds Woodpecker's config (rootPath + /wp, the JSON pools), every
    connection and tuning value equals the client woodpecker.yaml's."""
    r = render_client_config(milvus_cluster())
    mine = Config.from_dict(yaml.safe_load(r.text))
    doc = yaml.safe_load(r.milvus)
    assert doc["etcd"]["endpoints"] == ",".join(mine["etcd.endpoints"])  # Milvus's comma-separated string
    doc["minio"]["rootPath"] += "/wp"
    assert doc.pop("mq") == {"type": "woodpecker"}  # Milvus's own section; picchio reads the other three
    milvus = Config.from_dict(doc)  # also: picchio loads Milvus's spelling of the pools (a JSON string)
    for key in ("etcd.endpoints", "etcd.rootPath", "minio.address", "minio.port", "minio.useSSL",
                "minio.bucketName", "minio.rootPath", "woodpecker.storage.type",
                "woodpecker.client.quorum.ensembleSize", "woodpecker.client.quorum.writeQuorum",
                "woodpecker.client.quorum.ackQuorum", "woodpecker.client.segmentRollingPolicy.maxSize",
                "woodpecker.client.segmentRollingPolicy.maxInterval",
                "woodpecker.logstore.segmentSyncPolicy.maxInterval", "woodpecker.logstore.retentionPolicy.ttl"):
        assert milvus[key] == mine[key], key
    assert milvus.meta_prefix == mine.meta_prefix == "by-dev/woodpecker"


def test_durations_carry_their_unit_and_sizes_are_bytes() -> None:
    """Milvus parses Woodpecker's durations as Go durations (a bare number would be seconds, but
    segmentSyncPolicy.maxInterval: 200 means 200 ms to Woodpecker)."""
    wp = yaml.safe_load(render_client_config(milvus_cluster()).milvus)["woodpecker"]
    assert wp["logstore"]["segmentSyncPolicy"]["maxInterval"] == "200ms"
    assert wp["logstore"]["retentionPolicy"]["ttl"] == 86400  # an int of seconds, as in Woodpecker's file
    assert wp["client"]["segmentRollingPolicy"] == {"maxInterval": "5m", "maxSize": 134217728}


def test_seeds_are_the_client_service_and_the_quorum_is_woodpeckers() -> None:
    c = milvus_cluster()
    quorum = yaml.safe_load(render_client_config(c).milvus)["woodpecker"]["client"]["quorum"]
    (pool,) = json.loads(quorum["quorumBufferPools"])  # Milvus json.Unmarshals it into []QuorumBufferPool
    svc = client_service(c)
    (port,) = [p["port"] for p in svc["spec"]["ports"] if p["port"] == k.SERVICE_PORT]
    assert pool == {"name": "default-region-pool",
                    "seeds": [f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc:{port}"]}
    assert quorum["quorumSelectStrategy"] == {"replicas": 3, "strategy": "random"}
    five = milvus_cluster(replicas=5, quorum={"ensembleSize": 5, "writeQuorum": 5, "ackQuorum": 3})
    text = render_client_config(five).milvus
    assert yaml.safe_load(text)["woodpecker"]["client"]["quorum"]["quorumSelectStrategy"]["replicas"] == 5
    assert "NOTE: spec.quorum" not in text  # (the spec.tls note stays: Milvus's client sends no certificate)
    assert "NOTE: the LogStores demand TLS" in text


@pytest.mark.parametrize("quorum,replicas", [((3, 3, 3), 3), ((4, 4, 3), 3), ((5, 5, 4), 5)])
def test_a_quorum_woodpecker_cannot_express_is_said_so(quorum, replicas) -> None:
    es, wq, aq = quorum
    c = milvus_cluster(replicas=es, quorum={"ensembleSize": es, "writeQuorum": wq, "ackQuorum": aq})
    r = render_client_config(c)
    assert f"# NOTE: spec.quorum {es}/{wq}/{aq} (ensemble/write/ack) has no Woodpecker equivalent" in r.milvus
    assert yaml.safe_load(r.milvus)["woodpecker"]["client"]["quorum"]["quorumSelectStrategy"]["replicas"] == replicas
    # picchio's own file keeps the exact quorum (its extras) and no replicas that would contradict them
    assert "replicas" not in yaml.safe_load(r.text)["woodpecker"]["client"]["quorum"].get("quorumSelectStrategy", {})


def test_a_root_milvus_cannot_reach_is_left_out_with_a_note() -> None:
    r = render_client_config(parse_cluster(cluster_body()))  # the sample: spec.storage.rootPath wal
    assert "rootPath" not in yaml.safe_load(r.milvus)["minio"]
    assert "# NOTE: minio.rootPath is not set" in r.milvus and "spec.storage.rootPath is 'wal'" in r.milvus


def test_embedded_cluster_and_the_configmap() -> None:
    c = parse_cluster(sample("cluster-embedded.yaml"))
    doc = yaml.safe_load(render_client_config(c).milvus)
    assert doc["woodpecker"] == {"storage": {"type": "minio"}} and doc["mq"] == {"type": "woodpecker"}
    cm = client_configmap(milvus_cluster(), render_client_config(milvus_cluster()))
    assert set(cm["data"]) == {k.CONFIG_FILE, k.MILVUS_CONFIG_FILE}
    # the hash covers both files: a change to the milvus.yaml alone changes it
    other = milvus_cluster(replicas=5, quorum={"ensembleSize": 5, "writeQuorum": 5, "ackQuorum": 3})
    assert render_client_config(other).hash != render_client_config(milvus_cluster()).hash


def test_woodpecker_yaml_carries_woodpeckers_seeds_too() -> None:
    """Woodpecker's own client refuses a service-mode file without seeds; picchio's reads the
    same file (the key is no-effect for it) with the same quorum."""
    r = render_client_config(milvus_cluster())
    q = yaml.safe_load(r.text)["woodpecker"]["client"]["quorum"]
    assert q["quorumBufferPools"] == [{"name": "default-region-pool", "seeds": milvus_cluster().seeds}]
    assert q["quorumSelectStrategy"] == {"replicas": 3}
    cfg = Config.from_dict(yaml.safe_load(r.text))
    assert (cfg["woodpecker.client.quorum.ensembleSize"], cfg["woodpecker.client.quorum.writeQuorum"],
            cfg["woodpecker.client.quorum.ackQuorum"]) == (3, 3, 2)
    assert "woodpecker.client.quorum.quorumBufferPools" in cfg.inert_keys()
    assert "woodpecker.client.quorum.quorumSelectStrategy.replicas" not in cfg.inert_keys()


def test_picchio_reads_milvus_json_pools_and_names_the_key_when_broken() -> None:
    pools = '[{"name":"p","seeds":["a:18080"]}]'
    cfg = Config.from_dict({"woodpecker": {"client": {"quorum": {"quorumBufferPools": pools}}}})
    assert cfg["woodpecker.client.quorum.quorumBufferPools"] == [{"name": "p", "seeds": ["a:18080"]}]
    with pytest.raises(ConfigError, match=r"woodpecker\.client\.quorum\.quorumBufferPools: not valid JSON"):
        Config.from_dict({"woodpecker": {"client": {"quorum": {"quorumBufferPools": '[{"name":'}}}})


def test_zone_spread_is_not_promised_to_milvus() -> None:
    """picchio's zone-spread has no counterpart the LogStores honour for Woodpecker's SelectNodes."""
    body = cluster_body(config={"woodpecker": {"client": {"quorum": {"strategy": "zone-spread"}}}})
    r = render_client_config(parse_cluster(body))
    assert yaml.safe_load(r.milvus)["woodpecker"]["client"]["quorum"]["quorumSelectStrategy"]["strategy"] == "random"
    assert "# NOTE: woodpecker.client.quorum.strategy zone-spread applies to picchio clients" in r.milvus
    assert "zone-spread" not in yaml.safe_dump(yaml.safe_load(r.milvus))  # the extra itself is not carried over
