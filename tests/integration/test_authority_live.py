"""The authority core against a live broker and real containers: attenuated sub-tokens,
tool argument constraints, call and byte budgets, revocation, key rotation, Explain and
the narrowing report at mint.

Invariant 3 (a token only narrows) end to end: an agent narrows its token offline, the
tool runs with the narrower token, and inside the container the sub-token's limits hold
while the parent's wider ones never leak through. Each test asserts exact statuses,
messages and audit records.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from writ._proto import audit_pb2, control_pb2, token_pb2
from writ._proto import capabilities_pb2 as caps
from writ.client import InvokeOutcome, WritError
from writ.core.describe import describe
from writ.core.policy import Authority
from writ.core.tokens import PREFIX, UnverifiedToken, attenuate
from writ.launcher._spec import LABEL_BROKER
from writ.manifests import parse_grant, parse_manifest

from .conftest import PROBE_IMAGE, PROBE_MANIFEST, RunningBroker

Q3 = "region,revenue\nnorth,1\n"  # 23 bytes, written by make_workspace
SECRET = "TOP-SECRET-CONTENT\n"
PARENT_GRANT: dict[str, Any] = {
    "tools": [{"name": "probe"}],
    "files": [{"id": "reports", "workspace": "demo", "paths": ["reports/**"],
               "ops": ["READ", "LIST"]},
              {"id": "private", "workspace": "demo", "paths": ["private/**"], "ops": ["READ"]}],
}


# -- helpers ---------------------------------------------------------------------------------
def row(e: audit_pb2.AuditEvent) -> tuple[str, str, str, str, str]:
    return (e.operation, audit_pb2.Decision.Name(e.decision), e.target, e.status, e.reason)


def narrowed(token: str, **grant: Any) -> str:
    """The agent's offline attenuation: one more block, no key needed."""
    return attenuate(UnverifiedToken.parse(token), parse_grant(grant), int(time.time()))


def ids(token: str) -> tuple[str, str]:
    """(token id, grant id): the last block's id and the root block's."""
    u = UnverifiedToken.parse(token)
    return u.token_id, u.grant_id


def key_id(token: str) -> str:
    body = token[len(PREFIX):]
    return token_pb2.Token.FromString(
        base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))).key_id


def invocations(broker: RunningBroker) -> int:
    db = sqlite3.connect(f"file:{broker.state_dir / 'state.db'}?mode=ro", uri=True)
    try:
        (count,) = db.execute("SELECT COUNT(*) FROM invocations").fetchone()
    finally:
        db.close()
    return int(count)


def run(broker: RunningBroker, token: str, action: str, **args: Any) -> InvokeOutcome:
    out = broker.agent.invoke("probe", {"action": action, **args}, token)
    assert out.ok, f"{out.error_code}: {out.error_message}"
    return out


def read(broker: RunningBroker, token: str, path: str) -> tuple[dict[str, Any], str]:
    """The probe's read of ``path`` inside its container, and the invocation id."""
    out = run(broker, token, "read", path=path)
    return out.result["result"], out.invocation_id


def refused_invoke(broker: RunningBroker, token: str, args: dict[str, Any],
                   tool: str = "probe") -> tuple[WritError, audit_pb2.AuditEvent]:
    """An Invoke the broker refuses before any container starts: the error and the one
    audit record it leaves."""
    seq, count = broker.last_seq(), invocations(broker)
    with pytest.raises(WritError) as info:
        broker.agent.invoke(tool, args, token)
    assert invocations(broker) == count  # no invocation, so no container
    added = broker.audit_since(seq)
    assert len(added) == 1, added
    return info.value, added[0]


def reads_of(broker: RunningBroker, seq: int, inv: str) -> list[audit_pb2.AuditEvent]:
    return [e for e in broker.audit_since(seq)
            if e.invocation_id == inv and e.operation in ("file.read", "file.list",
                                                          "token.check")]


def explain(broker: RunningBroker, token: str, tool: str = "",
            **operation: Any) -> control_pb2.ExplainResponse:
    resp: control_pb2.ExplainResponse = broker.agent.stub.Explain(
        control_pb2.ExplainRequest(token=token, tool=tool, **operation))
    return resp


def budget_used(broker: RunningBroker, key: str) -> int:
    return broker.broker.budgets.used([key])[key]


