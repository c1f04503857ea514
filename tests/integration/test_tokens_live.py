"""Token and request abuse against a live broker: on a tool's own socket and at the control API.

Invariant 3 (a token only narrows, expires, and is bound to one invocation) and invariant 8
(bad input gets a precise status and an audit record; the broker keeps serving and no state
changes). Each test asserts the exact status and message, and the exact audit record.
"""

from __future__ import annotations

import base64
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from writ._proto import audit_pb2, token_pb2
from writ._proto import capabilities_pb2 as caps
from writ.client import WritError
from writ.core.tokens import PREFIX, UnverifiedToken, bind, encode
from writ.launcher._spec import LABEL_BROKER
from writ.manifests import parse_grant

from .conftest import PROBE_GRANT, PROBE_IMAGE, RunningBroker, probe


# -- helpers ---------------------------------------------------------------------------------
def forge(token: str) -> str:
    """The same token with one byte of its MAC flipped."""
    body = token[len(PREFIX):]
    msg = token_pb2.Token.FromString(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    mac = bytearray(msg.mac)
    mac[7] ^= 0x01
    msg.mac = bytes(mac)
    return encode(msg)


def row(e: audit_pb2.AuditEvent) -> tuple[str, str, str, str, str]:
    return (e.operation, audit_pb2.Decision.Name(e.decision), e.target, e.status, e.reason)


@dataclass(frozen=True)
class Snapshot:
    """What a refused request must leave untouched."""

    tools: tuple[tuple[str, str, str, str], ...]
    invocations: int
    seq: int


def snapshot(broker: RunningBroker) -> Snapshot:
    tools = tuple((t.name, t.image, t.image_id, t.registered_at)
                  for t in broker.agent.list_tools())
    db = sqlite3.connect(f"file:{broker.state_dir / 'state.db'}?mode=ro", uri=True)
    try:
        (count,) = db.execute("SELECT COUNT(*) FROM invocations").fetchone()
    finally:
        db.close()
    return Snapshot(tools, count, broker.last_seq())


@pytest.fixture
def before(broker: RunningBroker, probe_token: str) -> Snapshot:
    """Taken after the test's token is minted, so that mint is not counted as a change."""
    return snapshot(broker)


@pytest.fixture(autouse=True)
def _no_leftover_containers(docker_client: Any, broker: RunningBroker) -> Iterator[None]:
    yield
    assert docker_client.containers.list(
        all=True, filters={"label": f"{LABEL_BROKER}={broker.broker.broker_id}"}) == []


def refused_once(broker: RunningBroker, before: Snapshot) -> audit_pb2.AuditEvent:
    """The broker still serves, nothing changed, and exactly one record (the denial) was
    added. Returns that record."""
    after = snapshot(broker)  # ListTools answering is the "still serves" half
    assert (after.tools, after.invocations) == (before.tools, before.invocations)
    added = broker.audit_since(before.seq)
    assert len(added) == 1, added
    return added[0]


def invoke_refused(broker: RunningBroker, token: str, tool: str = "probe",
                   input_json: dict[str, Any] | str | None = None) -> WritError:
    with pytest.raises(WritError) as info:
        broker.agent.invoke(tool, {"action": "env"} if input_json is None else input_json,
                            token)
    return info.value


# -- on the tool's own socket ----------------------------------------------------------------
def _tool_socket_denial(broker: RunningBroker, agent_token: str,
                        **use: Any) -> tuple[dict[str, Any], audit_pb2.AuditEvent, str]:
    """Run the probe's use_token action; return its outcome, the one token.check record
    and the invocation id."""
    seq = broker.last_seq()
    out = broker.agent.invoke("probe", {"action": "use_token", **use}, agent_token)
    assert out.ok, f"{out.error_code}: {out.error_message}"
    added = broker.audit_since(seq)
    checks = [e for e in added if e.operation == "token.check"]
    assert len(checks) == 1, checks
    assert [e for e in added if e.operation == "file.read"] == []  # nothing was read with it
    return out.result["result"], checks[0], out.invocation_id


def test_token_bound_to_another_invocation_is_refused_on_the_tool_socket(
        broker: RunningBroker, probe_token: str) -> None:
    leaked = bind(UnverifiedToken.parse(probe_token), "i-other", "probe", int(time.time()))
    result, ev, inv = _tool_socket_denial(broker, probe_token, token=leaked)
    message = "token is bound to invocation i-other, not to this one"
    assert result == {"code": "PERMISSION_DENIED", "message": message}
    assert row(ev) == ("token.check", "DENY", inv, "PERMISSION_DENIED", message)
    assert (ev.actor, ev.method, ev.invocation_id, ev.token_id) == (
        "tool:probe", "/writ.v1.ToolBroker/ReadFile", inv,
        UnverifiedToken.parse(leaked).token_id)


def test_unbound_agent_token_is_refused_on_the_tool_socket(broker: RunningBroker,
                                                           probe_token: str) -> None:
    result, ev, inv = _tool_socket_denial(broker, probe_token, token=probe_token)
    message = ("token is not bound to an invocation; tools receive a bound token from the "
               "broker")
    assert result == {"code": "PERMISSION_DENIED", "message": message}
    assert row(ev) == ("token.check", "DENY", inv, "PERMISSION_DENIED", message)


def test_tool_forging_its_own_token_is_unauthenticated(broker: RunningBroker,
                                                       probe_token: str) -> None:
    # The tool flips one bit of the MAC of the bound token it was given.
    result, ev, inv = _tool_socket_denial(broker, probe_token, forge_own=True)
    message = "token signature does not verify: forged or altered"
    assert result == {"code": "UNAUTHENTICATED", "message": message}
    assert row(ev) == ("token.check", "DENY", inv, "UNAUTHENTICATED", message)
    assert ev.grant_id == UnverifiedToken.parse(probe_token).grant_id


def test_forged_agent_token_is_unauthenticated_on_the_tool_socket(broker: RunningBroker,
                                                                  probe_token: str) -> None:
    result, ev, inv = _tool_socket_denial(broker, probe_token, token=forge(probe_token))
    message = "token signature does not verify: forged or altered"
    assert result == {"code": "UNAUTHENTICATED", "message": message}
    assert row(ev) == ("token.check", "DENY", inv, "UNAUTHENTICATED", message)


def test_missing_token_is_unauthenticated_on_the_tool_socket(broker: RunningBroker,
                                                             probe_token: str) -> None:
    result, ev, inv = _tool_socket_denial(broker, probe_token, token="")
    assert result == {"code": "UNAUTHENTICATED", "message": "no token presented"}
    assert row(ev) == ("token.check", "DENY", inv, "UNAUTHENTICATED", "no token presented")


# -- at the control API: Invoke --------------------------------------------------------------
@pytest.mark.parametrize(("presented", "message"), [
    ("", "no token presented"),
    ("not-a-token", "malformed token: expected the prefix 'writ1.'"),
    ("writ1.!!!!", "malformed token: not valid base64url protobuf"),
], ids=["empty", "no-prefix", "bad-base64"])
def test_malformed_token_at_invoke_is_unauthenticated_and_audited(
        broker: RunningBroker, before: Snapshot, presented: str, message: str) -> None:
    err = invoke_refused(broker, presented)
    assert (err.code, err.details) == ("UNAUTHENTICATED", message)
    ev = refused_once(broker, before)
    assert row(ev) == ("tool.invoke", "DENY", "probe", "UNAUTHENTICATED", message)
    assert (ev.actor, ev.token_id, ev.invocation_id) == ("agent", "", "")


def test_forged_token_at_invoke_is_unauthenticated_and_audited(
        broker: RunningBroker, probe_token: str, before: Snapshot) -> None:
    forged = forge(probe_token)
    err = invoke_refused(broker, forged)
    message = "token signature does not verify: forged or altered"
    assert (err.code, err.details) == ("UNAUTHENTICATED", message)
    ev = refused_once(broker, before)
    assert row(ev) == ("tool.invoke", "DENY", "probe", "UNAUTHENTICATED", message)
    assert ev.token_id == UnverifiedToken.parse(forged).token_id


def test_expired_token_cannot_invoke(broker: RunningBroker) -> None:
    minted = broker.operator.mint_token(parse_grant(PROBE_GRANT), ttl_s=1)
    time.sleep(max(0.0, minted.expires_at - time.time()) + 0.2)
    before = snapshot(broker)
    err = invoke_refused(broker, minted.token)
    message = f"grant expired at {minted.expires_at}"
    assert (err.code, err.details) == ("PERMISSION_DENIED", message)
    ev = refused_once(broker, before)
    assert row(ev) == ("tool.invoke", "DENY", "probe", "PERMISSION_DENIED", message)
    assert ev.token_id == minted.token_id


def test_bound_token_cannot_start_another_invocation(broker: RunningBroker, probe_token: str,
                                                     before: Snapshot) -> None:
    leaked = bind(UnverifiedToken.parse(probe_token), "i-other", "probe", int(time.time()))
    err = invoke_refused(broker, leaked)
    message = "this token is bound to an invocation; only its tool may use it"
    assert (err.code, err.details) == ("PERMISSION_DENIED", message)
    ev = refused_once(broker, before)
    assert row(ev) == ("tool.invoke", "DENY", "probe", "PERMISSION_DENIED", message)
    assert ev.token_id == UnverifiedToken.parse(leaked).token_id


def test_token_whose_grant_lacks_the_tool_cannot_invoke_it(broker: RunningBroker) -> None:
    other = broker.mint({**PROBE_GRANT, "tools": [{"name": "word-count"}]})
    before = snapshot(broker)
    err = invoke_refused(broker, other)
    message = "grant does not allow invoke tool 'probe'"
    assert (err.code, err.details) == ("PERMISSION_DENIED", message)
    assert row(refused_once(broker, before)) == (
        "tool.invoke", "DENY", "probe", "PERMISSION_DENIED", message)


def test_attenuation_dropping_the_tool_cannot_invoke_it(broker: RunningBroker,
                                                        probe_token: str,
                                                        before: Snapshot) -> None:
    # The holder narrows offline to "no tools at all"; every block is one more layer.
    narrowed = UnverifiedToken.parse(probe_token).attenuate(
        token_pb2.TokenBlock(grant=caps.Grant()))
    err = invoke_refused(broker, narrowed)
    message = "attenuation 1 does not allow invoke tool 'probe'"
    assert (err.code, err.details) == ("PERMISSION_DENIED", message)
    assert row(refused_once(broker, before)) == (
        "tool.invoke", "DENY", "probe", "PERMISSION_DENIED", message)


def test_attenuation_adding_a_tool_is_refused(broker: RunningBroker, probe_token: str,
                                              before: Snapshot) -> None:
    # Anyone can append a block without a key; one that reaches past the grant is refused
    # whole, not merely ignored.
    widened = UnverifiedToken.parse(probe_token).attenuate(
        token_pb2.TokenBlock(grant=caps.Grant(tools=[caps.ToolRule(name="word-count")])))
    err = invoke_refused(broker, widened)
    message = "token block 1 widens its parent: tools[0] is not within the grant"
    assert (err.code, err.details) == ("PERMISSION_DENIED", message)
    assert row(refused_once(broker, before)) == (
        "tool.invoke", "DENY", "probe", "PERMISSION_DENIED", message)


def test_unknown_tool_is_not_found(broker: RunningBroker, probe_token: str,
                                   before: Snapshot) -> None:
    err = invoke_refused(broker, probe_token, tool="no-such-tool")
    message = "no tool named 'no-such-tool' is registered (see `writ tool list`)"
    assert (err.code, err.details) == ("NOT_FOUND", message)
    assert row(refused_once(broker, before)) == (
        "tool.invoke", "DENY", "no-such-tool", "NOT_FOUND", message)


@pytest.mark.parametrize(("input_json", "message"), [
    ('["action", "env"]', "input_json must be a JSON object"),
    ('"env"', "input_json must be a JSON object"),
    ("{action: env", ("input_json is not valid JSON: Expecting property name enclosed in "
                     "double quotes: line 1 column 2 (char 1)")),
], ids=["array", "string", "not-json"])
def test_input_that_is_not_a_json_object_is_invalid(broker: RunningBroker, probe_token: str,
                                                    before: Snapshot, input_json: str,
                                                    message: str) -> None:
    err = invoke_refused(broker, probe_token, input_json=input_json)
    assert (err.code, err.details) == ("INVALID_ARGUMENT", message)
    assert row(refused_once(broker, before)) == (
        "tool.invoke", "DENY", "probe", "INVALID_ARGUMENT", message)


# -- at the control API: RegisterTool and MintToken ------------------------------------------
def _manifest(**fields: Any) -> caps.Manifest:
    """Built directly, bypassing the YAML checks a client would run."""
    m = caps.Manifest(name="probe-copy", image=PROBE_IMAGE,
                      files=[caps.FileRule(paths=["reports/**"], ops=[caps.READ])])
    for key, value in fields.items():
        if key == "paths":
            del m.files[:]
            m.files.append(caps.FileRule(paths=value, ops=[caps.READ]))
        else:
            setattr(m, key, value)
    return m


def test_registering_a_missing_image_is_not_found(broker: RunningBroker,
                                                  before: Snapshot) -> None:
    with pytest.raises(WritError) as info:
        broker.operator.register_tool(_manifest(image="writ-tool/does-not-exist:latest"))
    message = ("image 'writ-tool/does-not-exist:latest' does not exist on this Docker engine; "
               "build it first (`writ images build`)")
    assert (info.value.code, info.value.details) == ("NOT_FOUND", message)
    ev = refused_once(broker, before)
    assert row(ev) == ("tool.register", "DENY", "probe-copy", "NOT_FOUND", message)
    assert ev.actor == "operator"


@pytest.mark.parametrize(("fields", "message"), [
    ({"paths": ["reports/../private/**"]},
     ("manifest.files[0].paths[0]: 'reports/../private/**' contains an empty, '.' or '..' "
      "segment")),
    ({"paths": ["/etc/**"]},
     ("manifest.files[0].paths[0]: '/etc/**' is absolute; patterns are relative to the "
      "workspace root")),
    ({"paths": ["reports/**secret"]},
     "manifest.files[0].paths[0]: '**' must be a whole segment in 'reports/**secret'"),
    ({"name": "Probe_Copy"},
     ("manifest.name: 'Probe_Copy' must be lowercase letters, digits and dashes, starting "
      "with a letter")),
    ({"name": "probe", "image": "Writ/Probe:latest"},
     "manifest.image: 'Writ/Probe:latest' is not a local image reference"),
], ids=["dotdot-glob", "absolute-glob", "partial-doublestar", "bad-name",
        "bad-image-over-registered-tool"])
def test_invalid_manifest_is_refused_and_changes_nothing(
        broker: RunningBroker, before: Snapshot, fields: dict[str, Any], message: str) -> None:
    manifest = _manifest(**fields)
    with pytest.raises(WritError) as info:
        broker.operator.register_tool(manifest)
    assert (info.value.code, info.value.details) == ("INVALID_ARGUMENT", message)
    # Checked after the snapshot: re-registering "probe" badly left the reviewed entry.
    assert row(refused_once(broker, before)) == (
        "tool.register", "DENY", manifest.name, "INVALID_ARGUMENT", message)


def test_minting_for_an_unknown_workspace_is_invalid(broker: RunningBroker,
                                                     before: Snapshot) -> None:
    grant = parse_grant({**PROBE_GRANT, "files": [
        {"workspace": "elsewhere", "paths": ["**"], "ops": ["READ"]}]})
    with pytest.raises(WritError) as info:
        broker.operator.mint_token(grant, 60)
    message = "grant names unknown workspace(s) ['elsewhere']; this broker serves ['demo']"
    assert (info.value.code, info.value.details) == ("INVALID_ARGUMENT", message)
    assert row(refused_once(broker, before)) == (
        "token.mint", "DENY", "", "INVALID_ARGUMENT", message)


@pytest.mark.parametrize(("expires_in", "ttl_s", "message"), [
    (-10, 0, "grant.expires_at is in the past"),
    (2 * 86400, 0, "grant.expires_at is more than 86400s away"),
    (0, 86401, "ttl_s 86401 exceeds the maximum of 86400"),
], ids=["expired", "too-far", "ttl-too-long"])
def test_minting_an_unbounded_or_dead_grant_is_invalid(broker: RunningBroker,
                                                       before: Snapshot, expires_in: int,
                                                       ttl_s: int, message: str) -> None:
    grant = parse_grant(PROBE_GRANT)
    if expires_in:
        grant.expires_at = int(time.time()) + expires_in
    with pytest.raises(WritError) as info:
        broker.operator.mint_token(grant, ttl_s)
    assert (info.value.code, info.value.details) == ("INVALID_ARGUMENT", message)
    assert row(refused_once(broker, before)) == (
        "token.mint", "DENY", "", "INVALID_ARGUMENT", message)


@pytest.mark.parametrize("method", ["register_tool", "mint_token"])
def test_agent_socket_cannot_register_tools_or_mint_tokens(broker: RunningBroker,
                                                           before: Snapshot,
                                                           method: str) -> None:
    arg = _manifest() if method == "register_tool" else parse_grant(PROBE_GRANT)
    with pytest.raises(WritError) as info:
        getattr(broker.agent, method)(arg)
    assert (info.value.code, info.value.details) == ("UNIMPLEMENTED", "Method not found!")
    after = snapshot(broker)
    # Not served at all: nothing to decide, so nothing recorded.
    assert (after.tools, after.invocations, after.seq) == (
        before.tools, before.invocations, before.seq)


def test_the_broker_still_serves_after_the_abuse(broker: RunningBroker,
                                                  probe_token: str) -> None:
    # Runs last in this module: the one registered tool is still the reviewed probe image.
    tools = broker.agent.list_tools()
    assert [(t.name, t.image) for t in tools] == [("probe", PROBE_IMAGE)]
    assert probe(broker, probe_token, "read", path="reports/q3.csv") == {
        "text": "region,revenue\nnorth,1\n"}
