"""Bucket lifecycle rules: ours are scoped to rootPath, foreign rules are
never touched, ambiguity is a conflict, not a takeover."""
from __future__ import annotations

import pytest
from opsupport import check_golden, cluster_body, sample
from picchio_operator.model.lifecycle import (
    LifecycleConflict,
    desired_rules,
    merge_rules,
    missing_rules,
    our_ids,
    rule_id_prefix,
    rules_equal,
)
from picchio_operator.model.spec import parse_cluster

FOREIGN = [
    {"ID": "milvus-binlog-expiry", "Status": "Enabled", "Filter": {"Prefix": "milvus/"}, "Expiration": {"Days": 30}},
    {"ID": "picchio-team-a-other-tombstones", "Status": "Enabled", "Filter": {"Prefix": "other/tombstones/"},
     "Expiration": {"Days": 1}},
]


def cluster():
    return parse_cluster(sample("cluster-service.yaml"))


def test_desired_rules_golden_and_scoped_to_root_path() -> None:
    rules = desired_rules(cluster())
    check_golden("service-lifecycle-rules.yaml", rules)
    assert {r["ID"] for r in rules} == our_ids("team-a", "wal")
    assert all(r["Filter"]["Prefix"].startswith("wal/") for r in rules)
    assert all(r["ID"].startswith("picchio-team-a-wal-") for r in rules)


def test_merge_keeps_foreign_rules_in_order_and_replaces_ours() -> None:
    c = cluster()
    stale = {"ID": "picchio-team-a-wal-tombstones", "Status": "Enabled", "Filter": {"Prefix": "wal/tombstones/"},
             "Expiration": {"Days": 99}}
    merged = merge_rules([FOREIGN[0], stale, FOREIGN[1]], desired_rules(c), namespace="team-a", cluster="wal",
                         root_prefix="wal/")
    assert merged[:2] == FOREIGN
    assert rules_equal(merged[2:], desired_rules(c))
    assert [r for r in merged if r["ID"] == "picchio-team-a-wal-tombstones"][0]["Expiration"] == {"Days": 7}


def test_disabled_lifecycle_removes_only_ours() -> None:
    c = parse_cluster(cluster_body(storage={**sample("cluster-service.yaml")["spec"]["storage"],
                                            "lifecycle": {"enabled": False}}))
    assert desired_rules(c) == []
    merged = merge_rules(FOREIGN + desired_rules(cluster()), desired_rules(c), namespace="team-a", cluster="wal",
                         root_prefix="wal/")
    assert merged == FOREIGN


def test_an_id_of_ours_on_another_prefix_is_a_conflict() -> None:
    # namespace "team-a-wal"/cluster "x" and namespace "team-a"/cluster "wal-x" share IDs;
    # the prefix check tells them apart.
    theirs = {"ID": "picchio-team-a-wal-x-tombstones", "Status": "Enabled", "Filter": {"Prefix": "elsewhere/tombstones/"},
              "Expiration": {"Days": 1}}
    with pytest.raises(LifecycleConflict, match="elsewhere/tombstones/"):
        merge_rules([theirs], [], namespace="team-a", cluster="wal-x", root_prefix="wal-x/")


def test_a_cluster_named_like_a_prefix_of_another_is_not_confused() -> None:
    """Cluster "wal" must not treat cluster "wal-2"'s rules as its own."""
    other = desired_rules(parse_cluster({**cluster_body(), "metadata": {**cluster_body()["metadata"], "name": "wal-2"},
                                         "spec": {**cluster_body()["spec"], "storage": {
                                             **cluster_body()["spec"]["storage"], "rootPath": "wal-2"}}}))
    merged = merge_rules(other, desired_rules(cluster()), namespace="team-a", cluster="wal", root_prefix="wal/")
    assert merged[: len(other)] == other and len(merged) == len(other) + 2


def test_rules_equal_ignores_server_noise_and_order() -> None:
    ours = desired_rules(cluster())
    echoed = [dict(r, Transitions=[], NoncurrentVersionTransitions=None) for r in reversed(ours)]
    assert rules_equal(ours, echoed)
    assert missing_rules(echoed, ours) == []
    assert missing_rules(FOREIGN, ours) == sorted(r["ID"] for r in ours)


def test_long_names_give_ids_within_the_s3_limit() -> None:
    p = rule_id_prefix("n" * 63, "c" * 253)
    assert len(p) + len("abort-multipart") <= 255
    assert rule_id_prefix("n" * 63, "c" * 253) != rule_id_prefix("n" * 63, "c" * 252 + "d")