def layer_key(broker: RunningBroker, token: str, block: int) -> str:
    """The budget-counter prefix of a token's block: its chain-MAC key (not its id)."""
    return broker.broker.verify_token(token)[1].layer_keys[block]


def poll(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def settled_audit(broker: RunningBroker) -> list[audit_pb2.AuditEvent]:
    """The audit log while the broker may be appending: a torn final line is retried."""
    for _ in range(50):
        try:
            return broker.audit()
        except ValueError as exc:  # an incomplete last line, mid-append
            last = exc
            time.sleep(0.02)
    raise AssertionError(f"audit log never settled: {last}")


@pytest.fixture(autouse=True)
def _no_leftover_containers(docker_client: Any, broker: RunningBroker) -> Iterator[None]:
    yield
    poll(lambda: docker_client.containers.list(
        all=True, filters={"label": f"{LABEL_BROKER}={broker.broker.broker_id}"}) == [],
        "containers to be removed")


# -- (1) an attenuated sub-token holds inside the container ----------------------------------
def test_sub_token_narrower_files_hold_inside_the_container(broker: RunningBroker) -> None:
    parent = broker.mint(PARENT_GRANT)
    child = narrowed(parent, tools=[{"name": "probe"}],
                     files=[{"workspace": "demo", "paths": ["reports/q3.csv"], "ops": ["READ"]}])
    child_id, grant_id = ids(child)
    assert grant_id == ids(parent)[1]

    # What the parent would allow (no container needed to show it) ...
    wide = explain(broker, parent, "probe", file=control_pb2.ExplainFile(
        workspace="demo", path="private/secret.txt", op=caps.READ))
    assert (wide.allowed, wide.reason) == (
        True, "READ demo:private/secret.txt allowed by private")
    # ... the sub-token does not.
    seq = broker.last_seq()
    result, inv = read(broker, child, "reports/q3.csv")
    assert result == {"text": Q3}
    [ev] = reads_of(broker, seq, inv)
    assert row(ev) == ("file.read", "ALLOW", "demo:reports/q3.csv", "OK",
                       "READ demo:reports/q3.csv allowed by reports")
    assert (ev.rule, ev.bytes, ev.grant_id) == ("reports", 23, grant_id)

    seq = broker.last_seq()
    result, inv = read(broker, child, "private/secret.txt")
    message = "attenuation 1 has no rule allowing READ demo:private/secret.txt"
    assert result == {"code": "PERMISSION_DENIED", "message": message}
    [ev] = reads_of(broker, seq, inv)
    assert row(ev) == ("file.read", "DENY", "demo:private/secret.txt", "PERMISSION_DENIED",
                       message)
    assert (ev.actor, ev.grant_id, ev.bytes) == ("tool:probe", grant_id, 0)
    invoke = next(e for e in broker.audit_since(seq) if e.operation == "tool.invoke")
    assert (invoke.token_id, invoke.grant_id, invoke.invocation_id) == (child_id, grant_id, inv)

    # The parent lists reports/; the sub-token allows READ only.
    seq = broker.last_seq()
    out = run(broker, child, "listdir", path="reports")
    message = "attenuation 1 has no rule allowing LIST demo:reports"
    assert out.result["result"] == {"code": "PERMISSION_DENIED", "message": message}
    [ev] = reads_of(broker, seq, out.invocation_id)
    assert row(ev) == ("file.list", "DENY", "demo:reports", "PERMISSION_DENIED", message)


def test_sub_token_narrower_read_budget_holds_and_the_parent_keeps_its_own(
        broker: RunningBroker) -> None:
    parent = broker.mint({**PARENT_GRANT, "files": [
        {"id": "reports", "workspace": "demo", "paths": ["reports/**"], "ops": ["READ"],
         "read_budget_bytes": 1000}]})
    child = narrowed(parent, tools=[{"name": "probe"}], files=[
        {"workspace": "demo", "paths": ["reports/**"], "ops": ["READ"],
         "read_budget_bytes": 30}])
    parent_key = f"{layer_key(broker, child, 0)}/reports/read_bytes"
    child_key = f"{layer_key(broker, child, 1)}/attenuation 1.files[0]/read_bytes"

    assert read(broker, child, "reports/q3.csv")[0] == {"text": Q3}
    assert (budget_used(broker, parent_key), budget_used(broker, child_key)) == (23, 23)

    seq = broker.last_seq()
    result, inv = read(broker, child, "reports/q3.csv")
    message = ("budget exhausted: attenuation 1.files[0] allows 30 read bytes in total, 23 used, "
               "this needs 23")
    assert result == {"code": "PERMISSION_DENIED", "message": message}
    [ev] = reads_of(broker, seq, inv)
    assert row(ev) == ("file.read", "DENY", "demo:reports/q3.csv", "PERMISSION_DENIED", message)
    # all or nothing: the refused read charged neither counter
    assert (budget_used(broker, parent_key), budget_used(broker, child_key)) == (23, 23)

    # The parent's wider budget is its own: it still reads.
    assert read(broker, parent, "reports/q3.csv")[0] == {"text": Q3}
    assert (budget_used(broker, parent_key), budget_used(broker, child_key)) == (46, 23)


# -- (2) a widening sub-token is refused whole -----------------------------------------------
def test_sub_token_that_widens_is_refused_at_invoke_and_audited(broker: RunningBroker) -> None:
    parent = broker.mint({"tools": [{"name": "probe"}], "files": [
        {"id": "reports", "workspace": "demo", "paths": ["reports/**"], "ops": ["READ"]}]})
    wider = narrowed(parent, tools=[{"name": "probe"}], files=[
        {"workspace": "demo", "paths": ["reports/**", "private/**"], "ops": ["READ"]}])
    err, ev = refused_invoke(broker, wider, {"action": "read", "path": "private/secret.txt"})
    message = ("token block 1 widens its parent: files[0] is not within the grant: path "
               "'private/**' is not within ['reports/**']")
    assert (err.code, err.details) == ("PERMISSION_DENIED", message)
    assert row(ev) == ("tool.invoke", "DENY", "probe", "PERMISSION_DENIED", message)
    assert (ev.token_id, ev.grant_id) == ids(wider)

    later = narrowed(parent, tools=[{"name": "probe"}], expires_at=int(time.time()) + 7200)
    err, ev = refused_invoke(broker, later, {"action": "env"})
    assert err.code == "PERMISSION_DENIED"
    assert err.details.startswith("token block 1 widens its parent: expires_at ")
    assert row(ev) == ("tool.invoke", "DENY", "probe", "PERMISSION_DENIED", err.details)


# -- (3) tool argument constraints at Invoke --------------------------------------------------
def test_argument_constraints_refuse_at_invoke_before_any_container(
        broker: RunningBroker) -> None:
    token = broker.mint({**PARENT_GRANT, "tools": [{"name": "probe", "args": [
        {"arg": "action", "one_of": ["read"]},
        {"arg": "path", "glob": "reports/**"}], "only_listed_args": True}]})
    cases = [
        ({"action": "env"}, "argument 'action'='env' is not one of ['read']"),
        ({"action": "read"}, "argument 'path' is required"),
        ({"action": "read", "path": "private/secret.txt"},
         "argument 'path'='private/secret.txt' does not match 'reports/**'"),
        ({"action": "read", "path": "reports/../private/secret.txt"},
         "argument 'path': path 'reports/../private/secret.txt' contains a '..' segment"),
        ({"action": "read", "path": "reports/q3.csv", "workspace": "demo"},
         "argument 'workspace' is not allowed (only listed arguments)"),
        ({"action": ["read"], "path": "reports/q3.csv"},
         "argument 'action'=['read'] is not one of ['read']"),
    ]
    for args, why in cases:
        err, ev = refused_invoke(broker, token, args)
        message = f"grant does not allow invoke tool 'probe': {why}"
        assert (err.code, err.details) == ("PERMISSION_DENIED", message), args
        assert row(ev) == ("tool.invoke", "DENY", "probe", "PERMISSION_DENIED", message)
        assert (ev.actor, ev.invocation_id) == ("agent", "")
    # The one shape the constraints admit runs.
    assert read(broker, token, "reports/q3.csv")[0] == {"text": Q3}


def test_sub_token_adds_an_argument_constraint_the_parent_lacks(broker: RunningBroker) -> None:
    parent = broker.mint(PARENT_GRANT)
    child = narrowed(parent, tools=[{"name": "probe", "args": [
        {"arg": "action", "exact": "read"}]}], files=PARENT_GRANT["files"])
    err, ev = refused_invoke(broker, child, {"action": "env"})
    message = "attenuation 1 does not allow invoke tool 'probe': argument 'action'='env' is not 'read'"
    assert (err.code, err.details) == ("PERMISSION_DENIED", message)
    assert row(ev) == ("tool.invoke", "DENY", "probe", "PERMISSION_DENIED", message)


# -- (4) max_calls ----------------------------------------------------------------------------
def test_max_calls_refuses_the_third_invoke(broker: RunningBroker) -> None:
    token = broker.mint({**PARENT_GRANT, "tools": [{"name": "probe", "max_calls": 2}]})
    key = f"{layer_key(broker, token, 0)}/grant.tools[0]/calls"
    run(broker, token, "env")
    run(broker, token, "env")
    err, ev = refused_invoke(broker, token, {"action": "env"})
    message = "budget exhausted: grant.tools[0] allows 2 calls in total, 2 used, this needs 1"
    assert (err.code, err.details) == ("PERMISSION_DENIED", message)
    assert row(ev) == ("tool.invoke", "DENY", "probe", "PERMISSION_DENIED", message)
    assert budget_used(broker, key) == 2  # the refusal reserved nothing
    # Explain tells the same story without spending anything.
    resp = explain(broker, token, "probe",
                   invoke=control_pb2.ExplainInvoke(input_json='{"action": "env"}'))
    assert (resp.allowed, resp.reason, resp.rule) == (False, message, "")
    assert [(b.key, b.kind, b.used, b.cap) for b in resp.budgets] == [(key, "calls", 2, 2)]


def test_concurrent_invokes_sharing_max_calls_start_at_most_that_many_containers(
        broker: RunningBroker) -> None:
    token = broker.mint({**PARENT_GRANT, "tools": [{"name": "probe", "max_calls": 3}]})
    grant_id = ids(token)[1]
    seq = broker.last_seq()
    outcomes: list[InvokeOutcome | WritError] = []
    lock = threading.Lock()
    go = threading.Barrier(6)

    def agent() -> None:
        go.wait()
        try:
            result: InvokeOutcome | WritError = broker.agent.invoke(
                "probe", {"action": "env"}, token)
        except WritError as err:
            result = err
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=agent) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    ran = [o for o in outcomes if isinstance(o, InvokeOutcome)]
    refused = [o for o in outcomes if isinstance(o, WritError)]
    assert len(ran) == 3 and all(o.ok for o in ran)
    assert len({o.container_id for o in ran}) == 3
    assert [(e.code, e.details) for e in refused] == [(
        "PERMISSION_DENIED",
        "budget exhausted: grant.tools[0] allows 3 calls in total, 3 used, this needs 1")] * 3
    decided = [e for e in broker.audit_since(seq)
               if e.operation == "tool.invoke" and e.grant_id == grant_id]
    assert sorted(audit_pb2.Decision.Name(e.decision) for e in decided) == ["ALLOW"] * 3 + [
        "DENY"] * 3
    assert budget_used(broker, f"{layer_key(broker, token, 0)}/grant.tools[0]/calls") == 3


