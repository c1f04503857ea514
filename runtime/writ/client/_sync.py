"""The blocking client. Every method takes ``timeout`` (seconds; default: the client's);
a call that outlives it fails with ``WritError("DEADLINE_EXCEEDED")`` and the broker removes
its container. ``close()`` cancels every call still running on this client."""

from __future__ import annotations

from collections.abc import Iterator
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


class InvokeCall:
    """One running invocation: iterate its events; ``cancel()`` (from any thread) or
    leaving a ``with`` block early stops it, and the broker removes its container.

    Raises (while iterating):
        WritError: the broker refused the call (PERMISSION_DENIED, NOT_FOUND, ...), its
            deadline passed (DEADLINE_EXCEEDED), or it was cancelled (CANCELLED).
    """

    def __init__(self, call: Any) -> None:
        self._call = call
        self.outcome = InvokeOutcome()
        self.last: Event | None = None

    def __iter__(self) -> Iterator[Event]:
        try:
            for raw in self._call:
                self.last = self.outcome.add(raw)
                yield self.last
        except grpc.RpcError as err:
            raise WritError.from_rpc(err) from None

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._call.cancel()  # no effect once the call has ended

    def result(self) -> InvokeOutcome:
        """Read the remaining events; the outcome of the whole call."""
        for _ in self:
            pass
        if not isinstance(self.last, Finished):
            raise WritError("INTERNAL", "the call ended without a result")
        return self.outcome


class Client:
    """Agent and operator client for the broker's control API.

        with Client(state_dir / "agent.sock") as c:
            out = c.invoke("read-file", {"path": "reports/q3.csv"}, token, timeout=30)
            tools = c.openai_tools()
    """

    def __init__(self, address: str | Path, timeout: float | None = None) -> None:
        self.target = target(address)
        self.channel = grpc.insecure_channel(self.target)
        self.stub = control_pb2_grpc.ControlStub(self.channel)  # type: ignore[no-untyped-call]
        self.timeout = timeout

    def close(self) -> None:
        """Close the channel; calls still running on it are cancelled."""
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise WritError.from_rpc(err) from None

    # -- discovery -------------------------------------------------------------------------
    def list_tools(self, timeout: float | None = None) -> list[control_pb2.ToolInfo]:
        return list(self._call("ListTools", control_pb2.ListToolsRequest(), timeout).tools)

    def tool_specs(self, timeout: float | None = None) -> list[ToolSpec]:
        """Each registered tool as {"name", "description", "input_schema"} (the manifest's
        JSON Schema): MCP's and Anthropic's shape."""
        return [tool_spec(t) for t in self.list_tools(timeout)]

    def openai_tools(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """The ``tools`` list of an OpenAI chat-completions request."""
        return [openai_tool(s) for s in self.tool_specs(timeout)]

    def anthropic_tools(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """The ``tools`` list of an Anthropic Messages API request."""
        return [anthropic_tool(s) for s in self.tool_specs(timeout)]

    # -- invoking --------------------------------------------------------------------------
    def stream(self, tool: str, input: dict[str, Any] | str, token: str,
               timeout: float | None = None, capture_output: bool = False) -> InvokeCall:
        """Start a call; iterate the returned ``InvokeCall`` for its typed events."""
        req = invoke_request(tool, input, token, capture_output)
        return InvokeCall(self.stub.Invoke(req, timeout=timeout or self.timeout))

    def invoke_stream(self, tool: str, input: dict[str, Any] | str, token: str,
                      timeout: float | None = None) -> Iterator[control_pb2.InvokeEvent]:
        """The raw protobuf events of a call (see ``stream`` for typed ones).

        Raises:
            WritError: as ``InvokeCall``.
        """
        call = self.stream(tool, input, token, timeout)
        for _ in call:
            yield call.outcome.events[-1]

    def invoke(self, tool: str, input: dict[str, Any] | str, token: str,
               timeout: float | None = None, capture_output: bool = False) -> InvokeOutcome:
        """Run one tool call to its end.

        Returns:
            The outcome; a tool that ran and failed is ``ok=False`` with its error.

        Raises:
            WritError: the broker refused the call, or its deadline passed.
        """
        with self.stream(tool, input, token, timeout, capture_output) as call:
            return call.result()

    # -- operator --------------------------------------------------------------------------
    def register_tool(self, manifest: caps.Manifest, signature_json: str = "",
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
        info: control_pb2.ToolInfo = self._call(
            "RegisterTool", control_pb2.RegisterToolRequest(
                manifest=manifest, signature_json=signature_json), timeout)
        return info

    def mint_token(self, grant: caps.Grant, ttl_s: int = 0,
                   timeout: float | None = None) -> control_pb2.MintTokenResponse:
        resp: control_pb2.MintTokenResponse = self._call(
            "MintToken", control_pb2.MintTokenRequest(grant=grant, ttl_s=ttl_s), timeout)
        return resp

    def explain(self, request: control_pb2.ExplainRequest,
                timeout: float | None = None) -> control_pb2.ExplainResponse:
        resp: control_pb2.ExplainResponse = self._call("Explain", request, timeout)
        return resp

    def revoke_token(self, token_id: str, reason: str = "", timeout: float | None = None) -> None:
        self._call("RevokeToken", control_pb2.RevokeTokenRequest(token_id=token_id,
                                                                 reason=reason), timeout)

    def rotate_key(self, timeout: float | None = None) -> control_pb2.RotateKeyResponse:
        resp: control_pb2.RotateKeyResponse = self._call(
            "RotateKey", control_pb2.RotateKeyRequest(), timeout)
        return resp

    def put_secret(self, name: str, value: bytes,
                   timeout: float | None = None) -> control_pb2.SecretInfo:
        """Store a secret grants may attach to requests (operator socket only)."""
        info: control_pb2.SecretInfo = self._call(
            "PutSecret", control_pb2.PutSecretRequest(name=name, value=value), timeout)
        return info
