"""`writ mcp`: the broker's registered tools as a Model Context Protocol server.

Over stdio (the default) or streamable HTTP on loopback (``--http 127.0.0.1:PORT``, path
``/mcp``). The bridge is an agent like any other: it holds a Writ token and calls ListTools
and Invoke on the agent socket; the broker decides every call, so the bridge adds no
authority and needs no keys.

    tools/list   each registered tool with its manifest's input schema
    tools/call   arguments checked against that schema, then Invoke with the session's
                 token; the tool's JSON result comes back as text (and as structured
                 content when it is an object). A refusal (PERMISSION_DENIED, ...), a
                 tool's failure or arguments that break the schema are an MCP tool error
                 (isError) whose text starts with the status name; an unknown tool is a
                 JSON-RPC error (-32602). Cancelling a call (notifications/cancelled)
                 cancels the Invoke: the broker kills the container.

Tokens: each session is bound to one Writ token. By default that is the token given at
start. Over HTTP a session may instead present its own, ``Authorization: Bearer writ1...``;
the session is bound to it (a later request of the session with another token, or none, is
answered 404 "Session not found", as the MCP SDK does for any credential change). A
malformed bearer token is refused with 401. Started without a token, the HTTP bridge
requires one on every request.

SECURITY LIMITATION: over HTTP, any local process that can connect to the port may use the
start-up token's authority (there is no per-user check on loopback). Where other users or
untrusted local processes share the machine, start the HTTP bridge without ``--token-file``
so every session must bring its own token.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import socket
import sys
from types import TracebackType
from typing import Any, Self

import anyio
import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .client import AsyncClient, ToolSpec, WritError, tool_spec
from .core.tokens import UnverifiedToken
from .errors import BrokerError
from .schemas import schema_problem

log = logging.getLogger("writ.mcp")
LOOPBACK = {"127.0.0.1": socket.AF_INET, "localhost": socket.AF_INET, "::1": socket.AF_INET6}
INSTRUCTIONS = ("Each tool runs in its own sandboxed container with only the authority of "
                "your Writ token. A refusal comes back as a tool error starting with the "
                "broker's status, e.g. 'PERMISSION_DENIED: ...': do not retry it unchanged.")


def _version() -> str:
    try:
        return importlib.metadata.version("writ-runtime")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def tool_error(code: str, message: str) -> types.CallToolResult:
    """An MCP tool error (isError) the model can read: ``CODE: message``."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{code}: {message}")],
        structured_content={"code": code, "message": message}, is_error=True)


def tool_result(value: Any) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(value))],
        structured_content=value if isinstance(value, dict) else None)


def granted_tools(token: str | None) -> set[str]:
    """Tools the session's token names in every grant layer: the ones worth offering a
    model (the broker still decides each call, arguments included). Reading the token's
    claims needs no key; a token that does not parse offers nothing."""
    if not token:
        return set()
    try:
        blocks = UnverifiedToken.parse(token).blocks
    except BrokerError:
        return set()
    names: set[str] | None = None
    for block in blocks:
        if block.HasField("grant"):
            layer = {rule.name for rule in block.grant.tools}
            names = layer if names is None else names & layer
    return names or set()


