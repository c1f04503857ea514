"""Mediated payments: build the operation, decide, reserve, record, act, record.

    Pay:  check input -> key seen under this grant? (same request: the first result, no
          second transfer or charge; different: FAILED_PRECONDITION naming the fields)
          -> decide(Payment) -> ledger.begin (intent + budget reservation, one transaction)
          -> record ALLOW -> [held: wait for a person's approval, bounded] -> ledger.complete
          (the transfer, one transaction) -> record pay.complete.

The idempotency scope is the grant id (the token's root block): every invocation sharing a
grant shares its keys and its budgets. Nothing is ever retried here; a retry is the tool's,
with the same key. See payments/ledger.py for what a crash leaves and how ``recover``
finishes it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from .._proto import audit_pb2, tool_pb2
from ..audit import read_records
from ..budgets import amounts, exhausted_reason
from ..core.policy import Authority, Payment, decide
from ..errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from ..payments.ledger import (
    Ledger,
    PaymentRow,
    PayRequestFields,
    check_amount,
    check_currency,
    check_name,
)
from ._context import CallContext

__all__ = ["APPROVAL_TTL_S", "get_payment", "pay", "recover"]

APPROVAL_TTL_S = 300.0     # a held payment waits at most this long (and the tool's wall time)
APPROVAL_POLL_S = 0.2
MAX_MEMO = 256
KEY_RE = re.compile(r"[\x21-\x7e]{1,128}")


class ApprovalTimeout(BrokerError):
    code = "DEADLINE_EXCEEDED"


def _fields(req: tool_pb2.PayRequest) -> PayRequestFields:
    check_name(req.payee, "payee")
    check_amount(req.amount)
    check_currency(req.currency)
    if len(req.memo) > MAX_MEMO:
        raise InvalidArgument(f"memo is {len(req.memo)} characters; at most {MAX_MEMO}")
    check_key(req.idempotency_key)
    return PayRequestFields(req.payee, req.amount, req.currency, req.memo)


def check_key(key: str) -> str:
    if not KEY_RE.fullmatch(key):
        raise InvalidArgument("idempotency_key is required: 1-128 printable ASCII characters "
                              "without spaces")
    return key


def _detail(**fields: object) -> str:
    return json.dumps(fields, sort_keys=True)


def _response(p: PaymentRow, replayed: bool) -> tool_pb2.PayResponse:
    return tool_pb2.PayResponse(
        payment_id=p.id, status=p.status, transfer_id=p.transfer_id or "", payee=p.payee,
        amount=p.amount, currency=p.currency, memo=p.memo, idempotency_key=p.idem_key,
        replayed=replayed, approval_id=p.approval_id or "")


async def pay(ctx: CallContext, ledger: Ledger, req: tool_pb2.PayRequest, *, payer: str,
              max_wait_s: float,
              recheck: Callable[[], Authority] | None = None) -> tool_pb2.PayResponse:
    """``recheck`` verifies the presented token again (revocation) and returns its
    authority; it runs after an approval wait, before any money moves."""
    ev = ctx.event("pay", req.payee[:200])
    ev.detail = _detail(key=req.idempotency_key[:200], amount=req.amount,
                        currency=req.currency[:16])
    try:
        fields = _fields(req)
    except BrokerError as err:
        await ctx.record_error(ev, err)
        raise
    scope, key = ctx.base.grant_id, req.idempotency_key
    deadline = time.monotonic() + max_wait_s
    while True:
        seen = await asyncio.to_thread(ledger.get, scope, key)
        if seen is not None and (seen.status != "aborted"
                                 or seen.request_hash != fields.digest()):
            return await _replay(ctx, ev, ledger, seen, fields, deadline)
        op = Payment(fields.payee, fields.amount, fields.currency)
        decision = decide(ctx.authority, op, ctx.now)
        if not decision.allowed:
            await ctx.record_decision(ev, decision)
            decision.raise_if_denied()
        items = amounts(decision.charges, spend=fields.amount, payments=1)
        began = await asyncio.to_thread(
            ledger.begin, scope, key, fields, payer, items, held=decision.needs_approval,
            tool=ctx.base.tool, invocation_id=ctx.base.invocation_id,
            grant_id=ctx.base.grant_id)
        if began.over is not None:
            over = PermissionDenied(exhausted_reason(began.over, began.used))
            await ctx.record_error(ev, over)
            raise over
        if began.new:
            break
        # Another call with this key won the race: answer as its replay.
    p = began.row
    ev.detail = _detail(key=key, amount=p.amount, currency=p.currency, payment_id=p.id)
    try:
        await ctx.record_decision(ev, decision)
    except BaseException:
        await asyncio.shield(asyncio.to_thread(ledger.abort, p.id, "audit unavailable"))
        raise
    try:
        approval_id = None
        if p.status == "held":
            approval_id = await _await_approval(ctx, ev, ledger, p, deadline)
            # The wait may have outlived the grant: check the token and decide again.
            authority = recheck() if recheck is not None else ctx.authority
            again = decide(authority, op, time.time())
            again.raise_if_denied()
        done = await asyncio.shield(asyncio.to_thread(ledger.complete, p.id, approval_id))
    except BaseException as exc:
        # Denied, expired, timed out or cancelled (the tool died): nothing moved.
        reason = exc.details if isinstance(exc, BrokerError) else "the call ended (cancelled)"
        after = await asyncio.shield(asyncio.to_thread(ledger.abort, p.id, reason))
        if after is None:  # cancelled while the transfer committed: record that instead
            after = await asyncio.to_thread(ledger.by_id, p.id)
        if after is not None and not after.audited:
            await _record_outcome(ctx.record, ev, ledger, after)
        raise
    await _record_outcome(ctx.record, ev, ledger, done)
    if done.status != "completed":
        raise FailedPrecondition(done.error or f"payment {done.id} {done.status}")
    return _response(done, False)


async def _replay(ctx: CallContext, ev: audit_pb2.AuditEvent, ledger: Ledger,
                  seen: PaymentRow, fields: PayRequestFields,
                  deadline: float) -> tool_pb2.PayResponse:
    ev.operation = "pay.replay"
    mismatch = seen.mismatch(fields)
    if mismatch:
        wrong = FailedPrecondition(f"idempotency key {seen.idem_key!r} was used for a "
                                 f"different payment ({seen.id}): {mismatch}")
        await ctx.record_error(ev, wrong)
        raise wrong
    # The first call may still be in flight (or held for approval): wait for its outcome.
    while seen.status in ("reserved", "held") and time.monotonic() < deadline:
        await asyncio.sleep(APPROVAL_POLL_S)
        now_seen = await asyncio.to_thread(ledger.get, seen.scope, seen.idem_key)
        seen = now_seen or seen
    ev.detail = _detail(key=seen.idem_key, amount=seen.amount, currency=seen.currency,
                        payment_id=seen.id, status=seen.status)
    if seen.status == "completed":
        ev.decision, ev.status = audit_pb2.ALLOW, "OK"
        ev.reason = f"replay of payment {seen.id}: no second transfer or charge"
        await ctx._durably(ev)
        return _response(seen, True)
    err: BrokerError
    if seen.status in ("reserved", "held"):
        err = ApprovalTimeout(f"payment {seen.id} with this key is still {seen.status}")
    else:
        err = FailedPrecondition(f"payment {seen.id} with this key was not made: "
                                 f"{seen.error or seen.status}")
    await ctx.record_error(ev, err)
    raise err


async def _await_approval(ctx: CallContext, ev: audit_pb2.AuditEvent, ledger: Ledger,
                          p: PaymentRow, deadline: float) -> str:
    wait = max(0.0, min(APPROVAL_TTL_S, deadline - time.monotonic()))
    held = await asyncio.to_thread(ledger.hold, p, time.time() + wait)
    req_ev = audit_pb2.AuditEvent()
    req_ev.CopyFrom(ev)
    req_ev.ClearField("hash")
    req_ev.operation, req_ev.decision, req_ev.status = ("pay.approval.request",
                                                        audit_pb2.ALLOW, "OK")
    req_ev.reason = f"held for a person's approval as {held.id}; waits up to {wait:.0f}s"
    req_ev.detail = _detail(key=p.idem_key, amount=p.amount, currency=p.currency,
                            payment_id=p.id, approval_id=held.id)
    await ctx._durably(req_ev)
    while True:
        a = await asyncio.to_thread(ledger.approval, held.id)
        assert a is not None
        if a.status == "approved":
            return a.id
        if a.status == "denied":
            raise PermissionDenied(f"approval {a.id} was denied"
                                   + (f": {a.reason}" if a.reason else ""))
        if a.status == "expired":
            raise PermissionDenied(f"approval {a.id} expired")
        if time.time() >= a.expires_at:
            await asyncio.to_thread(ledger.expire_approval, a.id, time.time(),
                                    "no decision in time")
            raise ApprovalTimeout(f"approval {a.id} expired without a decision")
        await asyncio.sleep(APPROVAL_POLL_S)


async def _record_outcome(record: object, ev: audit_pb2.AuditEvent, ledger: Ledger,
                          p: PaymentRow, recovered: bool = False) -> None:
    """The completion (or abort) record of ``p``, then mark it recorded."""
    out = audit_pb2.AuditEvent()
    out.CopyFrom(ev)
    out.ClearField("hash")
    out.ClearField("seq")
    out.bytes = 0
    completed = p.status == "completed"
    out.operation = "pay.complete" if completed else "pay.abort"
    out.target = p.payee
    out.decision = audit_pb2.ALLOW if completed else audit_pb2.DENY
    out.status = "OK" if completed else "FAILED_PRECONDITION"
    out.reason = (f"transfer {p.transfer_id}: {p.amount} {p.currency} {p.payer} -> {p.payee}"
                  if completed else f"nothing moved: {p.error}")
    if recovered:
        out.reason += " (recorded at broker start)"
    out.detail = _detail(key=p.idem_key, amount=p.amount, currency=p.currency,
                         payment_id=p.id, transfer_id=p.transfer_id or "",
                         scope=p.scope)
    await asyncio.shield(record(out))  # type: ignore[operator]
    await asyncio.to_thread(ledger.mark_audited, p.id)


async def get_payment(ctx: CallContext, ledger: Ledger,
                      req: tool_pb2.GetPaymentRequest) -> tool_pb2.PayResponse:
    ev = ctx.event("pay.get", "")
    try:
        check_key(req.idempotency_key)
    except BrokerError as err:
        await ctx.record_error(ev, err)
        raise
    p = await asyncio.to_thread(ledger.get, ctx.base.grant_id, req.idempotency_key)
    if p is None:
        missing = NotFound(f"no payment with key {req.idempotency_key!r} under this grant")
        await ctx.record_error(ev, missing)
        raise missing
    ev.target = p.payee
    ev.decision, ev.status, ev.reason = audit_pb2.ALLOW, "OK", f"payment {p.id} is {p.status}"
    await ctx._durably(ev)
    return _response(p, True)


async def recover(record: object, ledger: Ledger, audit_path: Path | None = None) -> int:
    """At broker start: finish what a crash left (see Ledger.recover) and record each
    outcome not yet in the audit log at ``audit_path`` (a crash between the outcome record
    and ``mark_audited`` leaves one there already). Returns how many were recorded."""
    rows = await asyncio.to_thread(ledger.recover)
    if not rows:
        return 0
    logged = await asyncio.to_thread(_outcomes_logged, audit_path, {p.id for p in rows})
    count = 0
    for p in rows:
        if p.id in logged:
            await asyncio.to_thread(ledger.mark_audited, p.id)
            continue
        ev = audit_pb2.AuditEvent(actor="broker", method="", tool=p.tool,
                                  invocation_id=p.invocation_id, grant_id=p.grant_id)
        await _record_outcome(record, ev, ledger, p, recovered=True)
        count += 1
    return count


def _outcomes_logged(path: Path | None, ids: set[str]) -> set[str]:
    """Which of the payment ``ids`` already have a pay.complete/pay.abort record."""
    found: set[str] = set()
    if path is None or not path.exists():
        return found
    for ev in read_records(path, live=True):
        if ev.operation in ("pay.complete", "pay.abort") and ev.detail:
            try:
                pid = json.loads(ev.detail).get("payment_id")
            except ValueError:
                continue
            if pid in ids:
                found.add(pid)
    return found