# -- (5) read budgets across invocations ------------------------------------------------------
def test_read_budget_is_shared_across_invocations(broker: RunningBroker) -> None:
    token = broker.mint({"tools": [{"name": "probe"}], "files": [
        {"id": "reports", "workspace": "demo", "paths": ["reports/**"], "ops": ["READ"],
         "read_budget_bytes": 40}]})
    key = f"{layer_key(broker, token, 0)}/reports/read_bytes"
    assert read(broker, token, "reports/q3.csv")[0] == {"text": Q3}
    assert budget_used(broker, key) == 23

    seq = broker.last_seq()
    result, inv = read(broker, token, "reports/q3.csv")
    message = "budget exhausted: reports allows 40 read bytes in total, 23 used, this needs 23"
    assert result == {"code": "PERMISSION_DENIED", "message": message}
    [ev] = reads_of(broker, seq, inv)
    assert row(ev) == ("file.read", "DENY", "demo:reports/q3.csv", "PERMISSION_DENIED", message)
    assert budget_used(broker, key) == 23
    resp = explain(broker, token, "probe", file=control_pb2.ExplainFile(
        workspace="demo", path="reports/q3.csv", op=caps.READ))
    assert [(b.key, b.kind, b.used, b.cap) for b in resp.budgets] == [(key, "read_bytes", 23, 40)]


