"""One pass of the operator's PKI (rules: model/pki.py): read the TLS
Secrets, let the model decide what to issue or rotate, write what changed
(the CA Secret first), report TLSReady and ``status.tls``.  Runs in every
full reconcile, so the resync timer drives renewal and rotation.

Also hands the operator's own LogStore client its ``admin:operator``
certificate, minted from the CA and kept in memory (files only in the
operator's private directory, ``adapters.tlsfiles``).  Private keys go to the
redactor as they are read or made; events and status carry names and dates.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..adapters import AdapterError
from ..adapters.kube import KubeError
from ..model import constants as k
from ..model import pki
from ..model.conditions import Cond, cond, format_time, get_condition
from ..model.spec import ClusterSpec
from ..runtime import Runtime, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PkiOutcome:
    condition: Cond
    status: dict[str, Any] | None  # status.tls (None: remove it)
    failed: bool = False           # a transient failure: retry, keep the last status.tls


def _names(c: ClusterSpec) -> list[str]:
    return [k.cluster_ca_secret_name(c.name), *(s.secret for s in pki.leaf_specs(c))]


def _differs(have: dict[str, Any] | None, want: dict[str, Any]) -> bool:
    """Whether ``want`` must be applied: content, type, our labels/annotations
    or our ownerReference differ (an identical apply would be a wasted call)."""
    if have is None:
        return True
    hm, wm = have.get("metadata") or {}, want["metadata"]
    return ((have.get("data") or {}) != want["data"] or have.get("type") != want["type"]
            or any((hm.get("labels") or {}).get(key) != v for key, v in wm["labels"].items())
            or (hm.get("annotations") or {}).get(pki.PHASE_SINCE_ANNOTATION)
            != (wm.get("annotations") or {}).get(pki.PHASE_SINCE_ANNOTATION)
            or not any(o.get("uid") == wm["ownerReferences"][0]["uid"] for o in hm.get("ownerReferences") or ()))


async def ensure(rt: Runtime, c: ClusterSpec, body: Any) -> PkiOutcome:
    """Service mode with spec.tls.enabled: make the Secrets right."""
    if c.tls.issuer_ref:
        return PkiOutcome(pki.issuer_ref_condition(c), None)
    try:
        objs = {n: await rt.kube.get("v1", "Secret", c.namespace, n) for n in _names(c)}
    except KubeError as e:
        return PkiOutcome(cond(pki.TLS_READY, False, "CertificateReadFailed", str(e)), None, True)
    ca_name = k.cluster_ca_secret_name(c.name)
    ca = pki.ca_state_from(objs[ca_name])
    have = {s.secret: pki.leaf_from(objs[s.secret]) for s in pki.leaf_specs(c)}
    request = ((body.get("metadata") or {}).get("annotations") or {}).get(k.RENEW_CERTS_ANNOTATION)
    plan = pki.plan(c, ca, have, utcnow(), timedelta(seconds=rt.tunables.tls_overlap_seconds),
                    renew=request is not None and request.strip().lower() != "ca",
                    rotate_ca=request is not None and request.strip().lower() == "ca")
    for p in (plan.ca.signer, plan.ca.incoming, *plan.leaves.values()):
        if p is not None:
            rt.kube.redactor.add(p.key_pem)
    try:
        for obj in pki.pki_secrets(c, plan):  # the CA first: no leaf from a CA not yet stored
            if _differs(objs[obj["metadata"]["name"]], obj):
                await rt.kube.apply(obj)
    except KubeError as e:
        rt.events.warn(body, reason="CertificateWriteFailed", message=str(e))
        return PkiOutcome(cond(pki.TLS_READY, False, "CertificateWriteFailed", str(e)), None, True)
    _report(rt, c, body, plan, first=objs[ca_name] is None)
    if request is not None:
        try:
            await rt.kube.remove_custom_annotation(k.CLUSTER_PLURAL, c.namespace, c.name, k.RENEW_CERTS_ANNOTATION,
                                                   request)
        except KubeError as e:  # it stays: the next pass renews once more, harmlessly
            log.warning("removing %s from %s/%s: %s", k.RENEW_CERTS_ANNOTATION, c.namespace, c.name, e)
    return PkiOutcome(pki.ready_condition(c, plan), pki.tls_status(c, plan))


def _report(rt: Runtime, c: ClusterSpec, body: Any, plan: pki.PkiPlan, *, first: bool) -> None:
    """Events: names, reasons and dates only."""
    if plan.ca_note:
        rt.events.info(body, reason="CaRotation" if not first else "CertificatesIssued",
                       message=f"Secret {k.cluster_ca_secret_name(c.name)}: {plan.ca_note}")
    if plan.reissued:
        what = "; ".join(f"{name} ({why}), valid until {format_time(plan.leaves[name].not_after)}"
                         for name, why in plan.reissued.items())
        rt.events.info(body, reason="CertificatesIssued" if first else "CertificatesRenewed",
                       message=f"issued {what}")


def warn_if_insecure(rt: Runtime, old_status: dict[str, Any], new_status: dict[str, Any], body: Any) -> None:
    """A Warning event when a cluster's TLSReady turns Insecure: once, by the
    pass that writes the transition (passes on one object are serialized);
    the condition says it all along."""
    was = get_condition(old_status.get("conditions"), pki.TLS_READY) or {}
    now = get_condition(new_status.get("conditions"), pki.TLS_READY) or {}
    if now.get("reason") == "Insecure" and was.get("reason") != "Insecure":
        rt.events.warn(body, reason="Insecure", message=pki.insecure_condition().message)


class TlsNotReady(AdapterError):
    reason = "CertificatesPending"


async def operator_client_tls(rt: Runtime, c: ClusterSpec) -> dict[str, Any]:
    """``woodpecker.logstore.tls.*`` for the operator's own LogStore client
    (scale-down compaction): the trust bundle and an ``admin:operator``
    certificate from the signing CA, renewed by the leaves' rule."""
    if not c.tls_on:
        return {}
    obj = await rt.kube.get("v1", "Secret", c.namespace, k.cluster_ca_secret_name(c.name))
    ca = pki.ca_state_from(obj)
    if ca.signer is None:
        raise TlsNotReady(f"Secret {c.namespace}/{k.cluster_ca_secret_name(c.name)}: no usable CA yet")
    rt.kube.redactor.add(ca.signer.key_pem)
    mine = pki.operator_cert(c, ca, rt.operator_certs.get(c.uid), utcnow())
    rt.operator_certs[c.uid] = mine
    rt.kube.redactor.add(mine.key_pem)
    data = {k.TLS_CA: ca.bundle(), k.TLS_CERT: mine.cert_pem, k.TLS_KEY: mine.key_pem}
    paths = rt.tls_files.write(c.namespace, f"{c.name}-operator-admin", data, k.ETCD_TLS_KEYS)
    tls = "woodpecker.logstore.tls."
    return {tls + "enabled": True, tls + "caFile": paths[k.TLS_CA], tls + "clientCertFile": paths[k.TLS_CERT],
            tls + "clientKeyFile": paths[k.TLS_KEY]}
