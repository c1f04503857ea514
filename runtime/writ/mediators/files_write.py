"""Mediated file writes: replace, create, or either, streamed.

Same shape as files.py: build the operation and decide it (denials recorded), check the
target on the host, then take the bytes, record the allowed outcome, and only then put the
file in place. The bytes go into a temporary file under a reserved random name in the
target's held parent directory (why not O_TMPFILE: see _fsops.py), bounded by the broker's maximum and by the grant's write budget
(reserved as bytes arrive, so a tool that streams forever is refused at the cap). The file
is fsynced and put in place in one atomic step (rename over the target, or
link-without-replace for a create) only when the tool's last message says so; any error,
overrun or cancellation before that removes it: no partial file is left behind, and one a
crashed broker left is removed when it starts again (the journal in _fsops.py).

The bytes arrive in the WriteFile messages or, for bulk data, through the read end of a
pipe the tool handed to its descriptor socket (_fdpass.py), drained with splice(2).
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import os
import select
import stat
import termios
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .._proto import audit_pb2, tool_pb2
from .._proto import capabilities_pb2 as caps
from ..budgets import Reservation
from ..core.policy import Decision, FileAccess, decide
from ..errors import (
    Aborted,
    BrokerError,
    FileExists,
    FileMissing,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
)
from ._context import CallContext
from ._fdpass import DescriptorDesk
from ._fsops import (
    Slot,
    TempFile,
    check_file,
    commit,
    open_temp,
    os_error,
    sync_dir,
)
from ._workspaces import Held, Workspaces, deny, recorded, resolve

__all__ = ["write_file"]

_RESERVE_MIN, _RESERVE_MAX = 1 << 20, 64 << 20  # budget reserved ahead, in growing blocks
_POLL_MS = 200  # how often a pipe drain looks up to see whether it was called off
_SPLICE_MAX = 1 << 20
# What each write mode may do: replace an existing file (WRITE), create one (CREATE).
_MODE_OPS = {
    tool_pb2.WRITE_MODE_REPLACE: (caps.WRITE,),
    tool_pb2.WRITE_MODE_CREATE: (caps.CREATE,),
    tool_pb2.WRITE_MODE_CREATE_OR_REPLACE: (caps.WRITE, caps.CREATE),
}


@dataclass
class _Write:
    """One write in progress: its limits, what it holds, and what to undo."""

    ctx: CallContext
    cap: int
    path: str = ""
    decision: Decision | None = None
    slot: Slot | None = None
    tmp: TempFile | None = None
    pipe: int = -1
    held: Held = field(default_factory=Held)  # the parent directory, and thread work
    reserved_items: list[Reservation] = field(default_factory=list)
    reserved: int = 0   # write bytes reserved so far
    size: int = 0       # bytes taken into the temporary file
    stop: threading.Event = field(default_factory=threading.Event)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.held.run(fn, *args)

    def take(self, n: int) -> None:
        """Account for ``n`` more bytes before they are written: the broker's cap, then
        the budget (reserved ahead in blocks; the last try asks for exactly what is short).

        Raises:
            ResourceExhausted: past the broker's maximum. PermissionDenied: past a budget.
        """
        total = self.size + n
        if total > self.cap:
            raise ResourceExhausted(f"{self.path}: write exceeds the broker's maximum of "
                                    f"{self.cap} bytes; nothing was written")
        if total <= self.reserved:
            return
        assert self.decision is not None
        short = total - self.reserved
        for amount in (max(short, min(max(self.reserved, _RESERVE_MIN), _RESERVE_MAX)), short):
            try:
                self.reserved_items += self.ctx.budgets.charge(self.decision.charges, write_bytes=amount)
                self.reserved += amount
                return
            except PermissionDenied as exc:
                refusal = exc
        raise PermissionDenied(f"{self.path}: write refused after {total} bytes, nothing was "
                               f"written: {refusal.details}")

    async def close(self) -> None:
        self.stop.set()  # a pipe drain still running returns within _POLL_MS
        late = await self.held.settle()
        if isinstance(late, TempFile):
            late.discard()  # opened after we stopped waiting for it
        if self.pipe >= 0:
            os.close(self.pipe)
        if self.tmp is not None:
            self.tmp.discard()
        await self.held.close()


# -- host I/O (on threads) -------------------------------------------------------------------
def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        raise os_error(exc, "") from None


def _drain(w: _Write) -> None:
    """Move the pipe's bytes into the temporary file with splice(2) until the tool closes
    its end. Each splice moves at most what is already accounted for (cap, budget); at
    that boundary, the bytes waiting in the pipe are accounted for (or refused) first."""
    assert w.tmp is not None
    os.set_blocking(w.pipe, False)
    poller = select.poll()
    poller.register(w.pipe, select.POLLIN)
    pending = array.array("i", [0])
    while not w.stop.is_set():
        allowed = min(w.reserved, w.cap) - w.size
        if allowed <= 0:
            events = poller.poll(_POLL_MS)
            fcntl.ioctl(w.pipe, termios.FIONREAD, pending)
            if pending[0] == 0:
                if events and events[0][1] & (select.POLLHUP | select.POLLERR):
                    return  # empty, and no writer is left: the end of the data
                continue
            w.take(pending[0])  # raises past the cap or the budget
            continue
        try:
            moved = os.splice(w.pipe, w.tmp.fd, min(allowed, _SPLICE_MAX))
        except BlockingIOError:
            poller.poll(_POLL_MS)  # nothing waiting: sleep until there is (or a stop)
            continue
        except OSError as exc:
            raise os_error(exc, w.path) from None
        if moved == 0:
            return  # the end of the data: every writer closed the pipe
        w.size += moved
    raise Aborted(f"{w.path}: the write was called off after {w.size} bytes; nothing was "
                  "written")


def _commit(tmp: TempFile, replace: bool) -> None:
    commit(tmp, replace)
    sync_dir(tmp.slot.dir_fd)


# -- the operation ---------------------------------------------------------------------------
async def _decide_write(ctx: CallContext, ev: audit_pb2.AuditEvent, workspaces: Workspaces,
                        first: tool_pb2.WriteFileRequest, w: _Write
                        ) -> tuple[str, os.stat_result | None]:
    """Decide the write and check its target; returns the workspace and the target's stat
    (None: it is created). CREATE_OR_REPLACE decides WRITE and CREATE without touching the
    host; the target's existence then picks the one that applies."""
    wanted = _MODE_OPS.get(first.mode)
    if wanted is None:
        raise await recorded(ctx, ev, InvalidArgument(
            f"write mode {first.mode} is not REPLACE, CREATE or CREATE_OR_REPLACE"))
    ev.operation = "file.create" if wanted == (caps.CREATE,) else "file.write"
    ws, w.path = await resolve(ctx, ev, workspaces, first.workspace, first.path)
    decisions = {op: decide(ctx.authority, FileAccess(ws, w.path, op), ctx.now)
                 for op in wanted}
    if not any(d.allowed for d in decisions.values()):
        await deny(ctx, ev, decisions[wanted[0]])
    w.slot = await w.held.slot(workspaces.get(ws).fd, w.path)
    st = await w.run(w.slot.lstat)
    op = caps.CREATE if st is None else caps.WRITE
    if len(wanted) > 1:
        ev.operation = "file.create" if st is None else "file.write"
    if op not in decisions:
        if st is None:
            raise FileMissing(f"{w.path}: no such file or directory")
        raise FileExists(f"{w.path}: already exists")
    if not decisions[op].allowed:
        await deny(ctx, ev, decisions[op])
    if st is not None:
        check_file(w.path, st)
    w.decision = decisions[op]
    return ws, st


