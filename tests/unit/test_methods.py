"""The RPC surface is one table: every rpc in the protos has exactly one row, and a server
built from the table serves exactly its rows, translating errors in one place."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import pytest
from google.protobuf import message_factory
from writ._proto import control_pb2, tool_pb2
from writ.broker.rpc import generic_handler
from writ.errors import PermissionDenied
from writ.methods import METHODS, Method, render_table, rows

FILES = {"Control": control_pb2.DESCRIPTOR, "ToolBroker": tool_pb2.DESCRIPTOR}
SURFACES = ("operator", "agent", "tool")


def proto_methods() -> dict[str, Any]:
    """Full method name -> MethodDescriptor, for every service of the served protos."""
    out = {}
    for fdesc in FILES.values():
        for service in fdesc.services_by_name.values():
            for m in service.methods:
                out[f"/{service.full_name}/{m.name}"] = m
    return out


def test_every_rpc_has_a_row_and_every_row_an_rpc() -> None:
    assert set(proto_methods()) == set(METHODS)


def test_table_covers_every_served_service() -> None:
    services = {s for f in FILES.values() for s in f.services_by_name}
    assert services == {m.service for m in METHODS.values()} == set(FILES)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_row_matches_descriptor(name: str) -> None:
    row, desc = METHODS[name], proto_methods()[name]
    assert row.full_name == name
    assert (row.service, row.name) == (desc.containing_service.name, desc.name)
    assert row.streaming is desc.server_streaming
    assert row.client_streaming is desc.client_streaming
    assert row.surface in SURFACES
    assert row.operation and row.note


def test_rows_is_a_filter_of_the_table() -> None:
    assert [m.name for m in rows("Control", ("agent",))] == ["ListTools", "Invoke", "Explain"]
    assert {m.name for m in rows("Control", ("operator", "agent"))} == {
        "RegisterTool", "MintToken", "ListTools", "Invoke", "Explain", "RevokeToken",
        "RotateKey", "ListApprovals", "Approve", "DenyApproval", "SeedAccount",
        "ListAccounts", "PutSecret", "ListSecrets", "DeleteSecret"}
    assert rows("Control", ("tool",)) == []
    assert rows("ToolBroker", ("agent", "operator")) == []
    assert {m.name for m in rows("ToolBroker", ("tool",))} == {
        "Start", "Finish", "ReadFile", "ListDir", "Stat", "OpenFile", "WriteFile", "MakeDir",
        "Delete", "Rename", "Pay", "GetPayment", "HttpRequest", "Connect"}


def test_render_table_lists_every_row() -> None:
    table = render_table()
    for name in METHODS:
        assert f"`{name}`" in table


# -- generic_handler serves exactly the table's rows ---------------------------------------
class Details(NamedTuple):
    """grpc.HandlerCallDetails as the server passes it."""
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class EveryMethod:
    """A servicer with a coroutine for every rpc name (whether or not it is served)."""

    def __getattr__(self, name: str) -> Any:
        async def handler(request: Any, context: Any) -> Any:
            raise AssertionError("not called")
        return handler


SURFACE_CASES = [
    ("Control", ("agent",)),
    ("Control", ("operator", "agent")),
    ("Control", ("operator",)),
    ("ToolBroker", ("tool",)),
    ("ToolBroker", ("agent",)),
]


@pytest.mark.parametrize(("service", "surfaces"), SURFACE_CASES,
                         ids=[f"{s}-{'+'.join(x)}" for s, x in SURFACE_CASES])
def test_generic_handler_serves_exactly_the_rows(service: str, surfaces: tuple[str, ...]) -> None:
    handler = generic_handler(service, EveryMethod(), surfaces)
    served = {name for name in proto_methods() if handler.service(Details(name)) is not None}
    expected = {m.full_name for m in rows(service, surfaces)}
    assert served == expected
    for name in served:
        h = handler.service(Details(name))
        assert h.response_streaming is METHODS[name].streaming
        assert h.request_streaming is METHODS[name].client_streaming


def test_agent_surface_of_control() -> None:
    handler = generic_handler("Control", EveryMethod(), ("agent",))
    served = {n.rsplit("/", 1)[1] for n in proto_methods()
              if handler.service(Details(n)) is not None}
    assert served == {"ListTools", "Invoke", "Explain"}
    assert handler.service(Details("/writ.v1.Control/MintToken")) is None
    assert handler.service(Details("/writ.v1.Control/RevokeToken")) is None
    assert handler.service(Details("/writ.v1.Control/RotateKey")) is None
    assert handler.service(Details("/writ.v1.Control/RegisterTool")) is None
    assert handler.service(Details("/writ.v1.Control/Unknown")) is None


# -- a real grpc.aio server on a Unix socket -----------------------------------------------
SECRET = "db password is hunter2"


class FakeControl:
    """The agent surface of Control. ``mode`` picks how the handlers answer."""

    def __init__(self) -> None:
        self.mode = "ok"

    def _maybe_raise(self) -> None:
        if self.mode == "denied":
            raise PermissionDenied("nope")
        if self.mode == "crash":
            raise RuntimeError(SECRET)

    async def ListTools(self, request: control_pb2.ListToolsRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.ListToolsResponse:
        self._maybe_raise()
        return control_pb2.ListToolsResponse(tools=[control_pb2.ToolInfo(name="read-file")])

    async def Explain(self, request: control_pb2.ExplainRequest,
                      context: grpc.aio.ServicerContext) -> control_pb2.ExplainResponse:
        self._maybe_raise()
        return control_pb2.ExplainResponse(allowed=False, reason="no rule")

    async def Invoke(self, request: control_pb2.InvokeRequest,
                     context: grpc.aio.ServicerContext) -> AsyncIterator[control_pb2.InvokeEvent]:
        yield control_pb2.InvokeEvent(started=control_pb2.InvokeStarted(invocation_id="inv-1"))
        self._maybe_raise()
        yield control_pb2.InvokeEvent(result=control_pb2.InvokeResult(ok=True))


class Outcome(NamedTuple):
    code: grpc.StatusCode
    details: str
    items: list[Any]


async def _call(channel: grpc.aio.Channel, name: str, request: Any) -> Outcome:
    row = METHODS.get(name)
    desc = proto_methods()[name]
    resp_cls = message_factory.GetMessageClass(desc.output_type)
    if row is not None and row.streaming:
        stream = channel.unary_stream(name, request_serializer=type(request).SerializeToString,
                                      response_deserializer=resp_cls.FromString)
        items: list[Any] = []
        try:
            async for item in stream(request, timeout=10):
                items.append(item)
        except grpc.aio.AioRpcError as err:
            return Outcome(err.code(), err.details() or "", items)
        return Outcome(grpc.StatusCode.OK, "", items)
    unary = channel.unary_unary(name, request_serializer=type(request).SerializeToString,
                                response_deserializer=resp_cls.FromString)
    try:
        return Outcome(grpc.StatusCode.OK, "", [await unary(request, timeout=10)])
    except grpc.aio.AioRpcError as err:
        return Outcome(err.code(), err.details() or "", [])


def serve_and_call(tmp_path: Path, servicer: FakeControl,
                   calls: list[tuple[str, str, Any]]) -> list[Outcome]:
    """Start a real server with the agent surface of Control on a Unix socket, make each
    (mode, method, request) call with a real client, stop the server."""
    socket = tmp_path / "agent.sock"
    assert len(str(socket)) < 100, "Unix socket path too long"

    async def run() -> list[Outcome]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([generic_handler("Control", servicer, ("agent",))])
        assert server.add_insecure_port(f"unix:{socket}") != 0
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
                out = []
                for mode, name, request in calls:
                    servicer.mode = mode
                    out.append(await _call(channel, name, request))
                return out
        finally:
            await server.stop(None)

    return asyncio.run(run())


LIST = "/writ.v1.Control/ListTools"
INVOKE = "/writ.v1.Control/Invoke"
MINT = "/writ.v1.Control/MintToken"
REGISTER = "/writ.v1.Control/RegisterTool"


def test_real_server_on_unix_socket(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="writ.broker")
    ok_list, ok_invoke, mint, register, denied, denied_stream, crash, crash_stream = \
        serve_and_call(tmp_path, FakeControl(), [
            ("ok", LIST, control_pb2.ListToolsRequest()),
            ("ok", INVOKE, control_pb2.InvokeRequest(tool="read-file")),
            ("ok", MINT, control_pb2.MintTokenRequest()),
            ("ok", REGISTER, control_pb2.RegisterToolRequest()),
            ("denied", LIST, control_pb2.ListToolsRequest()),
            ("denied", INVOKE, control_pb2.InvokeRequest()),
            ("crash", LIST, control_pb2.ListToolsRequest()),
            ("crash", INVOKE, control_pb2.InvokeRequest()),
        ])

    # Served rows answer.
    assert ok_list.code == grpc.StatusCode.OK
    assert [t.name for t in ok_list.items[0].tools] == ["read-file"]
    assert ok_invoke.code == grpc.StatusCode.OK
    assert [e.WhichOneof("event") for e in ok_invoke.items] == ["started", "result"]

    # Operator rows are not on the agent surface: the servicer has no such method at all,
    # and the server answers UNIMPLEMENTED without calling anything.
    assert mint.code == grpc.StatusCode.UNIMPLEMENTED
    assert register.code == grpc.StatusCode.UNIMPLEMENTED

    # A BrokerError becomes its own status and client-safe message.
    assert (denied.code, denied.details) == (grpc.StatusCode.PERMISSION_DENIED, "nope")
    assert (denied_stream.code, denied_stream.details) == (
        grpc.StatusCode.PERMISSION_DENIED, "nope")
    assert [e.WhichOneof("event") for e in denied_stream.items] == ["started"]

    # Anything else becomes INTERNAL with an incident id; nothing of the error on the wire.
    incidents = []
    for outcome in (crash, crash_stream):
        assert outcome.code == grpc.StatusCode.INTERNAL
        match = re.fullmatch(r"internal error \(incident ([0-9a-f]{8})\)", outcome.details)
        assert match, outcome.details
        incidents.append(match.group(1))
        for leak in ("Traceback", "RuntimeError", SECRET, "hunter2", ".py", "line "):
            assert leak not in outcome.details
    assert incidents[0] != incidents[1]

    # ... while the traceback goes to the broker log, under the same incident id.
    logged = [r for r in caplog.records if r.name == "writ.broker"]
    assert [r.getMessage() for r in logged] == [
        f"incident {i}: unhandled error" for i in incidents]
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in logged)


def test_unknown_service_method_is_unimplemented(tmp_path: Path) -> None:
    # A ToolBroker method on the agent socket: not served there.
    (out,) = serve_and_call(tmp_path, FakeControl(), [
        ("ok", "/writ.v1.ToolBroker/Start", tool_pb2.StartRequest())])
    assert out.code == grpc.StatusCode.UNIMPLEMENTED


def test_method_rows_are_frozen() -> None:
    row = next(iter(METHODS.values()))
    assert isinstance(row, Method)
    with pytest.raises(AttributeError):
        row.surface = "agent"  # type: ignore[misc]


# -- unparseable requests are INVALID_ARGUMENT, recorded by the servicer's hook -------------
BAD_UTF8 = b"\x12\x02\xff\xfe"  # field 2 (path) of StatRequest / WriteFileRequest


class FakeTool:
    """Two tool rows: a unary one and the client-streaming WriteFile."""

    def __init__(self) -> None:
        self.refused: list[tuple[str, str]] = []
        self.seen: list[str] = []

    async def refuse_malformed(self, row: Method, context: Any, err: Exception) -> None:
        self.refused.append((row.name, str(err)))
        raise err

    async def Stat(self, request: tool_pb2.StatRequest, context: Any) -> tool_pb2.StatResponse:
        return tool_pb2.StatResponse(kind="file")

    async def WriteFile(self, requests: AsyncIterator[tool_pb2.WriteFileRequest],
                        context: Any) -> tool_pb2.WriteFileResponse:
        try:
            async for r in requests:
                self.seen.append(r.path)
        except PermissionDenied:
            raise
        except Exception as exc:
            self.seen.append(f"raised {type(exc).__name__}")
            raise
        return tool_pb2.WriteFileResponse(bytes_written=len(self.seen))

    def __getattr__(self, name: str) -> Any:
        async def handler(request: Any, context: Any) -> Any:
            raise AssertionError("not called")
        return handler


def test_malformed_requests_are_invalid_argument_not_unknown(tmp_path: Path) -> None:
    socket = tmp_path / "tool.sock"
    servicer = FakeTool()
    ident = lambda b: b

    async def run() -> list[tuple[grpc.StatusCode, str]]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([generic_handler("ToolBroker", servicer, ("tool",))])
        server.add_insecure_port(f"unix:{socket}")
        await server.start()
        out = []
        try:
            async with grpc.aio.insecure_channel(f"unix:{socket}") as ch:
                stat = ch.unary_unary("/writ.v1.ToolBroker/Stat", request_serializer=ident,
                                      response_deserializer=ident)
                write = ch.stream_unary("/writ.v1.ToolBroker/WriteFile",
                                        request_serializer=ident, response_deserializer=ident)
                good = tool_pb2.WriteFileRequest(path="a").SerializeToString()
                for call, arg in ((stat, BAD_UTF8), (stat, b""), (write, [good, BAD_UTF8]),
                                  (write, [good])):
                    try:
                        await call(iter(arg) if isinstance(arg, list) else arg, timeout=10)
                        out.append((grpc.StatusCode.OK, ""))
                    except grpc.aio.AioRpcError as err:
                        out.append((err.code(), err.details() or ""))
        finally:
            await server.stop(None)
        return out

    bad_stat, ok_stat, bad_write, ok_write = asyncio.run(run())
    stat_msg = ("malformed request: not a valid writ.v1.StatRequest (bad encoding, or invalid "
                "UTF-8 in a string field)")
    write_msg = stat_msg.replace("StatRequest", "WriteFileRequest")
    assert bad_stat == (grpc.StatusCode.INVALID_ARGUMENT, stat_msg)
    assert ok_stat == ok_write == (grpc.StatusCode.OK, "")
    assert bad_write == (grpc.StatusCode.INVALID_ARGUMENT, write_msg)
    # The unary refusal went through the hook (which records); the stream's reached the
    # handler where it reads the bad message, after the good one.
    assert servicer.refused == [("Stat", stat_msg)]
    assert servicer.seen == ["a", "raised InvalidArgument", "a"]
