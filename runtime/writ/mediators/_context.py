"""What every mediated call carries: the verified authority, the clock reading, the audit
recorder and the audit fields that identify the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .._proto import audit_pb2
from ..budgets import Budgets
from ..core.policy import Authority, Decision
from ..errors import BrokerError

# Durably records one event and returns it with seq and hashes; raises AuditUnavailable.
Recorder = Callable[[audit_pb2.AuditEvent], Awaitable[audit_pb2.AuditEvent]]
# Chains one event without waiting for its write (durable before any later effect: the
# ordering rule in DESIGN.md, "Audit"); raises AuditUnavailable.
Appender = Callable[[audit_pb2.AuditEvent], audit_pb2.AuditEvent]


@dataclass
class CallContext:
    authority: Authority
    now: float
    record: Recorder
    base: audit_pb2.AuditEvent  # actor, method, token, grant, tool, invocation filled in
    budgets: Budgets
    # Set only for operations with no effect outside the broker (stat, list, read): their
    # records are chained before the reply but not waited for.
    append: Appender | None = None
    # Chains a record without waiting for the disk when the caller says its record has no
    # effect of its own (``wait=False``: a refusal, the outcome of an act whose ALLOW was
    # already durable), in contexts whose ALLOW records must wait. None: every record waits.
    chain: Appender | None = None

    def event(self, operation: str, target: str) -> audit_pb2.AuditEvent:
        ev = audit_pb2.AuditEvent()
        ev.CopyFrom(self.base)
        ev.operation, ev.target = operation, target
        return ev

    async def record_decision(self, ev: audit_pb2.AuditEvent, decision: Decision,
                              nbytes: int = 0) -> None:
        """Record, then the caller acts (or raises). Raises AuditUnavailable if the
        record cannot be written (or chained, for a ``append`` context), so nothing
        happens unrecorded."""
        ev.decision = audit_pb2.ALLOW if decision.allowed else audit_pb2.DENY
        ev.reason, ev.rule, ev.bytes = decision.reason, decision.rule, nbytes
        ev.status = "OK" if decision.allowed else "PERMISSION_DENIED"
        await self._durably(ev)

    async def record_error(self, ev: audit_pb2.AuditEvent, err: BrokerError,
                           wait: bool = True) -> None:
        ev.decision, ev.reason, ev.status = audit_pb2.DENY, err.details, err.code
        await self._durably(ev, wait)

    async def record_failure(self, ev: audit_pb2.AuditEvent, err: BrokerError,
                             wait: bool = True) -> None:
        """The act failed after ``ev`` recorded it as allowed: a second record says so."""
        failed = audit_pb2.AuditEvent()
        failed.CopyFrom(ev)
        failed.ClearField("hash")
        failed.bytes = 0
        await self.record_error(failed, err, wait)

    async def record_event(self, ev: audit_pb2.AuditEvent, wait: bool = True) -> None:
        """Record an outcome the caller filled in itself (decision, status, reason)."""
        await self._durably(ev, wait)

    async def _durably(self, ev: audit_pb2.AuditEvent, wait: bool = True) -> None:
        if not wait and self.chain is not None:
            self.chain(ev)  # no effect of its own: the next effect's wait covers it
            return
        if self.append is not None:
            # No effect outside the broker: chained now (so before the reply), durable
            # before any later effect; no thread hop, no wait for the disk.
            self.append(ev)
            return
        # Shielded: gRPC cancels a handler whose caller went away (a tool that died or
        # sent an oversized message), and a cancelled thread-pool job that had not started
        # would silently drop the record. Once begun, a record is always written.
        await asyncio.shield(self.record(ev))
