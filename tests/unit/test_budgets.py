"""Budgets: cumulative counters reserved all-or-nothing in SQLite, never past their cap,
whether the charges come from one thread, many threads, two Budgets objects on one file,
or two processes.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from writ.budgets import Budgets, Reservation, amounts, exhausted_reason
from writ.core.policy import Charge
from writ.errors import PermissionDenied

BLOCK = "ab" * 16


def charge(rule: str, kind: str, cap: int, block: str = BLOCK) -> Charge:
    return Charge(f"{block}/{rule}/{kind}", kind, cap)


CALLS = charge("grant.tools[0]", "calls", 3)
READ = charge("reports", "read_bytes", 100)
SPEND = charge("grant.pay[0]", "spend", 1000)
PAYMENTS = charge("grant.pay[0]", "payments", 2)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def budgets(db: Path) -> Iterator[Budgets]:
    b = Budgets(db)
    yield b
    b.close()


def used(b: Budgets, *charges: Charge) -> list[int]:
    got = b.used(c.key for c in charges)
    return [got[c.key] for c in charges]


def denied(b: Budgets, charges: list[Charge], **by_kind: int) -> str:
    with pytest.raises(PermissionDenied) as info:
        b.charge(charges, **by_kind)
    assert info.value.code == "PERMISSION_DENIED"
    return info.value.details


# -- reserve, charge, release, used --------------------------------------------------------
def test_unknown_counters_are_at_zero(budgets: Budgets) -> None:
    assert budgets.used([CALLS.key, "never/seen/calls"]) == {CALLS.key: 0, "never/seen/calls": 0}
    assert budgets.used([]) == {}


def test_charges_count_up_to_the_cap_and_then_refuse(budgets: Budgets) -> None:
    for n in (1, 2, 3):
        assert budgets.charge([CALLS], calls=1) == [Reservation(CALLS.key, 1, 3)]
        assert used(budgets, CALLS) == [n]
    assert denied(budgets, [CALLS], calls=1) == (
        "budget exhausted: grant.tools[0] allows 3 calls in total, 3 used, this needs 1")
    assert used(budgets, CALLS) == [3]


def test_the_operation_amount_is_charged(budgets: Budgets) -> None:
    assert budgets.charge([READ], read_bytes=60) == [Reservation(READ.key, 60, 100)]
    assert budgets.charge([READ], read_bytes=40) == [Reservation(READ.key, 40, 100)]
    assert used(budgets, READ) == [100]
    assert denied(budgets, [READ], read_bytes=1) == (
        "budget exhausted: reports allows 100 read bytes in total, 100 used, this needs 1")


def test_one_amount_above_the_whole_cap_is_refused_on_a_fresh_counter(budgets: Budgets) -> None:
    assert denied(budgets, [READ], read_bytes=101) == (
        "budget exhausted: reports allows 100 read bytes in total, 0 used, this needs 101")
    assert used(budgets, READ) == [0]


def test_release_gives_back_exactly_what_was_reserved(budgets: Budgets) -> None:
    first = budgets.charge([SPEND, PAYMENTS], spend=700, payments=1)
    assert used(budgets, SPEND, PAYMENTS) == [700, 1]
    assert denied(budgets, [SPEND, PAYMENTS], spend=301, payments=1) == (
        "budget exhausted: grant.pay[0] allows 1000 spend in total, 700 used, this needs 301")
    budgets.release(first)  # the payment did not happen
    assert used(budgets, SPEND, PAYMENTS) == [0, 0]
    budgets.charge([SPEND, PAYMENTS], spend=1000, payments=1)
    assert used(budgets, SPEND, PAYMENTS) == [1000, 1]


def test_release_never_goes_below_zero(budgets: Budgets) -> None:
    budgets.charge([CALLS], calls=1)
    budgets.release([Reservation(CALLS.key, 5, 3)])
    assert used(budgets, CALLS) == [0]
    budgets.release([Reservation("never/charged/calls", 1, 1)])
    assert budgets.used(["never/charged/calls"]) == {"never/charged/calls": 0}


def test_nothing_to_reserve_is_a_no_op(budgets: Budgets) -> None:
    assert budgets.reserve([]) is None
    assert budgets.charge([]) == []
    assert budgets.charge([READ], calls=1) == []  # no read_bytes amount: READ is not drawn
    assert budgets.charge([READ], read_bytes=0) == []  # an empty read costs nothing
    assert used(budgets, READ) == [0]


def test_amounts_pair_each_charge_with_its_kind() -> None:
    charges = [CALLS, READ, SPEND, PAYMENTS]
    assert amounts(charges, calls=1, spend=250, payments=1) == [
        Reservation(CALLS.key, 1, 3), Reservation(SPEND.key, 250, 1000),
        Reservation(PAYMENTS.key, 1, 2)]
    assert amounts(charges, read_bytes=9) == [Reservation(READ.key, 9, 100)]
    assert amounts(charges) == []


def test_counters_survive_reopening(db: Path) -> None:
    first = Budgets(db)
    first.charge([CALLS], calls=1)
    first.close()
    again = Budgets(db)
    try:
        assert used(again, CALLS) == [1]
    finally:
        again.close()


# -- all or nothing ------------------------------------------------------------------------
def test_one_exhausted_counter_reserves_none_of_the_others(budgets: Budgets) -> None:
    grant_calls = charge("grant.tools[0]", "calls", 10)
    att_calls = charge("attenuation 1.tools[0]", "calls", 1, block="cd" * 16)
    budgets.charge([grant_calls, att_calls], calls=1)
    assert used(budgets, grant_calls, att_calls) == [1, 1]
    assert denied(budgets, [grant_calls, att_calls], calls=1) == (
        "budget exhausted: attenuation 1.tools[0] allows 1 calls in total, 1 used, this needs 1")
    assert used(budgets, grant_calls, att_calls) == [1, 1]  # the grant's counter is untouched


def test_the_first_counter_over_its_cap_is_named_and_nothing_changes(budgets: Budgets) -> None:
    net = [charge("api", "requests", 5), charge("api", "net_bytes", 100),
           charge("attenuation 1.net[0]", "requests", 1, block="cd" * 16)]
    budgets.charge(net, requests=1, net_bytes=90)
    assert used(budgets, *net) == [1, 90, 1]
    over = budgets.reserve(amounts(net, requests=1, net_bytes=20))
    assert over == Reservation(net[1].key, 20, 100)
    assert used(budgets, *net) == [1, 90, 1]
    assert denied(budgets, net, requests=1, net_bytes=20) == (
        "budget exhausted: api allows 100 net bytes in total, 90 used, this needs 20")
    assert denied(budgets, net, requests=1, net_bytes=1) == (
        "budget exhausted: attenuation 1.net[0] allows 1 requests in total, 1 used, "
        "this needs 1")
    assert used(budgets, *net) == [1, 90, 1]


def test_a_key_repeated_in_one_operation_is_charged_twice(budgets: Budgets) -> None:
    # Two layers never share a key (their block ids differ); if one did, it would pay twice.
    twice = [Reservation(CALLS.key, 1, 3), Reservation(CALLS.key, 1, 3)]
    assert budgets.reserve(twice) is None
    assert used(budgets, CALLS) == [2]
    assert budgets.reserve(twice) == Reservation(CALLS.key, 1, 3)
    assert used(budgets, CALLS) == [2]


# -- exhausted messages --------------------------------------------------------------------
@pytest.mark.parametrize(("key", "amount", "cap", "used_", "message"), [
    (f"{BLOCK}/grant.tools[0]/calls", 1, 2, 2,
     "budget exhausted: grant.tools[0] allows 2 calls in total, 2 used, this needs 1"),
    (f"{BLOCK}/reports/read_bytes", 10, 30, 23,
     "budget exhausted: reports allows 30 read bytes in total, 23 used, this needs 10"),
    (f"{BLOCK}/w/write_bytes", 5, 4, 0,
     "budget exhausted: w allows 4 write bytes in total, 0 used, this needs 5"),
    (f"{BLOCK}/w/files", 1, 3, 3,
     "budget exhausted: w allows 3 files in total, 3 used, this needs 1"),
    (f"{BLOCK}/api/requests", 1, 10, 10,
     "budget exhausted: api allows 10 requests in total, 10 used, this needs 1"),
    (f"{BLOCK}/api/net_bytes", 7, 10, 9,
     "budget exhausted: api allows 10 net bytes in total, 9 used, this needs 7"),
    (f"{BLOCK}/vendor/spend", 500, 1000, 600,
     "budget exhausted: vendor allows 1000 spend in total, 600 used, this needs 500"),
    (f"{BLOCK}/vendor/payments", 1, 3, 3,
     "budget exhausted: vendor allows 3 payments in total, 3 used, this needs 1"),
    (f"{BLOCK}/a/b/calls", 1, 1, 1,
     "budget exhausted: a/b allows 1 calls in total, 1 used, this needs 1"),
], ids=["calls", "read-bytes", "write-bytes", "files", "requests", "net-bytes", "spend",
        "payments", "rule-id-with-a-slash"])
def test_exhausted_reason(key: str, amount: int, cap: int, used_: int, message: str) -> None:
    assert exhausted_reason(Reservation(key, amount, cap), used_) == message


# -- concurrency ---------------------------------------------------------------------------
def _hammer(targets: list[Budgets], threads: int, per_thread: int, charges: list[Charge],
            **by_kind: int) -> tuple[int, int, list[str]]:
    """Charge from many threads at once (all released together); return (granted,
    refused, unexpected errors)."""
    granted, refused, errors = [0], [0], []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work(b: Budgets) -> None:
        start.wait()
        for _ in range(per_thread):
            try:
                b.charge(charges, **by_kind)
                with lock:
                    granted[0] += 1
            except PermissionDenied as exc:
                with lock:
                    refused[0] += 1
                if not exc.details.startswith("budget exhausted: "):
                    errors.append(exc.details)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(repr(exc))

    pool = [threading.Thread(target=work, args=(targets[i % len(targets)],))
            for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert not any(t.is_alive() for t in pool)
    return granted[0], refused[0], errors


def test_sixteen_threads_never_pass_the_cap(budgets: Budgets) -> None:
    cap = charge("grant.tools[0]", "calls", 600)
    granted, refused, errors = _hammer([budgets], 16, 100, [cap], calls=1)
    assert errors == []
    assert (granted, refused) == (600, 1000)  # demand 1600 exceeds the cap: it is reached
    assert used(budgets, cap) == [600]


def test_two_budgets_objects_on_one_file_never_pass_the_cap(db: Path) -> None:
    """Two Budgets on one file are two connections, as two broker processes would be."""
    one, two = Budgets(db), Budgets(db)
    try:
        grant_calls = charge("grant.tools[0]", "calls", 400)
        att_calls = charge("attenuation 1.tools[0]", "calls", 250, block="cd" * 16)
        granted, refused, errors = _hammer([one, two], 16, 60, [grant_calls, att_calls],
                                           calls=1)
        assert errors == []
        assert (granted, refused) == (250, 710)
        # all or nothing: the grant's counter moved only with the attenuation's
        assert used(one, grant_calls, att_calls) == used(two, grant_calls, att_calls) == [250,
                                                                                       250]
    finally:
        one.close()
        two.close()


def test_concurrent_variable_amounts_never_pass_any_cap(budgets: Budgets) -> None:
    spend, count = charge("vendor", "spend", 10_000), charge("vendor", "payments", 150)
    rng = random.Random(7)
    plan = [rng.randint(1, 200) for _ in range(16 * 40)]
    granted_amounts: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def work(i: int) -> None:
        start.wait()
        for amount in plan[i::16]:
            try:
                budgets.charge([spend, count], spend=amount, payments=1)
            except PermissionDenied:
                continue
            with lock:
                granted_amounts.append(amount)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    total, n = used(budgets, spend, count)
    assert (total, n) == (sum(granted_amounts), len(granted_amounts))
    assert total <= 10_000 and n <= 150
    # demand (about 64,000) far exceeds the spend cap: what is left is less than any
    # single payment that was refused could use, or the count cap was reached
    assert n == 150 or 10_000 - total < max(plan)


CHILD = """
import sys
from pathlib import Path
from typing import Any
from writ.budgets import Budgets
from writ.core.policy import Charge
from writ.errors import PermissionDenied
b = Budgets(Path(sys.argv[1]))
c = [Charge(sys.argv[2], "calls", int(sys.argv[3]))]
sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.readline()
ok = 0
for _ in range(int(sys.argv[4])):
    try:
        b.charge(c, calls=1)
        ok += 1
    except PermissionDenied:
        pass
