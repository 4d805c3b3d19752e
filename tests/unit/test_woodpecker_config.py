"""Woodpecker's own configuration files load unchanged, with Woodpecker's units.

The files under ``data/`` are the real ``config/woodpecker.yaml`` of Woodpecker
v0.1.35 and the WAL sections of a Milvus 2.6 ``milvus.yaml`` (see data/README.md).
"""
import logging
from pathlib import Path

import pytest
import yaml

from logstore import Config, ConfigError
from logstore.config import SETTINGS, describe, go_path_join, markdown_table, parse_duration, parse_size

DATA = Path(__file__).parent / "data"
WOODPECKER_YAML = DATA / "woodpecker-v0.1.35.yaml"
MILVUS_YAML = DATA / "milvus-2.6-wal-sections.yaml"
README = Path(__file__).parents[2] / "README.md"
KEYS = {s.key: s for s in SETTINGS}


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_woodpeckers_own_yaml_loads_unchanged_with_its_units():
    leaves = list(_leaves(yaml.safe_load(WOODPECKER_YAML.read_text())))
    assert len(leaves) == 107 and set(leaves) <= set(KEYS)
    c = Config.from_yaml(WOODPECKER_YAML)
    assert c["etcd.requestTimeout"] == 10.0                           # 10000, "# ms"
    assert c["minio.requestTimeoutMs"] == 10.0                        # 10000 ms
    assert c["woodpecker.logstore.segmentSyncPolicy.maxInterval"] == pytest.approx(0.2)   # 200 ms
    assert c["woodpecker.client.segmentRollingPolicy.maxInterval"] == 600.0               # 600 s
    assert c["woodpecker.logstore.segmentSyncPolicy.retryInterval"] == 1.0                # 1000 ms
    assert c["woodpecker.logstore.diskWatermarkPolicy.minFreeBytes"] == 1 << 30          # "1GB", binary
    assert c["woodpecker.logstore.retentionPolicy.ttl"] == 259200
    assert c["minio.createBucket"] is True and c["etcd.auth.userName"] == "" and c["etcd.auth.enabled"] is False
    assert c["etcd.ssl.tlsMinVersion"] == "1.3"
    assert c.meta_prefix == "by-dev/woodpecker"
    for key in leaves:
        assert c.source(key) == "file"
    inert = c.inert_keys()
    assert "woodpecker.logstore.retentionPolicy.ttl" in inert and "etcd.requestTimeout" not in inert
    assert all(not KEYS[k].effective for k in inert)


def test_milvus_wal_sections_load_with_milvus_spellings():
    c = Config.from_yaml(MILVUS_YAML)
    assert c["etcd.endpoints"] == ["localhost:2379"]
    assert c["woodpecker.client.segmentRollingPolicy.maxSize"] == 256 << 20
    assert c["woodpecker.client.segmentRollingPolicy.maxInterval"] == 600.0
    assert c["woodpecker.logstore.segmentSyncPolicy.maxFlushSize"] == 2 << 20
    assert c["woodpecker.logstore.segmentCompactionPolicy.maxBytes"] == 2 << 20   # Milvus's maxSize
    assert c["woodpecker.storage.rootPath"] == "/var/lib/milvus/woodpecker"


@pytest.mark.parametrize("text,want", [
    ("2MB", 2_097_152), ("256M", 268_435_456), ("1gb", 1 << 30), ("3k", 3072), ("1T", 1 << 40), (" 7 ", 7),
    ("", 0), (4096, 4096), ("64Mi", 64 << 20), ("1KiB", 1024), ("2gi", 2 << 30)])
def test_sizes_are_binary_like_woodpecker(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["1.5M", "2 MB", "100b", "lots", "M", True])
def test_sizes_woodpecker_refuses_are_refused(text):
    with pytest.raises(ConfigError, match="maxSize"):
        parse_size(text, "maxSize")


@pytest.mark.parametrize("text,unit,want", [
    (10000, "ms", 10.0), ("10000", "ms", 10.0), (600, "s", 600.0), ("1h30m", "s", 5400.0), ("1.5s", "ms", 1.5),
    ("200ms", "s", 0.2), ("0", "s", 0.0), ("", "ms", 0.0), ("10m", "ms", 600.0), ("250us", "s", 0.00025)])
def test_durations_follow_woodpecker(text, unit, want):
    assert parse_duration(text, unit=unit) == pytest.approx(want)


@pytest.mark.parametrize("text", ["soon", "1x", "ms", "1h-30m"])
def test_durations_woodpecker_refuses_are_refused(text):
    with pytest.raises(ConfigError, match="etcd.requestTimeout"):
        parse_duration(text, "etcd.requestTimeout", "ms")


