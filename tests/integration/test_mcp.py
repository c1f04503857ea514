"""`writ mcp` against a real broker, driven by the official MCP client (stdio and streamable
HTTP): tools/list carries the manifests' schemas, tools/call runs through the broker, every
refusal is an exact MCP answer, and malformed input never takes the bridge down."""

from __future__ import annotations

import asyncio
import json
import selectors
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import mcp_types
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from writ.launcher._spec import LABEL_INVOCATION

from .conftest import PROBE_GRANT, PROBE_IMAGE, RunningBroker, wait_for

TYPED_SCHEMA = {
    "type": "object",
    "properties": {"action": {"type": "string", "enum": ["read", "listdir"]},
                   "path": {"type": "string", "maxLength": 200}},
    "required": ["action"],
    "additionalProperties": False,
}
# The same probe image under two more names: one with an input schema, one the grant omits.
TYPED = {"name": "probe-typed", "image": PROBE_IMAGE, "description": "probe with a schema",
         "input_schema": TYPED_SCHEMA, "files": [{"paths": ["**"], "ops": ["READ", "LIST"]}]}
VAULT = {"name": "vault", "image": PROBE_IMAGE, "description": "not in the grant"}
GRANT = {**PROBE_GRANT, "tools": [{"name": "probe"}, {"name": "probe-typed"}]}
Q3 = "region,revenue\nnorth,1\n"


@pytest.fixture(scope="module")
def token_file(broker: RunningBroker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    broker.register(TYPED)
    broker.register(VAULT)
    path = tmp_path_factory.mktemp("mcp") / "token"
    path.write_text(broker.mint(GRANT) + "\n")
    return path


def bridge_args(broker: RunningBroker, token_file: Path | None, *extra: str) -> list[str]:
    args = ["-m", "writ.cli", "--socket", str(broker.config.agent_socket), "mcp", *extra]
    return args + (["--token-file", str(token_file)] if token_file else [])


@asynccontextmanager
async def stdio_session(broker: RunningBroker, token_file: Path) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=bridge_args(broker, token_file))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def text_of(result: mcp_types.CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, mcp_types.TextContent)
    return content.text


def invokes_since(broker: RunningBroker, seq: int, tool: str) -> list[Any]:
    return [e for e in broker.audit_since(seq) if e.operation == "tool.invoke" and e.tool == tool]


# -- stdio --------------------------------------------------------------------------------------
def test_tools_list_carries_each_granted_tools_input_schema(broker: RunningBroker,
                                                       token_file: Path) -> None:
    async def go() -> list[mcp_types.Tool]:
        async with stdio_session(broker, token_file) as s:
            return (await s.list_tools()).tools

    tools = {t.name: t for t in run(go())}
    assert set(tools) == {"probe", "probe-typed"}  # vault is registered, not granted
    assert tools["probe-typed"].input_schema == TYPED_SCHEMA  # maxLength stays an integer
    assert tools["probe-typed"].description == "probe with a schema"
    assert tools["probe"].input_schema == {"type": "object", "properties": {}}


def test_allowed_call_returns_the_tool_result_as_text_and_structured_content(
        broker: RunningBroker, token_file: Path) -> None:
    async def go() -> mcp_types.CallToolResult:
        async with stdio_session(broker, token_file) as s:
            return await s.call_tool("probe-typed", {"action": "read", "path": "reports/q3.csv"})

    result = run(go())
    expected = {"action": "read", "result": {"text": Q3}}
    assert result.is_error is False
    assert json.loads(text_of(result)) == expected
    assert result.structured_content == expected


def test_tool_outside_the_grant_is_an_mcp_tool_error_naming_permission_denied(
        broker: RunningBroker, token_file: Path) -> None:
    seq = broker.last_seq()

    async def go() -> mcp_types.CallToolResult:
        async with stdio_session(broker, token_file) as s:
            return await s.call_tool("vault", {})

    result = run(go())
    assert result.is_error is True
    assert text_of(result) == "PERMISSION_DENIED: grant does not allow invoke tool 'vault'"
    (denied,) = invokes_since(broker, seq, "vault")
    assert (denied.status, denied.reason) == ("PERMISSION_DENIED", "grant does not allow invoke tool 'vault'")


