"""Operator RPCs of payments: approvals and the embedded ledger's accounts. Mixed into
ControlService (broker/control.py); every decision is audited."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from .._proto import control_pb2
from ..errors import FailedPrecondition
from .ledger import ApprovalRow

if TYPE_CHECKING:
    from ..broker.server import Broker


def approval_info(a: ApprovalRow) -> control_pb2.ApprovalInfo:
    return control_pb2.ApprovalInfo(
        id=a.id, status=a.status, payee=a.payee, amount=a.amount, currency=a.currency,
        idempotency_key=a.idem_key, memo=a.memo, tool=a.tool, invocation_id=a.invocation_id,
        grant_id=a.grant_id, expires_at=int(a.expires_at))


class PaymentsControl:
    b: Broker

    async def ListApprovals(self, req: control_pb2.ListApprovalsRequest,
                            context: Any) -> control_pb2.ListApprovalsResponse:
        rows = await asyncio.to_thread(self.b.ledger.approvals, req.all)
        return control_pb2.ListApprovalsResponse(approvals=[approval_info(a) for a in rows])

    async def Approve(self, req: control_pb2.ApproveRequest,
                      context: Any) -> control_pb2.ApprovalInfo:
        ev = self.b.event("operator", "Approve", "pay.approval.approve", req.id)
        async with self.b.audited(ev):
            held = await asyncio.to_thread(self.b.ledger.approval, req.id)
            if held is not None:
                ev.grant_id, ev.tool, ev.invocation_id = (held.grant_id, held.tool,
                                                          held.invocation_id)
                ev.detail = json.dumps({"key": held.idem_key, "amount": held.amount,
                                        "currency": held.currency, "payee": held.payee,
                                        "payment_id": held.payment_id}, sort_keys=True)
                wrong = [f"{n} {want!r} != held {have!r}" for n, want, have in (
                    ("amount", req.amount, held.amount), ("payee", req.payee, held.payee),
                    ("currency", req.currency, held.currency)) if want and want != have]
                if wrong:
                    raise FailedPrecondition(f"approval {held.id} is for a different "
                                             f"payment: {', '.join(wrong)}; nothing approved")
            a = await asyncio.to_thread(self.b.ledger.decide_approval, req.id, True,
                                        time.time())
            ev.reason = (f"approved {a.amount} {a.currency} (minor units) to {a.payee!r}, "
                         f"key {a.idem_key!r}")
            await self.b.allow(ev)
        return approval_info(a)

    async def DenyApproval(self, req: control_pb2.DenyApprovalRequest,
                           context: Any) -> control_pb2.ApprovalInfo:
        ev = self.b.event("operator", "DenyApproval", "pay.approval.deny", req.id)
        async with self.b.audited(ev):
            a = await asyncio.to_thread(self.b.ledger.decide_approval, req.id, False,
                                        time.time(), req.reason[:500])
            ev.grant_id, ev.tool, ev.invocation_id = a.grant_id, a.tool, a.invocation_id
            ev.reason = f"denied {a.amount} {a.currency} to {a.payee!r}, key {a.idem_key!r}"
            await self.b.allow(ev)
        return approval_info(a)

    async def SeedAccount(self, req: control_pb2.SeedAccountRequest,
                          context: Any) -> control_pb2.AccountInfo:
        ev = self.b.event("operator", "SeedAccount", "ledger.seed", req.name[:200])
        async with self.b.audited(ev):
            name, balance, currency = await asyncio.to_thread(
                self.b.ledger.seed, req.name, req.amount, req.currency)
            ev.reason = f"credited {req.amount} {currency}; balance {balance}"
            await self.b.allow(ev)
        return control_pb2.AccountInfo(name=name, balance=balance, currency=currency)

    async def ListAccounts(self, req: control_pb2.ListAccountsRequest,
                           context: Any) -> control_pb2.ListAccountsResponse:
        rows = await asyncio.to_thread(self.b.ledger.accounts)
        return control_pb2.ListAccountsResponse(accounts=[
            control_pb2.AccountInfo(name=n, balance=b, currency=c) for n, b, c in rows])
