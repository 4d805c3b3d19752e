"""The retention watermark: whole completed segments only, never past the
last completed one, only forward; truncateTo; status fields."""
from __future__ import annotations

from datetime import timedelta

import pytest
from opsupport import NOW
from picchio_operator.model.conditions import cond
from picchio_operator.model.log import (
    GcResult,
    LogObservation,
    SegmentView,
    bytes_watermark,
    first_live_id,
    gc_due,
    log_status,
    retention_watermark,
    seconds_watermark,
    segments_awaiting_gc,
)
from picchio_operator.model.spec import parse_log

from logstore.ids import MessageId

H = timedelta(hours=1)


def seg(i: int, *, last: int = 9, size: int = 100, state: str = "COMPLETED", created_h_ago: float | None = None,
        ended_h_ago: float | None = None, first: int = 0) -> SegmentView:
    return SegmentView(id=i, state=state, first_entry_id=first, last_entry_id=last, size=size,
                       create_time=None if created_h_ago is None else NOW - created_h_ago * H,
                       end_time=None if ended_h_ago is None else NOW - ended_h_ago * H)


def spec(**kw) -> object:
    body = {"metadata": {"name": "orders", "namespace": "ns", "uid": "u", "generation": 4},
            "spec": {"clusterRef": "wal", **kw}}
    return parse_log(body)


def obs(segs, truncated=None, last=None) -> LogObservation:
    if last is None:
        ne = [s for s in segs if not s.empty]
        last = ne[-1].last_id if ne else None
    return LogObservation(log_id=5, segments=tuple(segs), truncated_id=truncated, last_id=last)


# -- seconds -------------------------------------------------------------------
def test_seconds_uses_completion_time() -> None:
    segs = [seg(0, ended_h_ago=30), seg(1, ended_h_ago=25), seg(2, ended_h_ago=2), seg(3, state="ACTIVE")]
    assert seconds_watermark(segs, 24 * 3600, NOW) == MessageId(1, 9)


def test_seconds_falls_back_to_the_next_segments_creation_time() -> None:
    segs = [seg(0, created_h_ago=50), seg(1, created_h_ago=30), seg(2, created_h_ago=20), seg(3, state="ACTIVE", created_h_ago=1)]
    # seg 0 ended before seg 1 was created (30h ago); seg 1 before seg 2 (20h ago: younger than 24h)
    assert seconds_watermark(segs, 24 * 3600, NOW) == MessageId(0, 9)


def test_seconds_keeps_a_segment_whose_end_is_unknown() -> None:
    segs = [seg(0, created_h_ago=50)]  # completed, no successor, no completion time
    assert seconds_watermark(segs, 3600, NOW) is None


def test_seconds_never_touches_the_active_segment_even_if_old() -> None:
    segs = [seg(0, ended_h_ago=50), seg(1, state="ACTIVE", created_h_ago=49)]
    assert seconds_watermark(segs, 0, NOW) == MessageId(0, 9)


def test_retention_zero_seconds_truncates_every_completed_segment_only() -> None:
    segs = [seg(0, ended_h_ago=2), seg(1, ended_h_ago=1), seg(2, state="ACTIVE", created_h_ago=1)]
    wm = retention_watermark(spec(retention={"seconds": 0}), obs(segs), NOW)
    assert wm.target == MessageId(1, 9) and wm.reason == "retention.seconds"


# -- bytes ---------------------------------------------------------------------
def test_bytes_drops_oldest_until_under_limit() -> None:
    segs = [seg(0, size=100), seg(1, size=100), seg(2, size=100), seg(3, size=50, state="ACTIVE")]
    assert bytes_watermark(segs, 200, None) == MessageId(1, 9)   # 350 → drop 0,1 → 150
    assert bytes_watermark(segs, 350, None) is None
    assert bytes_watermark(segs, 349, None) == MessageId(0, 9)


def test_bytes_never_goes_past_the_last_completed_segment() -> None:
    segs = [seg(0, size=10), seg(1, size=10_000, state="ACTIVE")]
    assert bytes_watermark(segs, 0, None) == MessageId(0, 9)


def test_bytes_ignores_segments_already_below_the_watermark() -> None:
    segs = [seg(0, size=1000), seg(1, size=100), seg(2, size=100, state="ACTIVE")]
    # seg 0 is truncated (awaiting GC): the live log is 200 bytes
    assert bytes_watermark(segs, 200, MessageId(0, 9)) is None
    assert bytes_watermark(segs, 150, MessageId(0, 9)) == MessageId(1, 9)


def test_bytes_skips_empty_segments_for_the_watermark() -> None:
    segs = [seg(0, size=100), seg(1, size=0, last=-1), seg(2, size=100, state="ACTIVE")]
    assert bytes_watermark(segs, 100, None) == MessageId(0, 9)


