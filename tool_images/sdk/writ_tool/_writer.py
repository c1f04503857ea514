"""The write side of the file SDK: a stream to the broker's WriteFile, committed on close.

The bytes go through a pipe whose read end the broker holds (it splices them into its
temporary file) or, where it will not take one, in WriteFile messages of up to 1 MiB.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import queue
import socket
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from ._broker import BrokerError, connection, translate
from ._desk import FD_SOCKET
from ._proto import tool_pb2

CHUNK = 1 << 20          # bytes per WriteFile message (the broker accepts 1 MiB of data)
PIPE_METADATA = "writ-pipe"  # the broker took our pipe and drains it
_QUEUE = 4               # chunks buffered ahead of the broker
_ABORT_WAIT_S = 5.0


def _hand_in_pipe() -> tuple[str, int] | None:
    """A pipe whose read end the broker now holds: (its ticket, our write end), or None
    when the broker will not take one (then the bytes go in messages)."""
    path = os.path.join(os.path.dirname(connection().socket_path), FD_SOCKET)
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # a bigger pipe means fewer wake-ups
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, CHUNK)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            socket.send_fds(s, [b"send\n"], [r])
            reply = b""
            while not reply.endswith(b"\n") and (chunk := s.recv(128)):
                reply += chunk
    except OSError:
        os.close(w)
        return None
    finally:
        os.close(r)
    if reply[:1] != b"\x00" or not reply.endswith(b"\n"):
        os.close(w)
        return None
    return reply[1:-1].decode(), w


class Writer(io.BufferedIOBase):
    """Streams to the broker as it is written (through a pipe, else in messages);
    ``close`` commits, ``abort`` discards."""

    def __init__(self, path: str, workspace: str, mode: Any, via_pipe: bool = True) -> None:
        super().__init__()
        self.name = path
        self.bytes_written = 0
        self.created = False
        self._header = tool_pb2.WriteFileRequest(workspace=workspace, path=path, mode=mode)
        self._pipe = -1
        handed = _hand_in_pipe() if via_pipe else None
        if handed is not None:
            self._header.source_ticket, self._pipe = handed
        self._queue: queue.Queue[tuple[bytes, bool] | None] = queue.Queue(_QUEUE)
        self._stop = threading.Event()
        self._buf = bytearray()
        self._future = connection().stream_unary("WriteFile", self._requests())
        # The broker sends PIPE_METADATA once the write is allowed and the pipe is its own;
        # a refusal ends the call instead (its headers carry no such entry). Only then may
        # we block on the pipe.
        if self._pipe >= 0 and (PIPE_METADATA, "draining") not in tuple(
                self._future.initial_metadata() or ()):
            self._close_pipe()
            super().close()
            raise self._failed()  # waits for the call's end, then its status

    def _requests(self) -> Iterator[tool_pb2.WriteFileRequest]:
        # The header goes at once: the broker decides (and records) before any data.
        yield self._header
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return  # abort: the stream ends without `finish`, so nothing is written
            data, finish = item
            yield tool_pb2.WriteFileRequest(data=data, finish=finish)
            if finish:
                return

    def _failed(self) -> BrokerError:
        self._stop.set()  # the request stream ends (without `finish`), so the call does too
        try:
            self._future.result()
        except grpc.RpcError as err:
            return translate(err)
        return BrokerError("ABORTED", "the broker ended the write early")

    def _send(self, data: bytes, finish: bool) -> None:
        while True:
            if self._future.done():
                raise self._failed()  # refused: quota, denial, a bad path
            try:
                self._queue.put((data, finish), timeout=0.05)
                return
            except queue.Full:
                continue

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed file")
        view = memoryview(b).cast("B")
        n = len(view)
        if self._pipe >= 0:
            self._to_pipe(view)
            return n
        if self._buf:
            take = min(n, CHUNK - len(self._buf))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == CHUNK:
                self._send(bytes(self._buf), False)
                self._buf.clear()
        while len(view) >= CHUNK:
            self._send(bytes(view[:CHUNK]), False)
            view = view[CHUNK:]
        self._buf += view
        return n

    def close(self) -> None:
        """Send what is buffered and commit; raises the broker's refusal, if any."""
        if self.closed:
            return
        try:
            self._close_pipe()  # the end of the data; `finish` below commits it
            self._send(bytes(self._buf), True)
            try:
                resp = self._future.result()
            except grpc.RpcError as err:
                raise translate(err) from None
            self.bytes_written, self.created = resp.bytes_written, resp.created
        finally:
            self._stop.set()
            super().close()

    def abort(self) -> None:
        """Discard: end the stream without `finish`, so the broker writes nothing (and
        records why); cancel the call if the broker does not answer promptly."""
        if self.closed:
            return
        try:
            self._close_pipe()
            self._queue.put(None, timeout=_ABORT_WAIT_S)
            self._future.result(timeout=_ABORT_WAIT_S)
        except (queue.Full, grpc.RpcError, grpc.FutureTimeoutError):
            pass
        finally:
            self._stop.set()
            self._future.cancel()
            super().close()

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def _to_pipe(self, view: memoryview) -> None:
        """Write into the pipe (blocking: the broker drains it)."""
        try:
            while view:
                view = view[os.write(self._pipe, view):]
        except BrokenPipeError:
            raise self._failed() from None  # the broker refused mid-way and closed its end

    def _close_pipe(self) -> None:
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1

    def __del__(self) -> None:
        if not self.closed:  # never commit implicitly: only close() does
            self._stop.set()
            self._close_pipe()
            self._future.cancel()


class TextWriter(io.TextIOWrapper):
    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self.buffer.abort()  # type: ignore[attr-defined]
        self.close()