# -- (6) revocation ---------------------------------------------------------------------------
def test_revoking_the_parent_stops_the_child_and_a_running_invocation(
        broker: RunningBroker) -> None:
    parent = broker.mint(PARENT_GRANT)
    child = narrowed(parent, tools=[{"name": "probe"}], files=[
        {"workspace": "demo", "paths": ["reports/**"], "ops": ["READ"]}])
    parent_id, grant_id = ids(parent)
    started = threading.Event()
    outcome: list[InvokeOutcome] = []

    def agent() -> None:
        out = InvokeOutcome()
        for ev in broker.agent.invoke_stream(
                "probe", {"action": "read_loop", "path": "reports/q3.csv", "seconds": 3}, child):
            kind = ev.WhichOneof("event")
            if kind == "started":
                out.invocation_id = ev.started.invocation_id
                started.set()
            elif kind == "output":
                out.output += ev.output.data
            elif kind == "result":
                out.ok = ev.result.ok
                out.error_code, out.error_message = ev.result.error.code, ev.result.error.message
        outcome.append(out)

    seq = broker.last_seq()
    thread = threading.Thread(target=agent)
    thread.start()
    assert started.wait(30)
    poll(lambda: any(e.operation == "file.read" and e.decision == audit_pb2.ALLOW
                     and e.seq > seq and e.grant_id == grant_id
                     for e in settled_audit(broker)), "the running tool's first read")
    broker.operator.stub.RevokeToken(control_pb2.RevokeTokenRequest(
        token_id=parent_id, reason="leaked in a log"))
    thread.join(30)
    assert not thread.is_alive()
    [out] = outcome
    # The tool's token died under it: the broker stopped the invocation at once.
    assert (out.ok, out.error_code, out.error_message) == (
        False, "PERMISSION_DENIED", "the token was revoked while the tool ran: leaked in a log")
    revoked = f"token revoked (block {parent_id})"
    events = broker.audit_since(seq)
    [end] = [e for e in events if e.operation == "tool.exit"
             and e.invocation_id == out.invocation_id]
    assert (end.status, end.reason) == (
        "PERMISSION_DENIED",
        "PERMISSION_DENIED: the token was revoked while the tool ran: leaked in a log")
    [revoke] = [e for e in events if e.operation == "token.revoke"]
    assert row(revoke) == ("token.revoke", "ALLOW", parent_id, "OK", "leaked in a log")
    assert (revoke.actor, revoke.token_id) == ("operator", parent_id)
    mine = [e for e in events if e.invocation_id == out.invocation_id
            and e.operation in ("file.read", "token.check")]
    reads = [e for e in mine if e.operation == "file.read"]
    denials = [e for e in mine if e.operation == "token.check"]
    assert reads and all(row(e) == ("file.read", "ALLOW", "demo:reports/q3.csv", "OK",
                                    "READ demo:reports/q3.csv allowed by reports")
                         for e in reads)
    # A call racing the container's removal is refused, never served.
    assert {row(e) for e in denials} <= {
        ("token.check", "DENY", out.invocation_id, "PERMISSION_DENIED", revoked)}
    assert all(e.seq > revoke.seq for e in denials)
    assert max(e.seq for e in reads) < end.seq

    # A new invocation with the child, or with the parent itself, is refused.
    for token in (child, parent):
        err, ev = refused_invoke(broker, token, {"action": "env"})
        assert (err.code, err.details) == ("PERMISSION_DENIED", revoked)
        assert row(ev) == ("tool.invoke", "DENY", "probe", "PERMISSION_DENIED", revoked)


