"""The embedded ledger and the payment intents, in the broker's SQLite state.

Exactly-once rests on three SQLite transactions, each atomic, in this order:

1. ``begin``: the intent row (scope = grant id + idempotency key, request hash, status
   ``reserved`` or ``held``) and the budget reservation (the ``counters`` table that
   budgets.py keeps) commit together. A second ``begin`` with the same scope and key finds
   the row and makes nothing.
2. ``complete``: the balances move, the transfer row is written and the intent becomes
   ``completed``, together. Or, if the money cannot move, the reservation is released and
   the intent becomes ``aborted``, together.
3. ``mark_audited``: the completion record is in the audit log.

``recover`` (at broker start) finds what a crash left between these steps: an intent still
``reserved``/``held`` never moved money (step 2 is one transaction), so it is aborted and
its reservation released; a ``completed`` intent without its completion record gets one.
A retry with the same key after an abort starts the payment again.

Amounts are Python ints in minor units; SQLite INTEGER is 64-bit and MAX_AMOUNT keeps
every sum far below its limit.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..budgets import Reservation
from ..errors import FailedPrecondition, InvalidArgument, NotFound

MAX_AMOUNT = 10**15          # minor units; larger amounts are refused as input
MAX_BALANCE = 10**17         # an account never holds more (sums stay inside int64)
CURRENCY_RE = re.compile(r"[A-Z]{3}")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
  key TEXT PRIMARY KEY,
  used INTEGER NOT NULL CHECK (used >= 0)
);
CREATE TABLE IF NOT EXISTS ledger_accounts (
  name TEXT PRIMARY KEY, currency TEXT NOT NULL,
  balance INTEGER NOT NULL CHECK (balance >= 0));
CREATE TABLE IF NOT EXISTS ledger_transfers (
  id TEXT PRIMARY KEY, payment_id TEXT NOT NULL UNIQUE, payer TEXT NOT NULL,
  payee TEXT NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0), currency TEXT NOT NULL,
  memo TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS payments (
  id TEXT PRIMARY KEY, scope TEXT NOT NULL, idem_key TEXT NOT NULL,
  request_hash TEXT NOT NULL, payer TEXT NOT NULL, payee TEXT NOT NULL,
  amount INTEGER NOT NULL, currency TEXT NOT NULL, memo TEXT NOT NULL,
  status TEXT NOT NULL, reservations TEXT NOT NULL, transfer_id TEXT, approval_id TEXT,
  error TEXT, audited INTEGER NOT NULL DEFAULT 0, tool TEXT NOT NULL,
  invocation_id TEXT NOT NULL, grant_id TEXT NOT NULL, created_at REAL NOT NULL,
  UNIQUE (scope, idem_key));
CREATE TABLE IF NOT EXISTS payment_approvals (
  id TEXT PRIMARY KEY, payment_id TEXT NOT NULL, status TEXT NOT NULL,
  payee TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL,
  idem_key TEXT NOT NULL, memo TEXT NOT NULL, tool TEXT NOT NULL,
  invocation_id TEXT NOT NULL, grant_id TEXT NOT NULL, expires_at REAL NOT NULL,
  decided_at REAL, reason TEXT NOT NULL DEFAULT '');
"""

OPEN = ("reserved", "held")  # budget reserved, no money moved yet


@dataclass(frozen=True)
class PayRequestFields:
    payee: str
    amount: int
    currency: str
    memo: str

    def digest(self) -> str:
        body = json.dumps([self.payee, self.amount, self.currency, self.memo])
        return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class PaymentRow:
    id: str
    scope: str
    idem_key: str
    request_hash: str
    payer: str
    payee: str
    amount: int
    currency: str
    memo: str
    status: str
    reservations: str
    transfer_id: str | None
    approval_id: str | None
    error: str | None
    audited: int
    tool: str
    invocation_id: str
    grant_id: str
    created_at: float

    def mismatch(self, req: PayRequestFields) -> str:
        """Which fields of ``req`` differ from this payment's ("" when none)."""
        diffs = [f"{name} {mine!r} != {theirs!r}" for name, mine, theirs in (
            ("payee", self.payee, req.payee), ("amount", self.amount, req.amount),
            ("currency", self.currency, req.currency), ("memo", self.memo, req.memo))
            if mine != theirs]
        return ", ".join(diffs)


