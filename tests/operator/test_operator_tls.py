"""spec.etcd.tlsSecret and spec.storage.caSecret in the model (pure): the
ConfigMaps name the mounted files and never hold their contents, the
LogStore pods mount the Secrets read-only, the rendered file loads with the
pods' own loader; and the operator's redaction of status, events and API
errors (unit level — the cluster tier checks the real objects)."""
from __future__ import annotations

import copy
import stat

import pytest
from opsupport import REPO, cluster_body
from picchio_operator.adapters.kube import Kube, _redacted
from picchio_operator.adapters.tlsfiles import TlsFiles
from picchio_operator.handlers.common import referenced_secrets
from picchio_operator.model import constants as k
from picchio_operator.model.cluster import desired_children, statefulset
from picchio_operator.model.config import InvalidConfig, render_client_config, render_config
from picchio_operator.model.spec import parse_cluster
from picchio_operator.runtime import Events, Runtime

from logstore.config import Config


def tls_body(endpoint: str = "https://minio.example:9000") -> dict:
    body = cluster_body()
    body["spec"]["etcd"] = {**body["spec"]["etcd"], "tlsSecret": "etcd-tls"}
    body["spec"]["storage"] = {**body["spec"]["storage"], "caSecret": "s3-ca", "endpoint": endpoint}
    return body


def test_config_names_the_mounted_files(tmp_path) -> None:
    c = parse_cluster(tls_body())
    cfg = render_config(c)
    assert cfg.values["etcd.ssl.enabled"] is True
    assert cfg.values["etcd.ssl.tlsCACert"] == "/etc/picchio-tls/etcd/ca.crt"
    assert cfg.values["etcd.ssl.tlsCert"] == "/etc/picchio-tls/etcd/tls.crt"
    assert cfg.values["etcd.ssl.tlsKey"] == "/etc/picchio-tls/etcd/tls.key"
    assert cfg.values["minio.useSSL"] is True
    assert cfg.values["minio.ssl.tlsCACert"] == "/etc/picchio-tls/storage-ca/ca.crt"
    p = tmp_path / "woodpecker.yaml"
    p.write_text(cfg.text)
    loaded = Config.from_yaml(p)  # what `picchio logstore serve` does with the ConfigMap
    assert loaded["etcd.ssl.tlsKey"] == "/etc/picchio-tls/etcd/tls.key" and loaded["minio.useSSL"] is True
    client = render_client_config(c, cfg)
    assert "Mount Secret etcd-tls" in client.text and "Mount Secret s3-ca" in client.text
    assert client.values["etcd.ssl.tlsCACert"] == cfg.values["etcd.ssl.tlsCACert"]
    for cm in desired_children(c, cfg)[:2]:
        text = cm["data"][k.CONFIG_FILE]
        assert "BEGIN" not in text and "/etc/picchio-tls/etcd/tls.key" in text


def test_ca_secret_needs_an_https_endpoint() -> None:
    with pytest.raises(InvalidConfig, match="spec.storage.caSecret needs an https://"):
        render_config(parse_cluster(tls_body("http://minio.example:9000")))


def test_pods_mount_the_secrets_read_only() -> None:
    c = parse_cluster(tls_body())
    sts = statefulset(c, render_config(c))
    pod = sts["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["etcd-tls"]["secret"]["secretName"] == "etcd-tls"
    assert [i["key"] for i in vols["etcd-tls"]["secret"]["items"]] == ["ca.crt", "tls.crt", "tls.key"]
    assert vols["storage-ca"]["secret"] == {"secretName": "s3-ca", "defaultMode": 0o444,
                                            "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["etcd-tls"] == {"name": "etcd-tls", "mountPath": "/etc/picchio-tls/etcd", "readOnly": True}
    assert mounts["storage-ca"]["mountPath"] == "/etc/picchio-tls/storage-ca" and mounts["storage-ca"]["readOnly"]
    # not inside the (read-only) ConfigMap mount
    assert not any(m["mountPath"].startswith(k.CONFIG_DIR + "/") for m in mounts.values())
    # without the fields: no volumes, no ssl keys
    plain = parse_cluster(cluster_body())
    names = {v["name"] for v in statefulset(plain, render_config(plain))["spec"]["template"]["spec"]["volumes"]}
    assert not names & {"etcd-tls", "storage-ca"}
    assert "etcd.ssl.enabled" not in render_config(plain).values


def test_tls_secrets_are_protected_while_in_use() -> None:
    assert {"etcd-tls", "s3-ca"} <= referenced_secrets(parse_cluster(tls_body()))


def test_crd_declares_the_fields() -> None:
    import yaml

    crd = yaml.safe_load((REPO / "crds" / "woodpeckerclusters.picchio.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["etcd"]["properties"]["tlsSecret"]["type"] == "string"
    assert spec["storage"]["properties"]["caSecret"]["type"] == "string"


def test_tls_files_are_private_and_content_addressed(tmp_path) -> None:
    files = TlsFiles(tmp_path / "root")
    a = files.write("ns", "etcd-tls", {"ca.crt": "CA1", "tls.key": "K1"}, ("ca.crt", "tls.key"))
    assert open(a["tls.key"]).read() == "K1"
    assert stat.S_IMODE((tmp_path / "root" / "ns").stat().st_mode) == 0o700
    assert stat.S_IMODE(__import__("os").stat(a["tls.key"]).st_mode) == 0o600
    assert files.write("ns", "etcd-tls", {"ca.crt": "CA1", "tls.key": "K1"}, ("ca.crt", "tls.key")) == a
    b = files.write("ns", "etcd-tls", {"ca.crt": "CA2", "tls.key": "K2"}, ("ca.crt", "tls.key"))
    assert b["tls.key"] != a["tls.key"] and open(a["tls.key"]).read() == "K1"  # the old files stay valid
    files.close()
    assert not (tmp_path / "root").exists()


def test_status_events_and_api_errors_are_redacted() -> None:
    kube = Kube(api=None)  # type: ignore[arg-type]
    kube.redactor.add("s3cr3t-value")
    status = {"conditions": [{"type": "StorageReady", "message": "denied for s3cr3t-value"}], "n": 3}
    out = _redacted(copy.deepcopy(status), kube.redactor.secrets)
    assert out == {"conditions": [{"type": "StorageReady", "message": "denied for ***"}], "n": 3}
    rt = Runtime(kube=kube)
    assert isinstance(rt.events, Events) and rt.events._clean("x s3cr3t-value y") == "x *** y"
