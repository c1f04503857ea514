"""The payments mediator over a real ledger and decision function, with an in-memory audit
recorder: replays, mismatches, held payments denied, timed out or cancelled (the tool died),
and a revocation noticed after an approval."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from writ._proto import audit_pb2, tool_pb2
from writ._proto import capabilities_pb2 as caps
from writ.budgets import Budgets
from writ.core.policy import Authority, Layer
from writ.errors import BrokerError, FailedPrecondition, PermissionDenied
from writ.mediators import payments
from writ.mediators._context import CallContext
from writ.payments.ledger import Ledger

RULE = caps.PayRule(id="bills", payees=["acme"], currency="EUR", max_per_payment=5_000,
                    budget=6_000, approval_above=3_000)


class Fixture:
    def __init__(self, tmp: Path) -> None:
        self.ledger = Ledger(tmp / "state.db")
        self.ledger.seed("user", 100_000, "EUR")
        self.ledger.seed("acme", 0, "EUR")
        self.budgets = Budgets(tmp / "state.db")
        self.events: list[audit_pb2.AuditEvent] = []
        self.authority = Authority((Layer("grant", (), (), (), (RULE,), "blk", "blk"),), 0,
                                   int(time.time()) + 3600)

    async def record(self, ev: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        self.events.append(ev)
        return ev

    def ctx(self) -> CallContext:
        base = audit_pb2.AuditEvent(actor="tool:t", tool="t", invocation_id="i1",
                                    grant_id="g1")
        return CallContext(self.authority, time.time(), self.record, base, self.budgets)

    async def pay(self, amount: int, key: str, wait: float = 5.0, **kw: object
                  ) -> tool_pb2.PayResponse:
        req = tool_pb2.PayRequest(payee="acme", amount=amount, currency="EUR", memo="m",
                                  idempotency_key=key)
        return await payments.pay(self.ctx(), self.ledger, req, payer="user",
                                  max_wait_s=wait, **kw)  # type: ignore[arg-type]

    def spent(self) -> int:
        return self.budgets.used(["blk/bills/spend"])["blk/bills/spend"]

    def ops(self) -> list[tuple[str, str]]:
        return [(e.operation, e.status) for e in self.events]


@pytest.fixture
def fx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fixture:
    monkeypatch.setattr(payments, "APPROVAL_POLL_S", 0.01)
    return Fixture(tmp_path)


def test_pay_replay_and_mismatch(fx: Fixture) -> None:
    first = asyncio.run(fx.pay(1_000, "k"))
    again = asyncio.run(fx.pay(1_000, "k"))
    assert first.status == "completed" and again.replayed
    assert again.transfer_id == first.transfer_id
    with pytest.raises(FailedPrecondition, match="amount 1000 != 1001"):
        asyncio.run(fx.pay(1_001, "k"))
    assert fx.spent() == 1_000 and fx.ledger.balance("acme") == 1_000
    assert fx.ops() == [("pay", "OK"), ("pay.complete", "OK"), ("pay.replay", "OK"),
                        ("pay.replay", "FAILED_PRECONDITION")]


async def _decide_when_held(fx: Fixture, approve: bool) -> None:
    while not fx.ledger.approvals():
        await asyncio.sleep(0.01)
    fx.ledger.decide_approval(fx.ledger.approvals()[0].id, approve, time.time())


def test_held_then_denied_releases_the_budget(fx: Fixture) -> None:
    async def go() -> None:
        decider = asyncio.ensure_future(_decide_when_held(fx, False))
        with pytest.raises(PermissionDenied, match="denied"):
            await fx.pay(4_000, "big")
        await decider

    asyncio.run(go())
    assert fx.spent() == 0 and fx.ledger.balance("acme") == 0
    assert ("pay.approval.request", "OK") in fx.ops() and fx.ops()[-1][0] == "pay.abort"


def test_held_until_the_wait_ends_then_nothing_moves(fx: Fixture) -> None:
    with pytest.raises(BrokerError) as err:
        asyncio.run(fx.pay(4_000, "slow", wait=0.2))
    assert err.value.code == "DEADLINE_EXCEEDED"
    assert fx.spent() == 0 and fx.ledger.approvals(include_decided=True)[0].status == "expired"


def test_a_cancelled_call_aborts_and_records(fx: Fixture) -> None:
    async def go() -> None:
        task = asyncio.ensure_future(fx.pay(4_000, "dies"))
        while not fx.ledger.approvals():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert fx.spent() == 0 and fx.ledger.balance("acme") == 0
    last = fx.events[-1]
    assert last.operation == "pay.abort" and "cancelled" in last.reason
    assert json.loads(last.detail)["key"] == "dies"


def test_revocation_during_the_wait_is_noticed(fx: Fixture) -> None:
    def revoked() -> Authority:
        raise PermissionDenied("token revoked (block blk)")

    async def go() -> None:
        decider = asyncio.ensure_future(_decide_when_held(fx, True))
        with pytest.raises(PermissionDenied, match="revoked"):
            await fx.pay(4_000, "rev", recheck=revoked)
        await decider

    asyncio.run(go())
    assert fx.spent() == 0 and fx.ledger.balance("acme") == 0


def test_budget_is_shared_and_exhausted_precisely(fx: Fixture) -> None:
    asyncio.run(fx.pay(2_500, "a"))
    asyncio.run(fx.pay(2_500, "b"))
    with pytest.raises(PermissionDenied, match="budget exhausted"):
        asyncio.run(fx.pay(1_001, "c"))
    assert fx.spent() == 5_000 and fx.ledger.balance("acme") == 5_000
