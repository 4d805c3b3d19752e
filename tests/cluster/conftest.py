"""Fixtures for the cluster tier come from the harness plugin.

Imported by name (not ``pytest_plugins``) because pytest only honours
``pytest_plugins`` in the root conftest, which the lead owns; once
tests/conftest.py loads ``picchio_harness.pytest_plugin`` this import is
redundant but harmless (the same fixture functions)."""
from picchio_harness.pytest_plugin import etcd36, k8s_cluster, minio  # noqa: F401
