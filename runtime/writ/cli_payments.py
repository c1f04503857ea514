"""`writ approvals ...` and `writ ledger ...`: the operator's side of payments.

    writ approvals list [--all]                      payments held for a person
    writ approvals approve ID [--amount N] [--payee P] [--currency C]
    writ approvals deny ID [--reason TEXT]
    writ ledger seed NAME=AMOUNT:CUR                 create or credit an account
    writ ledger list                                 accounts and balances

Amounts are integers in minor units (cents). ``approve`` with --amount/--payee/--currency
approves only if the held payment is exactly that.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from google.protobuf import json_format

from ._proto import control_pb2

ACCOUNT_RE = re.compile(r"([^=]+)=(\d+):([A-Z]{3})")


def _msg(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(m, preserving_proto_field_name=True,
                                                    always_print_fields_with_no_presence=True)
    return out


def _line(a: control_pb2.ApprovalInfo) -> str:
    left = max(0, a.expires_at - int(time.time()))
    return (f"{a.id}  {a.status:<8} {a.amount} {a.currency} -> {a.payee}  key={a.idempotency_key}"
            f"  tool={a.tool}" + (f"  expires in {left}s" if a.status == "pending" else "")
            + (f"  memo={a.memo!r}" if a.memo else ""))


def parse_account(text: str) -> tuple[str, int, str]:
    """NAME=AMOUNT:CUR -> (name, minor units, currency)."""
    m = ACCOUNT_RE.fullmatch(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=AMOUNT:CUR, e.g. "
                                         "user=100000:EUR (an integer of minor units)")
    return m.group(1), int(m.group(2)), m.group(3)


def cmd_list(args: argparse.Namespace, client: Any, emit: Any) -> int:
    resp = client._call("ListApprovals", control_pb2.ListApprovalsRequest(all=args.all))
    rows = list(resp.approvals)
    emit([_msg(a) for a in rows], "\n".join(_line(a) for a in rows) or "no approvals pending")
    return 0


def cmd_approve(args: argparse.Namespace, client: Any, emit: Any) -> int:
    a = client._call("Approve", control_pb2.ApproveRequest(
        id=args.id, amount=args.amount or 0, payee=args.payee or "",
        currency=args.currency or ""))
    emit(_msg(a), f"approved: {_line(a)}")
    return 0


def cmd_deny(args: argparse.Namespace, client: Any, emit: Any) -> int:
    a = client._call("DenyApproval", control_pb2.DenyApprovalRequest(id=args.id,
                                                                      reason=args.reason))
    emit(_msg(a), f"denied: {_line(a)}")
    return 0


def cmd_seed(args: argparse.Namespace, client: Any, emit: Any) -> int:
    name, amount, currency = args.account
    a = client._call("SeedAccount", control_pb2.SeedAccountRequest(
        name=name, amount=amount, currency=currency))
    emit(_msg(a), f"{a.name}: {a.balance} {a.currency}")
    return 0


def cmd_accounts(args: argparse.Namespace, client: Any, emit: Any) -> int:
    rows = list(client._call("ListAccounts", control_pb2.ListAccountsRequest()).accounts)
    emit([_msg(a) for a in rows],
         "\n".join(f"{a.name}: {a.balance} {a.currency}" for a in rows) or "no accounts")
    return 0


def add_commands(sub: Any, run: Any) -> None:
    """Register the commands; ``run(fn, operator)`` adapts a handler to the CLI."""
    ap = sub.add_parser("approvals", help="payments held for a person's approval"
                        ).add_subparsers(dest="sub", required=True)
    p = ap.add_parser("list", help="pending approvals")
    p.add_argument("--all", action="store_true", help="include decided and expired ones")
    p.set_defaults(fn=run(cmd_list, operator=True))
    p = ap.add_parser("approve", help="approve one held payment")
    p.add_argument("id")
    p.add_argument("--amount", type=int, help="approve only if the amount is this")
    p.add_argument("--payee", help="approve only if the payee is this")
    p.add_argument("--currency", help="approve only if the currency is this")
    p.set_defaults(fn=run(cmd_approve, operator=True))
    p = ap.add_parser("deny", help="deny one held payment")
    p.add_argument("id")
    p.add_argument("--reason", default="")
    p.set_defaults(fn=run(cmd_deny, operator=True))

    led = sub.add_parser("ledger", help="the embedded payment ledger"
                         ).add_subparsers(dest="sub", required=True)
    p = led.add_parser("seed", help="create or credit an account")
    p.add_argument("account", type=parse_account, metavar="NAME=AMOUNT:CUR")
    p.set_defaults(fn=run(cmd_seed, operator=True))
    led.add_parser("list", help="accounts and balances").set_defaults(
        fn=run(cmd_accounts, operator=True))
