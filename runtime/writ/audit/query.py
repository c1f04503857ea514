"""Selecting audit records: by grant, token, tool, invocation, decision, operation, time and
seq; and writing them out as JSON Lines.

A token filter follows the token into the invocations it started: records a tool makes on
its socket carry the id of the bound token (one block longer), and are matched through the
``tool.invoke`` record that names the agent's token and the invocation.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from .._proto import audit_pb2
from .sink import record_line

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
DECISIONS = {"allow": audit_pb2.ALLOW, "deny": audit_pb2.DENY}


def parse_time(text: str, now: datetime | None = None) -> str:
    """An instant as the log spells it (RFC 3339 UTC, microseconds), from an ISO 8601 date
    or time (UTC when no offset is given) or a span back from now: "90s", "15m", "2h", "7d".

    Raises:
        ValueError: none of those forms; the message gives the accepted ones.
    """
    m = _RELATIVE.match(text.strip())
    if m:
        when = (now or datetime.now(UTC)) - timedelta(**{_UNITS[m[2]]: int(m[1])})
    else:
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(f"time {text!r}: use ISO 8601 (2026-11-22, 2026-11-22T10:00Z) "
                             "or a span back from now (90s, 15m, 2h, 7d)") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Filter:
    """Every set field must match. Ids match by prefix (hex ids are long)."""

    grant: str = ""
    token: str = ""
    tool: str = ""
    invocation: str = ""
    decision: str = ""      # "allow" or "deny"
    operation: str = ""     # exact ("file.read") or a family ending in "." ("file.")
    since: str = ""         # RFC 3339, inclusive
    until: str = ""         # RFC 3339, exclusive
    from_seq: int = 0
    to_seq: int = 0         # inclusive; 0: no bound

    def __post_init__(self) -> None:
        if self.decision and self.decision not in DECISIONS:
            raise ValueError(f"decision {self.decision!r}: use allow or deny")

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v}

    def _matches(self, ev: audit_pb2.AuditEvent, invocations: set[str]) -> bool:
        if self.grant and not ev.grant_id.startswith(self.grant):
            return False
        if self.token and not (ev.token_id.startswith(self.token)
                               or (ev.invocation_id and ev.invocation_id in invocations)):
            return False
        if self.tool and ev.tool != self.tool:
            return False
        if self.invocation and not ev.invocation_id.startswith(self.invocation):
            return False
        if self.decision and ev.decision != DECISIONS[self.decision]:
            return False
        if self.operation and not (ev.operation == self.operation or (
                self.operation.endswith(".") and ev.operation.startswith(self.operation))):
            return False
        if self.since and ev.time < self.since:
            return False
        if self.until and ev.time >= self.until:
            return False
        if self.from_seq and ev.seq < self.from_seq:
            return False
        return not (self.to_seq and ev.seq > self.to_seq)

    def select(self, records: Iterable[audit_pb2.AuditEvent]) -> list[audit_pb2.AuditEvent]:
        records = list(records)
        invocations: set[str] = set()
        if self.token:
            invocations = {ev.invocation_id for ev in records if ev.invocation_id and
                           ev.operation == "tool.invoke" and ev.token_id.startswith(self.token)}
        return [ev for ev in records if self._matches(ev, invocations)]


def export_jsonl(records: Iterable[audit_pb2.AuditEvent], out: IO[str]) -> int:
    """Write records exactly as the log stores them (so a contiguous range re-verifies).
    Returns how many."""
    n = 0
    for ev in records:
        out.write(record_line(ev))
        n += 1
    return n


def contiguous(records: list[audit_pb2.AuditEvent]) -> bool:
    return all(b.seq == a.seq + 1 for a, b in itertools.pairwise(records))


__all__ = ["DECISIONS", "Filter", "contiguous", "export_jsonl", "parse_time"]

