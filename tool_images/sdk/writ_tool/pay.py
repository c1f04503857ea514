"""Payments through the broker, exactly once per idempotency key.

    from writ_tool import pay

    p = pay.send("acme", 1250, "EUR", memo="invoice 42", idempotency_key="inv-42")
    p.transfer_id, p.replayed

``amount`` is an integer in minor units (cents); floats, strings and booleans are refused
here, before any call. Without an ``idempotency_key`` one is generated, so a retry of the
same ``send`` call is only safe with a key you chose: call again with the same key and the
same request and you get the first result (``replayed`` True), never a second payment.
A payment a rule holds for a person's approval blocks until it is approved, denied or
expires. Raises ``PermissionDenied`` (grant, budget, denied approval), ``InvalidArgument``
or ``BrokerError`` (``code`` FAILED_PRECONDITION: the key was used for another payment or
the ledger refused; DEADLINE_EXCEEDED: no decision in time).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ._broker import InvalidArgument, connection
from ._proto import tool_pb2

MAX_AMOUNT = 10**15


@dataclass(frozen=True)
class Payment:
    payment_id: str
    status: str
    transfer_id: str
    payee: str
    amount: int
    currency: str
    memo: str
    idempotency_key: str
    replayed: bool
    approval_id: str


def _payment(resp: tool_pb2.PayResponse) -> Payment:
    return Payment(resp.payment_id, resp.status, resp.transfer_id, resp.payee, resp.amount,
                   resp.currency, resp.memo, resp.idempotency_key, resp.replayed,
                   resp.approval_id)


def send(payee: str, amount: int, currency: str, memo: str = "",
         idempotency_key: str | None = None) -> Payment:
    """Pay ``amount`` minor units of ``currency`` to ``payee``."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidArgument("INVALID_ARGUMENT",
                              f"amount {amount!r} is not an integer of minor units")
    if not 0 < amount <= MAX_AMOUNT:
        raise InvalidArgument("INVALID_ARGUMENT",
                              f"amount {amount} must be between 1 and {MAX_AMOUNT}")
    key = idempotency_key if idempotency_key is not None else uuid.uuid4().hex
    resp = connection().unary("Pay", tool_pb2.PayRequest(
        payee=payee, amount=amount, currency=currency, memo=memo, idempotency_key=key))
    return _payment(resp)


def get(idempotency_key: str) -> Payment:
    """An earlier payment of this grant by its key. Raises NotFound."""
    return _payment(connection().unary(
        "GetPayment", tool_pb2.GetPaymentRequest(idempotency_key=idempotency_key)))
