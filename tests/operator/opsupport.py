"""Helpers of the operator's unit tests (a plain module, not a conftest, so
it never collides with tests/conftest.py): sample objects and golden files.

Golden files live in ``golden/``; regenerate them after an intended change
with ``PICCHIO_UPDATE_GOLDEN=1 pytest tests/operator`` and review the diff.
A missing golden file fails the test (it is never created silently)."""
from __future__ import annotations

import copy
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
SAMPLES = REPO / "manifests" / "samples"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the rendered woodpecker.yaml) as literal blocks, so
    golden diffs read line by line."""


def _str(dumper: yaml.SafeDumper, s: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


_Dumper.add_representer(str, _str)


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=120)


def check_golden(name: str, obj: Any) -> None:
    path = GOLDEN / name
    text = obj if isinstance(obj, str) else dump(obj)
    if os.environ.get("PICCHIO_UPDATE_GOLDEN") == "1":
        path.write_text(text)
        return
    assert path.exists(), f"golden file {path} missing: run with PICCHIO_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} differs from its golden file (PICCHIO_UPDATE_GOLDEN=1 to accept)"


def sample(name: str, namespace: str = "team-a", uid: str = "0000-uid", generation: int = 3) -> dict[str, Any]:
    """A shipped sample (manifests/samples) as the API server would return it."""
    obj = yaml.safe_load((SAMPLES / name).read_text())
    obj["metadata"].update({"namespace": namespace, "uid": uid, "generation": generation})
    return obj


def cluster_body(**spec_overrides: Any) -> dict[str, Any]:
    body = sample("cluster-service.yaml")
    body = copy.deepcopy(body)
    body["spec"].update(spec_overrides)
    return body