print(ok)
"""


def test_two_processes_never_pass_the_cap(db: Path) -> None:
    Budgets(db).close()  # create the schema first
    key = f"{BLOCK}/grant.tools[0]/calls"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(db), key, "300", "250"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:  # both connected before either charges
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    outs = [p.communicate("go\n", timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum(int(o) for o in outs) == 300  # demand 500, cap 300
    check = Budgets(db)
    try:
        assert check.used([key]) == {key: 300}
    finally:
        check.close()


# -- property: the store agrees with a model of the caps -----------------------------------
KEYS = [charge("r", kind, 0) for kind in ("calls", "read_bytes", "spend")]
ops = st.lists(st.tuples(
    st.sampled_from(("charge", "release")),
    st.lists(st.tuples(st.sampled_from(range(len(KEYS))), st.integers(1, 50)), min_size=1,
             max_size=3, unique_by=lambda t: t[0])), max_size=25)


@settings(max_examples=60, deadline=None)
@given(caps_=st.lists(st.integers(1, 120), min_size=3, max_size=3), steps=ops)
def test_budgets_match_a_model_and_never_exceed_a_cap(caps_: list[int],
                                                      steps: list[tuple[str, Any]]) -> None:
    model = [0, 0, 0]
    held: list[list[Reservation]] = []
    with tempfile.TemporaryDirectory() as tmp:
        b = Budgets(Path(tmp) / "state.db")
        try:
            for action, items in steps:
                if action == "release":
                    if held:
                        gone = held.pop(0)
                        b.release(gone)
                        for r in gone:
                            model[[k.key for k in KEYS].index(r.key)] -= r.amount
                    continue
                want = [Reservation(KEYS[i].key, amount, caps_[i]) for i, amount in items]
                fits = all(model[i] + amount <= caps_[i] for i, amount in items)
                over = b.reserve(want)
                if fits:
                    assert over is None
                    held.append(want)
                    for i, amount in items:
                        model[i] += amount
                else:
                    first = next(i for i, amount in items if model[i] + amount > caps_[i])
                    assert over == Reservation(KEYS[first].key, dict(items)[first],
                                               caps_[first])
                got = b.used(k.key for k in KEYS)
                assert [got[k.key] for k in KEYS] == model
                assert all(u <= c for u, c in zip(model, caps_, strict=True))
        finally:
            b.close()
