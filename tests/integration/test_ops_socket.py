"""The ops socket: small operations as frames, answered by the unary handlers.

The same operations through the ops socket and as unary gRPC calls give the same outcomes
and the same audit records; a frame that does not parse, is too long, or names no
operation is refused and recorded; a bad token on the socket is refused and recorded per
request, exactly as on the broker socket.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from writ._proto import audit_pb2, tool_pb2

from .conftest import RunningBroker
from .test_files_write import FILE_OPS, GRANT, WRITER, invoke, writer_broker


@pytest.fixture(scope="module")
def wb(tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
       probe_image: str) -> Iterator[RunningBroker]:
    rb = writer_broker(tmp_path_factory.mktemp("o"), docker_client)
    yield rb
    rb.stop()


@pytest.fixture(scope="module")
def token(wb: RunningBroker) -> str:
    return wb.mint(GRANT)

SPECS: list[dict[str, Any]] = [
    {"op": "stat", "path": "reports/q3.csv"},
    {"op": "stat", "path": "private/secret.txt"},         # not granted
    {"op": "stat", "path": "reports/../private/secret.txt"},  # malformed path
    {"op": "list", "path": "reports"},
    {"op": "mkdir", "path": "out/ops-{via}"},
    {"op": "mkdir", "path": "out/ops-{via}"},              # exists
    {"op": "create", "path": "out/ops-{via}/a.txt", "data": "a"},
    {"op": "rename", "path": "out/ops-{via}/a.txt", "to": "out/ops-{via}/b.txt"},
    {"op": "rename", "path": "out/ops-{via}/b.txt", "to": "reports/b.txt"},  # not granted
    {"op": "delete", "path": "out/ops-{via}/nothing.txt"},  # not found
    {"op": "delete", "path": "out/ops-{via}/b.txt"},
    {"op": "delete", "path": "out/ops-{via}"},
    {"op": "open", "path": "reports/q3.csv"},
    {"op": "open", "path": "private/secret.txt"},          # not granted
    {"op": "read", "path": "reports/q3.csv"},
    {"op": "read", "path": "private/secret.txt"},          # not granted
]


def _specs(via: str) -> list[dict[str, Any]]:
    return [{k: v.format(via=via) if isinstance(v, str) else v for k, v in spec.items()}
            for spec in SPECS]


def _same_shape(rows: list[Any], via: str) -> list[Any]:
    return [tuple(str(x).replace(f"ops-{via}", "ops-X") for x in row) for row in rows]


def test_ops_socket_answers_and_records_exactly_like_unary_calls(
        wb: RunningBroker, token: str) -> None:
    framed, framed_rows = invoke(wb, token, "fs_ops", ops=_specs("framed"))
    unary, unary_rows = invoke(wb, token, "fs_ops", ops=_specs("unary"), unary=True)
    assert _same_shape(framed, "framed") == _same_shape(unary, "unary")
    assert _same_shape(framed_rows, "framed") == _same_shape(unary_rows, "unary")
    assert [o.get("code") for o in framed] == [
        None, "PERMISSION_DENIED", "INVALID_ARGUMENT", None, None, "ALREADY_EXISTS", None,
        None, "PERMISSION_DENIED", "NOT_FOUND", None, None, None, "PERMISSION_DENIED", None,
        "PERMISSION_DENIED"]
    # The records name the unary method, whichever way the operation travelled.
    methods = {e.method for e in wb.audit() if e.operation in FILE_OPS and "ops-" in e.target}
    assert methods <= {f"/writ.v1.ToolBroker/{m}" for m in
                       ("Stat", "ListDir", "OpenFile", "MakeDir", "Delete", "Rename",
                        "WriteFile", "ReadFile")}


def _frames(wb: RunningBroker, token: str, *frames: bytes,
            **args: Any) -> tuple[Any, list[audit_pb2.AuditEvent]]:
    seq = wb.last_seq()
    out = wb.agent.invoke(WRITER, {"action": "ops_frames", "frames": [
        base64.b64encode(f).decode() for f in frames], **args}, token)
    assert out.ok, out.error_message
    return out.result["result"], [e for e in wb.audit_since(seq)
                                  if e.invocation_id == out.invocation_id
                                  and e.operation not in ("tool.invoke", "tool.exit")]


def _stat(path: str, rid: int = 1) -> bytes:
    return tool_pb2.OpRequest(id=rid, stat=tool_pb2.StatRequest(path=path)).SerializeToString()


def test_malformed_frame_is_refused_recorded_and_ends_the_connection(
        wb: RunningBroker, token: str) -> None:
    got, records = _frames(wb, token, _stat("reports/q3.csv"), b"\xff\xff\xff", _stat("x"))
    assert got == {"replies": [[1, "stat"]], "closed": True}
    assert [(e.operation, audit_pb2.Decision.Name(e.decision), e.status, e.method)
            for e in records] == [
        ("file.stat", "ALLOW", "OK", "/writ.v1.ToolBroker/Stat"),
        ("tool.ops", "DENY", "INVALID_ARGUMENT", "/writ.v1.ToolBroker/Ops")]
    assert records[1].reason == "malformed ops frame: not an OpRequest"


def test_oversized_frame_is_refused_and_recorded(wb: RunningBroker, token: str) -> None:
    got, records = _frames(wb, token, b"", length=1 << 20)
    assert got == {"replies": [], "closed": True}
    assert [(e.operation, e.status, e.reason) for e in records] == [
        ("tool.ops", "INVALID_ARGUMENT", "malformed ops frame: 1048576 bytes, more than 65536")]


def test_request_naming_no_operation_is_refused_and_recorded(
        wb: RunningBroker, token: str) -> None:
    got, records = _frames(wb, token, tool_pb2.OpRequest(id=7).SerializeToString(),
                           _stat("reports/q3.csv", 8))
    assert got == {"replies": [
        [7, "error", "INVALID_ARGUMENT", "OpRequest names no operation this broker serves"],
        [8, "stat"]], "closed": True}
    assert [(e.operation, e.status) for e in records] == [
        ("tool.ops", "INVALID_ARGUMENT"), ("file.stat", "OK")]


def test_bad_token_on_the_ops_socket_is_refused_and_recorded_per_request(
        wb: RunningBroker, token: str) -> None:
    got, records = _frames(wb, token, _stat("reports/q3.csv", 1), _stat("reports/q3.csv", 2),
                           socket_token="writ1.not-a-token")
    assert [r[:3] for r in got["replies"]] == [[1, "error", "UNAUTHENTICATED"],
                                               [2, "error", "UNAUTHENTICATED"]]
    assert [(e.operation, audit_pb2.Decision.Name(e.decision), e.status) for e in records] == [
        ("token.check", "DENY", "UNAUTHENTICATED")] * 2