async def _take_messages(w: _Write, first: tool_pb2.WriteFileRequest,
                         requests: AsyncIterator[tool_pb2.WriteFileRequest]) -> None:
    assert w.tmp is not None
    msg = first
    while True:
        if msg.data:
            w.take(len(msg.data))
            await w.run(_write_all, w.tmp.fd, msg.data)
            w.size += len(msg.data)
        if msg.finish:
            return
        msg = await _next(w, requests)


async def _take_pipe(w: _Write, first: tool_pb2.WriteFileRequest,
                     requests: AsyncIterator[tool_pb2.WriteFileRequest],
                     draining: Callable[[], Awaitable[None]]) -> None:
    if w.pipe < 0:
        raise InvalidArgument("unknown, used or expired source ticket")
    if first.data or first.finish:
        raise InvalidArgument("a write from a pipe carries its bytes in the pipe only")
    # Tell the tool the write was allowed and its pipe is ours: it may now block on the
    # pipe (fast), where before it could not know whether anyone would ever read it.
    await draining()
    await w.run(_drain, w)
    last = await _next(w, requests)
    if last.data or not last.finish:
        raise InvalidArgument("after a pipe, the one message left is `finish`")


async def _next(w: _Write, requests: AsyncIterator[tool_pb2.WriteFileRequest]
                ) -> tool_pb2.WriteFileRequest:
    msg = await anext(requests, None)
    if msg is None:
        # gRPC ends the stream the same way whether the tool finished, died, was cancelled
        # or sent an oversized message: only `finish` means "commit".
        raise Aborted(f"{w.path}: the write stream ended after {w.size} bytes without its "
                      "finishing message; nothing was written")
    if msg.workspace or msg.path or msg.mode or msg.source_ticket:
        raise InvalidArgument("only the first message of a write names the file")
    return msg


