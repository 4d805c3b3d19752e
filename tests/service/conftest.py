"""Three real LogStore processes per test, on a real etcd and S3, sharing the
test's own etcd keyspace and bucket prefix."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from logstore import Config
from picchio_harness.logstores import LogStoreProc, start_logstores, wait_registered


@dataclass
class ServiceCluster:
    config: Config  # the client's
    logstores: list[LogStoreProc]
    etcd_endpoint: str

    def client_config(self, **overrides) -> Config:
        return self.config.with_values({k.replace("__", "."): v for k, v in overrides.items()})


@pytest.fixture
def service_cluster(make_config, tmp_path, etcd):
    def start(n: int = 3, logstore_overrides: dict | None = None, **client_overrides) -> ServiceCluster:
        base = make_config("minio", **client_overrides)
        flat = base.to_dict()
        stores = start_logstores(tmp_path / "logstores", flat, n, **(logstore_overrides or {}))
        started.extend(stores)
        wait_registered(base.meta_prefix, etcd.endpoint, n)
        return ServiceCluster(base.with_values({"woodpecker.storage.type": "service"}), stores, etcd.endpoint)

    started: list[LogStoreProc] = []
    yield start
    for s in started:
        s.stop()
