"""The real Woodpecker (v0.1.35, built by ``make components``) beside picchio on the same etcd,
file system and MinIO.  A missing build fails the test (naming the command), never skips it.

Fixtures: ``wp(cfg)`` → a :class:`wp.Wpctl` on a woodpecker.yaml for picchio's Config ``cfg``;
``woodpecker_logstores(cfg, n)`` → n of Woodpecker's own LogStore servers (``woodpecker server``)
joined in one gossip ring; ``service_cluster`` → three ``picchio logstore serve`` (the service
tier's fixture)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from picchio_harness.build import MissingComponent, component_binary  # noqa: E402
from picchio_harness.woodpecker import WoodpeckerLogStore, start_woodpecker_logstores  # noqa: E402
from wp import Wpctl, unique, wp_config  # noqa: E402


def _service_conftest():
    """tests/service/conftest.py under a name of its own (every conftest is called ``conftest``)."""
    path = Path(__file__).resolve().parent.parent / "service" / "conftest.py"
    spec = importlib.util.spec_from_file_location("picchio_tests_service_conftest", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


service_cluster = _service_conftest().service_cluster  # three `picchio logstore serve`, as tests/service has


def _built(name: str) -> str:
    try:
        return component_binary(name)
    except MissingComponent as e:
        pytest.fail(f"the real Woodpecker is needed here: {e}", pytrace=False)


@pytest.fixture(scope="session")
def wpctl_bin() -> str:
    return _built("wpctl")


@pytest.fixture(scope="session")
def woodpecker_bin() -> str:
    return _built("woodpecker")


@pytest.fixture
def wp(wpctl_bin, tmp_path):
    """``wp(cfg, **wp_config_kwargs)`` → Wpctl for the keyspace and storage of picchio's ``cfg``."""
    def make(cfg, **kw) -> Wpctl:
        name = unique("wp")
        return Wpctl(wpctl_bin, wp_config(cfg, tmp_path / f"{name}.yaml", **kw), tmp_path / f"{name}.log")
    return make


@pytest.fixture
def woodpecker_logstores(woodpecker_bin, tmp_path):
    """``woodpecker_logstores(cfg, n=3)`` → n of Woodpecker's own LogStore servers (``woodpecker
    server``), one gossip ring, on the etcd and MinIO of picchio's Config ``cfg`` (storage type
    service); stopped at the end.  See picchio_harness.woodpecker.start_woodpecker_logstores."""
    started: list[WoodpeckerLogStore] = []

    def start(cfg, n: int = 3) -> list[WoodpeckerLogStore]:
        stores = start_woodpecker_logstores(woodpecker_bin, cfg, tmp_path / unique("wp-logstores"), n)
        started.extend(stores)
        return stores

    yield start
    for s in started:
        s.stop()
