"""Conditions in the metav1.Condition shape, merged by API conventions.

Why a helper at all: ``lastTransitionTime`` must change only when ``status``
changes (otherwise every reconcile looks like a transition and alerts flap),
and a status write that changes nothing should not happen (every write is a
watch event for every client).  ``set_condition`` keeps the time, and
``same_conditions`` lets callers skip no-op writes.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
_MAX_MESSAGE = 32768


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with second precision, as metav1.Time serialises."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str | None) -> datetime | None:
    if not s:
        return None
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class Cond:
    """A desired condition, before its transition time is decided."""

    type: str
    status: str
    reason: str
    message: str = ""

    def __post_init__(self) -> None:
        if self.status not in (TRUE, FALSE, UNKNOWN):
            raise ValueError(f"condition {self.type}: status must be True/False/Unknown, got {self.status!r}")
        if not self.reason or not self.reason[0].isalpha():
            raise ValueError(f"condition {self.type}: reason must be a CamelCase word, got {self.reason!r}")

    @property
    def ok(self) -> bool:
        return self.status == TRUE


def cond(type_: str, ok: bool, reason: str, message: str = "") -> Cond:
    return Cond(type_, TRUE if ok else FALSE, reason, message)


def set_condition(conditions: Sequence[Mapping[str, Any]] | None, new: Cond, *,
                  generation: int, now: datetime) -> list[dict[str, Any]]:
    """Return ``conditions`` with ``new`` merged in (list-map keyed by type).

    The transition time is kept when the status is unchanged, even if reason or
    message change; other conditions and their order are kept as they are.
    """
    out: list[dict[str, Any]] = []
    found = False
    for c in conditions or ():
        if c.get("type") != new.type:
            out.append(dict(c))
            continue
        found = True
        keep = c.get("status") == new.status and c.get("lastTransitionTime")
        out.append(_render(new, generation, c["lastTransitionTime"] if keep else format_time(now)))
    if not found:
        out.append(_render(new, generation, format_time(now)))
    return out


def set_conditions(conditions: Sequence[Mapping[str, Any]] | None, new: Iterable[Cond], *,
                   generation: int, now: datetime) -> list[dict[str, Any]]:
    out = [dict(c) for c in conditions or ()]
    for c in new:
        out = set_condition(out, c, generation=generation, now=now)
    return out


def remove_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> list[dict[str, Any]]:
    return [dict(c) for c in conditions or () if c.get("type") != type_]


def get_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for c in conditions or ():
        if c.get("type") == type_:
            return dict(c)
    return None


def is_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    c = get_condition(conditions, type_)
    return bool(c and c.get("status") == TRUE)


def same_conditions(a: Sequence[Mapping[str, Any]] | None, b: Sequence[Mapping[str, Any]] | None) -> bool:
    """Equal as list-maps (order ignored); used to skip no-op status writes."""
    key = lambda cs: sorted((tuple(sorted(c.items())) for c in cs or ()), key=repr)
    return key(a) == key(b)


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing ``new`` would change anything (conditions compared as
    list-maps), so timers do not write identical status every tick."""
    old = dict(old or {})
    for key, val in new.items():
        if key == "conditions":
            if not same_conditions(old.get("conditions"), val):
                return True
        elif old.get(key) != val:
            return True
    return False


def summarize(parts: Sequence[Cond], *, ready_type: str = "Ready", ready_reason: str = "Ready",
              ready_message: str = "") -> Cond:
    """The summary condition: True when every part is True, else False with
    the first failing part's reason and message (so the printer column shows
    *why* a resource is not ready)."""
    for p in parts:
        if not p.ok:
            return Cond(ready_type, FALSE if p.status == FALSE else UNKNOWN, p.reason,
                        f"{p.type}: {p.message}" if p.message else p.type)
    return Cond(ready_type, TRUE, ready_reason, ready_message)


def _render(c: Cond, generation: int, transition: str) -> dict[str, Any]:
    msg = c.message if len(c.message) <= _MAX_MESSAGE else c.message[: _MAX_MESSAGE - 1] + "…"
    return {
        "type": c.type,
        "status": c.status,
        "reason": c.reason,
        "message": msg,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }
