"""What a payment provider must offer the broker for exactly-once money movement.

The broker keeps the intent (idempotency key, request hash, budget reservation) in its own
SQLite state; a provider moves the money. To be recoverable after a broker crash, a
provider must be idempotent on the broker's payment id and able to say whether a payment
id was ever executed. The embedded ledger (ledger.py) is the default and only provider:
its transfer and the intent's completion commit in one SQLite transaction.
"""

from __future__ import annotations

from typing import Protocol


class PaymentProvider(Protocol):
    def transfer(self, payment_id: str) -> str:
        """Move the money of the reserved payment ``payment_id`` once; return the transfer
        id (the same id when called again). Raises FailedPrecondition when it cannot
        (unknown account, currency mismatch, insufficient funds); nothing moved then."""
        ...

    def find_transfer(self, payment_id: str) -> str | None:
        """The transfer id of ``payment_id`` if the money moved, else None."""
        ...
