"""Host calls of the file mediators: the only code here that touches a workspace.

Every path is resolved with openat2(2) relative to a descriptor, with RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV: the kernel resolves the
whole path in one call, so there is no window between check and use for a swapped-in
symlink, and no component may be a symlink, a mount crossing or a `..` escape. Mutations
act on one name inside a directory descriptor opened that way (mkdirat, unlinkat,
renameat2, linkat): the final name is never followed, so a symlink swapped in there is
replaced or removed as a name, never written through.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
from dataclasses import dataclass

from ..errors import (
    BrokerError,
    FailedPrecondition,
    FileMissing,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
)


# -- errors this module adds (the codes writ.errors lacks) -----------------------------------
class FileExists(BrokerError):
    """The path is taken: create, mkdir or a non-replacing rename."""

    code = "ALREADY_EXISTS"


class Aborted(BrokerError):
    """The filesystem changed under the operation (only a host process can race us: tool
    mutations of one workspace are serialized)."""

    code = "ABORTED"


SYMLINK = "path goes through a symbolic link; links are not followed"
NOT_REGULAR = "not a regular file (FIFO, device or socket)"


def hard_links(path: str, n: int) -> PermissionDenied:
    return PermissionDenied(f"{path}: has {n} hard links; refused because a link may alias a "
                            "file outside the workspace")


def os_error(exc: OSError, path: str) -> BrokerError:
    """The precise status for a kernel error on ``path`` ("" is the root)."""
    shown = path or "."
    if exc.errno == errno.ENXIO:  # opening a Unix socket file
        return PermissionDenied(f"{shown}: {NOT_REGULAR}")
    if exc.errno == errno.ENOENT:
        return FileMissing(f"{shown}: no such file or directory")
    if exc.errno == errno.ELOOP:
        return PermissionDenied(f"{shown}: {SYMLINK}")
    if exc.errno == errno.EXDEV:
        return PermissionDenied(f"{shown}: path escapes the workspace")
    if exc.errno == errno.ENOTDIR:
        return InvalidArgument(f"{shown}: a path component is not a directory")
    if exc.errno == errno.EISDIR:
        return InvalidArgument(f"{shown}: is a directory; use ListDir")
    if exc.errno == errno.EACCES:
        return PermissionDenied(f"{shown}: the broker itself may not open this file")
    if exc.errno == errno.EPERM:
        return PermissionDenied(f"{shown}: the broker itself may not change this entry")
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidArgument(f"{shown}: name too long")
    if exc.errno == errno.EEXIST:
        return FileExists(f"{shown}: already exists")
    if exc.errno == errno.ENOTEMPTY:
        return FailedPrecondition(f"{shown}: directory is not empty")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"{shown}: no space left on the workspace's filesystem")
    return FailedPrecondition(f"{shown}: {os.strerror(exc.errno or 0)}")


# -- openat2 ---------------------------------------------------------------------------------
_SYS_OPENAT2 = 437  # x86_64 and aarch64 alike
RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 0x01, 0x02, 0x04, 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
O_TMPFILE = getattr(os, "O_TMPFILE", 0o20200000)
_AT_FDCWD = -100
RENAME_NOREPLACE = 1


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]


def openat2_beneath(dir_fd: int, relpath: str, flags: int, mode: int = 0) -> int:
    """Open ``relpath`` strictly beneath ``dir_fd``. Raises OSError with the kernel's errno."""
    # No O_NOFOLLOW by default: RESOLVE_NO_SYMLINKS already refuses a trailing symlink with
    # ELOOP, while O_NOFOLLOW | O_DIRECTORY would answer ENOTDIR, hiding the link.
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE)
    fd = _libc.syscall(_SYS_OPENAT2, ctypes.c_int(dir_fd), os.fsencode(relpath or "."),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), relpath)
    return int(fd)


