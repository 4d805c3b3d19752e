"""Rendering woodpecker.yaml: validation against logstore's table, values kept
as written, and a file the pods' own loader accepts."""
from __future__ import annotations

import pytest
import yaml
from opsupport import check_golden, cluster_body, sample
from picchio_operator.model.config import InvalidConfig, client_config, nest, render_config
from picchio_operator.model.spec import SpecError, parse_cluster

from logstore.config import Config


def test_rendered_sample_golden() -> None:
    check_golden("service-woodpecker.yaml", render_config(parse_cluster(sample("cluster-service.yaml"))).text)


def test_rendered_file_loads_with_the_logstore_loader(tmp_path) -> None:
    cfg = render_config(parse_cluster(sample("cluster-service.yaml")))
    p = tmp_path / "woodpecker.yaml"
    p.write_text(cfg.text)
    loaded = Config.from_yaml(p)
    assert loaded["minio.address"] == "minio.picchio-system.svc"
    assert loaded["minio.port"] == 9000
    assert loaded["minio.bucketName"] == "picchio"
    assert loaded["minio.rootPath"] == "wal"
    assert loaded["etcd.rootPath"] == "wal"
    assert loaded["woodpecker.client.segmentRollingPolicy.maxSize"] == 128 << 20  # "128M": binary, as in Woodpecker
    assert loaded["woodpecker.client.segmentRollingPolicy.maxInterval"] == 300.0
    assert loaded.meta_prefix == cfg.meta_prefix == "wal/woodpecker"


def test_values_are_rendered_as_written() -> None:
    cfg = render_config(parse_cluster(sample("cluster-service.yaml")))
    doc = yaml.safe_load(cfg.text)
    assert doc["woodpecker"]["client"]["segmentRollingPolicy"]["maxSize"] == "128M"


@pytest.mark.parametrize("config,needle", [
    ({"woodpecker": {"client": {"segmentRollingPolicy": {"maxSzie": 1}}}},
     "woodpecker.client.segmentRollingPolicy.maxSzie: unknown configuration key"),
    ({"woodpecker.client.segmentRollingPolicy.maxSize": "lots"}, "woodpecker.client.segmentRollingPolicy.maxSize"),
    ({"minio": {"bucketName": "other"}}, "minio.bucketName: only woodpecker.* keys"),
    ({"etcd.endpoints": ["x:1"]}, "etcd.endpoints: only woodpecker.* keys"),
    ({"woodpecker.storage.type": "local"}, "set spec.storage.type instead"),
])
def test_bad_overrides_name_the_key(config, needle) -> None:
    with pytest.raises(InvalidConfig) as e:
        render_config(parse_cluster(cluster_body(config=config)))
    assert needle in str(e.value)
    assert str(e.value).startswith("spec.config: ")


def test_spec_config_takes_woodpeckers_keys_and_units(tmp_path) -> None:
    """A Woodpecker/Milvus user's woodpecker.* section is accepted as written and
    rendered with Woodpecker's names; the pods read it in Woodpecker's units."""
    wp = {"woodpecker": {"logstore": {"segmentSyncPolicy": {"maxInterval": 200, "maxFlushSize": "2MB"},
                                      "segmentCompactionPolicy": {"maxSize": "4M"},  # Milvus's name
                                      "retentionPolicy": {"ttl": 3600}},
                         "client": {"segmentAppend": {"queueSize": 100}}}}
    cfg = render_config(parse_cluster(cluster_body(config=wp)))
    doc = yaml.safe_load(cfg.text)["woodpecker"]["logstore"]
    assert doc["segmentCompactionPolicy"] == {"maxBytes": "4M"} and doc["segmentSyncPolicy"]["maxInterval"] == 200
    p = tmp_path / "woodpecker.yaml"
    p.write_text(cfg.text)
    loaded = Config.from_yaml(p)
    assert loaded["woodpecker.logstore.segmentSyncPolicy.maxInterval"] == pytest.approx(0.2)  # 200 ms
    assert loaded["woodpecker.logstore.segmentSyncPolicy.maxFlushSize"] == 2 << 20
    assert loaded["woodpecker.logstore.segmentCompactionPolicy.maxBytes"] == 4 << 20
    assert "woodpecker.logstore.retentionPolicy.ttl" in loaded.inert_keys()


def test_dotted_and_nested_overrides_render_identically() -> None:
    a = render_config(parse_cluster(cluster_body(config={"woodpecker.client.segmentRollingPolicy.maxSize": "1M"})))
    b = render_config(parse_cluster(cluster_body(config={"woodpecker": {"client": {"segmentRollingPolicy": {"maxSize": "1M"}}}})))
    assert a.text == b.text and a.hash == b.hash


@pytest.mark.parametrize("endpoint,expected", [
    ("minio:9000", ("minio", 9000, False)),
    ("http://minio:9000", ("minio", 9000, False)),
    ("https://s3.example.com", ("s3.example.com", 443, True)),
    ("https://s3.example.com:8443/", ("s3.example.com", 8443, True)),
    ("s3.example.com", ("s3.example.com", 80, False)),
])
def test_endpoint_parsing(endpoint, expected) -> None:
    c = parse_cluster(cluster_body(storage={**sample("cluster-service.yaml")["spec"]["storage"], "endpoint": endpoint}))
    assert c.storage.endpoint_parts() == expected


@pytest.mark.parametrize("endpoint", ["ftp://x:1", "minio:99999", "http://minio:9000/path"])
def test_bad_endpoints_are_errors(endpoint) -> None:
    c = parse_cluster(cluster_body(storage={**sample("cluster-service.yaml")["spec"]["storage"], "endpoint": endpoint}))
    with pytest.raises(SpecError):
        c.storage.endpoint_parts()
    with pytest.raises(InvalidConfig, match="spec.storage.endpoint"):
        render_config(c)


def test_local_storage_has_no_minio_connection_settings() -> None:
    c = parse_cluster(cluster_body(storage={"type": "local", "rootPath": "/shared/wal"}))
    cfg = render_config(c)
    assert cfg.values["woodpecker.storage.type"] == "local"
    assert "minio.address" not in cfg.values
    assert cfg.values["minio.rootPath"] == "shared/wal"


def test_client_config_adds_credentials_only_there() -> None:
    cfg = render_config(parse_cluster(sample("cluster-service.yaml")))
    cc = client_config(cfg, {"minio.accessKeyID": "ak-7f3e", "minio.secretAccessKey": "sk-9c1d"})
    assert Config.from_dict(cc)["minio.secretAccessKey"] == "sk-9c1d"
    assert "sk-9c1d" not in cfg.text and "ak-7f3e" not in cfg.text


def test_nest() -> None:
    assert nest({"a.b.c": 1, "a.b.d": 2, "e": 3}) == {"a": {"b": {"c": 1, "d": 2}}, "e": 3}
