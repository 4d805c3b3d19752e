"""Secrets hygiene, unit tier: configuration errors, ``picchio config check``
(with and without ``--json``), ``repr(Config)``, log records and the
redaction helper never show a secret value they were given.

Leaks these tests caught before the fix: a malformed secret (a list, a
mapping, a bool — e.g. a mis-indented block) was echoed by the type error
(``expected a string, got list ['…']``), and a YAML syntax error quoted the
offending line — ``secretAccessKey: "…`` with the secret in it."""
from __future__ import annotations

import base64
import io
import json
import logging
import uuid

import pytest

from logstore.cli.main import main as cli_main
from logstore.config import Config
from logstore.errors import ConfigError
from logstore.redact import SecretFilter, config_secrets, install, redact

SECRET_KEYS = ("minio.accessKeyID", "minio.secretAccessKey", "etcd.auth.password", "etcd.password")


def planted(tag: str) -> str:
    return f"PLANTED-{tag}-{uuid.uuid4().hex}"


def assert_clean(text: str, *secrets: str) -> None:
    for s in secrets:
        assert s not in text and base64.b64encode(s.encode()).decode() not in text, text


@pytest.mark.parametrize("key", SECRET_KEYS)
@pytest.mark.parametrize("shape", ["list", "mapping", "bool-ish"])
def test_a_malformed_secret_is_never_echoed(key, shape) -> None:
    s = planted("X")
    value = {"list": [s], "mapping": {"value": s}, "bool-ish": [True, s]}[shape]
    with pytest.raises(ConfigError) as e:
        Config({key: value})
    assert key in str(e.value) and "secret" in str(e.value)
    assert_clean(str(e.value), s)


def test_a_yaml_syntax_error_does_not_quote_the_line(tmp_path) -> None:
    s = planted("Y")
    for text in (f'minio:\n  secretAccessKey: "{s}\n', f"minio:\n  secretAccessKey: {s}: x\n",
                 f"etcd:\n  auth: {{password: {s}\n"):
        f = tmp_path / "bad.yaml"
        f.write_text(text)
        with pytest.raises(ConfigError) as e:
            Config.from_yaml(f)
        assert "not valid YAML" in str(e.value) and "line" in str(e.value)
        assert_clean(str(e.value), s)
        assert e.value.__cause__ is None  # nor in a chained exception's text


def test_a_misspelt_secret_key_names_the_key_not_the_value() -> None:
    s = planted("Z")
    with pytest.raises(ConfigError, match="minio.secretAcessKey: unknown") as e:
        Config({"minio": {"secretAcessKey": s}})
    assert_clean(str(e.value), s)


def test_repr_and_to_dict_nested_only_where_meant() -> None:
    ak, sk, pw = planted("AK"), planted("SK"), planted("PW")
    cfg = Config({"minio.accessKeyID": ak, "minio.secretAccessKey": sk, "etcd.auth.password": pw})
    assert_clean(repr(cfg), ak, sk, pw)
    assert sorted(config_secrets(cfg)) == sorted([ak, sk, pw])


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_config_check_masks_every_secret(tmp_path, capsys, monkeypatch, json_flag) -> None:
    """From the file and from the environment (how pods get them), canonical
    and deprecated names: the rows say the value is set, never what it is."""
    ak, sk, pw, old_pw = planted("AK"), planted("SK"), planted("PW"), planted("OLDPW")
    f = tmp_path / "wp.yaml"
    f.write_text(f"minio: {{accessKeyID: {ak}}}\netcd: {{password: {old_pw}}}\n")
    monkeypatch.setenv("PICCHIO_MINIO_SECRETACCESSKEY", sk)
    monkeypatch.setenv("PICCHIO_ETCD_AUTH_PASSWORD", pw)
    assert cli_main([*json_flag, "config", "check", str(f)]) == 0
    out = capsys.readouterr()
    assert_clean(out.out + out.err, ak, sk, pw, old_pw)
    if json_flag:
        rows = {r["key"]: r for r in json.loads(out.out)["settings"]}
        assert rows["minio.secretAccessKey"]["value"] == "***" and rows["minio.secretAccessKey"]["source"] == "env"
        assert rows["minio.accessKeyID"]["value"] == "***" and rows["minio.accessKeyID"]["source"] == "file"
        assert rows["etcd.auth.password"]["value"] == "***"
    else:
        assert "minio.secretAccessKey" in out.out and "***" in out.out


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_cli_config_errors_print_no_secret(tmp_path, capsys, json_flag) -> None:
    s = planted("CLI")
    f = tmp_path / "wp.yaml"
    f.write_text(f"minio:\n  secretAccessKey: [{s}]\n")
    assert cli_main(["--config", str(f), *json_flag, "log", "list"]) == 1
    g = tmp_path / "bad.yaml"
    g.write_text(f'minio:\n  secretAccessKey: "{s}\n')
    assert cli_main([*json_flag, "config", "check", str(g)]) == 1
    out = capsys.readouterr()
    assert "error:" in out.err
    assert_clean(out.out + out.err, s)


def test_redact_masks_values_their_base64_and_private_keys() -> None:
    s = planted("R")
    pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIAbc\n-----END EC PRIVATE KEY-----"
    text = f"a {s} b {base64.b64encode(s.encode()).decode()} c {pem} d Signature=" + "ab" * 32
    out = redact(text, [s, "", None, "ab"])  # empty/short "secrets" are ignored, not blanking ordinary text
    assert_clean(out, s)
    assert "PRIVATE KEY" not in out and "ab" * 32 not in out and out.startswith("a *** b *** c *** d")


def test_secret_filter_redacts_messages_arguments_and_tracebacks() -> None:
    s = planted("LOG")
    stream = io.StringIO()
    logger = logging.getLogger(f"test-hygiene-{uuid.uuid4().hex}")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    install([s], logger)
    logger.warning("with an argument: %s", s)
    logger.warning(f"in the message: {s}")
    try:
        raise RuntimeError(f"boom {s}")
    except RuntimeError:
        logger.exception("failed")
    text = stream.getvalue()
    assert text.count("***") == 3 and "RuntimeError: boom ***" in text
    assert_clean(text, s)
    f = SecretFilter([])
    f.add(s, None, "")
    assert f.secrets == [s]
