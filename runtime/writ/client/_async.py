"""The asyncio client (grpc.aio). Create it inside the event loop that uses it.

Every method takes ``timeout`` (seconds; default: the client's). Cancelling the task that
awaits a call (``task.cancel()``, ``asyncio.wait_for``, a task group unwinding) cancels the
RPC, and the broker kills the call's container and records the end as CANCELLED.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc

from .._proto import capabilities_pb2 as caps
from .._proto import control_pb2, control_pb2_grpc
from ._common import (
    Event,
    Finished,
    InvokeOutcome,
    ToolSpec,
    WritError,
    anthropic_tool,
    invoke_request,
    openai_tool,
    target,
    tool_spec,
)


class AsyncInvokeCall:
    """One running invocation: ``async for`` its events; ``cancel()`` or leaving an
    ``async with`` block early stops it, and the broker removes its container.

    Raises (while iterating):
        WritError: the broker refused the call, its deadline passed (DEADLINE_EXCEEDED),
            or it was stopped with ``cancel()`` (CANCELLED).
        asyncio.CancelledError: the awaiting task was cancelled (the RPC is cancelled too).
    """

    def __init__(self, call: Any) -> None:
        self._call = call
        self.outcome = InvokeOutcome()
        self.last: Event | None = None
        self._cancelled = False

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        try:
            async for raw in self._call:
                self.last = self.outcome.add(raw)
                yield self.last
        except grpc.RpcError as err:
            raise WritError.from_rpc(err) from None
        except asyncio.CancelledError:
            # grpc.aio reports its own local cancel as CancelledError; only a cancel of the
            # task itself may travel as one, or asyncio would take it for the task's.
            task = asyncio.current_task()
            if self._cancelled and (task is None or not task.cancelling()):
                raise WritError("CANCELLED", "cancelled by the client") from None
            raise
        finally:
            # A consumer that stops early, or whose task is cancelled, ends the RPC here;
            # after the last event this does nothing.
            self._call.cancel()

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._call.cancel()

    async def result(self) -> InvokeOutcome:
        """Read the remaining events; the outcome of the whole call."""
        async for _ in self:
            pass
        if not isinstance(self.last, Finished):
            raise WritError("INTERNAL", "the call ended without a result")
        return self.outcome


class AsyncClient:
    """The asyncio twin of ``writ.client.Client``.

        async with AsyncClient(state_dir / "agent.sock", timeout=30) as c:
            outs = await asyncio.gather(*(c.invoke("word-count", {}, token) for _ in range(8)))
    """

    def __init__(self, address: str | Path, timeout: float | None = None) -> None:
        self.target = target(address)
        self.channel = grpc.aio.insecure_channel(self.target)
        self.stub = control_pb2_grpc.ControlStub(self.channel)  # type: ignore[no-untyped-call]
        self.timeout = timeout

    async def close(self) -> None:
        """Close the channel; calls still running on it are cancelled."""
        await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return await getattr(self.stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise WritError.from_rpc(err) from None

    # -- discovery -------------------------------------------------------------------------
    async def list_tools(self, timeout: float | None = None) -> list[control_pb2.ToolInfo]:
        resp = await self._call("ListTools", control_pb2.ListToolsRequest(), timeout)
        return list(resp.tools)

    async def tool_specs(self, timeout: float | None = None) -> list[ToolSpec]:
        """Each registered tool as {"name", "description", "input_schema"}."""
        return [tool_spec(t) for t in await self.list_tools(timeout)]

    async def openai_tools(self, timeout: float | None = None) -> list[dict[str, Any]]:
        return [openai_tool(s) for s in await self.tool_specs(timeout)]

    async def anthropic_tools(self, timeout: float | None = None) -> list[dict[str, Any]]:
        return [anthropic_tool(s) for s in await self.tool_specs(timeout)]

    # -- invoking --------------------------------------------------------------------------
    def stream(self, tool: str, input: dict[str, Any] | str, token: str,
               timeout: float | None = None, capture_output: bool = False) -> AsyncInvokeCall:
        """Start a call; ``async for`` the returned ``AsyncInvokeCall`` for its events."""
        req = invoke_request(tool, input, token, capture_output)
        return AsyncInvokeCall(self.stub.Invoke(req, timeout=timeout or self.timeout))

    async def invoke(self, tool: str, input: dict[str, Any] | str, token: str,
                     timeout: float | None = None,
                     capture_output: bool = False) -> InvokeOutcome:
        """Run one tool call to its end.

        Returns:
            The outcome; a tool that ran and failed is ``ok=False`` with its error.

        Raises:
            WritError: the broker refused the call, or its deadline passed.
            asyncio.CancelledError: the awaiting task was cancelled; so is the call.
        """
        async with self.stream(tool, input, token, timeout, capture_output) as call:
            return await call.result()

    # -- operator --------------------------------------------------------------------------
    async def register_tool(self, manifest: caps.Manifest, signature_json: str = "",
                            timeout: float | None = None) -> control_pb2.ToolInfo:
        """Register (or replace) a tool; its image must be on the broker's engine.

        Args:
            manifest: the tool's capability manifest.
            signature_json: the security team's signature document (`writ caps sign`:
                ``<tool>.sig.json``) approving this manifest for one image id; a
                broker running ``--strict`` requires it. "" sends none.

        Returns:
            The registered tool, with the image id the broker pinned.

        Raises:
            WritError: the broker refused it: an invalid manifest, an image not on its
                engine, or (``--strict``) a missing or untrusted signature.
        """
        info: control_pb2.ToolInfo = await self._call(
            "RegisterTool", control_pb2.RegisterToolRequest(
                manifest=manifest, signature_json=signature_json), timeout)
        return info

    async def mint_token(self, grant: caps.Grant, ttl_s: int = 0,
                         timeout: float | None = None) -> control_pb2.MintTokenResponse:
        resp: control_pb2.MintTokenResponse = await self._call(
            "MintToken", control_pb2.MintTokenRequest(grant=grant, ttl_s=ttl_s), timeout)
        return resp

    async def explain(self, request: control_pb2.ExplainRequest,
                      timeout: float | None = None) -> control_pb2.ExplainResponse:
        resp: control_pb2.ExplainResponse = await self._call("Explain", request, timeout)
        return resp

    async def revoke_token(self, token_id: str, reason: str = "",
                           timeout: float | None = None) -> None:
        await self._call("RevokeToken", control_pb2.RevokeTokenRequest(token_id=token_id,
                                                                       reason=reason), timeout)
