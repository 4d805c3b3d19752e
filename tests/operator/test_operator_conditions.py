"""Condition helpers: metav1.Condition shape, transition times kept across
reason/message changes, list-map semantics, summary, no-op detection."""
from __future__ import annotations

from datetime import timedelta

import pytest
from opsupport import NOW
from picchio_operator.model.conditions import (
    Cond,
    cond,
    format_time,
    get_condition,
    parse_time,
    remove_condition,
    same_conditions,
    set_condition,
    set_conditions,
    status_changed,
    summarize,
)

LATER = NOW + timedelta(minutes=5)


def test_new_condition_has_the_metav1_shape() -> None:
    (c,) = set_condition([], cond("Ready", True, "Ready", "all good"), generation=7, now=NOW)
    assert c == {"type": "Ready", "status": "True", "reason": "Ready", "message": "all good",
                 "lastTransitionTime": "2025-01-02T03:04:05Z", "observedGeneration": 7}


def test_transition_time_kept_when_status_unchanged_even_if_reason_changes() -> None:
    first = set_condition([], cond("Ready", False, "Provisioning"), generation=1, now=NOW)
    second = set_condition(first, cond("Ready", False, "StorageUnreachable", "timeout"), generation=2, now=LATER)
    (c,) = second
    assert c["lastTransitionTime"] == format_time(NOW)
    assert (c["reason"], c["message"], c["observedGeneration"]) == ("StorageUnreachable", "timeout", 2)


def test_transition_time_moves_when_status_flips() -> None:
    first = set_condition([], cond("Ready", False, "Provisioning"), generation=1, now=NOW)
    (c,) = set_condition(first, cond("Ready", True, "Ready"), generation=1, now=LATER)
    assert c["lastTransitionTime"] == format_time(LATER)


def test_other_conditions_and_order_are_kept() -> None:
    conds = set_conditions([], [cond("Ready", True, "Ready"), cond("EtcdReady", True, "KeyspaceReady"),
                                cond("StorageReady", True, "StorageVerified")], generation=1, now=NOW)
    out = set_condition(conds, cond("EtcdReady", False, "EtcdUnreachable", "down"), generation=2, now=LATER)
    assert [c["type"] for c in out] == ["Ready", "EtcdReady", "StorageReady"]
    assert out[0] == conds[0] and out[2] == conds[2]
    assert get_condition(out, "EtcdReady")["status"] == "False"
    assert [c["type"] for c in remove_condition(out, "EtcdReady")] == ["Ready", "StorageReady"]


def test_input_is_not_mutated() -> None:
    conds = set_condition([], cond("Ready", False, "Provisioning"), generation=1, now=NOW)
    snapshot = [dict(c) for c in conds]
    set_condition(conds, cond("Ready", True, "Ready"), generation=2, now=LATER)
    assert conds == snapshot


def test_same_conditions_ignores_order_but_not_content() -> None:
    a = set_conditions([], [cond("A", True, "X"), cond("B", False, "Y")], generation=1, now=NOW)
    assert same_conditions(a, list(reversed(a)))
    b = set_condition(a, cond("B", False, "Z"), generation=1, now=NOW)
    assert not same_conditions(a, b)


def test_status_changed_detects_only_real_changes() -> None:
    conds = set_conditions([], [cond("Ready", True, "Ready")], generation=1, now=NOW)
    old = {"observedGeneration": 1, "conditions": conds, "replicas": 3}
    assert not status_changed(old, {"observedGeneration": 1, "conditions": list(reversed(conds)), "replicas": 3})
    assert status_changed(old, {"observedGeneration": 1, "conditions": conds, "replicas": 2})
    assert status_changed(old, {"logs": 1})


def test_summary_reports_the_first_failure() -> None:
    parts = [cond("ConfigValid", True, "ConfigValid"), cond("EtcdReady", False, "EtcdUnreachable", "no endpoint"),
             cond("StorageReady", False, "BucketMissing", "no bucket")]
    s = summarize(parts)
    assert (s.status, s.reason, s.message) == ("False", "EtcdUnreachable", "EtcdReady: no endpoint")
    assert summarize(parts[:1]).status == "True"
    unknown = summarize([Cond("EtcdReady", "Unknown", "NotChecked")])
    assert unknown.status == "Unknown"


@pytest.mark.parametrize("bad", [dict(status="Yes"), dict(reason=""), dict(reason="1abc")])
def test_invalid_conditions_are_refused(bad) -> None:
    kw = {"type_": "Ready", "status": "True", "reason": "Ready", **bad}
    with pytest.raises(ValueError):
        Cond(kw["type_"], kw["status"], kw["reason"])


def test_long_messages_are_truncated_to_the_schema_limit() -> None:
    (c,) = set_condition([], cond("Ready", False, "Boom", "x" * 40000), generation=1, now=NOW)
    assert len(c["message"]) == 32768


def test_time_round_trip() -> None:
    assert parse_time(format_time(NOW)) == NOW
    assert parse_time(None) is None
