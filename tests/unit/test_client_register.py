"""Both clients' register_tool send the security team's signature document with the
manifest (RegisterToolRequest.signature_json), to a real gRPC server on localhost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from writ._proto import capabilities_pb2 as caps
from writ._proto import control_pb2, control_pb2_grpc
from writ.client import AsyncClient, Client

MANIFEST = caps.Manifest(name="probe", image="writ-tool/probe:latest")


class RecordingControl(control_pb2_grpc.ControlServicer):
    """Answers RegisterTool and keeps each request it received."""

    def __init__(self) -> None:
        self.requests: list[control_pb2.RegisterToolRequest] = []

    def RegisterTool(self, request: control_pb2.RegisterToolRequest,
                     context: Any) -> control_pb2.ToolInfo:
        self.requests.append(request)
        return control_pb2.ToolInfo(name=request.manifest.name, image=request.manifest.image)


@pytest.fixture
def control() -> Iterator[tuple[RecordingControl, str]]:
    servicer = RecordingControl()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    control_pb2_grpc.add_ControlServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_register_tool_sends_the_signature_document(
        control: tuple[RecordingControl, str]) -> None:
    servicer, address = control
    signature = '{"key_id": "0123abcd"}'
    with Client(address, timeout=10) as client:
        info = client.register_tool(MANIFEST, signature_json=signature)

    async def register_async() -> control_pb2.ToolInfo:
        async with AsyncClient(address, timeout=10) as client:
            return await client.register_tool(MANIFEST, signature_json=signature)

    async_info = asyncio.run(register_async())
    assert info.name == async_info.name == "probe"
    assert [(r.manifest, r.signature_json) for r in servicer.requests] == [
        (MANIFEST, signature), (MANIFEST, signature)]


def test_register_tool_without_a_signature_sends_none(
        control: tuple[RecordingControl, str]) -> None:
    servicer, address = control
    with Client(address, timeout=10) as client:
        client.register_tool(MANIFEST)
    assert [r.signature_json for r in servicer.requests] == [""]