async def _nothing() -> None:
    return None


async def write_file(ctx: CallContext, workspaces: Workspaces, desk: DescriptorDesk,
                     requests: AsyncIterator[tool_pb2.WriteFileRequest],
                     draining: Callable[[], Awaitable[None]] = _nothing
                     ) -> tool_pb2.WriteFileResponse:
    """Take one write stream (see the module docstring). ``draining`` is awaited once a
    piped write is decided and its pipe taken (the tool service sends gRPC metadata)."""
    ev = ctx.event("file.write", ":")
    w = _Write(ctx, workspaces.max_write_bytes)
    try:
        first = await anext(requests, None)
        if first is None:
            raise Aborted("the write stream ended before its first message; nothing was "
                          "written")
        ev.target = f"{first.workspace}:{first.path}"
        if first.source_ticket:
            # Held (and closed on any refusal) from the start: a tool already writing into
            # the pipe then sees EPIPE at once instead of a full pipe.
            pipe = desk.take_pipe(first.source_ticket)
            w.pipe = -1 if pipe is None else pipe
        ws, old = await _decide_write(ctx, ev, workspaces, first, w)
        assert w.slot is not None and w.decision is not None
        # A replacement keeps the old file's permission bits.
        w.tmp = await w.run(open_temp, w.slot, ws, workspaces.journal,
                            0o644 if old is None else stat.S_IMODE(old.st_mode))
        if old is None:
            w.reserved_items += ctx.budgets.charge(w.decision.charges, files=1)
        if first.source_ticket:
            await _take_pipe(w, first, requests, draining)
        else:
            await _take_messages(w, first, requests)
        await w.run(os.fsync, w.tmp.fd)
        async with workspaces.get(ws).lock:
            # Again, under the lock: the target may have changed while the bytes streamed.
            st = await w.run(w.slot.lstat)
            if old is not None:
                check_file(w.path, st)
            elif st is not None:
                raise FileExists(f"{w.path}: already exists")
            await ctx.record_decision(ev, w.decision, w.size)  # record, then put it in place
            try:
                await w.run(_commit, w.tmp, old is not None)
            except BrokerError as err:
                await ctx.record_failure(ev, err)
                raise
        w.reserved_items = []  # spent: the bytes are stored
        return tool_pb2.WriteFileResponse(bytes_written=w.size, created=old is None)
    except BrokerError as err:
        ctx.budgets.release(w.reserved_items)
        raise await recorded(ctx, ev, err) from None
    except asyncio.CancelledError:
        ctx.budgets.release(w.reserved_items)
        if not ev.decision:
            await ctx.record_error(ev, Aborted(f"{ev.target}: the write was cancelled after "
                                               f"{w.size} bytes; nothing was written"))
        raise
    finally:
        await w.close()