def test_arguments_breaking_the_schema_are_refused_before_any_invocation(
        broker: RunningBroker, token_file: Path) -> None:
    seq = broker.last_seq()

    async def go() -> list[mcp_types.CallToolResult]:
        async with stdio_session(broker, token_file) as s:
            return [await s.call_tool("probe-typed", {"action": 5}),
                    await s.call_tool("probe-typed", {"action": "read", "extra": True}),
                    await s.call_tool("probe-typed", {})]

    results = run(go())
    assert [r.is_error for r in results] == [True, True, True]
    prefix = "INVALID_ARGUMENT: arguments do not match the input schema of probe-typed: "
    assert [text_of(r) for r in results] == [
        prefix + "5 is not one of ['read', 'listdir'] (at action)",
        prefix + "Additional properties are not allowed ('extra' was unexpected)",
        prefix + "'action' is a required property"]
    assert invokes_since(broker, seq, "probe-typed") == []


def test_unknown_tool_is_a_jsonrpc_invalid_params_error(broker: RunningBroker,
                                                        token_file: Path) -> None:
    async def go() -> MCPError:
        async with stdio_session(broker, token_file) as s:
            with pytest.raises(MCPError) as info:
                await s.call_tool("no-such-tool", {})
            assert (await s.list_tools()).tools  # the session is still good
            return info.value

    error = run(go())
    assert (error.code, error.message) == (-32602, "Unknown tool: no-such-tool")


def test_cancelling_an_mcp_call_kills_its_container(broker: RunningBroker, token_file: Path,
                                                    docker_client: Any) -> None:
    seq = broker.last_seq()

    async def go() -> None:
        async with stdio_session(broker, token_file) as s:
            call = asyncio.ensure_future(s.call_tool("probe", {"action": "sleep", "seconds": 60}))
            for _ in range(300):  # until the container runs
                if any(e.operation == "tool.invoke" for e in broker.audit_since(seq)) and \
                        docker_client.containers.list(filters={"label": LABEL_INVOCATION}):
                    break
                await asyncio.sleep(0.1)
            call.cancel()  # the client sends notifications/cancelled
            with pytest.raises(asyncio.CancelledError):
                await call
            await asyncio.sleep(0.5)  # keep the session open while the bridge cancels

    run(go())
    (invoke,) = invokes_since(broker, seq, "probe")
    inv = invoke.invocation_id
    assert wait_for(lambda: docker_client.containers.list(
        all=True, filters={"label": f"{LABEL_INVOCATION}={inv}"}) == [], 20)
    assert wait_for(lambda: [(e.status, e.reason) for e in broker.audit_since(seq)
                             if e.operation == "tool.exit" and e.invocation_id == inv] ==
                    [("CANCELLED", "cancelled: the agent went away")], 10)


