"""Append-only JSON Lines audit file, fsynced per record, hash-chained."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import json_format

from .._proto import audit_pb2
from ..errors import AuditUnavailable
from .sink import canonical, chain_hash, now_rfc3339


def read_records(path: Path) -> Iterator[audit_pb2.AuditEvent]:
    """Records in file order. Raises ValueError naming the line of a record that does not
    parse."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                # ParseDict raises TypeError, not ParseError, on a bare JSON value.
                if not isinstance(data, dict):
                    # ValueError, not TypeError: reported below as an unparseable record.
                    raise ValueError(  # noqa: TRY004
                        f"expected a JSON object, got {type(data).__name__}")
                yield json_format.ParseDict(data, audit_pb2.AuditEvent())
            except (ValueError, json_format.ParseError) as exc:
                raise ValueError(f"{path}:{lineno}: unparseable audit record: {exc}") from None


def verify_chain(path: Path) -> tuple[int, str | None]:
    """Walk the chain. Returns (records checked, first problem or None)."""
    prev, count = "", 0
    try:
        for event in read_records(path):
            count += 1
            if event.seq != count:
                return count, f"record {count}: seq is {event.seq}, expected {count}"
            if event.prev_hash != prev:
                return count, f"record {count} (seq {event.seq}): prev_hash does not match"
            if chain_hash(event) != event.hash:
                return count, f"record {count} (seq {event.seq}): hash does not match content"
            prev = event.hash
    except ValueError as exc:
        return count + 1, str(exc)
    return count, None


class FileSink:
    """Record, then act: ``record`` returns only once the line is on disk (fdatasync)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._seq, self._head = 0, ""
        if path.exists():
            _count, problem = verify_chain(path)
            if problem is not None:
                # Appending to a broken chain would bury the evidence; refuse to start.
                raise AuditUnavailable(f"{path} fails verification: {problem}")
            for event in read_records(path):
                self._seq, self._head = event.seq, event.hash
        # O_APPEND: every write lands at the end, even if another process appended.
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._lock = threading.Lock()

    def record(self, event: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        with self._lock:
            event.seq = self._seq + 1
            event.time = now_rfc3339()
            event.prev_hash = self._head
            event.hash = chain_hash(event)
            line = json.dumps(canonical(event), sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False) + "\n"
            try:
                os.write(self._fd, line.encode())
                os.fdatasync(self._fd)
            except OSError as exc:
                raise AuditUnavailable(str(exc)) from exc
            self._seq, self._head = event.seq, event.hash
            return event

    def close(self) -> None:
        os.close(self._fd)
