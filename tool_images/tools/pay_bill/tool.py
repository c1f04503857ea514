"""pay-bill: pay one bill from the user's account, exactly once per bill id.

Input: {"payee": "acme-power", "amount": 4200, "currency": "EUR", "bill_id": "2026-11"}
(amount in minor units). The bill id is the idempotency key: paying the same bill again
returns the first payment instead of paying twice.
"""

from writ_tool import pay


def main(args: dict) -> dict:
    p = pay.send(args["payee"], args["amount"], args.get("currency", "EUR"),
                 memo=f"bill {args['bill_id']}", idempotency_key=f"bill-{args['bill_id']}")
    return {"payment_id": p.payment_id, "transfer_id": p.transfer_id, "paid": p.amount,
            "currency": p.currency, "payee": p.payee, "replayed": p.replayed,
            "approval_id": p.approval_id}