class Bridge:
    """MCP handlers over one broker connection. Create it inside the serving event loop."""

    def __init__(self, broker: str, token: str | None, timeout: float | None = None) -> None:
        self.client = AsyncClient(broker)
        self.token = token
        self.timeout = timeout
        self._tools: dict[str, ToolSpec] = {}

    def server(self) -> Server[Any]:
        return Server("writ", version=_version(), instructions=INSTRUCTIONS,
                      on_list_tools=self.list_tools, on_call_tool=self.call_tool)

    async def _refresh(self) -> dict[str, ToolSpec]:
        self._tools = {t["name"]: t for t in map(tool_spec, await self.client.list_tools())}
        return self._tools

    async def list_tools(self, ctx: Any,
                         params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        try:
            tools = await self._refresh()
        except WritError as err:
            raise MCPError(types.INTERNAL_ERROR, f"broker: {err.code}: {err.details}") from None
        granted = granted_tools(self._token_for(ctx))
        return types.ListToolsResult(tools=[
            types.Tool(name=t["name"], description=t["description"],
                       input_schema=t["input_schema"])
            for t in tools.values() if t["name"] in granted])

    def _token_for(self, ctx: Any) -> str | None:
        """The session's token: its own bearer token over HTTP, else the start-up one."""
        request = getattr(ctx, "request", None)
        user = request.scope.get("user") if request is not None else None
        if isinstance(user, AuthenticatedUser):
            return user.access_token.token
        return self.token

    async def call_tool(self, ctx: Any,
                        params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        try:
            spec = self._tools.get(params.name) or (await self._refresh()).get(params.name)
        except WritError as err:
            return tool_error(err.code, err.details)
        if spec is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        problem = schema_problem(spec["input_schema"], arguments)
        if problem is not None:
            return tool_error("INVALID_ARGUMENT", f"arguments do not match the input schema "
                              f"of {params.name}: {problem}")
        token = self._token_for(ctx)
        if not token:
            return tool_error("UNAUTHENTICATED", "this session has no Writ token")
        try:
            out = await self.client.invoke(params.name, arguments, token, timeout=self.timeout)
        except WritError as err:
            return tool_error(err.code, err.details)
        if not out.ok:
            return tool_error(out.error_code, out.error_message)
        return tool_result(out.result)


# -- stdio ------------------------------------------------------------------------------------
class AnswerMalformed:
    """The stdio read stream, minus lines that are not JSON-RPC messages: each is answered
    here (-32700 parse error, or -32600 invalid request; id null, as JSON-RPC requires when
    the id cannot be read). The SDK would only log them, leaving the client waiting."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception],
                 write: WriteStream[SessionMessage]) -> None:
        self._inner = inner
        self._write = write
        self.last_context = None

    async def receive(self) -> SessionMessage | Exception:
        while True:
            item = await self._inner.receive()
            self.last_context = getattr(self._inner, "last_context", None)
            if not isinstance(item, Exception):
                return item
            parse = isinstance(item, ValidationError) and any(
                e["type"] == "json_invalid" for e in item.errors())
            error = (types.ErrorData(code=types.PARSE_ERROR, message="Parse error") if parse
                     else types.ErrorData(code=types.INVALID_REQUEST, message="Invalid Request"))
            await self._write.send(SessionMessage(
                types.JSONRPCError(jsonrpc="2.0", id=None, error=error)))

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        await self.aclose()
        return None


async def serve_stdio(broker: str, token: str, timeout: float | None = None) -> None:
    bridge = Bridge(broker, token, timeout)
    server = bridge.server()
    try:
        async with stdio_server() as (read, write):
            await server.run(AnswerMalformed(read, write), write,
                             server.create_initialization_options())
    finally:
        await bridge.client.close()


# -- streamable HTTP --------------------------------------------------------------------------
class WritBearer(AuthenticationBackend):
    """``Authorization: Bearer writ1...`` names the session's token. Only its form is
    checked here (the bridge has no keys); the broker verifies it on every call. The SDK's
    session manager binds each session to the credential that opened it, compared by
    (client_id, issuer, subject): the token id and a hash of the whole text."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials,
                                                                  AuthenticatedUser] | None:
        header = conn.headers.get("authorization")
        if header is None:
            return None
        scheme, _, text = header.partition(" ")
        text = text.strip()
        if scheme.lower() != "bearer":
            raise AuthenticationError("Authorization must be 'Bearer writ1...'")
        try:
            token_id = UnverifiedToken.parse(text).token_id
        except BrokerError as err:
            raise AuthenticationError(err.details) from None
        access = AccessToken(token=text, client_id=token_id, scopes=[],
                             subject=hashlib.sha256(text.encode()).hexdigest())
        return AuthCredentials([]), AuthenticatedUser(access)


def _auth_refused(conn: HTTPConnection, exc: Exception) -> Response:
    body = types.JSONRPCError(jsonrpc="2.0", id=None, error=types.ErrorData(
        code=types.INVALID_REQUEST, message=f"Writ token refused: {exc}"))
    return JSONResponse(body.model_dump(by_alias=True, mode="json"), status_code=401,
                        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def http_app(bridge: Bridge) -> Starlette:
    """The ASGI app: ``/mcp``, DNS-rebinding protection (loopback Host and Origin only)."""
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])
    manager = StreamableHTTPSessionManager(app=bridge.server(), security_settings=security)
    endpoint: Any = StreamableHTTPASGIApp(manager)
    if not bridge.token:
        endpoint = RequireAuthMiddleware(endpoint, required_scopes=[])
    return Starlette(
        routes=[Route("/mcp", endpoint=endpoint)],
        middleware=[Middleware(AuthenticationMiddleware, backend=WritBearer(),
                               on_error=_auth_refused)],
        lifespan=lambda _app: manager.run())


def parse_listen(address: str) -> tuple[str, int]:
    """``127.0.0.1:PORT``, ``localhost:PORT`` or ``[::1]:PORT``; nothing but loopback.

    Raises:
        ValueError: not HOST:PORT, or a host that is not loopback.
    """
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--http expects HOST:PORT, got {address!r}")
    if host not in LOOPBACK:
        raise ValueError(f"--http serves loopback only (127.0.0.1, localhost, [::1]); got {host!r}")
    return host, int(port)


async def serve_http(broker: str, token: str | None, address: str,
                     timeout: float | None = None) -> None:
    import uvicorn

    host, port = parse_listen(address)
    family = LOOPBACK[host]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1" if host == "localhost" else host, port))
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts
    bound = sock.getsockname()[1]
    bridge = Bridge(broker, token, timeout)
    server = uvicorn.Server(uvicorn.Config(http_app(bridge), log_level="warning",
                                           lifespan="on"))
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"writ mcp: serving http://{url_host}:{bound}/mcp", file=sys.stderr, flush=True)
    try:
        await server.serve(sockets=[sock])
    finally:
        await bridge.client.close()
