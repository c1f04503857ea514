"""Mediated payments from inside real containers: rules, bad input, replays, concurrency,
human approval, and a broker SIGKILLed mid-payment (issue #6)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from writ._proto import audit_pb2, control_pb2
from writ.audit import read_records
from writ.client import Client, WritError
from writ.manifests import parse_grant

from tests.conftest import TEST_LABEL, TEST_RUN_ID  # noqa: F401
from tests.integration.conftest import (
    PROBE_IMAGE,
    PROBE_MANIFEST,
    RunningBroker,
    make_workspace,
    wait_for,
)

PAY_MANIFEST: dict[str, Any] = {
    **PROBE_MANIFEST, "name": "payprobe",
    "limits": {**PROBE_MANIFEST["limits"], "timeout_s": 60},
    "pay": [{"payees": ["acme", "evil"], "currency": "EUR", "max_per_payment": 100_000,
             "budget": 10_000_000}],
}


def grant(budget: int = 20_000, max_count: int = 0, approval_above: int = 0) -> dict[str, Any]:
    return {"tools": [{"name": "payprobe"}],
            "pay": [{"id": "bills", "payees": ["acme"], "currency": "EUR",
                     "max_per_payment": 5_000, "budget": budget, "max_count": max_count,
                     "approval_above": approval_above}]}


@pytest.fixture(scope="module")
def pay_broker(tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
               probe_image: str) -> Iterator[RunningBroker]:
    root = Path(os.path.realpath(tmp_path_factory.mktemp("p")))
    rb = RunningBroker(root / "state", make_workspace(root), docker_client,
                       accounts=[("user", 1_000_000, "EUR"), ("acme", 0, "EUR"),
                                 ("evil", 0, "EUR")])
    rb.register(PAY_MANIFEST)
    yield rb
    rb.stop()


def run(rb: Any, token: str, timeout: float = 120, **args: Any) -> list[dict[str, Any]]:
    out = rb.agent.invoke("payprobe", {"action": "pay", **args}, token, timeout=timeout)
    assert out.ok, f"{out.error_code}: {out.error_message}"
    return out.result["result"]  # type: ignore[no-any-return]


def balances(rb: Any) -> dict[str, int]:
    resp = rb.operator.stub.ListAccounts(control_pb2.ListAccountsRequest())
    return {a.name: a.balance for a in resp.accounts}


def codes(results: list[dict[str, Any]]) -> list[str]:
    return [r.get("code", "OK") for r in results]


def test_rules_bad_input_and_replays(pay_broker: RunningBroker) -> None:
    rb = pay_broker
    before, seq = balances(rb), rb.last_seq()
    token = rb.mint(grant(max_count=3))
    p = {"payee": "acme", "amount": 1250, "memo": "inv 1", "key": "k1"}
    results = run(rb, token, payments=[
        p,                                                          # 0 pays
        p,                                                          # 1 replay: same result
        {**p, "amount": 1300},                                      # 2 key reused, changed
        {**p, "key": "k2", "payee": "evil"},                        # 3 payee not in grant
        {**p, "key": "k3", "currency": "USD"},                      # 4 currency mismatch
        {**p, "key": "k4", "amount": 5_001},                        # 5 over max_per_payment
        {**p, "key": "k5", "amount": 0, "raw": True},               # 6 zero
        {**p, "key": "k6", "amount": -5, "raw": True},              # 7 negative
        {**p, "key": "k7", "amount": 10**15 + 1, "raw": True},      # 8 huge
        {**p, "key": "k8", "amount": 12.5},                         # 9 fractional (SDK)
        {**p, "key": "k9", "currency": "eur", "raw": True},         # 10 not ISO 4217
        {**p, "key": "", "raw": True},                              # 11 no key
        {**p, "key": "k10", "amount": 100},                         # 12 pays (2 of 3)
        {**p, "key": "k11", "amount": 100},                         # 13 pays (3 of 3)
        {**p, "key": "k12", "amount": 100},                         # 14 max_count reached
    ], get=["k1", "nope"])
    assert codes(results) == [
        "OK", "OK", "FAILED_PRECONDITION", "PERMISSION_DENIED", "PERMISSION_DENIED",
        "PERMISSION_DENIED", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT",
        "INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "OK", "OK",
        "PERMISSION_DENIED", "OK", "NOT_FOUND"], results
    first, replay = results[0]["ok"], results[1]["ok"]
    assert replay == {**first, "replayed": True} and not first["replayed"]
    assert "amount 1250 != 1300" in results[2]["message"]
    assert "payee 'evil' is not allowed" in results[3]["message"]
    assert "budget exhausted" in results[14]["message"]
    after = balances(rb)
    assert after["acme"] - before["acme"] == 1450 == before["user"] - after["user"]
    assert after["evil"] == before["evil"]
    events = rb.audit_since(seq)
    pays = [e for e in events if e.operation == "pay"]
    # Every request the broker saw is recorded (the SDK refused the fractional one itself).
    assert Counter(e.status for e in pays) == Counter(
        {"OK": 3, "PERMISSION_DENIED": 4, "INVALID_ARGUMENT": 5})
    assert sum(e.operation == "pay.complete" for e in events) == 3
    replays = [e for e in events if e.operation == "pay.replay"]
    assert [e.status for e in replays] == ["OK", "FAILED_PRECONDITION"]


def test_concurrent_payments_share_one_budget(pay_broker: RunningBroker) -> None:
    rb = pay_broker
    before = balances(rb)
    token = rb.mint(grant(budget=20_000))
    outs: list[list[dict[str, Any]]] = []

    def one(i: int) -> None:
        outs.append(run(rb, token, payments=[
            {"payee": "acme", "amount": 1_000, "key": f"c{i}-{j}"} for j in range(10)]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [r for out in outs for r in out]
    assert len(flat) == 30
    ok = [r for r in flat if "ok" in r]
    assert len(ok) == 20  # 20 x 1000 = the budget, exactly
    assert {r["code"] for r in flat if "ok" not in r} == {"PERMISSION_DENIED"}
    after = balances(rb)
    assert after["acme"] - before["acme"] == 20_000 == before["user"] - after["user"]


def test_approval_is_bound_audited_and_decides(pay_broker: RunningBroker) -> None:
    rb = pay_broker
    before, seq = balances(rb), rb.last_seq()
    token = rb.mint(grant(approval_above=3_000))
    results: dict[str, Any] = {}

    def pay_big() -> None:
        results["out"] = run(rb, token, payments=[
            {"payee": "acme", "amount": 4_000, "key": "big1"},
            {"payee": "acme", "amount": 4_500, "key": "big2"}])

    t = threading.Thread(target=pay_big)
    t.start()
    stub = rb.operator.stub

    def held(key: str) -> control_pb2.ApprovalInfo | None:
        pending = stub.ListApprovals(control_pb2.ListApprovalsRequest()).approvals
        return next((a for a in pending if a.idempotency_key == key), None)

    assert wait_for(lambda: held("big1") is not None, 60)
    a = held("big1")
    assert a is not None and (a.payee, a.amount, a.currency) == ("acme", 4_000, "EUR")
    with pytest.raises(Exception, match="different payment"):
        stub.Approve(control_pb2.ApproveRequest(id=a.id, amount=400_000))
    assert stub.Approve(control_pb2.ApproveRequest(id=a.id, amount=4_000)).status == "approved"
    assert wait_for(lambda: held("big2") is not None, 60)
    b = held("big2")
    assert b is not None
    assert stub.DenyApproval(control_pb2.DenyApprovalRequest(id=b.id, reason="no")).status \
        == "denied"
    t.join(90)
    out = results["out"]
    assert codes(out) == ["OK", "PERMISSION_DENIED"], out
    assert out[0]["ok"]["approval_id"] == a.id and "denied" in out[1]["message"]
    after = balances(rb)
    assert after["acme"] - before["acme"] == 4_000
    ops = [(e.operation, e.status) for e in rb.audit_since(seq)
           if e.operation.startswith("pay")]
    assert ops.count(("pay.approval.request", "OK")) == 2
    assert ("pay.approval.approve", "FAILED_PRECONDITION") in ops
    assert ("pay.approval.approve", "OK") in ops and ("pay.approval.deny", "OK") in ops
    assert ops.count(("pay.complete", "OK")) == 1 and ("pay.abort", "FAILED_PRECONDITION") in ops


def test_payment_after_expiry_or_revocation_is_refused(pay_broker: RunningBroker) -> None:
    rb = pay_broker
    before, seq = balances(rb), rb.last_seq()
    expiring = rb.mint(grant(), ttl_s=20)
    minted = rb.operator.mint_token(parse_grant(grant()), 600)
    at = time.time() + 22
    pays = [{"payee": "acme", "amount": 100, "key": "late"}]
    outcomes: dict[str, Any] = {}
    threads = [threading.Thread(target=lambda name=name, tok=tok: outcomes.__setitem__(
        name, rb.agent.invoke("payprobe", {"action": "pay", "payments": pays,
                                           "wait_until": at}, tok, timeout=90)))
        for name, tok in (("expiring", expiring), ("revoked", minted.token))]
    for t in threads:
        t.start()
    # Revoke once both tools have surely started (and called Start), before they pay.
    time.sleep(max(0.0, at - 8 - time.time()))
    rb.operator.revoke_token(minted.token_id, "test")
    for t in threads:
        t.join(90)
    # The revoked token's invocation is stopped at once: it never gets to pay.
    revoked = outcomes["revoked"]
    assert (revoked.ok, revoked.error_code, revoked.error_message) == (
        False, "PERMISSION_DENIED", "the token was revoked while the tool ran: test")
    # The expiring one lives on and pays after its token expired: refused.
    attempts = [e for e in rb.audit_since(seq) if e.method == "/writ.v1.ToolBroker/Pay"]
    assert [(e.decision, e.invocation_id) for e in attempts] == [
        (audit_pb2.DENY, outcomes["expiring"].invocation_id)]
    assert "expired" in attempts[0].reason
    assert balances(rb) == before


# -- a broker killed mid-payment -------------------------------------------------------------
def _serve(state: Path, ws: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "writ.cli", "--state-dir", str(state), "serve",
         "--workspace", f"demo={ws}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "writ broker ready" in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout],  # type: ignore[union-attr]
                             daemon=True).start()
            return proc
    raise RuntimeError(f"broker exited with {proc.wait()}")


def _transfers(state: Path) -> int:
    db = sqlite3.connect(state / "state.db", timeout=30)
    try:
        return int(db.execute("SELECT COUNT(*) FROM ledger_transfers").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def test_sigkill_mid_payments_then_retry_pays_each_key_once(
        tmp_path_factory: pytest.TempPathFactory, docker_client: Any, probe_image: str) -> None:
    from writ.manifests import parse_manifest

    root = Path(os.path.realpath(tmp_path_factory.mktemp("k")))
    state, ws = root / "s", make_workspace(root)
    n, amount = 30, 700
    payments = [{"payee": "acme", "amount": amount, "key": f"crash-{i}"} for i in range(n)]
    proc = _serve(state, ws)
    try:
        with Client(state / "control.sock") as op:
            op.stub.SeedAccount(control_pb2.SeedAccountRequest(name="user", amount=100_000,
                                                               currency="EUR"))
            op.stub.SeedAccount(control_pb2.SeedAccountRequest(name="acme", amount=0,
                                                               currency="EUR"))
            op.register_tool(parse_manifest(PAY_MANIFEST))
            token = op.mint_token(parse_grant(grant(budget=n * amount)), 900).token
        agent = Client(state / "agent.sock")

        def doomed() -> None:
            with contextlib.suppress(WritError):  # the broker dies under this call
                agent.invoke("payprobe", {"action": "pay", "payments": payments,
                                          "pause": 0.1}, token, timeout=120)

        killer = threading.Thread(target=doomed)
        killer.daemon = True
        killer.start()
        assert wait_for(lambda: _transfers(state) >= 2, 90)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        agent.close()
        moved_at_kill = _transfers(state)
        assert moved_at_kill < n, "the kill came too late to test anything"
        proc = _serve(state, ws)
        with Client(state / "agent.sock") as agent2, Client(state / "control.sock") as op2:
            out = agent2.invoke("payprobe", {"action": "pay", "payments": payments}, token,
                                timeout=120)
            assert out.ok, out.error_message
            results = out.result["result"]
            assert codes(results) == ["OK"] * n, results
            replayed = sum(r["ok"]["replayed"] for r in results)
            assert replayed >= moved_at_kill - 1 and replayed <= moved_at_kill + 1
            accts = {a.name: a.balance for a in
                     op2.stub.ListAccounts(control_pb2.ListAccountsRequest()).accounts}
        assert accts == {"user": 100_000 - n * amount, "acme": n * amount}
        db = sqlite3.connect(state / "state.db")
        try:
            rows = db.execute("SELECT payment_id FROM ledger_transfers").fetchall()
            spend = db.execute("SELECT used FROM counters WHERE key LIKE '%/bills/spend'"
                               ).fetchall()
            keys = db.execute("SELECT idem_key, status FROM payments").fetchall()
        finally:
            db.close()
        assert len(rows) == n and spend == [(n * amount,)]
        assert sorted(keys) == sorted((p["key"], "completed") for p in payments)
        events = list(read_records(state / "audit.jsonl"))
        completes = Counter(json.loads(e.detail)["payment_id"] for e in events
                            if e.operation == "pay.complete")
        assert set(completes) == {r[0] for r in rows} and set(completes.values()) == {1}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(state / "run", ignore_errors=True)


_ = PROBE_IMAGE