def test_deprecated_names_keep_their_meaning():
    c = Config({"minio.requestTimeout": 30, "etcd.username": "u", "etcd.password": "p"})
    assert c["minio.requestTimeoutMs"] == 30.0                    # the old name's bare number is seconds
    assert (c["etcd.auth.userName"], c["etcd.auth.password"], c["etcd.auth.enabled"]) == ("u", "p", True)
    both = Config({"minio.requestTimeout": 30, "minio.requestTimeoutMs": 500})
    assert both["minio.requestTimeoutMs"] == 0.5                  # the canonical name wins
    env = Config().with_env({"PICCHIO_ETCD_USERNAME": "old", "PICCHIO_ETCD_AUTH_USERNAME": "new"})
    assert env["etcd.auth.userName"] == "new" and env.source("etcd.auth.userName") == "env"


def test_unknown_keys_still_name_the_key():
    with pytest.raises(ConfigError, match=r"woodpecker\.client\.segmentAppend\.queueSiz\b"):
        Config({"woodpecker": {"client": {"segmentAppend": {"queueSiz": 1}}}})


def test_check_rows_mask_secrets_and_mark_no_effect_keys():
    c = Config.from_yaml(WOODPECKER_YAML).with_values({"etcd.auth.password": "hunter2"}, source="env")
    rows = {r["key"]: r for r in describe(c)}
    assert rows["etcd.auth.password"]["value"] == "***" and rows["etcd.auth.password"]["source"] == "env"
    assert rows["minio.secretAccessKey"]["value"] == "***" and "hunter2" not in repr(c)
    assert rows["etcd.requestTimeout"]["value"] == "10s" and rows["etcd.requestTimeout"]["effect"] == ""
    assert rows["log.level"]["effect"] == "no effect here"
    assert rows["woodpecker.client.reader.metaPollInterval"]["source"] == "default"


def test_no_effect_keys_are_announced_once(caplog):
    c = Config({"trace.exporter": "jaeger", "log.level": "debug"})
    with caplog.at_level(logging.WARNING, logger="logstore.config"):
        c.warn_inert()
        c.warn_inert()
    notes = [r.getMessage() for r in caplog.records if "no effect here" in r.getMessage()]
    assert len(notes) == 1 and "trace.exporter" in notes[0] and "log.level" in notes[0]


def test_to_dict_leaves_out_untouched_no_effect_keys_and_round_trips():
    c = Config.from_yaml(WOODPECKER_YAML)
    assert Config.from_dict(c.to_dict()) == c
    assert "log.level" not in Config().to_dict() and "log.level" in c.to_dict()


@pytest.mark.parametrize("root,prefix,want", [
    ("by-dev", "woodpecker", "by-dev/woodpecker"), ("/by-dev/", "woodpecker", "/by-dev/woodpecker"),
    ("", "woodpecker", "woodpecker"), ("a//b", "./wp", "a/b/wp"), (".", "", "woodpecker"), ("", "", "woodpecker")])
def test_configured_prefix_is_gos_path_join(root, prefix, want):
    assert Config({"etcd.rootPath": root, "woodpecker.meta.prefix": prefix}).meta_prefix == want
    assert go_path_join("", "") == ""


def test_readme_configuration_table_is_generated_from_the_table():
    text = README.read_text()
    begin, end = "<!-- config-table:begin -->\n", "\n<!-- config-table:end -->"
    assert begin in text and end in text, "README lacks the generated configuration table markers"
    assert text[text.index(begin) + len(begin):text.index(end)] == markdown_table(), \
        "README's configuration table is stale: paste logstore.config.markdown_table() between the markers"


def test_woodpeckers_replicas_sets_the_quorum_unless_it_is_set_itself():
    five = Config({"woodpecker.client.quorum.quorumSelectStrategy.replicas": 5})
    q = "woodpecker.client.quorum."
    assert (five[q + "ensembleSize"], five[q + "writeQuorum"], five[q + "ackQuorum"]) == (5, 5, 3)
    assert five.source(q + "ackQuorum") == "derived"
    assert Config({q + "quorumSelectStrategy.replicas": 4})[q + "ensembleSize"] == 3  # Woodpecker: 3 or 5, else 3
    own = Config({q + "quorumSelectStrategy.replicas": 5, q + "ackQuorum": 4})
    assert (own[q + "ensembleSize"], own[q + "ackQuorum"]) == (5, 4)
    assert Config.from_yaml(WOODPECKER_YAML)[q + "ackQuorum"] == 2  # the shipped replicas: 3 → 3/3/2
