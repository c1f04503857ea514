"""An in-memory sink for tests: same chaining as the file sink, nothing durable."""

from __future__ import annotations

import threading

from .._proto import audit_pb2
from ..errors import AuditUnavailable
from .sink import chain_hash, now_rfc3339


class MemorySink:
    def __init__(self) -> None:
        self.events: list[audit_pb2.AuditEvent] = []
        self.fail_with: str | None = None  # set to make record() refuse (tests)
        self._lock = threading.Lock()

    def record(self, event: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        with self._lock:
            if self.fail_with is not None:
                raise AuditUnavailable(self.fail_with)
            event.seq = len(self.events) + 1
            event.time = now_rfc3339()
            event.prev_hash = self.events[-1].hash if self.events else ""
            event.hash = chain_hash(event)
            self.events.append(event)
            return event

    append = record  # nothing is durable here, so nothing waits

    def sync(self) -> None:
        if self.fail_with is not None:
            raise AuditUnavailable(self.fail_with)

    def all_durable(self) -> bool:
        return True

    def close(self) -> None:
        pass
