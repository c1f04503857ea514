"""Mediated file reads under operator-registered workspaces: read, open, list, stat.

Each operation has the same shape: build the operation and decide it (``guard``: clean
path, deny list, ``decide``; denials recorded), act on the host (``_fsops``: openat2
beneath the root, no symlinks, no mount crossing), record the outcome, and only then let
bytes reach the tool. Only regular files are read (no FIFOs, devices, sockets) and files
with more than one hard link are refused (a hard link can alias a file outside).
Writes live in files_write.py.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator

from .._proto import capabilities_pb2 as caps
from .._proto import tool_pb2
from ..errors import BrokerError, FailedPrecondition, InvalidArgument, PermissionDenied
from ..launcher._spec import TOOL_USER
from ._context import CallContext
from ._fdpass import DescriptorDesk
from ._fsops import NOT_REGULAR, TEMP_RE, hard_links, openat2_beneath, os_error
from ._workspaces import Workspace, Workspaces, guard, recorded

__all__ = ["Workspaces", "list_dir", "open_file", "read_file", "stat_entry"]

CHUNK = 1 << 20  # large messages: per-message cost dominates gRPC streaming throughput
MAX_LIST = 10_000
_TOOL_UID, _TOOL_GID = (int(x) for x in TOOL_USER.split(":"))


# -- the act steps (the only host access) ----------------------------------------------------
def _open_regular(ws: Workspace, path: str) -> tuple[int, os.stat_result]:
    """(fd, stat) of a regular, singly-linked file."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang the broker; it is refused below anyway.
        fd = openat2_beneath(ws.fd, path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise os_error(exc, path) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"{path or '.'}: is a directory; use ListDir")
        raise PermissionDenied(f"{path}: {NOT_REGULAR}")
    if st.st_nlink > 1:
        os.close(fd)
        raise hard_links(path, st.st_nlink)
    return fd, st


def _kind(mode: int) -> str:
    return ("dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode)
            else "symlink" if stat.S_ISLNK(mode) else "other")


