"""The connection to this invocation's broker socket, and its errors."""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from typing import Any

import grpc

from ._proto import tool_pb2, tool_pb2_grpc

SOCKET_ENV = "WRIT_SOCKET"
TOKEN_ENV = "WRIT_TOKEN"
SOCKET_POLL_S = 0.001


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


def _error(name: str, message: str) -> BrokerError:
    """The error a unary call ending with status ``name`` would raise."""
    code = grpc.StatusCode.__members__.get(name)
    return _BY_CODE.get(code, BrokerError)(name, message) if code else BrokerError(name, message)


OPS_SOCKET = "ops.sock"  # beside the broker socket: small operations as frames
OPS_MAX_FRAME = 64 << 10  # the broker's limit on one request frame; larger go as gRPC
_LENGTH = struct.Struct(">I")


class _OpStream:
    """One connection to the invocation's ops socket: length-prefixed frames, the token
    first, then one OpRequest and its OpReply in turn (a lock keeps threads of one tool
    from interleaving). The same checks, records and errors as the unary methods."""

    def __init__(self, socket_path: str, token: str) -> None:
        self.token = token  # what the broker checks this connection's requests against
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.connect(os.path.join(os.path.dirname(socket_path), OPS_SOCKET))
            self._send(token.encode())
        except OSError:
            self._sock.close()
            raise
        self._lock = threading.Lock()
        self._last = 0
        self.broken = False  # the connection itself failed: open another for the next call

    def _send(self, data: bytes) -> None:
        self._sock.sendall(_LENGTH.pack(len(data)) + data)

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("the broker closed the ops socket")
            buf += chunk
        return bytes(buf)

    def call(self, field: str, request: Any) -> Any:
        """The reply's ``field``. Raises the error the unary method would have raised, or
        BrokerError with ``broken`` set when the connection itself failed."""
        with self._lock:
            self._last += 1
            try:
                self._send(tool_pb2.OpRequest(id=self._last,
                                              **{field: request}).SerializeToString())
                (length,) = _LENGTH.unpack(self._recv(_LENGTH.size))
                reply = tool_pb2.OpReply.FromString(self._recv(length))
            except OSError as exc:
                self.broken = True
                raise BrokerError("UNAVAILABLE", f"ops socket: {exc}") from None
        if reply.id != self._last:
            self.broken = True
            raise BrokerError("INTERNAL", f"ops reply {reply.id} to request {self._last}")
        if reply.WhichOneof("result") == "error":
            raise _error(reply.error.code, reply.error.message)
        if field == "start" and reply.start.token:
            self.token = reply.start.token  # the broker now checks later requests with it
        return getattr(reply, field)

    def close(self) -> None:
        self._sock.close()


class _Connection:
    def __init__(self, socket_path: str, token: str) -> None:
        self.socket_path = socket_path
        self.channel = grpc.insecure_channel(f"unix:{socket_path}")
        self.stub = tool_pb2_grpc.ToolBrokerStub(self.channel)
        self.metadata = (("writ-token", token),)
        self._ops: _OpStream | None = None
        self._ops_served = True  # False where the broker has no ops socket

    def use_token(self, token: str) -> None:
        self.metadata = (("writ-token", token),)
        if self._ops is not None and self._ops.token != token:
            self._close_ops()  # the stream carries the token it was opened with

    def _close_ops(self) -> None:
        if self._ops is not None:
            self._ops.close()
            self._ops = None

    def ops(self) -> _OpStream | None:
        """The ops-socket connection (made on first use), or None where there is none."""
        if self._ops is None and self._ops_served:
            try:
                self._ops = _OpStream(self.socket_path, self.metadata[0][1])
            except OSError:
                self._ops_served = False
        return self._ops

    def op(self, method: str, field: str, request: Any) -> Any:
        """A small operation on the ops socket (connected on first use): the same checks,
        record and errors as the unary ``method``, without gRPC's framing. Falls back to
        the unary call where the broker has no ops socket."""
        ops = self.ops()
        if ops is None or request.ByteSize() > OPS_MAX_FRAME - 64:  # 64: the OpRequest's own
            return self.unary(method, request)
        try:
            return ops.call(field, request)
        except BrokerError:
            if ops.broken:
                self._close_ops()  # the next call connects again; this one is not resent
            raise

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
        socket_path = os.environ.get(SOCKET_ENV)
        if not socket_path:
            raise BrokerError("FAILED_PRECONDITION",
                              f"{SOCKET_ENV} is not set: not running under a Writ broker")
        # The channel first: gRPC's one-time start-up (~5 ms) is then paid while a
        # warm-pool container waits, not after its call arrived. It connects on first use.
        conn = _Connection(socket_path, os.environ.get(TOKEN_ENV, ""))
        # A warm-pool container starts before it has any authority: its socket appears
        # only when an invocation claims it. Until then there is nothing to talk to.
        _wait_for(socket_path)
        _conn = conn
    return _conn


_IN_CREATE, _IN_MOVED_TO = 0x100, 0x80


def _watch(directory: str) -> int | None:
    """An inotify descriptor woken by names appearing in ``directory``, or None."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    except (ImportError, OSError, AttributeError):
        return None
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(directory), _IN_CREATE | _IN_MOVED_TO) < 0:
        os.close(fd)
        return None
    return fd


def _wait_for(path: str) -> None:
    """Block until ``path`` exists: asleep on inotify (no CPU while a warm container waits,
    woken the moment the broker renames the socket in), else polling every millisecond."""
    if os.path.exists(path):
        return
    # Left open, one descriptor for the process's life: closing an inotify instance waits
    # for an RCU grace period (10-30 ms measured), which would land on the call's path.
    fd = _watch(os.path.dirname(path))
    while not os.path.exists(path):  # checked after the watch exists: no lost wakeup
        if fd is None:
            time.sleep(SOCKET_POLL_S)
            continue
        select.select([fd], [], [], 1.0)
        try:
            os.read(fd, 4096)
        except BlockingIOError:
            pass


def connect(socket_path: str, token: str) -> None:
    """Point the SDK at a broker explicitly (tests, FakeBroker)."""
    global _conn
    _conn = _Connection(socket_path, token)
