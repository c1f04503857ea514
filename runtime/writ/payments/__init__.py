"""Mediated payments: the embedded ledger (the default provider) and the provider
protocol. Amounts are integers in minor units with an ISO 4217 currency; no floats."""

from .ledger import MAX_AMOUNT, Ledger, PaymentRow
from .provider import PaymentProvider

__all__ = ["MAX_AMOUNT", "Ledger", "PaymentProvider", "PaymentRow"]
