"""What the sync and asyncio clients share: the error, typed invoke events, the outcome of
one call, and tool specs in the shapes function-calling models expect."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import grpc

from .._proto import control_pb2
from ..schemas import struct_schema


class WritError(Exception):
    """The broker refused or failed a request, or the call itself failed (deadline,
    cancellation, broker unreachable). ``code`` is the gRPC status name."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> WritError:
        return cls(err.code().name, err.details() or "")


# -- events of one invocation, as the broker streams them ------------------------------------
@dataclass(frozen=True)
class Started:
    """The container is verified and running (or was claimed from the warm pool)."""

    invocation_id: str
    container_id: str
    launch_ms: float
    warm: bool


@dataclass(frozen=True)
class Output:
    """A chunk of the tool's stdout/stderr (sent for failed calls, or on request)."""

    data: bytes


@dataclass(frozen=True)
class Finished:
    """The last event. ``ok``: ``result`` holds the tool's JSON value; otherwise
    ``error_code`` and ``error_message`` say why (a denial the tool hit, a crash, its wall
    time running out)."""

    ok: bool
    result: Any
    error_code: str
    error_message: str
    duration_ms: float
    exit_code: int


Event = Started | Output | Finished


def event_of(ev: control_pb2.InvokeEvent) -> Event:
    """The typed form of one streamed event.

    Raises:
        WritError: INTERNAL when the broker sent an event this client does not know, or an
            ok result that is not JSON.
    """
    kind = ev.WhichOneof("event")
    if kind == "started":
        s = ev.started
        return Started(s.invocation_id, s.container_id, s.launch_ms, s.warm)
    if kind == "output":
        return Output(ev.output.data)
    if kind == "result":
        r = ev.result
        try:
            value = json.loads(r.output_json) if r.ok else None
        except json.JSONDecodeError:
            raise WritError("INTERNAL", "the broker sent a result that is not JSON") from None
        return Finished(r.ok, value, r.error.code, r.error.message, r.duration_ms, r.exit_code)
    raise WritError("INTERNAL", f"unknown invoke event {kind!r}")


@dataclass
class InvokeOutcome:
    """One call run to its end. A tool that ran and failed is ``ok=False`` with
    ``error_code``/``error_message``; a call the broker refused raises ``WritError``."""

    invocation_id: str = ""
    container_id: str = ""
    launch_ms: float = 0.0
    warm: bool = False
    output: bytes = b""
    ok: bool = False
    result: Any = None
    error_code: str = ""
    error_message: str = ""
    duration_ms: float = 0.0
    events: list[control_pb2.InvokeEvent] = field(default_factory=list)

    def add(self, raw: control_pb2.InvokeEvent) -> Event:
        ev = event_of(raw)
        self.events.append(raw)
        if isinstance(ev, Started):
            self.invocation_id, self.container_id = ev.invocation_id, ev.container_id
            self.launch_ms, self.warm = ev.launch_ms, ev.warm
        elif isinstance(ev, Output):
            self.output += ev.data
        else:
            self.ok, self.result, self.duration_ms = ev.ok, ev.result, ev.duration_ms
            self.error_code, self.error_message = ev.error_code, ev.error_message
        return ev


def invoke_request(tool: str, input: dict[str, Any] | str, token: str,
                   capture_output: bool = False) -> control_pb2.InvokeRequest:
    text = input if isinstance(input, str) else json.dumps(input)
    return control_pb2.InvokeRequest(tool=tool, input_json=text, token=token,
                                     capture_output=capture_output)


def target(address: str | Path) -> str:
    """A gRPC target: ``unix:PATH`` for a path, ``HOST:PORT`` as it is."""
    text = str(address)
    if text.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return text
    return text if ":" in text and not text.startswith("/") else f"unix:{text}"


# -- tool discovery ---------------------------------------------------------------------------
class ToolSpec(TypedDict):
    """A tool as function-calling models see it (MCP's and Anthropic's field names)."""

    name: str
    description: str
    input_schema: dict[str, Any]


EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def input_schema(info: control_pb2.ToolInfo) -> dict[str, Any]:
    """The manifest's JSON Schema of the tool's input; a tool that declares none takes an
    object with no declared properties."""
    if not info.manifest.HasField("input_schema") or not info.manifest.input_schema.fields:
        return dict(EMPTY_SCHEMA)
    return struct_schema(info.manifest.input_schema)


def tool_spec(info: control_pb2.ToolInfo) -> ToolSpec:
    return ToolSpec(name=info.name, description=info.manifest.description,
                    input_schema=input_schema(info))


def openai_tool(spec: ToolSpec) -> dict[str, Any]:
    """OpenAI chat-completions ``tools`` entry."""
    return {"type": "function", "function": {"name": spec["name"],
                                             "description": spec["description"],
                                             "parameters": spec["input_schema"]}}


def anthropic_tool(spec: ToolSpec) -> dict[str, Any]:
    """Anthropic Messages API ``tools`` entry."""
    return {"name": spec["name"], "description": spec["description"],
            "input_schema": spec["input_schema"]}
