"""A minimal dynamic volume provisioner for the local cluster.

Why a provisioner loop rather than a pre-created pool of PVs: the operator's
tests create, scale and delete StatefulSets with volumeClaimTemplates over
and over.  A fixed pool runs dry (a Released hostPath PV is never reusable:
the in-tree recycler needs a real pod, which kwok cannot run), and a pool
hides bugs a real cluster shows, such as PVs that disappear when their claim
is deleted (reclaimPolicy Delete).  This loop behaves like an external
provisioner: the kube-controller-manager's PV controller annotates a pending
claim with ``volume.kubernetes.io/storage-provisioner: picchio.local/hostpath``;
we create a PV pre-bound to it (claimRef) which the PV controller binds;
Released PVs we provisioned are deleted.

Run detached next to the control plane::

    python -m picchio_harness.provisioner --kubeconfig K --root DIR
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

PROVISIONER = "picchio.local/hostpath"
CLASS_NAME = "standard"
_ANN_PROVISIONER = ("volume.kubernetes.io/storage-provisioner", "volume.beta.kubernetes.io/storage-provisioner")
_ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
_TIMEOUT = 10  # seconds, every API call


def storage_class() -> dict[str, Any]:
    """The default StorageClass served by this provisioner.  Immediate binding:
    with kwok there is no kubelet that could care about topology."""
    return {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": CLASS_NAME,
                     "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": True,
    }


def _pv_for(pvc: Any, root: Path) -> dict[str, Any]:
    name = f"pvc-{pvc.metadata.uid}"
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    size = ((pvc.spec.resources and pvc.spec.resources.requests) or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {_ANN_PROVISIONED_BY: PROVISIONER},
                     "labels": {"picchio.local/provisioner": "hostpath"}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": pvc.spec.access_modes or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": pvc.spec.storage_class_name,
            "volumeMode": pvc.spec.volume_mode or "Filesystem",
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "namespace": pvc.metadata.namespace, "name": pvc.metadata.name,
                         "uid": pvc.metadata.uid},
        },
    }


def reconcile_once(core: Any, root: Path) -> tuple[int, int]:
    """One pass: provision for pending claims that name us, delete Released
    PVs we made.  Returns (created, deleted).  Idempotent: a 409 on create
    means an earlier pass already made that PV."""
    from kubernetes.client.exceptions import ApiException

    created = deleted = 0
    for pvc in core.list_persistent_volume_claim_for_all_namespaces(_request_timeout=_TIMEOUT).items:
        ann = pvc.metadata.annotations or {}
        if pvc.spec.volume_name or pvc.metadata.deletion_timestamp:
            continue
        if not any(ann.get(k) == PROVISIONER for k in _ANN_PROVISIONER):
            continue
        try:
            core.create_persistent_volume(_pv_for(pvc, root), _request_timeout=_TIMEOUT)
            created += 1
        except ApiException as e:
            if e.status != 409:
                raise
    for pv in core.list_persistent_volume(_request_timeout=_TIMEOUT).items:
        ours = (pv.metadata.annotations or {}).get(_ANN_PROVISIONED_BY) == PROVISIONER
        if ours and pv.status.phase in ("Released", "Failed") and \
                pv.spec.persistent_volume_reclaim_policy == "Delete":
            try:
                core.delete_persistent_volume(pv.metadata.name, _request_timeout=_TIMEOUT)
                deleted += 1
            except ApiException as e:
                if e.status != 404:
                    raise
            if pv.spec.host_path and pv.spec.host_path.path.startswith(str(root)):
                shutil.rmtree(pv.spec.host_path.path, ignore_errors=True)
    return created, deleted


def run(kubeconfig: str, root: Path, interval: float) -> None:
    """Poll forever (until SIGTERM).  Polling, not a watch: at test scale a
    list every ``interval`` is cheap, and it cannot miss an event or hang on
    a half-open watch.  Errors are logged and retried with capped backoff."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api)
    root.mkdir(parents=True, exist_ok=True)
    backoff = interval
    announced = False
    while True:
        try:
            c, d = reconcile_once(core, root)
            if c or d:
                print(f"provisioned {c}, deleted {d}", flush=True)
            if not announced:
                print("provisioner ready", flush=True)
                announced = True
            backoff = interval
        except Exception as e:  # noqa: BLE001 - keep serving through API hiccups
            print(f"reconcile failed: {e!r}", flush=True)
            backoff = min(backoff * 2, 5.0)
        time.sleep(backoff)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m picchio_harness.provisioner")
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--root", required=True, type=Path, help="directory for the hostPath volumes")
    ap.add_argument("--interval", type=float, default=0.3)
    a = ap.parse_args(argv)
    run(a.kubeconfig, a.root, a.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
