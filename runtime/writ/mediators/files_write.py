"""Mediated file changes under operator-registered workspaces: write, create, mkdir,
delete, rename.

Same shape as files.py: build the operation and decide it (``guard``; denials recorded),
check the target on the host, record the allowed outcome, then act. Every change acts on
one name inside a parent directory held by an openat2-beneath descriptor, so a symlink
anywhere on the way is refused and one swapped in at the final name is replaced or moved
as a name, never followed. The check-record-act step of every change in a workspace runs
under that workspace's lock: a tool cannot race its own checks with concurrent calls.

Writes stream into an unnamed temporary file (O_TMPFILE) in the target's directory,
bounded by the broker's maximum and the grant's write budget (reserved as bytes arrive);
the file is fsynced and put in place in one atomic step (rename over the target, or
link-without-replace for a create) only when the tool's last message says so. Any error,
overrun or cancellation before that discards the temporary file: no partial file, ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from .._proto import audit_pb2, tool_pb2
from .._proto import capabilities_pb2 as caps
from ..budgets import Reservation
from ..core.paths import clean_relpath
from ..core.policy import Decision, FileAccess, decide
from ..errors import (
    BrokerError,
    FailedPrecondition,
    FileMissing,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
)
from ._context import CallContext
from ._fsops import (
    RENAME_NOREPLACE,
    Aborted,
    FileExists,
    Slot,
    TempFile,
    check_file,
    commit,
    open_slot,
    open_temp,
    openat2_beneath,
    os_error,
    renameat2,
    sync_dir,
)
from ._workspaces import Workspaces, check_denylist, deny, guard, recorded, resolve

__all__ = ["delete", "make_dir", "rename", "write_file"]

_RESERVE_MIN, _RESERVE_MAX = 1 << 20, 64 << 20  # budget reserved ahead, in growing blocks
# What each write mode may do: replace an existing file (WRITE), create one (CREATE).
_MODE_OPS = {
    tool_pb2.WRITE_MODE_REPLACE: (caps.WRITE,),
    tool_pb2.WRITE_MODE_CREATE: (caps.CREATE,),
    tool_pb2.WRITE_MODE_CREATE_OR_REPLACE: (caps.WRITE, caps.CREATE),
}


# -- write / create --------------------------------------------------------------------------
@dataclass
class _Write:
    """One write in progress: what to clean up if it does not complete."""

    slot: Slot | None = None
    tmp: TempFile | None = None
    held: list[Reservation] = field(default_factory=list)
    reserved: int = 0   # write bytes reserved so far
    size: int = 0       # bytes received and written to the temporary file

    def close(self) -> None:
        if self.tmp is not None:
            self.tmp.discard()
        if self.slot is not None:
            self.slot.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        raise os_error(exc, "") from None


def _commit(tmp: TempFile, replace: bool) -> None:
    commit(tmp, replace)
    sync_dir(tmp.slot.dir_fd)


def _reserve(ctx: CallContext, w: _Write, decision: Decision, path: str) -> None:
    """Reserve write budget to cover ``w.size``, ahead in blocks (few transactions for a
    large write); the last attempt asks for exactly the shortfall, so a refusal is exact.

    Raises:
        PermissionDenied: the budget cannot cover the bytes received.
    """
    short = w.size - w.reserved
    block = max(short, min(max(w.reserved, _RESERVE_MIN), _RESERVE_MAX))
    try:
        w.held += ctx.budgets.charge(decision.charges, write_bytes=block)
        w.reserved += block
        return
    except PermissionDenied:
        pass
    try:
        w.held += ctx.budgets.charge(decision.charges, write_bytes=short)
    except PermissionDenied as exc:
        raise PermissionDenied(f"{path}: write refused after {w.size} bytes, nothing was "
                               f"written: {exc.details}") from None
    w.reserved += short


async def _decide_write(ctx: CallContext, ev: audit_pb2.AuditEvent, workspaces: Workspaces,
                        first: tool_pb2.WriteFileRequest, w: _Write
                        ) -> tuple[str, str, Decision, os.stat_result | None]:
    """Decide the write and check its target; returns (workspace, path, decision, the
    target's stat or None when it is created). CREATE_OR_REPLACE decides WRITE and CREATE
    without touching the host; the target's existence then picks the one that applies."""
    wanted = _MODE_OPS.get(first.mode)
    if wanted is None:
        raise await recorded(ctx, ev, InvalidArgument(
            f"write mode {first.mode} is not REPLACE, CREATE or CREATE_OR_REPLACE"))
    ev.operation = "file.create" if wanted == (caps.CREATE,) else "file.write"
    ws, path = await resolve(ctx, ev, workspaces, first.workspace, first.path)
    decisions = {op: decide(ctx.authority, FileAccess(ws, path, op), ctx.now) for op in wanted}
    if not any(d.allowed for d in decisions.values()):
        await deny(ctx, ev, decisions[wanted[0]])
    w.slot = await asyncio.to_thread(open_slot, workspaces.get(ws).fd, path)
    st = await asyncio.to_thread(w.slot.lstat)
    op = caps.CREATE if st is None else caps.WRITE
    if len(wanted) > 1:
        ev.operation = "file.create" if st is None else "file.write"
    if op not in decisions:
        if st is None:
            raise FileMissing(f"{path}: no such file or directory")
        raise FileExists(f"{path}: already exists")
    if not decisions[op].allowed:
        await deny(ctx, ev, decisions[op])
    if st is not None:
        check_file(path, st)
    return ws, path, decisions[op], st


async def write_file(ctx: CallContext, workspaces: Workspaces,
                     requests: AsyncIterator[tool_pb2.WriteFileRequest]
                     ) -> tool_pb2.WriteFileResponse:
    ev = ctx.event("file.write", ":")
    w = _Write()
    try:
        first = await anext(requests, None)
        if first is None:
            raise Aborted("the write stream ended before its first message; nothing was "
                          "written")
        ev.target = f"{first.workspace}:{first.path}"
        ws, path, decision, old = await _decide_write(ctx, ev, workspaces, first, w)
        assert w.slot is not None
        # A replacement keeps the old file's permission bits.
        mode = 0o644 if old is None else stat.S_IMODE(old.st_mode)
        w.tmp = await asyncio.to_thread(open_temp, w.slot, mode)
        if old is None:
            w.held += ctx.budgets.charge(decision.charges, files=1)
        cap = workspaces.max_write_bytes
        msg = first
        while True:
            if msg.data:
                w.size += len(msg.data)
                if w.size > cap:
                    raise ResourceExhausted(f"{path}: write exceeds the broker's maximum of "
                                            f"{cap} bytes; nothing was written")
                if w.size > w.reserved:
                    _reserve(ctx, w, decision, path)
                await asyncio.to_thread(_write_all, w.tmp.fd, msg.data)
            if msg.finish:
                break
            nxt = await anext(requests, None)
            if nxt is None:
                # gRPC ends the stream the same way whether the tool finished, died, was
                # cancelled or sent an oversized message: only `finish` means "commit".
                raise Aborted(f"{path}: the write stream ended after {w.size} bytes without "
                              "its finishing message; nothing was written")
            if nxt.workspace or nxt.path or nxt.mode:
                raise InvalidArgument("only the first message of a write names the file")
            msg = nxt
        await asyncio.to_thread(os.fsync, w.tmp.fd)
        async with workspaces.get(ws).lock:
            # Again, under the lock: the target may have changed while the bytes streamed.
            st = await asyncio.to_thread(w.slot.lstat)
            if old is not None:
                check_file(path, st)
            elif st is not None:
                raise FileExists(f"{path}: already exists")
            await ctx.record_decision(ev, decision, w.size)  # record, then put it in place
            try:
                await asyncio.to_thread(_commit, w.tmp, old is not None)
            except BrokerError as err:
                await _record_failure(ctx, ev, err)
                raise
        w.held = []  # spent: the bytes are stored
        return tool_pb2.WriteFileResponse(bytes_written=w.size, created=old is None)
    except BrokerError as err:
        ctx.budgets.release(w.held)
        raise await recorded(ctx, ev, err) from None
    except asyncio.CancelledError:
        ctx.budgets.release(w.held)
        if not ev.decision:
            with contextlib.suppress(BaseException):
                await asyncio.shield(ctx.record_error(ev, Aborted(
                    f"{ev.target}: the write was cancelled after {w.size} bytes; nothing "
                    "was written")))
        raise
    finally:
        w.close()


async def _record_failure(ctx: CallContext, ev: audit_pb2.AuditEvent, err: BrokerError) -> None:
    """The act failed after its ALLOW record: a second record says so."""
    failed = audit_pb2.AuditEvent()
    failed.CopyFrom(ev)
    failed.ClearField("hash")
    failed.bytes = 0
    await ctx.record_error(failed, err)


# -- mkdir / delete --------------------------------------------------------------------------
def _mkdir(slot: Slot) -> None:
    try:
        os.mkdir(slot.name, 0o755, dir_fd=slot.dir_fd)
    except OSError as exc:
        raise os_error(exc, slot.path) from None
    sync_dir(slot.dir_fd)


def _remove(slot: Slot, is_dir: bool) -> None:
    try:
        if is_dir:
            os.rmdir(slot.name, dir_fd=slot.dir_fd)
        else:
            os.unlink(slot.name, dir_fd=slot.dir_fd)
    except OSError as exc:
        raise os_error(exc, slot.path) from None
    sync_dir(slot.dir_fd)


async def _act(ctx: CallContext, ev: audit_pb2.AuditEvent, decision: Decision,
               fn: Callable[..., None], *args: object) -> None:
    """Record the allowed decision, then act; a failing act gets a second record."""
    await ctx.record_decision(ev, decision)
    try:
        await asyncio.to_thread(fn, *args)
    except BrokerError as err:
        await _record_failure(ctx, ev, err)
        raise


async def make_dir(ctx: CallContext, workspaces: Workspaces,
                   req: tool_pb2.MakeDirRequest) -> tool_pb2.MakeDirResponse:
    ev = ctx.event("file.mkdir", f"{req.workspace}:{req.path}")
    ws, path, decision = await guard(ctx, ev, workspaces, req.workspace, req.path, caps.MKDIR)
    slot: Slot | None = None
    held: list[Reservation] = []
    try:
        slot = await asyncio.to_thread(open_slot, workspaces.get(ws).fd, path)
        async with workspaces.get(ws).lock:
            if await asyncio.to_thread(slot.lstat) is not None:
                raise FileExists(f"{path}: already exists")
            held = ctx.budgets.charge(decision.charges, files=1)
            await _act(ctx, ev, decision, _mkdir, slot)
        return tool_pb2.MakeDirResponse()
    except BrokerError as err:
        ctx.budgets.release(held)
        raise await recorded(ctx, ev, err) from None
    finally:
        if slot is not None:
            slot.close()


async def delete(ctx: CallContext, workspaces: Workspaces,
                 req: tool_pb2.DeleteRequest) -> tool_pb2.DeleteResponse:
    ev = ctx.event("file.delete", f"{req.workspace}:{req.path}")
    ws, path, decision = await guard(ctx, ev, workspaces, req.workspace, req.path, caps.DELETE)
    slot: Slot | None = None
    try:
        slot = await asyncio.to_thread(open_slot, workspaces.get(ws).fd, path)
        async with workspaces.get(ws).lock:
            st = await asyncio.to_thread(slot.lstat)
            is_dir = st is not None and stat.S_ISDIR(st.st_mode)
            if not is_dir:
                check_file(path, st)
            elif await asyncio.to_thread(_has_entries, slot):
                raise FailedPrecondition(f"{path}: directory is not empty")
            await _act(ctx, ev, decision, _remove, slot, is_dir)
        return tool_pb2.DeleteResponse()
    except BrokerError as err:
        raise await recorded(ctx, ev, err) from None
    finally:
        if slot is not None:
            slot.close()


def _has_entries(slot: Slot) -> bool:
    try:
        fd = openat2_beneath(slot.dir_fd, slot.name, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise os_error(exc, slot.path) from None
    try:
        with os.scandir(fd) as it:
            return next(it, None) is not None
    finally:
        os.close(fd)


# -- rename ----------------------------------------------------------------------------------
def _move(src: Slot, dst: Slot, replace: bool, moved: os.stat_result) -> None:
    """Rename one name to another. Afterwards the destination must be the very inode that
    was checked; if a host process swapped something in between, it is moved back."""
    try:
        renameat2(src.dir_fd, src.name, dst.dir_fd, dst.name, 0 if replace else RENAME_NOREPLACE)
    except OSError as exc:
        raise os_error(exc, dst.path if exc.errno == errno.EEXIST else src.path) from None
    try:
        now = os.stat(dst.name, dir_fd=dst.dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise os_error(exc, dst.path) from None
    if (now.st_dev, now.st_ino) != (moved.st_dev, moved.st_ino):
        with contextlib.suppress(OSError):
            renameat2(dst.dir_fd, dst.name, src.dir_fd, src.name, RENAME_NOREPLACE)
        raise Aborted(f"{src.path}: changed while being renamed; moved back")
    sync_dir(dst.dir_fd)
    if dst.dir_fd != src.dir_fd:
        sync_dir(src.dir_fd)


async def rename(ctx: CallContext, workspaces: Workspaces,
                 req: tool_pb2.RenameRequest) -> tool_pb2.RenameResponse:
    ev = ctx.event("file.rename", f"{req.workspace}:{req.from_path} -> {req.to_path}")
    try:
        ws, src_path = await resolve(ctx, ev, workspaces, req.workspace, req.from_path)
        shown_src = ev.target
        ev.target = f"{shown_src} -> {req.to_path}"
        dst_path = clean_relpath(req.to_path)
        ev.target = f"{shown_src} -> {ws}:{dst_path}"
        check_denylist(workspaces, dst_path)
        if src_path == dst_path:
            raise InvalidArgument(f"{src_path}: source and destination are the same")
    except BrokerError as err:
        raise await recorded(ctx, ev, err) from None
    # RENAME must be allowed on both ends; the first refusal is the answer.
    both = [decide(ctx.authority, FileAccess(ws, p, caps.RENAME), ctx.now)
            for p in (src_path, dst_path)]
    for d in both:
        if not d.allowed:
            await deny(ctx, ev, d)
    rules = list(dict.fromkeys(d.rule for d in both))
    decision = Decision(True, "; ".join(d.reason for d in both), ",".join(rules))
    slots: list[Slot] = []
    try:
        root = workspaces.get(ws).fd
        for p in (src_path, dst_path):
            slots.append(await asyncio.to_thread(open_slot, root, p))
        src, dst = slots
        async with workspaces.get(ws).lock:
            # Files only: moving a directory would move every path beneath it unchecked
            # (a folder of hooks renamed to ".git" would evade the deny list).
            moved = check_file(src_path, await asyncio.to_thread(src.lstat))
            there = await asyncio.to_thread(dst.lstat)
            if there is not None:
                if not req.replace:
                    raise FileExists(f"{dst_path}: already exists")
                check_file(dst_path, there)
            await _act(ctx, ev, decision, _move, src, dst, req.replace, moved)
        return tool_pb2.RenameResponse()
    except BrokerError as err:
        raise await recorded(ctx, ev, err) from None
    finally:
        for slot in slots:
            slot.close()
