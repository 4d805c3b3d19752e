import pytest

from logstore import EARLIEST, LATEST, Config, ConfigError, InvalidArgumentError, MessageId
from logstore.config import SETTINGS, parse_duration, parse_size
from logstore.proto import LogMeta, QuorumInfo, SegmentMetadata, SegmentState


@pytest.mark.parametrize("text,want", [("256M", 256 << 20), ("2MB", 2 << 20), ("64Mi", 64 << 20),
                                       ("1KiB", 1024), (4096, 4096), ("7", 7)])  # binary, as in Woodpecker
def test_sizes(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("text,unit,want", [("10ms", "s", 0.01), ("10m", "s", 600.0), ("2s", "ms", 2.0),
                                            (200, "ms", 0.2), (600, "s", 600.0), ("1h", "s", 3600.0)])
def test_durations(text, unit, want):
    assert parse_duration(text, unit=unit) == pytest.approx(want)


def test_nested_and_dotted_keys_and_defaults():
    c = Config.from_dict({"woodpecker": {"storage": {"type": "local"}},
                          "woodpecker.client.segmentRollingPolicy.maxSize": "64Mi"})
    assert c["woodpecker.storage.type"] == "local"
    assert c["woodpecker.client.segmentRollingPolicy.maxSize"] == 64 << 20
    assert c["minio.bucketName"] == "a-bucket"  # default from the one table
    assert c.meta_prefix == "by-dev/woodpecker"
    assert Config({"etcd.rootPath": ""}).meta_prefix == "woodpecker"


@pytest.mark.parametrize("bad,key", [
    ({"woodpecker": {"storage": {"tpye": "local"}}}, "woodpecker.storage.tpye"),
    ({"minio.port": "abc"}, "minio.port"),
    ({"minio.useSSL": "yes"}, "minio.useSSL"),
    ({"woodpecker.storage.type": "ftp"}, "woodpecker.storage.type"),
    ({"woodpecker.client.segmentRollingPolicy.maxSize": "lots"}, "woodpecker.client.segmentRollingPolicy.maxSize"),
    ({"woodpecker.logstore.segmentSyncPolicy.maxInterval": "soon"}, "woodpecker.logstore.segmentSyncPolicy.maxInterval"),
    ({"etcd.endpoints": []}, "etcd.endpoints"),
    ({"woodpecker.client.segmentRollingPolicy.maxBlocks": 0}, "woodpecker.client.segmentRollingPolicy.maxBlocks"),
])
def test_bad_config_names_the_key(bad, key):
    with pytest.raises(ConfigError) as e:
        Config.from_dict(bad)
    assert key in str(e.value)


def test_yaml(tmp_path):
    p = tmp_path / "w.yaml"
    p.write_text("etcd:\n  endpoints: [a:1, b:2]\nminio:\n  bucketName: logs\n")
    c = Config.from_yaml(p)
    assert c["etcd.endpoints"] == ["a:1", "b:2"] and c["minio.bucketName"] == "logs"
    p.write_text("etcd: [unclosed\n")
    with pytest.raises(ConfigError):
        Config.from_yaml(p)
    with pytest.raises(ConfigError):
        Config.from_yaml(tmp_path / "missing.yaml")


def test_table_has_one_entry_per_key():
    keys = [s.key for s in SETTINGS]
    assert len(keys) == len(set(keys))
    for s in SETTINGS:
        assert s.doc, s.key
        if s.kind != "alias":
            Config({s.key: s.default if s.type not in ("duration",) else f"{s.default}s"})
        else:
            assert s.alias_of in keys and s.type == next(t.type for t in SETTINGS if t.key == s.alias_of)


def test_message_id():
    a, b = MessageId(1, 5), MessageId(2, 0)
    assert a < b and str(a) == "1:5" and MessageId.parse("1:5") == a and hash(a) == hash(MessageId(1, 5))
    assert EARLIEST < a < LATEST
    for bad in ("1", "a:b", "1:-2", "", "1:2:3"):
        with pytest.raises(InvalidArgumentError):
            MessageId.parse(bad)
    with pytest.raises(InvalidArgumentError):
        MessageId(-1, 0)


def test_proto_field_numbers():
    m = LogMeta(log_id=7, creation_timestamp=1, modification_timestamp=2)
    raw = m.encode()
    assert raw.startswith(b"\x08\x07")  # field 1 varint
    assert b"\x31\x01\x00\x00\x00\x00\x00\x00\x00" in raw  # field 6 fixed64
    assert LogMeta.decode(raw) == m
    s = SegmentMetadata(seg_no=3, create_time=99, state=SegmentState.SEALED, last_entry_id=10, size=5,
                        quorum=QuorumInfo())
    d = SegmentMetadata.decode(s.encode())
    assert d == s and d.quorum.nodes == ["127.0.0.1:59456"] and d.quorum.id == -1
    # the Active default: lastEntryId −1 encodes as a 10-byte varint (two's complement)
    assert b"\x30" + b"\xff" * 9 + b"\x01" in SegmentMetadata(seg_no=1, create_time=1).encode()


def test_to_dict_round_trips():
    c = Config({"woodpecker.logstore.segmentSyncPolicy.maxInterval": "20ms", "minio.port": 9001,
                "woodpecker.client.segmentRollingPolicy.maxInterval": "10m"})
    assert Config.from_dict(c.to_dict()) == c
    assert Config.from_dict(c.to_dict(nested=True)) == c
    assert c.to_dict(nested=True)["minio"]["port"] == 9001


def test_env_overrides_for_entry_points():
    c = Config({"minio.secretAccessKey": "from-file"}).with_env(
        {"PICCHIO_MINIO_SECRETACCESSKEY": "from-secret", "PICCHIO_MINIO_PORT": "9100", "UNRELATED": "x"})
    assert c["minio.secretAccessKey"] == "from-secret" and c["minio.port"] == 9100
    with pytest.raises(ConfigError) as e:
        Config().with_env({"PICCHIO_MINIO_PORT": "nine"})
    assert "minio.port" in str(e.value)
