"""One invocation: its own socket, its own gRPC server, its own token binding.

The server is created before the container and answers nothing until the launcher has
verified the container (``ready``); it is torn down with the container.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from .._proto import audit_pb2, tool_pb2
from ..core.policy import Authority
from ..core.tokens import UnverifiedToken
from ..errors import BrokerError, FailedPrecondition
from ..launcher._spec import SOCKET_NAME, TOOL_USER
from ..mediators import files, files_tree, files_write
from ..mediators import net as net_mediator
from ..mediators import payments as payments_mediator
from ..mediators._context import CallContext
from ..mediators._fdpass import FD_SOCKET_NAME, DescriptorDesk
from ..methods import Method
from ..state import ToolRecord
from . import ops
from .pool import make_socket_dir
from .rpc import generic_handler

if TYPE_CHECKING:
    from .server import Broker

TOKEN_METADATA = "writ-token"
PIPE_METADATA = "writ-pipe"  # sent when a piped write is allowed and its pipe is taken
READY_TIMEOUT_S = 30.0
# One WriteFile message: up to 1 MiB of data plus its few header bytes.
MAX_TOOL_MESSAGE = (1 << 20) + (16 << 10)
# Operations with no effect outside the broker: their records are chained before the reply
# but not waited for (the ordering rule in DESIGN.md, "Audit"). Anything else waits.
NO_EFFECT = frozenset({"/writ.v1.ToolBroker/Stat", "/writ.v1.ToolBroker/ListDir",
                       "/writ.v1.ToolBroker/ReadFile", "/writ.v1.ToolBroker/OpenFile"})


@dataclass
class Outcome:
    ok: bool
    output_json: str = ""
    code: str = ""
    message: str = ""


@dataclass
class Invocation:
    id: str
    tool: ToolRecord
    input_json: str
    token_id: str
    grant_id: str
    socket_dir: Path
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: asyncio.Future[Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    started: bool = False
    server: grpc.aio.Server | None = None
    bound_token: str = ""      # handed to the tool in the Start reply
    pooled: bool = False       # a warm container: its socket dir already exists
    desk: DescriptorDesk | None = None  # hands checked read descriptors to the tool
    ops: ops.OpsServer | None = None    # small operations as frames on ops.sock

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / SOCKET_NAME

    async def open(self, broker: Broker) -> None:
        uid, gid = (int(x) for x in TOOL_USER.split(":"))
        if not self.pooled:
            make_socket_dir(self.socket_dir)
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", MAX_TOOL_MESSAGE),
            ("grpc.max_concurrent_streams", 16)])
        service = ToolService(self, broker)
        self.server.add_generic_rpc_handlers(
            [generic_handler("ToolBroker", service, ("tool",))])
        # Bound under a staging name and renamed into place last, owned and mode-set: a
        # tool that waits for the socket's name (a warm-pool container) must never find a
        # root-owned socket it cannot connect to, nor one whose descriptor desk or ops
        # socket is missing.
        staged = self.socket_dir / f".{SOCKET_NAME}"
        self.server.add_insecure_port(f"unix:{staged}")
        await self.server.start()
        os.chown(staged, uid, gid)
        os.chmod(staged, 0o600)
        self.desk = DescriptorDesk(self.socket_dir / FD_SOCKET_NAME)
        await self.desk.start(uid, gid)
        self.ops = ops.OpsServer(self.socket_dir / ops.OPS_SOCKET_NAME, service,
                                 TOKEN_METADATA)
        await self.ops.start(uid, gid)
        os.rename(staged, self.socket_path)

    async def close(self, broker: Broker) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
        if self.ops is not None:
            await self.ops.close()
        broker.forget_token(self.bound_token)
        if self.desk is not None:
            await self.desk.close()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def _token_of(context: Any) -> str:
    return str(dict(context.invocation_metadata() or ()).get(TOKEN_METADATA, ""))


class ToolService:
    """Handlers for the tool-facing API of one invocation."""

    def __init__(self, inv: Invocation, broker: Broker) -> None:
        self.inv = inv
        self.broker = broker

    async def _ready(self) -> None:
        if self.inv.ready.is_set():
            return  # the common case: no timer task for every operation
        try:
            await asyncio.wait_for(self.inv.ready.wait(), READY_TIMEOUT_S)
        except TimeoutError:
            raise FailedPrecondition("invocation never became ready") from None

    async def _context(self, context: Any, method: str) -> CallContext:
        """Wait until the container is verified, then check the presented token.

        Raises:
            TokenInvalid: no, malformed or forged token.
            CaveatUnmet: a genuine token bound to another invocation, or to none.
        """
        await self._ready()
        base = audit_pb2.AuditEvent(actor=f"tool:{self.inv.tool.name}", method=method,
                                    tool=self.inv.tool.name, invocation_id=self.inv.id)
        text = _token_of(context)
        try:
            unverified = UnverifiedToken.parse(text)
            base.token_id, base.grant_id = unverified.token_id, unverified.grant_id
            _, token = self.broker.verify_token(text)
            token.check_binding(self.inv.id)
        except BrokerError as err:
            ev = audit_pb2.AuditEvent()
            ev.CopyFrom(base)
            ev.operation, ev.target = "token.check", self.inv.id
            ev.decision, ev.reason, ev.status = audit_pb2.DENY, err.details, err.code
            await self.broker.record(ev)
            raise
        # The presented token's own chain decides: a tool that narrowed its token further
        # gets the narrower authority, never the invocation's original.
        authority: Authority = token.authority(self.inv.tool.manifest)
        return CallContext(authority, time.time(), self.broker.record, base,
                           self.broker.budgets,
                           self.broker.append if method in NO_EFFECT else None,
                           chain=self.broker.append)

    async def Start(self, req: tool_pb2.StartRequest, context: Any) -> tool_pb2.StartResponse:
        if self.inv.pooled and not _token_of(context):
            # A warm container receives its token in this reply. Its socket is the identity:
            # it exists only in this container's mount, and only once claimed.
            await self._ready()
        else:
            await self._context(context, "/writ.v1.ToolBroker/Start")
        if self.inv.started:
            raise FailedPrecondition("Start was already called for this invocation")
        self.inv.started = True
        return tool_pb2.StartResponse(invocation_id=self.inv.id, tool=self.inv.tool.name,
                                      input_json=self.inv.input_json,
                                      token=self.inv.bound_token)

    async def Finish(self, req: tool_pb2.FinishRequest, context: Any) -> tool_pb2.FinishResponse:
        await self._context(context, "/writ.v1.ToolBroker/Finish")
        if self.inv.outcome.done():
            raise FailedPrecondition("Finish was already called for this invocation")
        if req.WhichOneof("outcome") == "output_json":
            self.inv.outcome.set_result(Outcome(True, output_json=req.output_json))
        else:
            self.inv.outcome.set_result(Outcome(False, code=req.error.code or "TOOL_ERROR",
                                                message=req.error.message))
        return tool_pb2.FinishResponse()

    async def ReadFile(self, req: tool_pb2.ReadFileRequest,
                       context: Any) -> AsyncIterator[tool_pb2.FileChunk]:
        ctx = await self._context(context, "/writ.v1.ToolBroker/ReadFile")
        async for chunk in files.read_file(ctx, self.broker.workspaces, req):
            yield chunk

    async def ListDir(self, req: tool_pb2.ListDirRequest,
                      context: Any) -> tool_pb2.ListDirResponse:
        ctx = await self._context(context, "/writ.v1.ToolBroker/ListDir")
        return await files.list_dir(ctx, self.broker.workspaces, req)

    async def Stat(self, req: tool_pb2.StatRequest, context: Any) -> tool_pb2.StatResponse:
        ctx = await self._context(context, "/writ.v1.ToolBroker/Stat")
        return await files.stat_entry(ctx, self.broker.workspaces, req)

    async def OpenFile(self, req: tool_pb2.OpenFileRequest,
                       context: Any) -> tool_pb2.OpenFileResponse:
        ctx = await self._context(context, "/writ.v1.ToolBroker/OpenFile")
        assert self.inv.desk is not None
        return await files.open_file(ctx, self.broker.workspaces, self.inv.desk, req)

    async def WriteFile(self, requests: AsyncIterator[tool_pb2.WriteFileRequest],
                        context: Any) -> tool_pb2.WriteFileResponse:
        ctx = await self._context(context, "/writ.v1.ToolBroker/WriteFile")
        assert self.inv.desk is not None

        async def draining() -> None:
            await context.send_initial_metadata(((PIPE_METADATA, "draining"),))

        return await files_write.write_file(ctx, self.broker.workspaces, self.inv.desk,
                                            requests, draining)

    async def MakeDir(self, req: tool_pb2.MakeDirRequest,
                      context: Any) -> tool_pb2.MakeDirResponse:
        ctx = await self._context(context, "/writ.v1.ToolBroker/MakeDir")
        return await files_tree.make_dir(ctx, self.broker.workspaces, req)

    async def Delete(self, req: tool_pb2.DeleteRequest, context: Any) -> tool_pb2.DeleteResponse:
        ctx = await self._context(context, "/writ.v1.ToolBroker/Delete")
        return await files_tree.delete(ctx, self.broker.workspaces, req)

    async def Rename(self, req: tool_pb2.RenameRequest, context: Any) -> tool_pb2.RenameResponse:
        ctx = await self._context(context, "/writ.v1.ToolBroker/Rename")
        return await files_tree.rename(ctx, self.broker.workspaces, req)

    async def Pay(self, req: tool_pb2.PayRequest, context: Any) -> tool_pb2.PayResponse:
        ctx = await self._context(context, "/writ.v1.ToolBroker/Pay")
        remaining = context.time_remaining()
        wait = payments_mediator.APPROVAL_TTL_S if remaining is None else remaining - 1.0
        text = _token_of(context)

        def recheck() -> Authority:
            _, token = self.broker.verify_token(text)
            return token.authority(self.inv.tool.manifest)

        return await payments_mediator.pay(ctx, self.broker.ledger, req,
                                           payer=self.broker.config.payer,
                                           max_wait_s=min(wait, payments_mediator.APPROVAL_TTL_S),
                                           recheck=recheck)

    async def GetPayment(self, req: tool_pb2.GetPaymentRequest,
                         context: Any) -> tool_pb2.PayResponse:
        ctx = await self._context(context, "/writ.v1.ToolBroker/GetPayment")
        return await payments_mediator.get_payment(ctx, self.broker.ledger, req)

    async def HttpRequest(self, parts: AsyncIterator[tool_pb2.HttpRequestPart],
                          context: Any) -> AsyncIterator[tool_pb2.HttpResponsePart]:
        ctx = await self._context(context, "/writ.v1.ToolBroker/HttpRequest")
        async for part in net_mediator.http_request(ctx, self.broker.net, parts, self.inv.desk):
            yield part

    async def Connect(self, parts: AsyncIterator[tool_pb2.TunnelPart],
                      context: Any) -> AsyncIterator[tool_pb2.TunnelPart]:
        ctx = await self._context(context, "/writ.v1.ToolBroker/Connect")
        async for part in net_mediator.tunnel(ctx, self.broker.net, parts):
            yield part

    async def refuse_malformed(self, row: Method, context: Any, err: BrokerError) -> None:
        """A request that did not parse: check the token, record the refusal, raise it."""
        ctx = await self._context(context, row.full_name)
        await ctx.record_error(ctx.event(row.operation, ""), err)
        raise err
