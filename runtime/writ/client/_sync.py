"""Agent-side client for the broker's control API (sync).

    from writ.client import Client
    c = Client()                                  # agent.sock under the default state dir
    result = c.invoke("read-file", {"path": "reports/q3.csv"}, token)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import grpc

from ._proto import capabilities_pb2 as caps
from ._proto import control_pb2, control_pb2_grpc


class WritError(Exception):
    """The broker refused or failed a request. ``code`` is the gRPC status name."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


@dataclass
class InvokeOutcome:
    invocation_id: str = ""
    container_id: str = ""
    launch_ms: float = 0.0
    output: bytes = b""
    ok: bool = False
    result: Any = None
    error_code: str = ""
    error_message: str = ""
    duration_ms: float = 0.0
    events: list[control_pb2.InvokeEvent] = field(default_factory=list)


def _target(address: str | Path) -> str:
    text = str(address)
    return text if text.startswith(("unix:", "dns:", "ipv4:")) or ":" in text and not \
        text.startswith("/") else f"unix:{text}"


class Client:
    def __init__(self, address: str | Path, timeout: float | None = None) -> None:
        self.channel = grpc.insecure_channel(_target(address))
        self.stub = control_pb2_grpc.ControlStub(self.channel)  # type: ignore[no-untyped-call]
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise WritError(err.code().name, err.details() or "") from None

    def register_tool(self, manifest: caps.Manifest) -> control_pb2.ToolInfo:
        info: control_pb2.ToolInfo = self._call(
            "RegisterTool", control_pb2.RegisterToolRequest(manifest=manifest))
        return info

    def list_tools(self) -> list[control_pb2.ToolInfo]:
        return list(self._call("ListTools", control_pb2.ListToolsRequest()).tools)

    def mint_token(self, grant: caps.Grant, ttl_s: int = 0) -> control_pb2.MintTokenResponse:
        resp: control_pb2.MintTokenResponse = self._call(
            "MintToken", control_pb2.MintTokenRequest(grant=grant, ttl_s=ttl_s))
        return resp

    def explain(self, request: control_pb2.ExplainRequest) -> control_pb2.ExplainResponse:
        resp: control_pb2.ExplainResponse = self._call("Explain", request)
        return resp

    def revoke_token(self, token_id: str, reason: str = "") -> None:
        self._call("RevokeToken", control_pb2.RevokeTokenRequest(token_id=token_id,
                                                                 reason=reason))

    def rotate_key(self) -> control_pb2.RotateKeyResponse:
        resp: control_pb2.RotateKeyResponse = self._call("RotateKey",
                                                         control_pb2.RotateKeyRequest())
        return resp

    def invoke_stream(self, tool: str, input: dict[str, Any] | str, token: str,
                      timeout: float | None = None) -> Iterator[control_pb2.InvokeEvent]:
        text = input if isinstance(input, str) else json.dumps(input)
        req = control_pb2.InvokeRequest(tool=tool, input_json=text, token=token)
        try:
            yield from self.stub.Invoke(req, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise WritError(err.code().name, err.details() or "") from None

    def invoke(self, tool: str, input: dict[str, Any] | str, token: str,
               timeout: float | None = None) -> InvokeOutcome:
        """Run one tool call to its end. Raises WritError when the broker refuses it;
        a tool that ran and failed returns ``ok=False`` with the error."""
        out = InvokeOutcome()
        for ev in self.invoke_stream(tool, input, token, timeout):
            out.events.append(ev)
            kind = ev.WhichOneof("event")
            if kind == "started":
                out.invocation_id = ev.started.invocation_id
                out.container_id = ev.started.container_id
                out.launch_ms = ev.started.launch_ms
            elif kind == "output":
                out.output += ev.output.data
            elif kind == "result":
                out.ok, out.duration_ms = ev.result.ok, ev.result.duration_ms
                if ev.result.ok:
                    out.result = json.loads(ev.result.output_json)
                else:
                    out.error_code = ev.result.error.code
                    out.error_message = ev.result.error.message
        return out
