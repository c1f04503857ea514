"""Mediated changes to the workspace tree: mkdir, delete, rename.

Same shape as files.py: build the operation and decide it (``guard``; denials recorded),
check the target on the host, record the allowed outcome, then act. Each change acts on one
name inside a parent directory held by an openat2-beneath descriptor, so a symlink anywhere
on the way is refused and one swapped in at the final name is removed or moved as a name,
never followed. The check-record-act step runs under the workspace's lock: a tool cannot
race its own checks with concurrent calls (only host processes can; see ``_move``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable

from .._proto import audit_pb2, tool_pb2
from .._proto import capabilities_pb2 as caps
from ..budgets import Reservation
from ..core.paths import clean_relpath
from ..core.policy import Decision, FileAccess, decide
from ..errors import Aborted, BrokerError, FailedPrecondition, FileExists, InvalidArgument
from ._context import CallContext
from ._fsops import (
    RENAME_NOREPLACE,
    Slot,
    check_file,
    openat2_beneath,
    os_error,
    renameat2,
    sync_dir,
)
from ._workspaces import Held, Workspaces, check_denylist, deny, guard, recorded, resolve

__all__ = ["delete", "make_dir", "rename"]


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


async def _act(ctx: CallContext, ev: audit_pb2.AuditEvent, decision: Decision, held: Held,
               fn: Callable[..., None], *args: object) -> None:
    """Record the allowed decision, then act; a failing act gets a second record."""
    await ctx.record_decision(ev, decision)
    try:
        await held.run(fn, *args)
    except BrokerError as err:
        await ctx.record_failure(ev, err)
        raise


async def make_dir(ctx: CallContext, workspaces: Workspaces,
                   req: tool_pb2.MakeDirRequest) -> tool_pb2.MakeDirResponse:
    ev = ctx.event("file.mkdir", f"{req.workspace}:{req.path}")
    ws, path, decision = await guard(ctx, ev, workspaces, req.workspace, req.path, caps.MKDIR)
    held = Held()
    reserved: list[Reservation] = []
    try:
        slot = await held.slot(workspaces.get(ws).fd, path)
        async with workspaces.get(ws).lock:
            if await held.run(slot.lstat) is not None:
                raise FileExists(f"{path}: already exists")
            reserved = ctx.budgets.charge(decision.charges, files=1)
            await _act(ctx, ev, decision, held, _mkdir, slot)
        return tool_pb2.MakeDirResponse()
    except BrokerError as err:
        ctx.budgets.release(reserved)
        raise await recorded(ctx, ev, err) from None
    finally:
        await held.close()


async def delete(ctx: CallContext, workspaces: Workspaces,
                 req: tool_pb2.DeleteRequest) -> tool_pb2.DeleteResponse:
    ev = ctx.event("file.delete", f"{req.workspace}:{req.path}")
    ws, path, decision = await guard(ctx, ev, workspaces, req.workspace, req.path, caps.DELETE)
    held = Held()
    try:
        slot = await held.slot(workspaces.get(ws).fd, path)
        async with workspaces.get(ws).lock:
            st = await held.run(slot.lstat)
            is_dir = st is not None and stat.S_ISDIR(st.st_mode)
            if not is_dir:
                check_file(path, st)
            elif await held.run(_has_entries, slot):
                raise FailedPrecondition(f"{path}: directory is not empty")
            await _act(ctx, ev, decision, held, _remove, slot, is_dir)
        return tool_pb2.DeleteResponse()
    except BrokerError as err:
        raise await recorded(ctx, ev, err) from None
    finally:
        await held.close()


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
    held = Held()
    try:
        src = await held.slot(workspaces.get(ws).fd, src_path)
        dst = await held.slot(workspaces.get(ws).fd, dst_path)
        async with workspaces.get(ws).lock:
            # Files only: moving a directory would move every path beneath it unchecked
            # (a folder of hooks renamed to ".git" would evade the deny list).
            moved = check_file(src_path, await held.run(src.lstat))
            there = await held.run(dst.lstat)
            if there is not None:
                if not req.replace:
                    raise FileExists(f"{dst_path}: already exists")
                check_file(dst_path, there)
            await _act(ctx, ev, decision, held, _move, src, dst, req.replace, moved)
        return tool_pb2.RenameResponse()
    except BrokerError as err:
        raise await recorded(ctx, ev, err) from None
    finally:
        await held.close()
