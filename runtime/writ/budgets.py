"""Budgets and counters: cumulative calls, requests, bytes and spend per grant layer.

The decision function names the charges; this module reserves them atomically in the
broker's SQLite state. All charges of one operation are reserved in one IMMEDIATE
transaction, so concurrent invocations sharing a grant can never together pass a cap,
within this process or across processes using the same state file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .core.policy import Charge
from .errors import PermissionDenied

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
  key TEXT PRIMARY KEY,
  used INTEGER NOT NULL CHECK (used >= 0)
);
"""


@dataclass(frozen=True)
class Reservation:
    key: str
    amount: int
    cap: int


def amounts(charges: Iterable[Charge], **by_kind: int) -> list[Reservation]:
    """Pair each charge with the operation's amount of its kind (calls=1, spend=...)."""
    return [Reservation(c.key, by_kind[c.kind], c.cap) for c in charges
            if by_kind.get(c.kind, 0) > 0]


class Budgets:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def reserve(self, items: Sequence[Reservation]) -> Reservation | None:
        """Add every amount, or none. Returns the first reservation that would pass its cap
        (nothing changed), or None when all were reserved."""
        if not items:
            return None
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for r in items:
                    row = cur.execute("SELECT used FROM counters WHERE key=?",
                                      (r.key,)).fetchone()
                    used = row[0] if row else 0
                    if used + r.amount > r.cap:
                        cur.execute("ROLLBACK")
                        return r
                    cur.execute("INSERT INTO counters (key, used) VALUES (?, ?) ON CONFLICT(key)"
                                " DO UPDATE SET used = used + excluded.used", (r.key, r.amount))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return None

    def charge(self, charges: Iterable[Charge], **by_kind: int) -> list[Reservation]:
        """Reserve a decision's charges with this operation's amounts (calls=1,
        read_bytes=n, ...), all or none; returns what to ``release`` if the operation then
        does not happen.

        Raises:
            PermissionDenied: a budget would pass its cap; nothing was reserved.
        """
        items = amounts(charges, **by_kind)
        over = self.reserve(items)
        if over is not None:
            used = self.used([over.key])[over.key]
            raise PermissionDenied(exhausted_reason(over, used))
        return items

    def release(self, items: Sequence[Reservation]) -> None:
        """Give back a reservation whose operation did not happen."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            for r in items:
                cur.execute("UPDATE counters SET used = MAX(used - ?, 0) WHERE key=?",
                            (r.amount, r.key))
            cur.execute("COMMIT")

    def used(self, keys: Iterable[str]) -> dict[str, int]:
        keys = list(keys)
        if not keys:
            return {}
        with self._lock:
            rows = self._db.execute(
                f"SELECT key, used FROM counters WHERE key IN ({','.join('?' * len(keys))})",
                keys).fetchall()
        found = dict(rows)
        return {k: int(found.get(k, 0)) for k in keys}


def exhausted_reason(r: Reservation, used: int) -> str:
    rule, _, kind = r.key.partition("/")[2].rpartition("/")
    return (f"budget exhausted: {rule} allows {r.cap} {kind.replace('_', ' ')} in total, "
            f"{used} used, this needs {r.amount}")
