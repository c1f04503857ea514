"""`writ approvals` / `writ ledger`: argument parsing."""

from __future__ import annotations

import argparse

import pytest
from writ.cli import build_parser
from writ.cli_payments import parse_account


def test_accounts_parse_as_integer_minor_units() -> None:
    assert parse_account("user=100000:EUR") == ("user", 100000, "EUR")
    for bad in ("user=1.5:EUR", "user=-1:EUR", "user=10:eur", "user:10", "=10:EUR"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_account(bad)


def test_commands_are_registered() -> None:
    p = build_parser()
    args = p.parse_args(["approvals", "approve", "apr_1", "--amount", "1500"])
    assert (args.id, args.amount) == ("apr_1", 1500)
    assert p.parse_args(["ledger", "seed", "acme=0:EUR"]).account == ("acme", 0, "EUR")
    assert p.parse_args(["approvals", "list", "--all"]).all