def renameat2(src_dir: int, src: str, dst_dir: int, dst: str, flags: int) -> None:
    """renameat2(2) of one name to another, each inside a held directory descriptor."""
    if _libc.renameat2(src_dir, os.fsencode(src), dst_dir, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


# -- a parent directory and one name in it ---------------------------------------------------
@dataclass
class Slot:
    """One name inside a directory held open beneath the workspace root."""

    path: str       # the workspace-relative path, for messages
    dir_fd: int     # O_PATH descriptor of the parent directory
    name: str

    def close(self) -> None:
        os.close(self.dir_fd)

    def lstat(self) -> os.stat_result | None:
        """The entry itself (a symlink is not followed), or None when absent."""
        try:
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise os_error(exc, self.path) from None


def open_slot(root_fd: int, path: str) -> Slot:
    """Hold the parent of ``path`` (beneath the root, no symlinks) and name its last part.

    Raises:
        InvalidArgument: ``path`` is the workspace root itself.
        BrokerError: the parent cannot be reached (missing, a symlink on the way, ...).
    """
    if not path:
        raise InvalidArgument(".: is the workspace root")
    parent, _, name = path.rpartition("/")
    try:
        fd = openat2_beneath(root_fd, parent, os.O_PATH | os.O_DIRECTORY)
    except OSError as exc:
        raise os_error(exc, parent) from None
    return Slot(path, fd, name)


def check_file(path: str, st: os.stat_result | None) -> os.stat_result:
    """The entry must be a regular file with one link: the only thing we read, replace,
    move or remove as a file."""
    if st is None:
        raise FileMissing(f"{path}: no such file or directory")
    if stat.S_ISLNK(st.st_mode):
        raise PermissionDenied(f"{path}: {SYMLINK}")
    if stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"{path}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise PermissionDenied(f"{path}: {NOT_REGULAR}")
    if st.st_nlink > 1:
        raise hard_links(path, st.st_nlink)
    return st


# -- writing: an unnamed temporary file, then one atomic step --------------------------------
@dataclass
class TempFile:
    """New contents being written next to their target; invisible until ``commit``."""

    slot: Slot
    fd: int
    named: str = ""  # the fallback's visible temporary name ("" for O_TMPFILE)

    def discard(self) -> None:
        os.close(self.fd)
        if self.named:
            try:
                os.unlink(self.named, dir_fd=self.slot.dir_fd)
            except FileNotFoundError:
                pass


def open_temp(slot: Slot, mode: int = 0o644) -> TempFile:
    """An unnamed file in the target's directory (O_TMPFILE): if the broker dies mid-write
    the kernel frees it, so no partial file can ever be left behind. Filesystems without
    O_TMPFILE get a random hidden name created with O_EXCL, removed on any failure. Both
    are made in the held parent descriptor: the path is not resolved a second time."""
    try:
        fd = openat2_beneath(slot.dir_fd, "", O_TMPFILE | os.O_WRONLY, mode)
        return TempFile(slot, fd)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise os_error(exc, slot.path) from None
    name = f".writ-{secrets.token_hex(8)}.part"
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=slot.dir_fd)
    except OSError as exc:
        raise os_error(exc, slot.path) from None
    return TempFile(slot, fd, name)


def commit(tmp: TempFile, replace: bool) -> None:
    """Put the temporary file at its target: replace what is there (a rename: atomic) or
    create it where nothing is (linkat / RENAME_NOREPLACE: fails if the name is taken).

    Raises:
        FileExists: creating, and the name is taken.
    """
    slot = tmp.slot
    name = tmp.named
    try:
        if not name and not replace:
            # Link the unnamed inode straight to its name: atomic, and EEXIST if taken.
            os.link(f"/proc/self/fd/{tmp.fd}", slot.name, dst_dir_fd=slot.dir_fd,
                    follow_symlinks=True)
            return
        if not name:
            name = f".writ-{secrets.token_hex(8)}.new"
            os.link(f"/proc/self/fd/{tmp.fd}", name, dst_dir_fd=slot.dir_fd,
                    follow_symlinks=True)
            tmp.named = name  # discard() removes it if the rename below fails
        renameat2(slot.dir_fd, name, slot.dir_fd, slot.name, 0 if replace else RENAME_NOREPLACE)
        tmp.named = ""
    except OSError as exc:
        raise os_error(exc, slot.path) from None


def sync_dir(dir_fd: int) -> None:
    """fsync a directory held by O_PATH: the rename is durable only once its directory is."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
