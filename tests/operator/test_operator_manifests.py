"""manifests/: parses, renders with kustomize, and its RBAC grants exactly
what the operator's adapters use."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from opsupport import REPO
from picchio_operator.adapters.kube import _KINDS, DELETABLE
from picchio_operator.model import constants as k

MANIFESTS = REPO / "manifests"


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_every_manifest_parses_and_kustomization_lists_existing_files() -> None:
    for kust in (MANIFESTS / "kustomization.yaml", MANIFESTS / "samples" / "kustomization.yaml"):
        for res in yaml.safe_load(kust.read_text())["resources"]:
            assert docs(kust.parent / res), res


def rbac_rules():
    (role,) = [d for d in docs(MANIFESTS / "rbac.yaml") if d["kind"] == "ClusterRole"]
    return role["rules"]


def granted(group: str, resource: str) -> set[str]:
    out: set[str] = set()
    for r in rbac_rules():
        if group in r["apiGroups"] and resource in r["resources"]:
            out |= set(r["verbs"])
    return out


def test_rbac_has_no_wildcards() -> None:
    for r in rbac_rules():
        assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"]


@pytest.mark.parametrize("api_version,kind", sorted(_KINDS))
def test_rbac_covers_every_kind_the_operator_touches(api_version: str, kind: str) -> None:
    group = api_version.split("/")[0] if "/" in api_version else ""
    _, plural = _KINDS[(api_version, kind)]
    verbs = granted(group, plural)
    if kind == "Secret":
        # read, the in-use finalizer, and server-side apply of the Secrets the operator owns
        # (<name>-etcd-client and the spec.tls ones: model.pki.pki_secrets); no list/watch/delete
        assert verbs == {"get", "create", "patch"}
    elif (api_version, kind) in DELETABLE:
        # server-side apply, and Kube.delete_owned (read the owner, then delete): the
        # NetworkPolicy a spec.network.policies switch-off removes
        assert verbs == {"get", "create", "patch", "delete"}
    else:
        assert {"get", "create", "patch"} <= verbs  # server-side apply
        assert "delete" not in verbs  # children go by ownerReference garbage collection


def test_rbac_grants_nothing_on_networking_beyond_networkpolicies() -> None:
    rules = [r for r in rbac_rules() if "networking.k8s.io" in r["apiGroups"]]
    assert [(r["apiGroups"], r["resources"]) for r in rules] == [(["networking.k8s.io"], ["networkpolicies"])]


def test_rbac_for_custom_resources_and_kopf() -> None:
    for plural in (k.CLUSTER_PLURAL, k.LOG_PLURAL):
        assert {"get", "list", "watch", "patch"} <= granted(k.GROUP, plural)
        assert granted(k.GROUP, f"{plural}/status") == {"get", "patch"}
    assert granted(k.GROUP, f"{k.CLUSTER_PLURAL}/finalizers") == {"update"}
    assert {"list", "watch", "patch"} <= granted("kopf.dev", "clusterkopfpeerings")
    assert granted("", "events") == {"create"}
    assert {"list", "watch"} <= granted("apps", "statefulsets")


def test_deployment_probes_and_image_parameter() -> None:
    (dep,) = docs(MANIFESTS / "deployment.yaml")
    (ctr,) = dep["spec"]["template"]["spec"]["containers"]
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/healthz"
    kust = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert ctr["image"] in {i["name"] for i in kust["images"]}
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "picchio-operator"
    env = {e["name"]: e for e in ctr.get("env") or []}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # kopf's peer identity


def test_peering_object_matches_the_operator_default() -> None:
    from picchio_operator.main import parse_args

    (peering,) = docs(MANIFESTS / "peering.yaml")
    assert peering["kind"] == "ClusterKopfPeering"
    assert peering["metadata"]["name"] == parse_args([]).peering


def _kubectl() -> str:
    """The pinned kubectl built by `make components` (else one on PATH); never a skip."""
    from picchio_harness.procs import find_binary
    kubectl = find_binary("PICCHIO_KUBECTL_BIN", "kubectl", []) or shutil.which("kubectl")
    assert kubectl, "no kubectl: run `make components` (builds the pinned kubectl)"
    return kubectl


def test_kustomize_renders() -> None:
    out = subprocess.run([_kubectl(), "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout) if d]
    assert sorted(kinds) == sorted(["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                    "ClusterKopfPeering", "Deployment"])
    dep = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Deployment"][0]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "picchio:0.1.0"
