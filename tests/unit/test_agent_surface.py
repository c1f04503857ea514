"""The pure parts of the agent surface: tool specs in function-calling shapes, typed invoke
events, the MCP bridge's argument check, listen address, bearer tokens and its answer to
stdio lines that are not JSON-RPC."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import mcp_types
import pytest
from google.protobuf import json_format
from mcp.shared.message import SessionMessage
from starlette.authentication import AuthenticationError
from starlette.requests import HTTPConnection
from writ._proto import capabilities_pb2 as caps
from writ._proto import control_pb2
from writ.client import (
    Finished,
    InvokeOutcome,
    Output,
    Started,
    WritError,
    anthropic_tool,
    openai_tool,
    tool_spec,
)
from writ.client._common import event_of, target
from writ.core.tokens import Keyring, UnverifiedToken, mint
from writ.mcp_bridge import AnswerMalformed, WritBearer, parse_listen
from writ.schemas import schema_error, schema_problem


def info(schema: dict[str, Any] | None, name: str = "t", description: str = "d") -> Any:
    m = caps.Manifest(name=name, image="i:1", description=description)
    if schema is not None:
        json_format.ParseDict(schema, m.input_schema)
    return control_pb2.ToolInfo(name=name, manifest=m)


# -- client -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("address", "expected"), [
    ("/run/writ/agent.sock", "unix:/run/writ/agent.sock"),
    ("agent.sock", "unix:agent.sock"),
    ("unix:/x.sock", "unix:/x.sock"),
    ("127.0.0.1:7411", "127.0.0.1:7411"),
    ("dns:broker:7411", "dns:broker:7411"),
])
def test_target_reads_paths_as_unix_sockets(address: str, expected: str) -> None:
    assert target(address) == expected


def test_tool_spec_keeps_the_schema_and_integers() -> None:
    schema = {"type": "object", "properties": {
        "n": {"type": "integer", "minimum": 1, "maximum": 2.5},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
        "required": ["n"], "additionalProperties": False}
    spec = tool_spec(info(schema, "count", "Count things."))
    assert spec == {"name": "count", "description": "Count things.", "input_schema": schema}
    assert type(spec["input_schema"]["properties"]["n"]["minimum"]) is int
    assert type(spec["input_schema"]["properties"]["n"]["maximum"]) is float
    assert openai_tool(spec) == {"type": "function", "function": {
        "name": "count", "description": "Count things.", "parameters": schema}}
    assert anthropic_tool(spec) == {"name": "count", "description": "Count things.",
                                    "input_schema": schema}


@pytest.mark.parametrize("schema", [None, {}])
def test_tool_without_a_schema_takes_an_object(schema: dict[str, Any] | None) -> None:
    assert tool_spec(info(schema))["input_schema"] == {"type": "object", "properties": {}}


def test_events_are_typed_and_collected_in_the_outcome() -> None:
    raw = [control_pb2.InvokeEvent(started=control_pb2.InvokeStarted(
               invocation_id="i1", container_id="c1", launch_ms=3.5, warm=True)),
           control_pb2.InvokeEvent(output=control_pb2.ToolOutput(data=b"a")),
           control_pb2.InvokeEvent(output=control_pb2.ToolOutput(data=b"b")),
           control_pb2.InvokeEvent(result=control_pb2.InvokeResult(
               ok=True, output_json='{"n": 1}', duration_ms=9.0))]
    out = InvokeOutcome()
    events = [out.add(e) for e in raw]
    assert events == [Started("i1", "c1", 3.5, True), Output(b"a"), Output(b"b"),
                      Finished(True, {"n": 1}, "", "", 9.0, 0)]
    assert (out.invocation_id, out.warm, out.output, out.ok, out.result) == (
        "i1", True, b"ab", True, {"n": 1})
    assert out.events == raw


def test_failed_result_carries_the_error_and_no_value() -> None:
    ev = event_of(control_pb2.InvokeEvent(result=control_pb2.InvokeResult(
        ok=False, error=control_pb2.ToolError(code="PERMISSION_DENIED", message="no"))))
    assert ev == Finished(False, None, "PERMISSION_DENIED", "no", 0.0, 0)


@pytest.mark.parametrize("event", [
    control_pb2.InvokeEvent(),
    control_pb2.InvokeEvent(result=control_pb2.InvokeResult(ok=True, output_json="{nope")),
])
def test_an_event_the_client_cannot_read_is_internal(event: Any) -> None:
    with pytest.raises(WritError) as exc:
        event_of(event)
    assert exc.value.code == "INTERNAL"


# -- MCP bridge -------------------------------------------------------------------------------
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"},
                                           "n": {"type": "integer", "minimum": 1}},
          "required": ["path"], "additionalProperties": False}


@pytest.mark.parametrize(("arguments", "problem"), [
    ({"path": "a"}, None),
    ({"path": "a", "n": 2}, None),
    ({}, "'path' is a required property"),
    ({"path": 3}, "3 is not of type 'string' (at path)"),
    ({"path": "a", "n": 0}, "0 is less than the minimum of 1 (at n)"),
    ({"path": "a", "x": 1}, "Additional properties are not allowed ('x' was unexpected)"),
])
def test_schema_problem_names_the_first_broken_rule(arguments: dict[str, Any],
                                                    problem: str | None) -> None:
    assert schema_problem(SCHEMA, arguments) == problem


def test_a_schema_that_is_not_json_schema_checks_nothing() -> None:
    assert schema_problem({"type": 12}, {"anything": True}) is None


@pytest.mark.parametrize(("schema", "problem"), [
    ({"$ref": "http://169.254.169.254/latest/meta-data"},
     ("$ref 'http://169.254.169.254/latest/meta-data' points outside the schema; only "
      "'#...' references are allowed")),
    ({"properties": {"a": {"$ref": "other.json#/x"}}},
     "$ref 'other.json#/x' points outside the schema; only '#...' references are allowed"),
    ({"properties": {"a": {"$ref": "#/$defs/missing"}}},
     "$ref '#/$defs/missing' names nothing in the schema"),
])
def test_a_reference_the_broker_cannot_follow_makes_the_schema_invalid(
        schema: dict[str, Any], problem: str) -> None:
    # Refused at registration (it would fail every call), and never fetched.
    assert schema_error(schema) == problem
    assert schema_problem(schema, {"a": 1}) is None  # a legacy registration: not checked


def test_references_within_the_schema_are_followed() -> None:
    schema = {"type": "object", "$defs": {"n": {"type": "integer", "minimum": 1}},
              "properties": {"a": {"$ref": "#/$defs/n"}}}
    assert schema_error(schema) is None
    assert schema_problem(schema, {"a": 0}) == "0 is less than the minimum of 1 (at a)"
    assert schema_problem(schema, {"a": 2}) is None


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("localhost:0", ("localhost", 0)),
    ("[::1]:9000", ("::1", 9000)),
])
def test_listen_address_is_loopback(address: str, expected: tuple[str, int]) -> None:
    assert parse_listen(address) == expected


LOOPBACK_ONLY = "--http serves loopback only (127.0.0.1, localhost, [::1]);"


@pytest.mark.parametrize(("address", "message"), [
    ("0.0.0.0:8080", f"{LOOPBACK_ONLY} got '0.0.0.0'"),
    ("192.168.1.5:80", f"{LOOPBACK_ONLY} got '192.168.1.5'"),
    ("127.0.0.1", "--http expects HOST:PORT, got '127.0.0.1'"),
    ("127.0.0.1:http", "--http expects HOST:PORT, got '127.0.0.1:http'"),
    ("127.0.0.1:70000", "--http expects HOST:PORT, got '127.0.0.1:70000'"),
])
def test_listen_address_elsewhere_is_refused(address: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_listen(address)
    assert str(exc.value) == message


def _conn(headers: dict[str, str]) -> HTTPConnection:
    return HTTPConnection({"type": "http", "headers": [
        (k.lower().encode(), v.encode()) for k, v in headers.items()]})


def test_bearer_writ_token_names_the_session() -> None:
    keyring = Keyring({"k": b"\x02" * 32}, "k")
    token, token_id = mint(keyring, caps.Grant(expires_at=2_000_000_000), 1_700_000_000)
    creds_user = asyncio.run(WritBearer().authenticate(
        _conn({"Authorization": f"Bearer {token}"})))
    assert creds_user is not None
    user = creds_user[1]
    assert (user.access_token.token, user.access_token.client_id) == (token, token_id)
    assert UnverifiedToken.parse(user.access_token.token).token_id == token_id
    assert asyncio.run(WritBearer().authenticate(_conn({}))) is None


@pytest.mark.parametrize(("header", "message"), [
    ("Basic dXNlcjpwYXNz", "Authorization must be 'Bearer writ1...'"),
    ("Bearer ", "no token presented"),
    ("Bearer abc", "malformed token: expected the prefix 'writ1.'"),
    ("Bearer writ1.AAAA", "malformed token: not valid base64url protobuf"),
])
def test_bearer_that_is_not_a_writ_token_is_refused(header: str, message: str) -> None:
    with pytest.raises(AuthenticationError) as exc:
        asyncio.run(WritBearer().authenticate(_conn({"Authorization": header})))
    assert str(exc.value) == message


def test_stdio_lines_that_are_not_jsonrpc_are_answered_not_dropped() -> None:
    async def go() -> tuple[list[Any], list[Any]]:
        into, inner = anyio.create_memory_object_stream[Any](10)
        out_send, out_recv = anyio.create_memory_object_stream[Any](10)
        for line in ("not json", '{"id": 1}', '{"jsonrpc": "2.0", "id": 1, "method": "ping"}'):
            try:
                item: Any = SessionMessage(
                    mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
            except Exception as exc:  # noqa: BLE001 - what stdio_server hands on
                item = exc
            await into.send(item)
        into.close()
        passed = [m async for m in AnswerMalformed(inner, out_send)]
        out_send.close()
        return passed, [m async for m in out_recv]

    passed, answered = asyncio.run(go())
    assert [m.message.method for m in passed] == ["ping"]
    assert [m.message.model_dump(by_alias=True, exclude_unset=True) for m in answered] == [
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}},
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}}]
