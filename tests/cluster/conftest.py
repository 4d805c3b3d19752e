"""Fixtures for the cluster tier come from the harness plugin.

Imported by name (not ``pytest_plugins``) because pytest only honours
``pytest_plugins`` in the root conftest, which the lead owns; once
tests/conftest.py loads ``picchio_harness.pytest_plugin`` this import is
redundant but harmless (the same fixture functions)."""
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("picchio_harness") is None:  # not pip-installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from picchio_harness.pytest_plugin import etcd36, k8s_cluster, minio, pytest_configure  # noqa: E402,F401