def test_revoking_a_child_leaves_its_parent(broker: RunningBroker) -> None:
    parent = broker.mint(PARENT_GRANT)
    child = narrowed(parent, tools=[{"name": "probe"}])
    child_id = ids(child)[0]
    broker.operator.revoke_token(child_id)
    events = broker.audit()
    assert row(events[-1]) == ("token.revoke", "ALLOW", child_id, "OK",
                               "revoked by the operator")
    with pytest.raises(grpc.RpcError) as info:
        explain(broker, child, invoke=control_pb2.ExplainInvoke(input_json="{}"))
    assert (info.value.code(), info.value.details()) == (
        grpc.StatusCode.PERMISSION_DENIED, f"token revoked (block {child_id})")
    resp = explain(broker, parent, "probe", invoke=control_pb2.ExplainInvoke(input_json="{}"))
    assert (resp.allowed, resp.reason) == (True, "invoke tool 'probe' allowed by grant.tools[0]")


def test_revoking_a_malformed_id_is_invalid(broker: RunningBroker) -> None:
    seq = broker.last_seq()
    with pytest.raises(WritError) as info:
        broker.operator.revoke_token("not-hex")
    message = "token_id 'not-hex' is not 32 hex digits"
    assert (info.value.code, info.value.details) == ("INVALID_ARGUMENT", message)
    [ev] = broker.audit_since(seq)
    assert row(ev) == ("token.revoke", "DENY", "not-hex", "INVALID_ARGUMENT", message)