def _list(ws: Workspace, path: str) -> list[tool_pb2.DirEntry]:
    try:
        fd = openat2_beneath(ws.fd, path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise os_error(exc, path) from None
    out = []
    try:
        with os.scandir(fd) as it:
            for entry in it:
                if TEMP_RE.fullmatch(entry.name):
                    continue  # a write in flight: the broker's, not an entry of the folder
                st = entry.stat(follow_symlinks=False)
                kind = _kind(st.st_mode)
                out.append(tool_pb2.DirEntry(name=entry.name, kind=kind,
                                             size=st.st_size if kind == "file" else 0))
                if len(out) > MAX_LIST:
                    raise FailedPrecondition(f"{path or '.'}: more than {MAX_LIST} entries")
    finally:
        os.close(fd)
    return sorted(out, key=lambda e: e.name)


def _stat(ws: Workspace, path: str) -> tool_pb2.StatResponse:
    try:
        # O_PATH | O_NOFOLLOW with RESOLVE_NO_SYMLINKS: a trailing symlink is described
        # (never followed); a symlink anywhere before it is still refused with ELOOP.
        fd = openat2_beneath(ws.fd, path, os.O_PATH | os.O_NOFOLLOW)
    except OSError as exc:
        raise os_error(exc, path) from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    kind = _kind(st.st_mode)
    return tool_pb2.StatResponse(kind=kind, size=st.st_size if kind == "file" else 0,
                                 mtime_ns=st.st_mtime_ns)


def _reopenable_for_writing(fd: int, st: os.stat_result) -> bool:
    """Could the tool's user reopen this file read-write via /proc/self/fd (or change its
    times or attributes)? A descriptor leads to the inode, so the file's own permissions
    are the only guard left: write bits that reach the tool's uid, or any POSIX ACL (not
    interpreted here: refused)."""
    if (st.st_mode & stat.S_IWOTH or st.st_uid == _TOOL_UID and st.st_mode & stat.S_IWUSR
            or st.st_gid == _TOOL_GID and st.st_mode & stat.S_IWGRP):
        return True
    try:
        os.getxattr(fd, "system.posix_acl_access")
    except OSError:
        return False  # no ACL (ENODATA), or a filesystem without them
    return True


# -- mediated operations ---------------------------------------------------------------------
async def read_file(ctx: CallContext, workspaces: Workspaces,
                    req: tool_pb2.ReadFileRequest) -> AsyncIterator[tool_pb2.FileChunk]:
    ev = ctx.event("file.read", f"{req.workspace}:{req.path}")
    ws, path, decision = await guard(ctx, ev, workspaces, req.workspace, req.path, caps.READ)
    try:
        # On the event loop, like the reads below: one openat2 and one fstat (O_NONBLOCK:
        # a FIFO cannot hang it); a thread hop would cost more than the work.
        fd, st = _open_regular(workspaces.get(ws), path)
    except BrokerError as err:
        raise await recorded(ctx, ev, err) from None
    try:
        start = min(req.offset, st.st_size)
        end = st.st_size if req.length == 0 else min(st.st_size, start + req.length)
        try:
            if decision.max_bytes and end - start > decision.max_bytes:
                raise PermissionDenied(f"read of {end - start} bytes exceeds the rule's "
                                       f"max_bytes of {decision.max_bytes}")
            reserved = ctx.budgets.charge(decision.charges, read_bytes=end - start)
        except PermissionDenied as over:
            await ctx.record_error(ev, over)
            raise
        try:
            await ctx.record_decision(ev, decision, end - start)  # record, then release bytes
        except BrokerError:
            ctx.budgets.release(reserved)  # nothing was released to the tool
            raise
        pos = start
        while pos < end:
            data = os.pread(fd, min(CHUNK, end - pos), pos)
            if not data:
                break  # the file shrank under us: stop at what exists
            pos += len(data)
            yield tool_pb2.FileChunk(data=data)
    finally:
        os.close(fd)


async def open_file(ctx: CallContext, workspaces: Workspaces, desk: DescriptorDesk,
                    req: tool_pb2.OpenFileRequest) -> tool_pb2.OpenFileResponse:
    """A whole-file READ whose bytes travel as a descriptor (see _fdpass.py).

    SECURITY LIMITATION: the descriptor reads the file as it is when read, so bytes a
    host process appends after the hand-out are readable without a further charge. Tool
    writes never do this: they replace a file with a new inode.
    """
    ev = ctx.event("file.read", f"{req.workspace}:{req.path}")
    ws, path, decision = await guard(ctx, ev, workspaces, req.workspace, req.path, caps.READ)
    try:
        # On the event loop, like the reads below: one openat2 and one fstat (O_NONBLOCK:
        # a FIFO cannot hang it); a thread hop would cost more than the work.
        fd, st = _open_regular(workspaces.get(ws), path)
    except BrokerError as err:
        raise await recorded(ctx, ev, err) from None
    handed = False
    try:
        size = st.st_size
        try:
            if _reopenable_for_writing(fd, st):
                raise FailedPrecondition(
                    f"{path}: writable by the tool's user (mode {stat.S_IMODE(st.st_mode):o}, "
                    "or an ACL); a descriptor is not handed out, use ReadFile")
            if decision.max_bytes and size > decision.max_bytes:
                raise PermissionDenied(f"read of {size} bytes exceeds the rule's max_bytes "
                                       f"of {decision.max_bytes}")
            if not desk.has_room():
                raise FailedPrecondition("too many descriptors waiting to be redeemed; "
                                         "redeem or let them expire first")
            # The descriptor exposes the whole file: charge all of it, up front.
            reserved = ctx.budgets.charge(decision.charges, read_bytes=size)
        except BrokerError as err:
            await ctx.record_error(ev, err)
            raise
        try:
            await ctx.record_decision(ev, decision, size)  # record, then hand it out
        except BrokerError:
            ctx.budgets.release(reserved)
            raise
        ticket = desk.issue(fd)
        handed = True
        return tool_pb2.OpenFileResponse(ticket=ticket, size=size)
    finally:
        if not handed:
            os.close(fd)


async def list_dir(ctx: CallContext, workspaces: Workspaces,
                   req: tool_pb2.ListDirRequest) -> tool_pb2.ListDirResponse:
    ev = ctx.event("file.list", f"{req.workspace}:{req.path}")
    ws, path, decision = await guard(ctx, ev, workspaces, req.workspace, req.path, caps.LIST)
    try:
        entries = await asyncio.to_thread(_list, workspaces.get(ws), path)
    except BrokerError as err:
        raise await recorded(ctx, ev, err) from None
    await ctx.record_decision(ev, decision)
    return tool_pb2.ListDirResponse(entries=entries)


async def stat_entry(ctx: CallContext, workspaces: Workspaces,
                     req: tool_pb2.StatRequest) -> tool_pb2.StatResponse:
    ev = ctx.event("file.stat", f"{req.workspace}:{req.path}")
    ws, path, decision = await guard(ctx, ev, workspaces, req.workspace, req.path, caps.STAT)
    try:
        # On the event loop: one openat2 and one fstat, microseconds; a thread hop would
        # cost more than the work.
        resp = _stat(workspaces.get(ws), path)
    except BrokerError as err:
        raise await recorded(ctx, ev, err) from None
    await ctx.record_decision(ev, decision)
    return resp
