"""Message ids: (segment id, entry id), totally ordered.

Entry ids restart at 0 in every segment, so the pair is the position in the log.
``EARLIEST`` and ``LATEST`` are the two symbolic start positions of a reader,
encoded as Woodpecker does: (0, 0) and (MaxInt64, MaxInt64).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidArgumentError

MAX_INT64 = (1 << 63) - 1


@dataclass(frozen=True, order=True, slots=True)
class MessageId:
    segment_id: int
    entry_id: int

    def __post_init__(self) -> None:
        for name in ("segment_id", "entry_id"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > MAX_INT64:
                raise InvalidArgumentError(f"MessageId.{name} must be an int in [0, 2^63), got {v!r}")

    def __str__(self) -> str:
        return f"{self.segment_id}:{self.entry_id}"

    @classmethod
    def parse(cls, text: str) -> "MessageId":
        """Parse ``"SEG:ENTRY"`` (as printed by ``str()``)."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"MessageId.parse wants a str like '3:17', got {type(text).__name__}")
        parts = text.strip().split(":")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise InvalidArgumentError(f"not a message id (want 'SEG:ENTRY', e.g. '3:17'): {text!r}")
        return cls(int(parts[0]), int(parts[1]))


EARLIEST = MessageId(0, 0)
LATEST = MessageId(MAX_INT64, MAX_INT64)
