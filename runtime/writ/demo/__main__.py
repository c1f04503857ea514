"""`make demo`: one scripted agent session against a real broker and real containers.

Starts a broker on a throwaway state dir with a copy of the demo workspace, registers the
example tools, mints the demo grant, then plays an agent: an allowed read, a read outside
the grant (denied inside the container by the broker), a path trick, a folder summary,
network requests (one granted, with a credential the broker adds; two refused), payments,
and finally the audit records of all of it. Exits non-zero if anything did not behave.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..audit import read_records, verify_chain
from ..client import WritError
from ..manifests import load_grant_file, load_manifest_file
from ..testing import BrokerProcess, broker_process
from ..testing_net import LoopbackServer, make_certs, start_server

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
STATUS_HOST = "status.example.com"
STATUS_SECRET = "Bearer demo-status-token-4f1c"


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="writ-demo-"))
    state, workspace = tmp / "state", tmp / "workspace"
    shutil.copytree(HERE / "workspace", workspace)
    # The status API fetch-url may call: HTTPS on this machine's loopback, its certificate
    # from a throwaway CA the broker is told to trust; the operator pins its name there.
    certs = make_certs(tmp / "certs", (STATUS_HOST,))
    status = start_server(certs)
    step(f"starting the broker (state {state}, workspace demo={workspace}, "
         f"{STATUS_HOST} -> 127.0.0.1:{status.port})")
    failures: list[str] = []
    try:
        with broker_process(state, {"demo": workspace}, extra_args=[
                "--net-ca-file", str(certs.ca_file),
                "--net-host", f"{STATUS_HOST}=127.0.0.1"]) as bp:
            failures = session(bp, state, status)
    finally:
        status.stop()
        if not os.environ.get("WRIT_DEMO_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
    step("result")
    if failures:
        print("  demo FAILED:\n   " + "\n   ".join(failures))
        return 1
    print("  every call behaved as granted; the broker stopped cleanly")
    return 0


def _on_port(rules: Any, port: int) -> None:
    """The demo's status API listens on a free port, not 443: say so in the rules."""
    for rule in rules:
        rule.ports[:] = [port]


def session(bp: BrokerProcess, state: Path, status: LoopbackServer) -> list[str]:
    failures: list[str] = []
    op, agent = bp.operator, bp.agent
    step("operator registers the example tools (manifests from capabilities/)")
    for path in sorted((REPO / "capabilities").glob("*.yaml")):
        manifest = load_manifest_file(path)
        _on_port(manifest.net, status.port)
        info = op.register_tool(manifest)
        print(f"  {info.name:<12} {info.image}  pinned {info.image_id[:19]}")

    step("operator stores the status API's credential (writ secrets set status-token)")
    secret = op.put_secret("status-token", STATUS_SECRET.encode())
    print(f"  {secret.name}: {secret.length} bytes; no tool will ever see it")

    step("user grants: read-file, word-count (reports/** of workspace demo), pay-bill and "
         f"fetch-url (GET https://{STATUS_HOST}/v1/, the credential attached)")
    grant = load_grant_file(HERE / "grant.yaml")
    _on_port(grant.net, status.port)
    minted = op.mint_token(grant, ttl_s=600)
    print(f"  token {minted.token_id} ({len(minted.token)} chars)")
    token = minted.token

    def call(tool: str, args: dict[str, object], expect_ok: bool, expect: str = "") -> None:
        print(f"  agent -> {tool} {args}")
        t0 = time.perf_counter()
        try:
            out = agent.invoke(tool, args, token)
        except WritError as err:
            print(f"     refused by broker: {err.code}: {err.details}")
            if expect_ok or (expect and expect != err.code):
                failures.append(f"{tool} {args}: {err}")
            return
        ms = (time.perf_counter() - t0) * 1000
        if out.ok:
            shown = str(out.result)
            print(f"     ok in {ms:.0f} ms: {shown[:150]}{'...' if len(shown) > 150 else ''}")
        else:
            print(f"     tool reports {out.error_code}: {out.error_message} ({ms:.0f} ms)")
        if out.ok != expect_ok or (expect and not out.ok and out.error_code != expect):
            failures.append(f"{tool} {args}: ok={out.ok} {out.error_code}")

    step("agent session")
    call("read-file", {"path": "reports/q3.csv"}, True)
    call("read-file", {"path": "private/salaries.csv"}, False, "PERMISSION_DENIED")
    call("read-file", {"path": "../../etc/passwd"}, False, "INVALID_ARGUMENT")
    call("word-count", {"dir": "reports"}, True)
    call("shell", {"cmd": "rm -rf /"}, False, "NOT_FOUND")

    failures += network(status, call)
    failures += payments(bp, call)

    step("audit log (writ audit tail)")
    subprocess.run([sys.executable, "-m", "writ.cli", "--state-dir", str(state), "audit",
                    "tail", "-n", "40"], check=False)
    count, problem = verify_chain(state / "audit.jsonl")
    print(f"\n  chain: {count} records, {'intact' if problem is None else problem}")
    denied = [e for e in read_records(state / "audit.jsonl")
              if e.operation == "file.read" and e.decision == 2]
    if not denied:
        failures.append("no denied file.read in the audit log")
    return failures