@dataclass(frozen=True)
class ApprovalRow:
    id: str
    payment_id: str
    status: str
    payee: str
    amount: int
    currency: str
    idem_key: str
    memo: str
    tool: str
    invocation_id: str
    grant_id: str
    expires_at: float
    decided_at: float | None
    reason: str


@dataclass(frozen=True)
class Began:
    row: PaymentRow
    new: bool                            # False: an earlier call owns this key
    over: Reservation | None = None      # set (and nothing written) when a cap would pass
    used: int = 0


def check_amount(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidArgument(f"amount {amount!r} is not an integer of minor units")
    if amount <= 0:
        raise InvalidArgument(f"amount {amount} must be positive (minor units)")
    if amount > MAX_AMOUNT:
        raise InvalidArgument(f"amount {amount} exceeds the maximum of {MAX_AMOUNT}")
    return amount


def check_currency(currency: str) -> str:
    if not CURRENCY_RE.fullmatch(currency):
        raise InvalidArgument(f"currency {currency!r} is not an ISO 4217 code "
                              "(three upper-case letters)")
    return currency


def check_name(name: str, what: str = "account") -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidArgument(f"{what} {name!r} must be 1-128 characters of letters, digits "
                              "and ._:@- (starting with a letter or digit)")
    return name


class Ledger:
    """Accounts, transfers, payment intents and approvals; thread-safe."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> sqlite3.Cursor:
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        return cur

    # -- accounts ------------------------------------------------------------------------
    def seed(self, name: str, amount: int, currency: str) -> tuple[str, int, str]:
        """Create ``name`` with ``amount`` or credit it; the currency must match."""
        check_name(name)
        check_currency(currency)
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0 \
                or amount > MAX_AMOUNT:
            raise InvalidArgument(f"seed amount {amount!r} must be an integer 0..{MAX_AMOUNT}")
        with self._lock:
            cur = self._tx()
            try:
                row = cur.execute("SELECT currency, balance FROM ledger_accounts WHERE name=?",
                                  (name,)).fetchone()
                if row is None:
                    cur.execute("INSERT INTO ledger_accounts VALUES (?, ?, ?)",
                                (name, currency, amount))
                    balance = amount
                else:
                    if row[0] != currency:
                        raise FailedPrecondition(f"account {name!r} holds {row[0]}, "
                                                 f"not {currency}")
                    balance = row[1] + amount
                    if balance > MAX_BALANCE:
                        raise InvalidArgument(f"account {name!r} would exceed {MAX_BALANCE}")
                    cur.execute("UPDATE ledger_accounts SET balance=? WHERE name=?",
                                (balance, name))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return name, balance, currency

    def open_account(self, name: str, amount: int, currency: str) -> None:
        """Create ``name`` with ``amount`` unless it exists (then nothing changes)."""
        check_name(name)
        check_currency(currency)
        with self._lock:
            exists = self._db.execute("SELECT 1 FROM ledger_accounts WHERE name=?",
                                      (name,)).fetchone()
        if not exists:
            self.seed(name, amount, currency)

    def accounts(self) -> list[tuple[str, int, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, balance, currency FROM ledger_accounts ORDER BY name").fetchall()
        return [(r[0], int(r[1]), r[2]) for r in rows]

    def balance(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT balance FROM ledger_accounts WHERE name=?",
                                   (name,)).fetchone()
        if row is None:
            raise NotFound(f"no account {name!r}")
        return int(row[0])

    def transfers(self) -> list[tuple[str, str, str, str, int, str]]:
        """(id, payment_id, payer, payee, amount, currency) in order of creation."""
        with self._lock:
            return [tuple(r) for r in self._db.execute(
                "SELECT id, payment_id, payer, payee, amount, currency FROM ledger_transfers "
                "ORDER BY created_at, id")]

    # -- payment intents -----------------------------------------------------------------
    def get(self, scope: str, key: str) -> PaymentRow | None:
        with self._lock:
            return self._get(self._db.cursor(), scope, key)

    def by_id(self, payment_id: str) -> PaymentRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM payments WHERE id=?",
                                   (payment_id,)).fetchone()
        return PaymentRow(*row) if row else None

    @staticmethod
    def _get(cur: sqlite3.Cursor, scope: str, key: str) -> PaymentRow | None:
        row = cur.execute("SELECT * FROM payments WHERE scope=? AND idem_key=?",
                          (scope, key)).fetchone()
        return PaymentRow(*row) if row else None

    def payments(self) -> list[PaymentRow]:
        with self._lock:
            return [PaymentRow(*r) for r in self._db.execute(
                "SELECT * FROM payments ORDER BY created_at, id")]

    def begin(self, scope: str, key: str, req: PayRequestFields, payer: str,
              reservations: Sequence[Reservation], *, held: bool, tool: str = "",
              invocation_id: str = "", grant_id: str = "",
              now: float | None = None) -> Began:
        """Record the intent and reserve its budgets in one transaction, unless a live
        intent with this scope and key exists (returned with ``new`` False), or a budget
        would pass its cap (``over`` set; nothing written)."""
        digest = req.digest()
        with self._lock:
            cur = self._tx()
            try:
                old = self._get(cur, scope, key)
                if old is not None and (old.status != "aborted"
                                        or old.request_hash != digest):
                    cur.execute("ROLLBACK")
                    return Began(old, False)
                for r in reservations:
                    got = cur.execute("SELECT used FROM counters WHERE key=?",
                                      (r.key,)).fetchone()
                    used = int(got[0]) if got else 0
                    if used + r.amount > r.cap:
                        cur.execute("ROLLBACK")
                        assert old is None or old.status == "aborted"
                        placeholder = old or _placeholder(scope, key, req, payer)
                        return Began(placeholder, True, r, used)
                    cur.execute("INSERT INTO counters (key, used) VALUES (?, ?) "
                                "ON CONFLICT(key) DO UPDATE SET used = used + excluded.used",
                                (r.key, r.amount))
                if old is not None:
                    cur.execute("DELETE FROM payments WHERE id=?", (old.id,))
                pid = "pay_" + secrets.token_hex(8)
                body = json.dumps([[r.key, r.amount, r.cap] for r in reservations])
                cur.execute(
                    "INSERT INTO payments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL,"
                    " NULL, 0, ?, ?, ?, ?)",
                    (pid, scope, key, digest, payer, req.payee, req.amount, req.currency,
                     req.memo, "held" if held else "reserved", body, tool, invocation_id,
                     grant_id, time.time() if now is None else now))
                row = self._get(cur, scope, key)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        assert row is not None
        return Began(row, True)

    def _release(self, cur: sqlite3.Cursor, row: PaymentRow) -> None:
        for key, amount, _cap in json.loads(row.reservations):
            cur.execute("UPDATE counters SET used = MAX(used - ?, 0) WHERE key=?",
                        (amount, key))

    def complete(self, payment_id: str, approval_id: str | None = None) -> PaymentRow:
        """Move the money of an open intent, once. If it cannot move (unknown account,
        currency mismatch, insufficient funds), release the reservation and abort the
        intent with the reason in ``error``. Either way returns the row after; a payment no
        longer open is returned unchanged."""
        with self._lock:
            cur = self._tx()
            try:
                row = cur.execute("SELECT * FROM payments WHERE id=?",
                                  (payment_id,)).fetchone()
                if row is None:
                    raise NotFound(f"no payment {payment_id}")
                p = PaymentRow(*row)
                if p.status in OPEN:
                    problem = self._check_transfer(cur, p)
                    if problem:
                        self._release(cur, p)
                        cur.execute("UPDATE payments SET status='aborted', error=? WHERE id=?",
                                    (problem, p.id))
                    else:
                        tid = "tr_" + secrets.token_hex(8)
                        cur.execute("UPDATE ledger_accounts SET balance = balance - ? "
                                    "WHERE name=?", (p.amount, p.payer))
                        cur.execute("UPDATE ledger_accounts SET balance = balance + ? "
                                    "WHERE name=?", (p.amount, p.payee))
                        cur.execute("INSERT INTO ledger_transfers VALUES (?, ?, ?, ?, ?, ?, ?,"
                                    " ?)", (tid, p.id, p.payer, p.payee, p.amount, p.currency,
                                            p.memo, time.time()))
                        cur.execute("UPDATE payments SET status='completed', transfer_id=?, "
                                    "approval_id=COALESCE(?, approval_id) WHERE id=?",
                                    (tid, approval_id, p.id))
                out = PaymentRow(*cur.execute("SELECT * FROM payments WHERE id=?",
                                              (payment_id,)).fetchone())
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return out

    @staticmethod
    def _check_transfer(cur: sqlite3.Cursor, p: PaymentRow) -> str:
        accounts = {r[0]: (r[1], int(r[2])) for r in cur.execute(
            "SELECT name, currency, balance FROM ledger_accounts WHERE name IN (?, ?)",
            (p.payer, p.payee))}
        if p.payer not in accounts:
            return f"the payer account {p.payer!r} does not exist"
        if p.payee not in accounts:
            return f"the ledger has no account for payee {p.payee!r}"
        if p.payer == p.payee:
            return "payer and payee are the same account"
        for name in (p.payer, p.payee):
            if accounts[name][0] != p.currency:
                return f"account {name!r} holds {accounts[name][0]}, not {p.currency}"
        if accounts[p.payer][1] < p.amount:
            return (f"insufficient funds: {p.payer!r} holds {accounts[p.payer][1]}, "
                    f"the payment needs {p.amount}")
        if accounts[p.payee][1] + p.amount > MAX_BALANCE:
            return f"account {p.payee!r} would exceed {MAX_BALANCE}"
        return ""

    def abort(self, payment_id: str, reason: str) -> PaymentRow | None:
        """Release an open intent's reservation and mark it aborted; returns the row after,
        or None when it was not open (nothing changed)."""
        with self._lock:
            cur = self._tx()
            try:
                row = cur.execute("SELECT * FROM payments WHERE id=?",
                                  (payment_id,)).fetchone()
                if row is None or PaymentRow(*row).status not in OPEN:
                    cur.execute("ROLLBACK")
                    return None
                self._release(cur, PaymentRow(*row))
                cur.execute("UPDATE payments SET status='aborted', error=? WHERE id=?",
                            (reason, payment_id))
                cur.execute("UPDATE payment_approvals SET status='expired', decided_at=?, "
                            "reason=? WHERE payment_id=? AND status='pending'",
                            (time.time(), reason, payment_id))
                out = PaymentRow(*cur.execute("SELECT * FROM payments WHERE id=?",
                                              (payment_id,)).fetchone())
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return out

    def mark_audited(self, payment_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE payments SET audited=1 WHERE id=?", (payment_id,))

    # PaymentProvider
    def transfer(self, payment_id: str) -> str:
        row = self.complete(payment_id)
        if row.status != "completed" or row.transfer_id is None:
            raise FailedPrecondition(row.error or f"payment {payment_id} is {row.status}")
        return row.transfer_id

    def find_transfer(self, payment_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT id FROM ledger_transfers WHERE payment_id=?",
                                   (payment_id,)).fetchone()
        return str(row[0]) if row else None

    def recover(self) -> list[PaymentRow]:
        """After a crash: abort every open intent (its money never moved; one transaction
        releases its reservation), then return every payment whose outcome (completed or
        aborted) is not yet in the audit log. The caller records each, then
        ``mark_audited``."""
        with self._lock:
            open_ids = [r[0] for r in self._db.execute(
                "SELECT id FROM payments WHERE status IN ('reserved', 'held')")]
        for pid in open_ids:
            self.abort(pid, "the broker restarted before the transfer; nothing moved, the "
                            "budget was released")
        with self._lock:
            return [PaymentRow(*r) for r in self._db.execute(
                "SELECT * FROM payments WHERE audited=0 AND status IN ('completed', "
                "'aborted') ORDER BY created_at, id")]

    # -- approvals -----------------------------------------------------------------------
    def hold(self, p: PaymentRow, expires_at: float) -> ApprovalRow:
        aid = "apr_" + secrets.token_hex(6)
        with self._lock:
            self._db.execute(
                "INSERT INTO payment_approvals VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, NULL, '')",
                (aid, p.id, p.payee, p.amount, p.currency, p.idem_key, p.memo, p.tool,
                 p.invocation_id, p.grant_id, expires_at))
            self._db.execute("UPDATE payments SET approval_id=? WHERE id=?", (aid, p.id))
        found = self.approval(aid)
        assert found is not None
        return found

    def approval(self, approval_id: str) -> ApprovalRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM payment_approvals WHERE id=?",
                                   (approval_id,)).fetchone()
        return ApprovalRow(*row) if row else None

    def approvals(self, include_decided: bool = False) -> list[ApprovalRow]:
        q = "SELECT * FROM payment_approvals"
        if not include_decided:
            q += " WHERE status='pending'"
        with self._lock:
            return [ApprovalRow(*r) for r in self._db.execute(q + " ORDER BY expires_at")]

    def decide_approval(self, approval_id: str, approve: bool, now: float,
                        reason: str = "") -> ApprovalRow:
        """Approve or deny a pending approval that has not expired.

        Raises:
            NotFound: no such approval. FailedPrecondition: decided or expired already.
        """
        with self._lock:
            cur = self._tx()
            try:
                row = cur.execute("SELECT * FROM payment_approvals WHERE id=?",
                                  (approval_id,)).fetchone()
                if row is None:
                    raise NotFound(f"no approval {approval_id!r}")
                a = ApprovalRow(*row)
                if a.status == "pending" and now >= a.expires_at:
                    cur.execute("UPDATE payment_approvals SET status='expired', decided_at=?,"
                                " reason='expired' WHERE id=?", (now, a.id))
                    cur.execute("COMMIT")
                    raise FailedPrecondition(f"approval {a.id} expired")
                if a.status != "pending":
                    raise FailedPrecondition(f"approval {a.id} is already {a.status}")
                cur.execute("UPDATE payment_approvals SET status=?, decided_at=?, reason=? "
                            "WHERE id=?", ("approved" if approve else "denied", now, reason,
                                           a.id))
                out = ApprovalRow(*cur.execute("SELECT * FROM payment_approvals WHERE id=?",
                                               (a.id,)).fetchone())
                cur.execute("COMMIT")
            except FailedPrecondition:
                if self._db.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return out

    def expire_approval(self, approval_id: str, now: float, reason: str) -> None:
        with self._lock:
            self._db.execute("UPDATE payment_approvals SET status='expired', decided_at=?, "
                             "reason=? WHERE id=? AND status='pending'",
                             (now, reason, approval_id))


def _placeholder(scope: str, key: str, req: PayRequestFields, payer: str) -> PaymentRow:
    return PaymentRow("", scope, key, req.digest(), payer, req.payee, req.amount,
                      req.currency, req.memo, "refused", "[]", None, None, None, 0, "", "",
                      "", 0.0)