# -- (7) key rotation -------------------------------------------------------------------------
def test_rotate_key_keeps_old_tokens_and_seals_new_ones_with_the_new_key(
        broker: RunningBroker) -> None:
    old = broker.mint(PARENT_GRANT)
    old_key = key_id(old)
    old_child = narrowed(old, tools=[{"name": "probe"}], files=PARENT_GRANT["files"])
    seq = broker.last_seq()
    resp = broker.operator.stub.RotateKey(control_pb2.RotateKeyRequest())
    assert resp.key_id != old_key and resp.key_id.startswith("k")
    assert old_key in resp.verifying_key_ids and resp.key_id in resp.verifying_key_ids
    assert list(resp.verifying_key_ids) == sorted(resp.verifying_key_ids)
    [ev] = broker.audit_since(seq)
    assert row(ev) == ("key.rotate", "ALLOW", resp.key_id, "OK",
                       f"new tokens are sealed with {resp.key_id}")

    new = broker.mint(PARENT_GRANT)
    assert key_id(new) == resp.key_id
    assert key_id(old_child) == old_key  # attenuation keeps the root's key id
    # Old tokens (and their sub-tokens) still verify and run.
    assert read(broker, old_child, "reports/q3.csv")[0] == {"text": Q3}
    for token in (old, new):
        got = explain(broker, token, "probe", invoke=control_pb2.ExplainInvoke(input_json="{}"))
        assert (got.allowed, got.token_id) == (True, ids(token)[0])


# -- (8) Explain over gRPC --------------------------------------------------------------------
PAYER_MANIFEST: dict[str, Any] = {
    "name": "probe-payer", "image": PROBE_IMAGE, "description": "probe with net and pay",
    "files": [{"paths": ["reports/**"], "ops": ["READ"]}],
    "net": [{"schemes": ["https"], "host": "*.example.com", "methods": ["GET"],
             "path_prefixes": ["/"]}],
    "pay": [{"payees": ["acme"], "currency": "USD", "max_per_payment": 1000, "budget": 5000}],
}
EXPLAIN_GRANT: dict[str, Any] = {
    "tools": [{"name": "probe", "max_calls": 5, "args": [{"arg": "action", "one_of": ["read"]}]},
              {"name": "probe-payer"}],
    "files": [{"id": "reports", "workspace": "demo", "paths": ["reports/**"], "ops": ["READ"],
               "read_budget_bytes": 100}],
    "net": [{"id": "api", "schemes": ["https"], "host": "api.example.com",
             "methods": ["GET", "POST"], "path_prefixes": ["/v1/"], "max_requests": 10}],
    "pay": [{"id": "vendors", "payees": ["acme", "globex"], "currency": "USD",
             "max_per_payment": 5000, "budget": 20000, "max_count": 3, "approval_above": 1000}],
}


