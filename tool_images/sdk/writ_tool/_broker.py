"""The connection to this invocation's broker socket, and its errors."""

from __future__ import annotations

import os
from typing import Any

import grpc

from ._proto import tool_pb2_grpc

SOCKET_ENV = "WRIT_SOCKET"
TOKEN_ENV = "WRIT_TOKEN"


class BrokerError(Exception):
    """The broker refused or failed an operation. ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class BrokerDenied(BrokerError):
    """Base of refusals that are the token's or the request's fault."""


class PermissionDenied(BrokerDenied):
    pass


class NotFound(BrokerDenied):
    pass


class InvalidArgument(BrokerDenied):
    pass


class AlreadyExists(BrokerDenied):
    pass


_BY_CODE = {
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
}


def translate(err: grpc.RpcError) -> BrokerError:
    code = err.code()  # type: ignore[attr-defined]
    cls = _BY_CODE.get(code, BrokerError)
    return cls(code.name, err.details() or "")  # type: ignore[attr-defined]


class _Connection:
    def __init__(self, socket_path: str, token: str) -> None:
        self.socket_path = socket_path
        self.channel = grpc.insecure_channel(f"unix:{socket_path}")
        self.stub = tool_pb2_grpc.ToolBrokerStub(self.channel)
        self.metadata = (("writ-token", token),)

    def unary(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, metadata=self.metadata)
        except grpc.RpcError as err:
            raise translate(err) from None

    def stream(self, method: str, request: Any) -> Any:
        try:
            yield from getattr(self.stub, method)(request, metadata=self.metadata)
        except grpc.RpcError as err:
            raise translate(err) from None

    def stream_unary(self, method: str, requests: Any) -> Any:
        """Start a client-streaming call consuming ``requests`` on gRPC's own thread;
        returns its future (``result()`` raises grpc.RpcError; see ``translate``)."""
        return getattr(self.stub, method).future(requests, metadata=self.metadata)


_conn: _Connection | None = None


def connection() -> _Connection:
    global _conn
    if _conn is None:
        try:
            _conn = _Connection(os.environ[SOCKET_ENV], os.environ[TOKEN_ENV])
        except KeyError as missing:
            raise BrokerError("FAILED_PRECONDITION",
                              f"{missing} is not set: not running under a Writ broker") from None
    return _conn


def connect(socket_path: str, token: str) -> None:
    """Point the SDK at a broker explicitly (tests, FakeBroker)."""
    global _conn
    _conn = _Connection(socket_path, token)