def test_no_retention_across_an_open_segment() -> None:
    """A segment still open in the middle (fencing in progress) stops retention."""
    segs = [seg(0, size=100, ended_h_ago=10), seg(1, size=100, state="ACTIVE", created_h_ago=9),
            seg(2, size=100, ended_h_ago=8)]
    assert bytes_watermark(segs, 0, None) == MessageId(0, 9)
    assert seconds_watermark(segs, 0, NOW) == MessageId(0, 9)


# -- combined, truncateTo, only forward ------------------------------------------
def test_highest_rule_wins() -> None:
    segs = [seg(0, size=100, ended_h_ago=30), seg(1, size=100, ended_h_ago=1), seg(2, size=100, state="ACTIVE")]
    wm = retention_watermark(spec(retention={"seconds": 86400, "bytes": 100}), obs(segs), NOW)
    assert (wm.target, wm.reason) == (MessageId(1, 9), "retention.bytes")


def test_truncate_to_explicit_and_only_forward() -> None:
    segs = [seg(0), seg(1), seg(2, state="ACTIVE", last=4)]
    assert retention_watermark(spec(truncateTo="2:3"), obs(segs), NOW).target == MessageId(2, 3)
    assert retention_watermark(spec(truncateTo="1:5"), obs(segs, truncated=MessageId(1, 5)), NOW).target is None
    assert retention_watermark(spec(truncateTo="1:4"), obs(segs, truncated=MessageId(1, 5)), NOW).target is None


def test_truncate_to_beyond_the_last_entry_waits_with_a_note() -> None:
    segs = [seg(0), seg(1, state="ACTIVE", last=4)]
    wm = retention_watermark(spec(truncateTo="7:0"), obs(segs), NOW)
    assert wm.target is None and "beyond the last entry 1:4" in wm.note


def test_retention_below_the_current_watermark_is_a_no_op() -> None:
    segs = [seg(0, ended_h_ago=30), seg(1, ended_h_ago=1), seg(2, state="ACTIVE")]
    wm = retention_watermark(spec(retention={"seconds": 86400}), obs(segs, truncated=MessageId(1, 3)), NOW)
    assert wm.target is None


# -- status ----------------------------------------------------------------------
def test_awaiting_gc_and_first_id() -> None:
    segs = [seg(0), seg(1), seg(2, state="ACTIVE", last=4)]
    o = obs(segs, truncated=MessageId(1, 3))
    assert segments_awaiting_gc(o) == 1
    assert first_live_id(o) == MessageId(1, 4)
    assert first_live_id(obs(segs, truncated=MessageId(1, 9))) == MessageId(2, 0)
    assert first_live_id(obs(segs)) == MessageId(0, 0)


def test_log_status_accumulates_reclaimed_counters_and_keeps_gc_time() -> None:
    s = spec()
    segs = [seg(1, size=100), seg(2, state="ACTIVE", last=4, size=30)]
    o = obs(segs, truncated=MessageId(0, 9))
    ready = cond("Ready", True, "Ready", "log orders")
    st1 = log_status(s, old={"reclaimedBytes": 1000, "reclaimedObjects": 3, "reclaimedSegments": 1}, obs=o,
                     ready=ready, gc=GcResult(segments=1, objects=4, bytes=500, dry_run=False), gc_error=None, now=NOW)
    assert (st1["reclaimedBytes"], st1["reclaimedObjects"], st1["reclaimedSegments"]) == (1500, 7, 2)
    assert st1["lastGcTime"] == "2025-01-02T03:04:05Z"
    assert (st1["segments"], st1["bytes"], st1["lastId"], st1["truncatedId"], st1["firstId"]) == (2, 130, "2:4", "0:9", "1:0")
    assert st1["logName"] == "orders" and st1["logId"] == 5 and st1["observedGeneration"] == 4
    gc_cond = [c for c in st1["conditions"] if c["type"] == "GarbageCollected"][0]
    assert gc_cond["reason"] == "Collected" and "500 bytes" in gc_cond["message"]
    # a later pass without GC keeps the counters and the time
    st2 = log_status(s, old=st1, obs=o, ready=ready, gc=None, gc_error=None, now=NOW + H)
    assert st2["reclaimedBytes"] == 1500 and st2["lastGcTime"] == st1["lastGcTime"]
    # a dry run moves the time but not the counters
    st3 = log_status(s, old=st2, obs=o, ready=ready, gc=GcResult(1, 4, 500, True), gc_error=None, now=NOW + 2 * H)
    assert st3["reclaimedBytes"] == 1500 and st3["lastGcTime"] != st2["lastGcTime"]


def test_gc_due() -> None:
    s = spec(gc={"intervalSeconds": 60})
    assert gc_due(s, {}, NOW)
    assert not gc_due(s, {"lastGcTime": "2025-01-02T03:04:00Z"}, NOW)
    assert gc_due(s, {"lastGcTime": "2025-01-02T03:03:05Z"}, NOW)


@pytest.mark.parametrize("text", ["3", "a:b", "1:2:3"])
def test_bad_truncate_to_is_a_value_error(text) -> None:
    with pytest.raises(ValueError, match="spec.truncateTo"):
        retention_watermark(spec(truncateTo=text), obs([seg(0)]), NOW)