def test_explain_answers_every_kind_without_touching_budgets(broker: RunningBroker) -> None:
    broker.register(PAYER_MANIFEST)
    token = broker.mint(EXPLAIN_GRANT)
    token_id, _ = ids(token)
    g = layer_key(broker, token, 0)  # budget counters are keyed by the chain MAC

    def states(resp: control_pb2.ExplainResponse) -> list[tuple[str, str, int, int]]:
        return [(b.key, b.kind, b.used, b.cap) for b in resp.budgets]

    # (request, tool, allowed, reason, rule, budgets, needs approval)
    rows: list[tuple[dict[str, Any], str, bool, str, str, list[Any], bool]] = [
        ({"invoke": control_pb2.ExplainInvoke(input_json='{"action": "read"}')}, "probe",
         True, "invoke tool 'probe' allowed by grant.tools[0]", "grant.tools[0]",
         [(f"{g}/grant.tools[0]/calls", "calls", 0, 5)], False),
        ({"invoke": control_pb2.ExplainInvoke(input_json='{"action": "env"}')}, "probe",
         False, ("grant does not allow invoke tool 'probe': argument 'action'='env' is not one "
         "of ['read']"), "", [], False),
        ({"file": control_pb2.ExplainFile(workspace="demo", path="reports/q3.csv",
                                          op=caps.READ)}, "probe",
         True, "READ demo:reports/q3.csv allowed by reports", "reports",
         [(f"{g}/reports/read_bytes", "read_bytes", 0, 100)], False),
        ({"file": control_pb2.ExplainFile(workspace="demo", path="private/secret.txt",
                                          op=caps.READ)}, "probe",
         False, "grant has no rule allowing READ demo:private/secret.txt", "", [], False),
        ({"file": control_pb2.ExplainFile(workspace="demo", path="reports",
                                          op=caps.LIST)}, "probe-payer",
         False, "manifest of 'probe-payer' has no rule allowing LIST demo:reports", "", [],
         False),
        ({"net": control_pb2.ExplainNet(method="get", url="https://API.example.com/v1/x")}, "",
         True, "GET https://api.example.com:443/v1/x allowed by api", "api",
         [(f"{g}/api/requests", "requests", 0, 10)], False),
        ({"net": control_pb2.ExplainNet(method="GET", url="https://api.example.com/v1/x")},
         "probe", False, ("manifest of 'probe' has no rule allowing GET "
         "https://api.example.com:443/v1/x"), "", [], False),
        ({"net": control_pb2.ExplainNet(method="POST", url="https://api.example.com/v1/x")},
         "probe-payer", False, ("manifest of 'probe-payer' has no rule allowing POST "
         "https://api.example.com:443/v1/x: method POST is not allowed for *.example.com"), "",
         [], False),
        ({"net": control_pb2.ExplainNet(method="GET",
                                        url="https://api.example.com/v1/%2e%2e/admin")},
         "", False, ("grant has no rule allowing GET https://api.example.com:443/v1/%2e%2e/admin: "
         "path '/v1/%2e%2e/admin' has a '.' or '..' segment; refused for api.example.com"), "",
         [], False),
        ({"net": control_pb2.ExplainNet(method="GET", url="http://api.example.com/v1/x")}, "",
         False, ("grant has no rule allowing GET http://api.example.com:80/v1/x: scheme 'http' "
         "is not allowed for api.example.com"), "", [], False),
        ({"pay": control_pb2.ExplainPay(payee="acme", amount=1500, currency="USD")}, "",
         True, ("pay 1500 USD (minor units) to 'acme' allowed by vendors (needs a person's "
         "approval)"), "vendors",
         [(f"{g}/vendors/spend", "spend", 0, 20000), (f"{g}/vendors/payments", "payments", 0,
                                                       3)], True),
        ({"pay": control_pb2.ExplainPay(payee="acme", amount=1500, currency="USD")},
         "probe-payer", False, ("manifest of 'probe-payer' has no rule allowing pay 1500 USD "
         "(minor units) to 'acme': amount exceeds the per-payment maximum of 1000"), "", [],
         False),
        ({"pay": control_pb2.ExplainPay(payee="acme", amount=0, currency="USD")}, "",
         False, "amount 0 is not a positive integer of minor units", "", [], False),
        ({"pay": control_pb2.ExplainPay(payee="globex", amount=25000, currency="USD")}, "",
         False, ("grant has no rule allowing pay 25000 USD (minor units) to 'globex': amount "
         "exceeds the per-payment maximum of 5000"), "", [], False),
    ]
    for _ in range(2):  # asking twice changes nothing
        for request, tool, allowed, reason, rule, budgets, approval in rows:
            resp = explain(broker, token, tool, **request)
            assert (resp.allowed, resp.reason, resp.rule, resp.needs_approval) == (
                allowed, reason, rule, approval), request
            assert states(resp) == budgets, request
            assert resp.token_id == token_id
    keys = [k for *_, budgets, _ in rows for k, *_ in budgets]
    assert broker.broker.budgets.used(keys) == dict.fromkeys(keys, 0)

    # The effective authority, with the named tool's manifest as its first layer.
    resp = explain(broker, token, "probe-payer",
                   invoke=control_pb2.ExplainInvoke(input_json="{}"))
    blocks = UnverifiedToken.parse(token).blocks
    assert list(resp.authority) == describe(Authority.from_blocks(
        blocks, parse_manifest(PAYER_MANIFEST)))
    assert resp.authority[1:3] == [
        "manifest of 'probe-payer': files *:reports/** READ [files[0]]",
        "manifest of 'probe-payer': net GET https://*.example.com:default / [net[0]]"]


