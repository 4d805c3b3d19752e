"""WoodpeckerLog: observed segments → status, and the retention watermark.

Retention is expressed as a truncation watermark (a :class:`MessageId`): every
entry at or below it may be deleted, and ``collect_garbage`` then deletes the
segments entirely below it.  The rules, decided here so they are tested
without etcd or S3:

* Only *whole completed* segments are ever truncated by retention: the
  watermark is always the last entry of some completed segment, and never
  reaches past the last completed one (the segment being written is never
  touched, whatever the limits say).
* ``retention.seconds``: a segment is expired when its newest entry is older
  than ``now - seconds``.  Its newest entry is no younger than its completion
  time, or — when the library does not report one — than the creation time of
  the segment after it (a writer only opens segment n+1 after it stopped
  appending to n).  A segment whose end time is unknown is kept.
* ``retention.bytes``: the oldest live segments are truncated while the live
  log (everything above the current watermark, the active segment included)
  holds more than ``bytes``.
* ``truncateTo`` is an explicit watermark; only forward.  One beyond the last
  entry waits (status says so) instead of truncating data not yet written.

The watermark applied is the highest of the three; it is applied only if it
is above the current one.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from logstore.errors import InvalidArgumentError
from logstore.ids import MessageId

from .conditions import Cond, cond, format_time, parse_time, set_conditions, status_changed  # noqa: F401
from .spec import LogSpec

READY, GARBAGE_COLLECTED = "Ready", "GarbageCollected"
_OPEN_STATES = frozenset({"ACTIVE"})


@dataclass(frozen=True)
class SegmentView:
    """What the model needs of one segment (the adapter converts the library's
    segment infos to this)."""

    id: int
    state: str  # ACTIVE | COMPLETED | SEALED | TRUNCATED (names of logstore.proto.SegmentState)
    first_entry_id: int
    last_entry_id: int  # -1 when empty
    size: int
    create_time: datetime | None = None
    end_time: datetime | None = None  # completion time, when known

    @property
    def completed(self) -> bool:
        return self.state.upper() not in _OPEN_STATES

    @property
    def empty(self) -> bool:
        return self.last_entry_id < self.first_entry_id or self.last_entry_id < 0

    @property
    def last_id(self) -> MessageId | None:
        return None if self.empty else MessageId(self.id, self.last_entry_id)

    def at_or_below(self, wm: MessageId | None) -> bool:
        """Entirely at or below ``wm`` (so collectable)."""
        if wm is None or not self.completed:
            return False
        if self.id < wm.segment_id:
            return True
        return self.id == wm.segment_id and (self.empty or self.last_entry_id <= wm.entry_id)


@dataclass(frozen=True)
class LogObservation:
    log_id: int
    segments: tuple[SegmentView, ...]
    truncated_id: MessageId | None
    last_id: MessageId | None


@dataclass(frozen=True)
class Watermark:
    target: MessageId | None   # what to truncate to now (None: nothing to do)
    reason: str                # which rule decided ("retention.seconds", "truncateTo", ...)
    note: str = ""             # e.g. why truncateTo waits


def _sorted(segs: Sequence[SegmentView]) -> list[SegmentView]:
    return sorted(segs, key=lambda s: s.id)


def _end_times(segs: list[SegmentView]) -> list[datetime | None]:
    out: list[datetime | None] = []
    for i, s in enumerate(segs):
        end = s.end_time
        if end is None and i + 1 < len(segs):
            end = segs[i + 1].create_time
        out.append(end)
    return out


def _last_completed_candidates(segs: list[SegmentView]) -> list[SegmentView]:
    """Completed segments up to the first open one: retention never skips over
    an open segment to truncate a later one."""
    out = []
    for s in segs:
        if not s.completed:
            break
        out.append(s)
    return out


def _wm_of(seg_list: list[SegmentView], upto: int) -> MessageId | None:
    """Watermark that truncates ``seg_list[:upto+1]``: the last entry of the
    newest non-empty segment among them."""
    for s in reversed(seg_list[: upto + 1]):
        if s.last_id is not None:
            return s.last_id
    return None


def seconds_watermark(segs: Sequence[SegmentView], seconds: int, now: datetime) -> MessageId | None:
    ordered = _sorted(segs)
    cands = _last_completed_candidates(ordered)
    ends = _end_times(ordered)
    cutoff = now - timedelta(seconds=seconds)
    upto = -1
    for i, s in enumerate(cands):
        end = ends[i]
        if end is None or end > cutoff:
            break
        upto = i
    return _wm_of(cands, upto) if upto >= 0 else None


def bytes_watermark(segs: Sequence[SegmentView], limit: int, current: MessageId | None) -> MessageId | None:
    ordered = [s for s in _sorted(segs) if not s.at_or_below(current)]
    total = sum(s.size for s in ordered)
    cands = _last_completed_candidates(ordered)
    upto = -1
    for i, s in enumerate(cands):
        if total <= limit:
            break
        total -= s.size
        upto = i
    return _wm_of(cands, upto) if upto >= 0 else None


def parse_truncate_to(text: str | None) -> MessageId | None:
    if not text:
        return None
    try:
        return MessageId.parse(text)
    except InvalidArgumentError as e:
        raise ValueError(f"spec.truncateTo: {e}") from None


def retention_watermark(spec: LogSpec, obs: LogObservation, now: datetime) -> Watermark:
    """The watermark to apply now (see the module docstring for the rules)."""
    found: list[tuple[MessageId, str]] = []
    notes: list[str] = []
    if spec.retention.seconds is not None:
        wm = seconds_watermark(obs.segments, spec.retention.seconds, now)
        if wm is not None:
            found.append((wm, "retention.seconds"))
    if spec.retention.bytes is not None:
        wm = bytes_watermark(obs.segments, spec.retention.bytes, obs.truncated_id)
        if wm is not None:
            found.append((wm, "retention.bytes"))
    explicit = parse_truncate_to(spec.truncate_to)
    if explicit is not None:
        if obs.last_id is None or explicit > obs.last_id:
            notes.append(f"truncateTo {explicit} is beyond the last entry "
                         f"{obs.last_id if obs.last_id else '(none)'}; waiting for it to be written")
        else:
            found.append((explicit, "truncateTo"))
    if not found:
        return Watermark(None, "", "; ".join(notes))
    target, reason = max(found, key=lambda p: p[0])
    if obs.truncated_id is not None and target <= obs.truncated_id:
        return Watermark(None, "", "; ".join(notes))
    return Watermark(target, reason, "; ".join(notes))


def segments_awaiting_gc(obs: LogObservation) -> int:
    return sum(1 for s in obs.segments if s.at_or_below(obs.truncated_id))


def first_live_id(obs: LogObservation) -> MessageId | None:
    """The first entry above the watermark (what a reader from EARLIEST sees first)."""
    wm = obs.truncated_id
    for s in _sorted(obs.segments):
        if s.empty:
            continue
        if wm is None or s.id > wm.segment_id:
            return MessageId(s.id, s.first_entry_id)
        if s.id == wm.segment_id and s.last_entry_id > wm.entry_id:
            return MessageId(s.id, max(s.first_entry_id, wm.entry_id + 1))
    return None


@dataclass(frozen=True)
class GcResult:
    segments: int
    objects: int
    bytes: int
    dry_run: bool


def log_status(spec: LogSpec, *, old: Mapping[str, Any] | None, obs: LogObservation | None,
               ready: Cond, gc: GcResult | None, gc_error: str | None, now: datetime,
               note: str = "") -> dict[str, Any]:
    """The status to write after one pass.  Cumulative counters (reclaimed*)
    add this pass's GC result to the previous status."""
    old = dict(old or {})
    status: dict[str, Any] = {"observedGeneration": spec.generation, "logName": spec.log_name}
    conds = [ready]
    if obs is not None:
        status.update({
            "logId": obs.log_id,
            "segments": len(obs.segments),
            "bytes": sum(s.size for s in obs.segments),
            "segmentsAwaitingGc": segments_awaiting_gc(obs),
        })
        first = first_live_id(obs)
        for key, val in (("firstId", first), ("lastId", obs.last_id), ("truncatedId", obs.truncated_id)):
            if val is not None:
                status[key] = str(val)
    for key in ("reclaimedBytes", "reclaimedObjects", "reclaimedSegments", "lastGcTime"):
        if key in old:
            status[key] = old[key]
    if gc is not None:
        status["lastGcTime"] = format_time(now)
        if not gc.dry_run:
            status["reclaimedBytes"] = int(old.get("reclaimedBytes", 0)) + gc.bytes
            status["reclaimedObjects"] = int(old.get("reclaimedObjects", 0)) + gc.objects
            status["reclaimedSegments"] = int(old.get("reclaimedSegments", 0)) + gc.segments
        verb = "would delete" if gc.dry_run else "deleted"
        conds.append(cond(GARBAGE_COLLECTED, True, "DryRun" if gc.dry_run else "Collected",
                          f"{verb} {gc.segments} segments, {gc.objects} objects, {gc.bytes} bytes"))
    elif gc_error:
        conds.append(cond(GARBAGE_COLLECTED, False, "GcFailed", gc_error))
    if note:
        ready_msg = f"{ready.message}; {note}" if ready.message else note
        conds[0] = Cond(ready.type, ready.status, ready.reason, ready_msg)
    status["conditions"] = set_conditions(old.get("conditions"), conds, generation=spec.generation, now=now)
    return status


def gc_due(spec: LogSpec, old_status: Mapping[str, Any] | None, now: datetime) -> bool:
    """GC runs every ``gc.intervalSeconds`` (and right after a truncation,
    which the handler decides)."""
    last = parse_time((old_status or {}).get("lastGcTime"))
    return last is None or (now - last).total_seconds() >= spec.gc_interval_seconds