class RawBridge:
    """`writ mcp` over stdio with raw lines, for input no real client would send."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def ask(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        assert self.sel.select(timeout=20), f"no answer to {line!r}"
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(20)


@pytest.fixture
def raw(broker: RunningBroker, token_file: Path) -> Iterator[RawBridge]:
    bridge = RawBridge(bridge_args(broker, token_file))
    yield bridge
    bridge.proc.kill()
    bridge.proc.wait()


INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {},
    "clientInfo": {"name": "raw", "version": "0"}}})


def error_of(answer: dict[str, Any]) -> tuple[Any, int, str]:
    return answer["id"], answer["error"]["code"], answer["error"]["message"]


def test_malformed_stdio_input_gets_jsonrpc_errors_and_the_bridge_keeps_serving(
        raw: RawBridge) -> None:
    assert error_of(raw.ask("this is not json")) == (None, -32700, "Parse error")
    assert error_of(raw.ask('{"jsonrpc": "2.0", "id": 7}')) == (None, -32600, "Invalid Request")
    assert error_of(raw.ask('[1, 2')) == (None, -32700, "Parse error")
    assert raw.ask(INIT)["result"]["serverInfo"]["name"] == "writ"
    raw.tell('{"jsonrpc": "2.0", "method": "notifications/initialized"}')
    assert error_of(raw.ask('{"jsonrpc": "2.0", "id": 2, "method": "no/such/method"}')) == (
        2, -32601, "Method not found")
    assert error_of(raw.ask('{"jsonrpc": "2.0", "id": 3, "method": "tools/call", '
                            '"params": {"name": 5}}')) == (3, -32602, "Invalid request parameters")
    assert error_of(raw.ask('{"jsonrpc": "2.0", "id": 4, "method": "tools/call", '
                            '"params": {"name": "probe", "arguments": [1]}}')) == (
        4, -32602, "Invalid request parameters")
    listed = raw.ask('{"jsonrpc": "2.0", "id": 5, "method": "tools/list"}')
    assert {t["name"] for t in listed["result"]["tools"]} == {"probe", "probe-typed"}
    assert raw.close() == 0  # stdin closed: a clean exit, not a crash


def test_stdio_bridge_without_a_token_refuses_to_start(broker: RunningBroker) -> None:
    proc = subprocess.run([sys.executable, *bridge_args(broker, None)], check=False,
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert (proc.returncode, proc.stderr.strip()) == (
        1, "writ mcp: --token-file is required over stdio")


# -- streamable HTTP ----------------------------------------------------------------------------
class HttpBridge:
    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        assert line.startswith("writ mcp: serving http://127.0.0.1:"), line
        self.url = line.split()[-1]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture(scope="module")
def http(broker: RunningBroker, token_file: Path) -> Iterator[HttpBridge]:
    bridge = HttpBridge(bridge_args(broker, token_file, "--http", "127.0.0.1:0"))
    yield bridge
    bridge.stop()


@asynccontextmanager
async def http_session(url: str, token: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with create_mcp_http_client(headers=headers) as client, \
            streamable_http_client(url, http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def test_http_lists_and_calls_with_the_start_up_token(http: HttpBridge) -> None:
    async def go() -> tuple[list[str], mcp_types.CallToolResult]:
        async with http_session(http.url) as s:
            names = [t.name for t in (await s.list_tools()).tools]
            return names, await s.call_tool("probe", {"action": "read", "path": "reports/q3.csv"})

    names, result = run(go())
    assert sorted(names) == ["probe", "probe-typed"]
    assert (result.is_error, result.structured_content) == (
        False, {"action": "read", "result": {"text": Q3}})


def test_http_session_uses_its_own_bearer_token(http: HttpBridge,
                                                broker: RunningBroker) -> None:
    narrow = broker.mint({**PROBE_GRANT, "tools": [{"name": "probe-typed"}]})

    async def go() -> list[mcp_types.CallToolResult]:
        async with http_session(http.url, narrow) as s:
            return [await s.call_tool("probe", {"action": "read", "path": "reports/q3.csv"}),
                    await s.call_tool("probe-typed", {"action": "read",
                                                      "path": "reports/q3.csv"})]

    denied, allowed = run(go())
    # The start-up token grants probe; this session's own token does not.
    assert (denied.is_error, text_of(denied)) == (
        True, "PERMISSION_DENIED: grant does not allow invoke tool 'probe'")
    assert (allowed.is_error, allowed.structured_content) == (
        False, {"action": "read", "result": {"text": Q3}})


def _post(url: str, body: str, **headers: str) -> httpx2.Response:
    base = {"Content-Type": "application/json",
            "Accept": "application/json, text/event-stream"}
    return httpx2.post(url, content=body, headers={**base, **headers}, timeout=20)


def test_http_session_is_bound_to_the_token_that_opened_it(http: HttpBridge,
                                                           broker: RunningBroker) -> None:
    first, second = broker.mint(GRANT), broker.mint(GRANT)
    opened = _post(http.url, INIT, Authorization=f"Bearer {first}")
    assert opened.status_code == 200
    session = opened.headers["mcp-session-id"]
    listing = '{"jsonrpc": "2.0", "id": 2, "method": "tools/list"}'
    for other in ({"Authorization": f"Bearer {second}"}, {}):
        refused = _post(http.url, listing, **{"mcp-session-id": session,
                                             "mcp-protocol-version": "2025-11-25", **other})
        assert (refused.status_code, refused.json()["error"]["message"]) == (
            404, "Session not found")


def test_http_malformed_bearer_token_is_refused_with_401(http: HttpBridge) -> None:
    refused = _post(http.url, INIT, Authorization="Bearer writ1.not-a-token")
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == (
        "Writ token refused: malformed token: not valid base64url protobuf")
    assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_http_malformed_body_is_a_jsonrpc_parse_error(http: HttpBridge) -> None:
    refused = _post(http.url, "{not json")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == -32700


def test_http_foreign_host_header_is_refused(http: HttpBridge) -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 cannot drive the bridge.
    refused = _post(http.url, INIT, Host="evil.example")
    assert refused.status_code == 421


def test_http_bridge_without_a_token_requires_one_per_session(broker: RunningBroker) -> None:
    bridge = HttpBridge(bridge_args(broker, None, "--http", "127.0.0.1:0"))
    try:
        assert _post(bridge.url, INIT).status_code == 401

        async def go() -> mcp_types.CallToolResult:
            async with http_session(bridge.url, broker.mint(GRANT)) as s:
                return await s.call_tool("probe", {"action": "read", "path": "reports/q3.csv"})

        assert run(go()).structured_content == {"action": "read", "result": {"text": Q3}}
    finally:
        bridge.stop()
