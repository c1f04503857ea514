"""Descriptors across one invocation's ``fd.sock``: bulk bytes without gRPC messages.

Bulk data through gRPC messages runs at a fraction of a raw socket's rate, so bytes that
were already checked travel as descriptors, over a plain Unix socket in the tool's own
socket directory (mode 0600, owned by the tool's uid, mounted into that container alone).

Out (reads): after OpenFile has decided, charged and recorded a whole-file READ, the open
read-only descriptor waits here under a random one-time ticket. The tool connects, sends
``<ticket>`` and a newline, and receives one byte, 0 with the descriptor attached
(SCM_RIGHTS), or 1 followed by a message.

In (writes): the tool sends ``send`` and a newline with the read end of a pipe attached;
the broker keeps it under a new ticket (answer: 0, the ticket and a newline) that a
WriteFile then names, and drains the pipe into its temporary file. Only the read end of a
pipe is accepted: it holds nothing of the broker's, and its end of data is the tool
closing the write end. Tickets of both kinds expire unused after TICKET_TTL_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import socket
import stat
import time
from pathlib import Path

FD_SOCKET_NAME = "fd.sock"
TICKET_TTL_S = 30.0
MAX_TICKETS = 32        # descriptors held for one invocation at once, both ways
MAX_CONNECTIONS = 8     # conversations in progress at once
READ_TIMEOUT_S = 5.0
_LINE = 65              # longest request line: a 32-character ticket and then some


class DescriptorDesk:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: dict[str, tuple[int, float]] = {}   # descriptors waiting for the tool
        self._in: dict[str, tuple[int, float]] = {}    # pipes the tool handed in
        self._listener: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._active = 0

    async def start(self, uid: int, gid: int) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.bind(str(self.path))
        # Only the tool's uid may connect (the directory is 0700 and the tool's too).
        os.chown(self.path, uid, gid)
        os.chmod(self.path, 0o600)
        sock.listen(MAX_CONNECTIONS)
        sock.setblocking(False)
        self._listener = sock
        self._task = asyncio.ensure_future(self._serve())

    def has_room(self) -> bool:
        self._expire()
        return len(self._out) + len(self._in) < MAX_TICKETS

    def issue(self, fd: int) -> str:
        """Hold ``fd`` (ownership passes here) until redeemed or expired; return the ticket."""
        ticket = secrets.token_hex(16)
        self._out[ticket] = (fd, time.monotonic() + TICKET_TTL_S)
        return ticket

    def take_pipe(self, ticket: str) -> int | None:
        """The pipe handed in under ``ticket`` (ownership passes to the caller), or None."""
        self._expire()
        held = self._in.pop(ticket, None)
        return None if held is None else held[0]

    def _expire(self) -> None:
        now = time.monotonic()
        for table in (self._out, self._in):
            for ticket, (fd, deadline) in list(table.items()):
                if deadline <= now:
                    del table[ticket]
                    os.close(fd)

    async def _serve(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        handlers: set[asyncio.Task[None]] = set()
        try:
            while True:
                conn, _ = await loop.sock_accept(self._listener)
                if self._active >= MAX_CONNECTIONS:
                    conn.close()
                    continue
                task = asyncio.ensure_future(self._converse(conn))
                handlers.add(task)
                task.add_done_callback(handlers.discard)
        finally:
            for task in handlers:
                task.cancel()

    async def _converse(self, conn: socket.socket) -> None:
        self._active += 1
        try:
            conn.setblocking(False)
            await asyncio.wait_for(self._answer(conn), READ_TIMEOUT_S)
        except (OSError, TimeoutError):
            return
        finally:
            self._active -= 1
            conn.close()

    async def _answer(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        line, fds, truncated = await _recv_fds(conn)
        if fds or truncated:
            # Only "send" may carry a descriptor, and only one; anything else is closed
            # unread (the kernel closed those beyond the first: MSG_CTRUNC).
            if line != b"send\n" or len(fds) != 1 or truncated:
                for fd in fds:
                    os.close(fd)
                await loop.sock_sendall(conn, b"\x01one pipe, sent with the line 'send'")
                return
            await self._take_in(conn, fds[0])
            return
        while line and not line.endswith(b"\n") and len(line) < _LINE:
            got = await loop.sock_recv(conn, _LINE - len(line))
            if not got:
                return
            line += got
        held = self._out.pop(line.rstrip(b"\n").decode("ascii", "replace"), None)
        self._expire()
        if held is None:
            await loop.sock_sendall(conn, b"\x01unknown, used or expired ticket")
            return
        try:
            # One byte with one descriptor into an empty socket buffer: never blocks.
            socket.send_fds(conn, [b"\x00"], [held[0]])
        finally:
            os.close(held[0])

    async def _take_in(self, conn: socket.socket, fd: int) -> None:
        loop = asyncio.get_running_loop()
        # The read end of a pipe and nothing else: a file or socket could be something
        # the broker should not read, and a read-write FIFO would never reach its end.
        if not stat.S_ISFIFO(os.fstat(fd).st_mode) or \
                fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY:
            os.close(fd)
            await loop.sock_sendall(conn, b"\x01not the read end of a pipe")
            return
        if not self.has_room():
            os.close(fd)
            await loop.sock_sendall(conn, b"\x01too many descriptors held; try later")
            return
        ticket = secrets.token_hex(16)
        self._in[ticket] = (fd, time.monotonic() + TICKET_TTL_S)
        await loop.sock_sendall(conn, b"\x00" + ticket.encode() + b"\n")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            self._listener.close()
            self.path.unlink(missing_ok=True)
        for table in (self._out, self._in):
            for fd, _ in table.values():
                os.close(fd)
            table.clear()


async def _recv_fds(conn: socket.socket) -> tuple[bytes, list[int], bool]:
    """One recvmsg on a non-blocking socket: a request line, at most one descriptor, and
    whether more were attached (the kernel closed those)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            msg, fds, flags, _addr = socket.recv_fds(conn, _LINE, 1)
            return msg, list(fds), bool(flags & socket.MSG_CTRUNC)
        except BlockingIOError:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(conn.fileno(), _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(conn.fileno())


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():  # a readable socket may be reported again before we run
        ready.set_result(None)
