"""The ops socket's framing, against a stand-in service: each OpRequest reaches the handler
of the unary method it names with the connection's token in the context metadata; a
BrokerError comes back as an OpError with its status name; bad frames are refused through
refuse_malformed and end the connection."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

from writ._proto import tool_pb2
from writ.broker.ops import OPS_METHOD, OpsServer
from writ.errors import BrokerError, NotFound
from writ.methods import Method


class Service:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.refused: list[tuple[str, str, str]] = []

    @staticmethod
    def _token(context: Any) -> str:
        return dict(context.invocation_metadata())["writ-token"]

    async def Stat(self, req: tool_pb2.StatRequest, context: Any) -> tool_pb2.StatResponse:
        self.seen.append(("Stat", req.path, self._token(context)))
        if req.path == "missing":
            raise NotFound("missing: no such file or directory")
        return tool_pb2.StatResponse(kind="file", size=len(req.path))

    async def MakeDir(self, req: tool_pb2.MakeDirRequest,
                      context: Any) -> tool_pb2.MakeDirResponse:
        self.seen.append(("MakeDir", req.path, self._token(context)))
        return tool_pb2.MakeDirResponse()

    ListDir = OpenFile = Delete = Rename = Stat

    async def Start(self, req: tool_pb2.StartRequest, context: Any) -> tool_pb2.StartResponse:
        token = self._token(context)
        self.seen.append(("Start", "", token))
        if token == "writ1.other":
            raise BrokerError("PERMISSION_DENIED", "token is bound to another invocation")
        return tool_pb2.StartResponse(invocation_id="i1", token="writ1.bound" if not token
                                      else "")

    async def Finish(self, req: tool_pb2.FinishRequest,
                     context: Any) -> tool_pb2.FinishResponse:
        self.seen.append(("Finish", req.output_json, self._token(context)))
        return tool_pb2.FinishResponse()

    async def refuse_malformed(self, row: Method, context: Any, err: BrokerError) -> None:
        self.refused.append((row.full_name, err.details, self._token(context)))
        raise err


def _frame(data: bytes, length: int | None = None) -> bytes:
    return struct.pack(">I", len(data) if length is None else length) + data


def _exchange(tmp_path: Path, service: Service, *frames: bytes) -> tuple[list[Any], bool]:
    """Send the frames in turn on one connection; the replies, and whether it was closed."""
    async def run() -> tuple[list[Any], bool]:
        path = tmp_path / "ops.sock"
        server = OpsServer(path, service, "writ-token")
        await server.start(-1, -1)  # -1: chown leaves owner and group as they are
        replies: list[Any] = []
        reader, writer = await asyncio.open_unix_connection(str(path))
        closed = False
        for data in frames:
            writer.write(data)
            if not replies and data is frames[0]:
                continue  # the token: no reply
            try:
                (n,) = struct.unpack(">I", await reader.readexactly(4))
            except asyncio.IncompleteReadError:
                closed = True
                break
            replies.append(tool_pb2.OpReply.FromString(await reader.readexactly(n)))
        writer.close()
        await server.close()
        return replies, closed

    return asyncio.run(run())


def _req(rid: int, **op: Any) -> bytes:
    return _frame(tool_pb2.OpRequest(id=rid, **op).SerializeToString())


def test_each_request_reaches_its_unary_handler_with_the_token(tmp_path: Path) -> None:
    svc = Service()
    replies, closed = _exchange(
        tmp_path, svc, _frame(b"writ1.tok"),
        _req(1, stat=tool_pb2.StatRequest(path="a/b")),
        _req(2, make_dir=tool_pb2.MakeDirRequest(path="d")),
        _req(3, stat=tool_pb2.StatRequest(path="missing")))
    assert not closed
    assert [(r.id, r.WhichOneof("result")) for r in replies] == [
        (1, "stat"), (2, "make_dir"), (3, "error")]
    assert replies[0].stat.size == 3
    assert (replies[2].error.code, replies[2].error.message) == (
        "NOT_FOUND", "missing: no such file or directory")
    assert svc.seen == [("Stat", "a/b", "writ1.tok"), ("MakeDir", "d", "writ1.tok"),
                        ("Stat", "missing", "writ1.tok")]


def test_request_without_an_operation_is_refused_and_the_connection_goes_on(
        tmp_path: Path) -> None:
    svc = Service()
    replies, closed = _exchange(tmp_path, svc, _frame(b"t"), _req(5),
                                _req(6, stat=tool_pb2.StatRequest(path="x")))
    assert not closed
    assert [(r.id, r.WhichOneof("result"), r.error.code) for r in replies] == [
        (5, "error", "INVALID_ARGUMENT"), (6, "stat", "")]
    assert svc.refused == [(OPS_METHOD.full_name,
                            "OpRequest names no operation this broker serves", "t")]


def test_unparseable_frame_is_refused_and_ends_the_connection(tmp_path: Path) -> None:
    svc = Service()
    replies, closed = _exchange(tmp_path, svc, _frame(b"t"), _frame(b"\xff\xff\xff"),
                                _req(2, stat=tool_pb2.StatRequest(path="x")))
    assert closed and replies == [] and svc.seen == []
    assert svc.refused == [(OPS_METHOD.full_name, "malformed ops frame: not an OpRequest", "t")]


def test_oversized_frame_is_refused_unread(tmp_path: Path) -> None:
    svc = Service()
    replies, closed = _exchange(tmp_path, svc, _frame(b"t"), _frame(b"", length=1 << 30))
    assert closed and replies == [] and svc.refused == [
        (OPS_METHOD.full_name, "malformed ops frame: 1073741824 bytes, more than 65536", "t")]


def test_oversized_token_frame_is_refused_without_a_token(tmp_path: Path) -> None:
    svc = Service()
    replies, closed = _exchange(tmp_path, svc, _frame(b"", length=1 << 20), _req(1))
    assert closed and replies == [] and svc.refused == [
        (OPS_METHOD.full_name, "malformed ops frame: 1048576 bytes, more than 65536", "")]


def test_socket_is_private_to_its_owner(tmp_path: Path) -> None:
    async def run() -> int:
        server = OpsServer(tmp_path / "ops.sock", Service(), "writ-token")
        await server.start(-1, -1)
        mode = (tmp_path / "ops.sock").stat().st_mode & 0o777
        await server.close()
        return mode

    assert asyncio.run(run()) == 0o600


def test_a_handler_bug_is_internal_with_an_incident_and_the_connection_goes_on(
        tmp_path: Path) -> None:
    class Buggy(Service):
        async def Delete(self, req: tool_pb2.DeleteRequest, context: Any) -> Any:
            raise KeyError("a bug")

    replies, closed = _exchange(tmp_path, Buggy(), _frame(b"t"),
                                _req(1, delete=tool_pb2.DeleteRequest(path="x")),
                                _req(2, stat=tool_pb2.StatRequest(path="x")))
    assert not closed
    assert replies[0].error.code == "INTERNAL"
    assert replies[0].error.message.startswith("internal error (incident ")
    assert "a bug" not in replies[0].error.message
    assert replies[1].WhichOneof("result") == "stat"


def test_start_hands_a_tokenless_connection_its_token_for_later_requests(
        tmp_path: Path) -> None:
    # A warm-pool container connects before it holds a token: an empty token frame, then
    # Start; what Start hands over is what the connection's later requests are checked with.
    svc = Service()
    replies, closed = _exchange(
        tmp_path, svc, _frame(b""), _req(1, start=tool_pb2.StartRequest()),
        _req(2, stat=tool_pb2.StatRequest(path="a")),
        _req(3, finish=tool_pb2.FinishRequest(output_json="{}")))
    assert not closed
    assert [r.WhichOneof("result") for r in replies] == ["start", "stat", "finish"]
    assert replies[0].start.token == "writ1.bound"
    assert svc.seen == [("Start", "", ""), ("Stat", "a", "writ1.bound"),
                        ("Finish", "{}", "writ1.bound")]


def test_a_refused_or_tokenless_start_leaves_the_connection_token_as_it_was(
        tmp_path: Path) -> None:
    for token, first in ((b"writ1.other", "error"), (b"writ1.cold", "start")):
        svc = Service()
        replies, _ = _exchange(tmp_path, svc, _frame(token),
                               _req(1, start=tool_pb2.StartRequest()),
                               _req(2, stat=tool_pb2.StatRequest(path="a")))
        assert [r.WhichOneof("result") for r in replies] == [first, "stat"]
        assert svc.seen[-1] == ("Stat", "a", token.decode())
        (tmp_path / "ops.sock").unlink(missing_ok=True)