def network(status: LoopbackServer, call: Any) -> list[str]:
    """A granted GET (the broker adds the credential), a path outside the grant, and the
    cloud metadata address: the last two never leave the broker."""
    step("agent fetches with fetch-url (the box has no network: the broker makes the request)")
    base = f"https://{STATUS_HOST}:{status.port}"
    seen = len(status.seen)
    call("fetch-url", {"url": f"{base}/v1/summary", "max_chars": 120}, True)
    call("fetch-url", {"url": f"{base}/admin/users"}, False, "PERMISSION_DENIED")
    call("fetch-url", {"url": "http://169.254.169.254/latest/meta-data/"}, False,
         "PERMISSION_DENIED")
    got = status.seen[seen:]
    print(f"  the status API saw {len(got)} request(s): "
          + ", ".join(f"{s.method} {s.path} (Authorization "
                      f"{'attached by the broker' if s.headers.get('Authorization') == STATUS_SECRET else 'missing'})"
                      for s in got))
    if [(s.path, s.headers.get("Authorization")) for s in got] != [
            ("/v1/summary", STATUS_SECRET)]:
        return ["the status API did not see exactly one request carrying the credential"]
    return []


def payments(bp: BrokerProcess, call: Any) -> list[str]:
    """A bill paid, a payee refused, and a payment held for approval that the operator
    approves through the control API (``writ approvals approve ID``)."""
    from .._proto import control_pb2

    failures: list[str] = []
    op = bp.operator
    step("operator seeds the embedded ledger (writ ledger seed NAME=AMOUNT:CUR)")
    for name, amount in (("user", 100_000), ("acme-power", 0), ("city-water", 0)):
        a = op._call("SeedAccount", control_pb2.SeedAccountRequest(
            name=name, amount=amount, currency="EUR"))
        print(f"  {a.name:<11} {a.balance:>7} {a.currency} (minor units)")
    step("agent pays bills with pay-bill (grant: up to 200.00 EUR each, 100.00+ held)")
    call("pay-bill", {"payee": "acme-power", "amount": 4_200, "bill_id": "power-11"}, True)
    call("pay-bill", {"payee": "acme-power", "amount": 4_200, "bill_id": "power-11"}, True)
    # A payee outside the manifest's input schema: refused before any container starts.
    call("pay-bill", {"payee": "mallory", "amount": 100, "bill_id": "x"}, False,
         "INVALID_ARGUMENT")
    # Within the manifest (500.00) but above the grant's 200.00: refused by the broker
    # when the tool tries to pay, inside its container.
    call("pay-bill", {"payee": "city-water", "amount": 30_000, "bill_id": "water-big"}, False,
         "PERMISSION_DENIED")
    held: dict[str, Any] = {}

    def big() -> None:
        call("pay-bill", {"payee": "city-water", "amount": 15_000, "bill_id": "water-q4"},
             True)
        held["done"] = True

    t = threading.Thread(target=big)
    t.start()
    deadline = time.monotonic() + 60
    pending: list[Any] = []
    while time.monotonic() < deadline and not pending:
        time.sleep(0.3)
        pending = list(op._call("ListApprovals",
                                control_pb2.ListApprovalsRequest()).approvals)
    if not pending:
        failures.append("the 150.00 EUR payment was never held for approval")
    else:
        a = pending[0]
        print(f"  held for approval: {a.id} {a.amount} {a.currency} -> {a.payee} "
              f"(key {a.idempotency_key}); operator approves it")
        op._call("Approve", control_pb2.ApproveRequest(id=a.id, amount=a.amount,
                                                       payee=a.payee))
    t.join(90)
    accounts = {a.name: a.balance for a in
                op._call("ListAccounts", control_pb2.ListAccountsRequest()).accounts}
    print(f"  balances: {accounts}")
    if accounts != {"user": 100_000 - 19_200, "acme-power": 4_200, "city-water": 15_000}:
        failures.append(f"ledger after the payments: {accounts}")
    return failures


if __name__ == "__main__":
    sys.exit(main())
