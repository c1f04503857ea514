"""The embedded ledger: intents, reservations, transfers, recovery and approvals."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from writ.budgets import Reservation
from writ.errors import FailedPrecondition, InvalidArgument
from writ.payments.ledger import MAX_AMOUNT, Ledger, PayRequestFields, check_amount


def res(amount: int) -> list[Reservation]:
    return [Reservation("g/pay[0]/spend", amount, 1000),
            Reservation("g/pay[0]/payments", 1, 5)]


def used(ledger: Ledger) -> dict[str, int]:
    return dict(ledger._db.execute("SELECT key, used FROM counters").fetchall())


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "state.db")
    led.seed("user", 10_000, "EUR")
    led.seed("acme", 0, "EUR")
    return led


def pay(ledger: Ledger, key: str, amount: int = 100, payee: str = "acme",
        held: bool = False) -> tuple[str, bool]:
    req = PayRequestFields(payee, amount, "EUR", "memo")
    began = ledger.begin("grant1", key, req, "user", res(amount), held=held)
    assert began.over is None
    return began.row.id, began.new


def test_a_key_pays_once_and_charges_once(ledger: Ledger) -> None:
    pid, new = pay(ledger, "k1")
    assert new
    done = ledger.complete(pid)
    assert done.status == "completed" and done.transfer_id
    again, new2 = pay(ledger, "k1")
    assert (again, new2) == (pid, False)
    assert ledger.complete(pid).transfer_id == done.transfer_id  # no second transfer
    assert ledger.balance("user") == 9_900 and ledger.balance("acme") == 100
    assert len(ledger.transfers()) == 1
    assert used(ledger) == {"g/pay[0]/spend": 100, "g/pay[0]/payments": 1}


def test_a_key_reused_for_another_request_names_the_fields(ledger: Ledger) -> None:
    pid, _ = pay(ledger, "k1")
    began = ledger.begin("grant1", "k1", PayRequestFields("acme", 200, "EUR", "memo"),
                         "user", res(200), held=False)
    assert not began.new and began.row.id == pid
    assert began.row.mismatch(PayRequestFields("acme", 200, "EUR", "memo")) == "amount 100 != 200"
    # Another grant has its own keys.
    other = ledger.begin("grant2", "k1", PayRequestFields("acme", 200, "EUR", "memo"),
                         "user", res(200), held=False)
    assert other.new


def test_over_a_cap_nothing_is_written(ledger: Ledger) -> None:
    began = ledger.begin("grant1", "big", PayRequestFields("acme", 1001, "EUR", ""), "user",
                         res(1001), held=False)
    assert began.over is not None and began.over.key.endswith("spend")
    assert ledger.get("grant1", "big") is None and used(ledger) == {}


def test_a_transfer_that_cannot_happen_releases_the_budget(ledger: Ledger) -> None:
    ledger.seed("usd", 0, "USD")
    for payee, why in (("nobody", "no account"), ("usd", "holds USD")):
        pid, _ = pay(ledger, f"k-{payee}", payee=payee)
        row = ledger.complete(pid)
        assert row.status == "aborted" and why in (row.error or "")
    pid, _ = pay(ledger, "poor", amount=900)
    ledger.complete(pid)
    ledger.seed("user", 0, "EUR")
    pid2, _ = pay(ledger, "too-much", amount=50)
    ledger._db.execute("UPDATE ledger_accounts SET balance=10 WHERE name='user'")
    row = ledger.complete(pid2)
    assert row.status == "aborted" and "insufficient funds" in (row.error or "")
    assert used(ledger) == {"g/pay[0]/spend": 900, "g/pay[0]/payments": 1}
    assert len(ledger.transfers()) == 1


def test_recovery_aborts_open_intents_and_lists_unrecorded_outcomes(tmp_path: Path,
                                                                     ledger: Ledger) -> None:
    open_id, _ = pay(ledger, "open")
    done_id, _ = pay(ledger, "done")
    ledger.complete(done_id)
    recorded_id, _ = pay(ledger, "recorded")
    ledger.complete(recorded_id)
    ledger.mark_audited(recorded_id)
    ledger.close()
    # A new process on the same state, as after SIGKILL.
    after = Ledger(tmp_path / "state.db")
    rows = {r.id: r for r in after.recover()}
    assert set(rows) == {open_id, done_id}
    assert rows[open_id].status == "aborted" and rows[done_id].status == "completed"
    assert after.balance("user") == 9_800 and len(after.transfers()) == 2
    assert used(after) == {"g/pay[0]/spend": 200, "g/pay[0]/payments": 2}
    for r in rows.values():
        after.mark_audited(r.id)
    assert after.recover() == []
    # A retry with the aborted key starts the payment again, once.
    again = after.begin("grant1", "open", PayRequestFields("acme", 100, "EUR", "memo"),
                        "user", res(100), held=False)
    assert again.new and after.complete(again.row.id).status == "completed"
    assert after.balance("acme") == 300


def test_approvals_are_decided_once_and_expire(ledger: Ledger) -> None:
    pid, _ = pay(ledger, "held", held=True)
    row = ledger.by_id(pid)
    assert row is not None and row.status == "held"
    a = ledger.hold(row, expires_at=2e9)
    assert [x.id for x in ledger.approvals()] == [a.id]
    assert ledger.decide_approval(a.id, True, now=1e9).status == "approved"
    with pytest.raises(FailedPrecondition, match="already approved"):
        ledger.decide_approval(a.id, False, now=1e9)
    pid2, _ = pay(ledger, "late", held=True)
    row2 = ledger.by_id(pid2)
    assert row2 is not None
    b = ledger.hold(row2, expires_at=100.0)
    with pytest.raises(FailedPrecondition, match="expired"):
        ledger.decide_approval(b.id, True, now=200.0)
    assert ledger.approval(b.id).status == "expired"  # type: ignore[union-attr]


def test_concurrent_payments_never_pass_the_budget(ledger: Ledger) -> None:
    results: list[str] = []

    def one(i: int) -> None:
        req = PayRequestFields("acme", 300, "EUR", "")
        began = ledger.begin("grant1", f"c{i}", req, "user",
                             [Reservation("g/pay[0]/spend", 300, 1000)], held=False)
        if began.over is None:
            results.append(ledger.complete(began.row.id).status)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["completed"] * 3
    assert ledger.balance("acme") == 900 and ledger.balance("user") == 9_100


@pytest.mark.parametrize("bad", [0, -1, MAX_AMOUNT + 1, 1.5, True, "10"])
def test_bad_amounts_are_refused(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        check_amount(bad)


def test_seeding_checks_currency_and_opening_is_idempotent(ledger: Ledger) -> None:
    with pytest.raises(FailedPrecondition):
        ledger.seed("user", 1, "USD")
    with pytest.raises(InvalidArgument):
        ledger.seed("user", 1, "eur")
    ledger.open_account("user", 5, "EUR")
    assert ledger.balance("user") == 10_000


def test_recover_records_one_outcome_per_unrecorded_payment(tmp_path: Path,
                                                             ledger: Ledger) -> None:
    import asyncio

    from writ._proto import audit_pb2
    from writ.mediators.payments import recover

    open_id, _ = pay(ledger, "open")
    done_id, _ = pay(ledger, "done")
    ledger.complete(done_id)
    recorded: list[audit_pb2.AuditEvent] = []

    async def record(ev: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        recorded.append(ev)
        return ev

    assert asyncio.run(recover(record, ledger)) == 2
    outcome = {json.loads(e.detail)["payment_id"]: (e.operation, e.status) for e in recorded}
    assert outcome == {open_id: ("pay.abort", "FAILED_PRECONDITION"),
                       done_id: ("pay.complete", "OK")}
    assert asyncio.run(recover(record, ledger)) == 0  # recorded once, never again