def test_explain_refuses_what_it_cannot_decide(broker: RunningBroker) -> None:
    token = broker.mint(PARENT_GRANT)
    cases = [
        ({"tool": "no-such-tool", "invoke": control_pb2.ExplainInvoke(input_json="{}")},
         grpc.StatusCode.NOT_FOUND,
         "no tool named 'no-such-tool' is registered (see `writ tool list`)"),
        ({"invoke": control_pb2.ExplainInvoke(input_json="{}")},
         grpc.StatusCode.INVALID_ARGUMENT, "name the tool to explain an invocation"),
        ({"tool": "probe"}, grpc.StatusCode.INVALID_ARGUMENT,
         "give an operation: invoke, file, net or pay"),
        ({"net": control_pb2.ExplainNet(method="GET", url="ftp://api.example.com/")},
         grpc.StatusCode.INVALID_ARGUMENT, "URL scheme must be http or https, not 'ftp'"),
        ({"file": control_pb2.ExplainFile(workspace="demo", path="../x", op=caps.READ)},
         grpc.StatusCode.INVALID_ARGUMENT, "path '../x' contains a '..' segment"),
    ]
    for request, code, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            broker.agent.stub.Explain(control_pb2.ExplainRequest(token=token, **request))
        assert (info.value.code(), info.value.details()) == (code, message), request


# -- (9) the narrowing report at mint ---------------------------------------------------------
def test_mint_reports_what_exceeds_each_named_tools_manifest(broker: RunningBroker) -> None:
    broker.register(PAYER_MANIFEST)
    grant = parse_grant({
        "tools": [{"name": "probe"}, {"name": "probe-payer"}, {"name": "not-registered"}],
        "files": [{"workspace": "demo", "paths": ["reports/**"],
                   "ops": ["READ", "WRITE", "DELETE", "LIST"]}],
        "net": EXPLAIN_GRANT["net"], "pay": EXPLAIN_GRANT["pay"]})
    seq = broker.last_seq()
    resp = broker.operator.mint_token(grant, 600)
    assert list(resp.narrowed) == [
        "probe: files[0] DELETE/WRITE exceeds its manifest; narrowed",
        "probe: its manifest allows no network; net rules narrowed away",
        "probe: its manifest allows no payments; pay rules narrowed away",
        "probe-payer: files[0] DELETE/LIST/WRITE exceeds its manifest; narrowed",
    ]
    [ev] = broker.audit_since(seq)
    assert row(ev) == ("token.mint", "ALLOW", resp.token_id, "OK",
                       (f"3 tool, 1 file, 1 net, 1 pay rule(s); expires {resp.expires_at}; "
                       f"narrowed by manifests: {'; '.join(resp.narrowed)}"))

    fits = broker.operator.mint_token(parse_grant(PARENT_GRANT), 600)
    assert list(fits.narrowed) == []

    # What the report promises holds at the decision: the manifest refuses the excess.
    resp2 = explain(broker, resp.token, "probe", file=control_pb2.ExplainFile(
        workspace="demo", path="reports/q3.csv", op=caps.WRITE))
    assert (resp2.allowed, resp2.reason) == (
        False, "manifest of 'probe' has no rule allowing WRITE demo:reports/q3.csv")


def test_probe_manifest_is_the_reviewed_one() -> None:
    """The tests above rely on the probe's manifest: READ, LIST, STAT on any path."""
    m = parse_manifest(PROBE_MANIFEST)
    assert [(list(f.paths), [caps.FileOp.Name(o) for o in f.ops]) for f in m.files] == [
        (["**"], ["READ", "LIST", "STAT"])]
    assert (list(m.net), list(m.pay)) == ([], [])
