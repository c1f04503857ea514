"""The ops socket: a tool's small operations over one long-lived connection.

A unary gRPC call costs about a millisecond of framing on each side, and a message on a
gRPC Python stream about half of that; a length-prefixed frame on a plain Unix socket
costs about a tenth. So Start, Stat, ListDir, OpenFile, MakeDir, Delete, Rename, reads of
up to 1 MiB (ReadFile) and Finish may also travel as ``OpRequest``/``OpReply`` frames on
``ops.sock``, beside the broker socket in the invocation's own socket directory (0700, the
tool's uid, mounted in that container alone): the same trust as the broker socket itself.

Frames are a 4-byte big-endian length and that many bytes. The tool's first frame is its
token; each later one is an OpRequest, answered by the very handler of the unary method it
names, called with a context whose metadata carries that token: so the token check (again
for every request), the decision, the audit record and the error are exactly the unary
call's. A warm-pool container has no token before its Start: it sends an empty token
frame, and the token Start hands it stands for the rest of the connection (as the SDK
sends it on its later gRPC calls). A BrokerError becomes an ``OpError`` with the status
name the unary call would have ended with, and the connection goes on. Requests on one
connection are answered one at a time, in order. A frame that does not parse, or is too
long, is recorded and ends the connection, as a malformed message ends a unary call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from google.protobuf.message import DecodeError

from .._proto import tool_pb2
from ..errors import BrokerError, InvalidArgument
from ..methods import Method

log = logging.getLogger("writ.broker")
OPS_SOCKET_NAME = "ops.sock"
MAX_FRAME = 64 << 10   # a request is a path or two; a token a few hundred bytes
MAX_CONNECTIONS = 16   # as many as the broker socket's concurrent gRPC streams
MAX_READ = 1 << 20     # the most one read_file reply carries; the rest is a ReadFile stream
_LENGTH = struct.Struct(">I")
# Not a gRPC method (so not in the method table): the name its refusals are recorded under.
OPS_METHOD = Method("ToolBroker", "Ops", "tool", "tool.ops", False,
                    "ops.sock: Start, Stat, ListDir, OpenFile, MakeDir, Delete, Rename, "
                    "ReadFile, Finish frames")
# OpRequest's oneof field -> the ToolService handler (the unary method of that name).
HANDLERS = {"stat": "Stat", "list_dir": "ListDir", "open_file": "OpenFile",
            "make_dir": "MakeDir", "delete": "Delete", "rename": "Rename",
            "start": "Start", "finish": "Finish"}


class Service(Protocol):
    def ReadFile(self, req: tool_pb2.ReadFileRequest,
                 context: Any) -> AsyncIterator[tool_pb2.FileChunk]: ...

    async def refuse_malformed(self, row: Method, context: Any, err: BrokerError) -> None: ...


class _Context:
    """What the unary handlers read from a gRPC context: the token in the metadata."""

    def __init__(self, key: str, token: str) -> None:
        self._metadata = ((key, token),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


class _Malformed(Exception):
    def __init__(self, why: str) -> None:
        self.error = InvalidArgument(f"malformed ops frame: {why}")


async def _frame(reader: asyncio.StreamReader) -> bytes | None:
    """One frame's bytes; None at a clean end. Raises _Malformed, IncompleteReadError."""
    try:
        head = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME:
        raise _Malformed(f"{length} bytes, more than {MAX_FRAME}")
    return await reader.readexactly(length)


class OpsServer:
    def __init__(self, path: Path, service: Service, token_key: str) -> None:
        self.path = path
        self._key = token_key
        self._handlers: dict[str, Callable[[Any, Any], Awaitable[Any]]] = {
            field: getattr(service, name) for field, name in HANDLERS.items()}
        self._handlers["read_file"] = self._read_file
        self._service = service
        self._server: asyncio.AbstractServer | None = None
        self._conversations: set[asyncio.Task[None]] = set()

    async def start(self, uid: int, gid: int) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.bind(str(self.path))
        # Only the tool's uid may connect (the directory is 0700 and the tool's too).
        os.chown(self.path, uid, gid)
        os.chmod(self.path, 0o600)
        self._server = await asyncio.start_unix_server(self._converse, sock=sock,
                                                       limit=MAX_FRAME + _LENGTH.size)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conversations):
            task.cancel()
        await asyncio.gather(*self._conversations, return_exceptions=True)

    async def _converse(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._conversations) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._conversations.add(task)
        try:
            await self._answer(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the tool went away mid-frame: nothing to answer
        finally:
            self._conversations.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        context = _Context(self._key, "")  # refusals before the token: no token
        try:
            token = await _frame(reader)
            if token is None:
                return
            context = _Context(self._key, token.decode("utf-8", "replace"))
            while (data := await _frame(reader)) is not None:
                try:
                    req = tool_pb2.OpRequest.FromString(data)
                except DecodeError:
                    raise _Malformed("not an OpRequest") from None
                reply = await self._reply(req, context)
                if reply.WhichOneof("result") == "start" and reply.start.token:
                    # Start hands a warm container its bound token (the Start handler
                    # decided it may have it): the connection's later requests carry it.
                    context = _Context(self._key, reply.start.token)
                data = reply.SerializeToString()
                writer.write(_LENGTH.pack(len(data)) + data)
                # Bounded: a tool that sends without reading waits here.
                await writer.drain()
        except _Malformed as bad:
            with contextlib.suppress(BrokerError):  # it records, then raises
                await self._service.refuse_malformed(OPS_METHOD, context, bad.error)

    async def _read_file(self, req: tool_pb2.ReadFileRequest,
                         context: _Context) -> tool_pb2.FileChunk:
        """ReadFile of at most MAX_READ bytes of the range, its chunks in one reply."""
        if not 0 < req.length <= MAX_READ:
            req.length = MAX_READ
        chunks = [chunk.data async for chunk in self._service.ReadFile(req, context)]
        return tool_pb2.FileChunk(data=b"".join(chunks))

    async def _reply(self, req: tool_pb2.OpRequest, context: _Context) -> tool_pb2.OpReply:
        reply = tool_pb2.OpReply(id=req.id)
        field = req.WhichOneof("op")
        try:
            if field is None:
                # No operation this broker knows (a newer SDK, or bytes that parsed).
                await self._service.refuse_malformed(OPS_METHOD, context, InvalidArgument(
                    "OpRequest names no operation this broker serves"))
            else:
                result = await self._handlers[field](getattr(req, field), context)
                getattr(reply, field).CopyFrom(result)
        except BrokerError as err:
            reply.error.code, reply.error.message = err.code, err.details
        except Exception:  # as in rpc.py: INTERNAL; the traceback goes to the log only
            incident = secrets.token_hex(4)
            log.exception("incident %s: unhandled error on the ops socket", incident)
            reply.error.code = "INTERNAL"
            reply.error.message = f"internal error (incident {incident})"
        return reply
