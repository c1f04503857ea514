"""Handing a checked, recorded, read-only descriptor to one invocation's tool.

Bulk reads through gRPC messages run at a fraction of a raw socket's rate. After OpenFile
has decided, charged and recorded a whole-file READ, the open descriptor waits here under
a random one-time ticket; the tool redeems it on ``fd.sock``, a plain Unix socket in its
own socket directory (mode 0600, owned by the tool's uid, mounted into that container
alone), and receives the descriptor with SCM_RIGHTS. It then reads at native speed.

Protocol: the tool connects and sends ``<ticket>\\n``; the broker answers one byte, 0 with
the descriptor attached, or 1 followed by a message, and closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from pathlib import Path

FD_SOCKET_NAME = "fd.sock"
TICKET_TTL_S = 30.0
MAX_TICKETS = 32        # descriptors held for one invocation at once
MAX_CONNECTIONS = 8     # redemptions in progress at once
READ_TIMEOUT_S = 5.0


class DescriptorDesk:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._tickets: dict[str, tuple[int, float]] = {}
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
        return len(self._tickets) < MAX_TICKETS

    def issue(self, fd: int) -> str:
        """Hold ``fd`` (ownership passes here) until redeemed or expired; return the ticket."""
        ticket = secrets.token_hex(16)
        self._tickets[ticket] = (fd, time.monotonic() + TICKET_TTL_S)
        return ticket

    def _take(self, ticket: str) -> int | None:
        self._expire()
        held = self._tickets.pop(ticket, None)
        return None if held is None else held[0]

    def _expire(self) -> None:
        now = time.monotonic()
        for ticket, (fd, deadline) in list(self._tickets.items()):
            if deadline <= now:
                del self._tickets[ticket]
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
                task = asyncio.ensure_future(self._redeem(conn))
                handlers.add(task)
                task.add_done_callback(handlers.discard)
        finally:
            for task in handlers:
                task.cancel()

    async def _redeem(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._active += 1
        try:
            conn.setblocking(False)
            line = b""
            while not line.endswith(b"\n") and len(line) <= 64:
                got = await asyncio.wait_for(loop.sock_recv(conn, 65 - len(line)),
                                             READ_TIMEOUT_S)
                if not got:
                    return
                line += got
            fd = self._take(line.rstrip(b"\n").decode("ascii", "replace"))
            if fd is None:
                await loop.sock_sendall(conn, b"\x01unknown, used or expired ticket")
                return
            try:
                # One byte with one descriptor into an empty socket buffer: never blocks.
                socket.send_fds(conn, [b"\x00"], [fd])
            finally:
                os.close(fd)
        except (OSError, TimeoutError):
            return
        finally:
            self._active -= 1
            conn.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            self._listener.close()
        for fd, _ in self._tickets.values():
            os.close(fd)
        self._tickets.clear()
