"""Mediated file access under operator-registered workspaces.

Containment: every path is opened with openat2(2) relative to the workspace root's
descriptor with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
RESOLVE_NO_XDEV. The kernel resolves the whole path in one call, so there is no window
between check and use for a swapped-in symlink, and no component may be a symlink, a
mount crossing or a `..` escape. Only regular files are read (no FIFOs, devices, sockets)
and files with more than one hard link are refused (a hard link can alias a file outside).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .._proto import capabilities_pb2 as caps
from .._proto import tool_pb2
from ..core.paths import clean_relpath
from ..core.policy import FileAccess, decide
from ..errors import BrokerError, FailedPrecondition, FileMissing, InvalidArgument, PermissionDenied
from ._context import CallContext

CHUNK = 256 * 1024
MAX_LIST = 10_000

# -- openat2 ---------------------------------------------------------------------------------
_SYS_OPENAT2 = 437  # x86_64 and aarch64 alike
RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 0x01, 0x02, 0x04, 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def openat2_beneath(root_fd: int, relpath: str, flags: int) -> int:
    """Open ``relpath`` strictly beneath ``root_fd``. Raises OSError with the kernel's errno."""
    # No O_NOFOLLOW: RESOLVE_NO_SYMLINKS already refuses a trailing symlink with ELOOP, while
    # O_NOFOLLOW | O_DIRECTORY would answer ENOTDIR for one, hiding the link from ListDir.
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE)
    fd = _libc.syscall(_SYS_OPENAT2, ctypes.c_int(root_fd), os.fsencode(relpath or "."),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), relpath)
    return int(fd)


def _os_error(exc: OSError, path: str) -> BrokerError:
    shown = path or "."
    if exc.errno == errno.ENXIO:  # opening a Unix socket file
        return PermissionDenied(f"{shown}: not a regular file (FIFO, device or socket)")
    if exc.errno == errno.ENOENT:
        return FileMissing(f"{shown}: no such file or directory")
    if exc.errno == errno.ELOOP:
        return PermissionDenied(f"{shown}: path goes through a symbolic link; links are not "
                                "followed")
    if exc.errno == errno.EXDEV:
        return PermissionDenied(f"{shown}: path escapes the workspace")
    if exc.errno == errno.ENOTDIR:
        return InvalidArgument(f"{shown}: a path component is not a directory")
    if exc.errno == errno.EISDIR:
        return InvalidArgument(f"{shown}: is a directory; use ListDir")
    if exc.errno == errno.EACCES:
        return PermissionDenied(f"{shown}: the broker itself may not open this file")
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidArgument(f"{shown}: name too long")
    return FailedPrecondition(f"{shown}: cannot open ({os.strerror(exc.errno or 0)})")


# -- workspaces ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workspace:
    name: str
    root: Path
    fd: int  # O_PATH descriptor of the root, held for the broker's life


class Workspaces:
    def __init__(self, roots: dict[str, Path]) -> None:
        self._by_name: dict[str, Workspace] = {}
        for name, root in roots.items():
            fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self._by_name[name] = Workspace(name, root.resolve(), fd)
        self._probe_openat2()

    def _probe_openat2(self) -> None:
        # SECURITY LIMITATION: containment relies on openat2 (Linux 5.6+). Without it the
        # broker refuses to serve files rather than fall back to check-then-open.
        for ws in self._by_name.values():
            try:
                os.close(openat2_beneath(ws.fd, "", os.O_PATH | os.O_DIRECTORY))
            except OSError as exc:
                raise RuntimeError(f"openat2 unavailable ({exc}); Writ needs Linux 5.6+") from exc
            return

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> Workspace:
        ws = self._by_name.get(name)
        if ws is None:
            raise PermissionDenied(f"workspace {name!r} is not served by this broker")
        return ws

    def close(self) -> None:
        for ws in self._by_name.values():
            os.close(ws.fd)


def _pick_workspace(ctx: CallContext, requested: str) -> str:
    if requested:
        return requested
    granted = ctx.authority.workspaces()
    if len(granted) != 1:
        raise InvalidArgument("name the workspace: the token grants "
                              f"{len(granted)} workspaces ({', '.join(sorted(granted))})")
    return next(iter(granted))


# -- the act steps (the only host access) ----------------------------------------------------
def _open_regular(ws: Workspace, path: str) -> tuple[int, int]:
    """(fd, size) of a regular, singly-linked file."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang the broker; it is refused below anyway.
        fd = openat2_beneath(ws.fd, path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise _os_error(exc, path) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"{path or '.'}: is a directory; use ListDir")
        raise PermissionDenied(f"{path}: not a regular file (FIFO, device or socket)")
    if st.st_nlink > 1:
        os.close(fd)
        raise PermissionDenied(f"{path}: has {st.st_nlink} hard links; refused because a link "
                               "may alias a file outside the workspace")
    return fd, st.st_size


def _list(ws: Workspace, path: str) -> list[tool_pb2.DirEntry]:
    try:
        fd = openat2_beneath(ws.fd, path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise _os_error(exc, path) from None
    out = []
    try:
        with os.scandir(fd) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                kind = ("dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
                        else "symlink" if stat.S_ISLNK(st.st_mode) else "other")
                out.append(tool_pb2.DirEntry(name=entry.name, kind=kind,
                                             size=st.st_size if kind == "file" else 0))
                if len(out) > MAX_LIST:
                    raise FailedPrecondition(f"{path or '.'}: more than {MAX_LIST} entries")
    finally:
        os.close(fd)
    return sorted(out, key=lambda e: e.name)


# -- mediated operations ---------------------------------------------------------------------
async def read_file(ctx: CallContext, workspaces: Workspaces,
                    req: tool_pb2.ReadFileRequest) -> AsyncIterator[tool_pb2.FileChunk]:
    ev = ctx.event("file.read", f"{req.workspace}:{req.path}")
    try:
        ws_name = _pick_workspace(ctx, req.workspace)
        path = clean_relpath(req.path)
        ev.target = f"{ws_name}:{path}"
        op = FileAccess(ws_name, path, caps.READ)
        decision = decide(ctx.authority, op, ctx.now)
        if not decision.allowed:
            await ctx.record_decision(ev, decision)
            decision.raise_if_denied()
        fd, size = await asyncio.to_thread(_open_regular, workspaces.get(ws_name), path)
    except BrokerError as err:
        if not ev.decision:
            await ctx.record_error(ev, err)
        raise
    try:
        start = min(req.offset, size)
        end = size if req.length == 0 else min(size, start + req.length)
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


async def list_dir(ctx: CallContext, workspaces: Workspaces,
                   req: tool_pb2.ListDirRequest) -> tool_pb2.ListDirResponse:
    ev = ctx.event("file.list", f"{req.workspace}:{req.path}")
    try:
        ws_name = _pick_workspace(ctx, req.workspace)
        path = clean_relpath(req.path)
        ev.target = f"{ws_name}:{path}"
        decision = decide(ctx.authority, FileAccess(ws_name, path, caps.LIST), ctx.now)
        if not decision.allowed:
            await ctx.record_decision(ev, decision)
            decision.raise_if_denied()
        entries = await asyncio.to_thread(_list, workspaces.get(ws_name), path)
    except BrokerError as err:
        if not ev.decision:
            await ctx.record_error(ev, err)
        raise
    await ctx.record_decision(ev, decision)
    return tool_pb2.ListDirResponse(entries=entries)
