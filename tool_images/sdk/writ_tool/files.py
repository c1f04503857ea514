"""Files in the user's workspaces, reached only through the broker.

    from writ_tool import files

    with files.open("reports/q3.csv") as f:          # a checked, audited READ
        rows = f.readlines()
    with files.open("out/summary.md", "w") as f:     # streamed; in place only on close
        f.write("# Q3\n")
    local = files.copy_in("data/big.parquet")        # a copy under /tmp
    files.copy_out(local, "data/big-clean.parquet")

Paths are relative to a workspace root and "/"-separated. ``workspace`` may be omitted
when the token grants exactly one workspace. Every call raises
``writ_tool.PermissionDenied`` when the token does not allow it, ``NotFound``,
``InvalidArgument`` or ``AlreadyExists`` as the broker answers.

Reads: ``open(path, "r"/"rb")`` asks the broker for a read-only descriptor of the whole
file (checked, charged and audited first) and returns a real file object on it; where the
broker will not hand one out it falls back to streamed reads. ``read_bytes`` with an
offset and length streams exactly that range.

Writes: ``open(path, "w"/"wb")`` (create or replace) and ``"x"/"xb"`` (create only) stream
the bytes to the broker as you write. The file appears, atomically and complete, when the
``with`` block ends normally; if it raises, or the tool dies, nothing is written.
"""

from __future__ import annotations

import builtins
import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._broker import BrokerError, connection
from ._desk import redeem
from ._proto import tool_pb2
from ._writer import CHUNK, TextWriter, Writer

# Writes hand the broker a pipe for their bytes (splice on its side: no per-message cost);
# False sends them in WriteFile messages instead (tests use both).
WRITE_VIA_PIPE = True


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "file", "dir", "symlink", "other"
    size: int


@dataclass(frozen=True)
class Stat:
    kind: str  # "file", "dir", "symlink" (never followed), "other"
    size: int
    mtime_ns: int


# -- metadata and directories ----------------------------------------------------------------
def listdir(path: str = "", workspace: str = "") -> list[Entry]:
    """Entries of a directory ("" is the workspace root)."""
    resp = connection().op("ListDir", "list_dir",
                             tool_pb2.ListDirRequest(workspace=workspace, path=path))
    return [Entry(e.name, e.kind, e.size) for e in resp.entries]


def stat(path: str, workspace: str = "") -> Stat:
    resp = connection().op("Stat", "stat", tool_pb2.StatRequest(workspace=workspace, path=path))
    return Stat(resp.kind, resp.size, resp.mtime_ns)


def mkdir(path: str, workspace: str = "") -> None:
    """Create one directory; its parent must exist."""
    connection().op("MakeDir", "make_dir",
                      tool_pb2.MakeDirRequest(workspace=workspace, path=path))


def delete(path: str, workspace: str = "") -> None:
    """Remove a regular file or an empty directory."""
    connection().op("Delete", "delete", tool_pb2.DeleteRequest(workspace=workspace, path=path))


def rename(src: str, dst: str, workspace: str = "", replace: bool = False) -> None:
    """Move a regular file; an existing ``dst`` is replaced only when ``replace``."""
    connection().op("Rename", "rename", tool_pb2.RenameRequest(
        workspace=workspace, from_path=src, to_path=dst, replace=replace))


# -- reading ---------------------------------------------------------------------------------
def _chunks(path: str, workspace: str, offset: int, length: int) -> Iterator[bytes]:
    req = tool_pb2.ReadFileRequest(workspace=workspace, path=path, offset=offset, length=length)
    for chunk in connection().stream("ReadFile", req):
        yield chunk.data


OPS_MAX_READ = 1 << 20  # the most one read on the ops socket returns


def read_bytes(path: str, workspace: str = "", offset: int = 0, length: int = 0) -> bytes:
    """The file's bytes from ``offset`` (``length`` 0: to the end): the first MiB in one
    reply on the ops socket, the rest (if any) streamed; each part one checked READ."""
    if connection().ops() is None:  # a broker without an ops socket
        return b"".join(_chunks(path, workspace, offset, length))
    first = min(length, OPS_MAX_READ) if length else OPS_MAX_READ
    data = connection().op("ReadFile", "read_file", tool_pb2.ReadFileRequest(
        workspace=workspace, path=path, offset=offset, length=first)).data
    if len(data) < first or length == first:
        return data  # the end of the file, or of the range asked for
    rest = length - first if length else 0
    return data + b"".join(_chunks(path, workspace, offset + first, rest))


def read_text(path: str, workspace: str = "", encoding: str = "utf-8") -> str:
    return read_bytes(path, workspace).decode(encoding)


def open_descriptor(path: str, workspace: str = "") -> int | None:
    """A read-only descriptor of the whole file, or None when the broker will not hand one
    out for it (FAILED_PRECONDITION: use streamed reads). The caller closes it."""
    conn = connection()
    try:
        resp = conn.op("OpenFile", "open_file",
                       tool_pb2.OpenFileRequest(workspace=workspace, path=path))
    except BrokerError as err:
        if err.code in ("FAILED_PRECONDITION", "UNIMPLEMENTED"):
            return None
        raise
    return redeem(resp.ticket)


class _StreamReader(io.RawIOBase):
    """A read-only raw file fed by the broker's chunk stream."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self._pending:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._pending = nxt
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


# -- writing ---------------------------------------------------------------------------------
_MODES = {None: tool_pb2.WRITE_MODE_CREATE_OR_REPLACE, True: tool_pb2.WRITE_MODE_CREATE,
          False: tool_pb2.WRITE_MODE_REPLACE}


def _writer(path: str, workspace: str, create: bool | None) -> Writer:
    return Writer(path, workspace, _MODES[create], via_pipe=WRITE_VIA_PIPE)


def write_bytes(path: str, data: bytes, workspace: str = "",
                create: bool | None = None) -> int:
    """Store ``data`` as the file's contents, atomically. ``create``: None creates or
    replaces, True only creates (AlreadyExists if taken), False only replaces (NotFound
    if absent). Returns the bytes written."""
    w = _writer(path, workspace, create)
    try:
        w.write(data)
    except BaseException:
        w.abort()
        raise
    w.close()
    return w.bytes_written


def write_text(path: str, text: str, workspace: str = "", encoding: str = "utf-8",
               create: bool | None = None) -> int:
    return write_bytes(path, text.encode(encoding), workspace, create)


def create(path: str, data: bytes = b"", workspace: str = "") -> int:
    """Create a file that must not exist yet (AlreadyExists otherwise)."""
    return write_bytes(path, data, workspace, create=True)


# -- open ------------------------------------------------------------------------------------
def open(path: str, mode: str = "r", workspace: str = "",
         encoding: str = "utf-8") -> Any:
    """``with files.open("a.csv") as f:`` -- modes "r", "rb" (read), "w", "wb" (create or
    replace), "x", "xb" (create only). A write takes effect when the file is closed; if the
    ``with`` block raises, nothing is written."""
    if mode in ("r", "rb"):
        fd = open_descriptor(path, workspace)
        if fd is not None:
            raw: Any = builtins.open(fd, "rb")  # noqa: SIM115 - the caller closes it
        else:
            raw = io.BufferedReader(_StreamReader(_chunks(path, workspace, 0, 0)), CHUNK)
        return raw if mode == "rb" else io.TextIOWrapper(raw, encoding=encoding)
    if mode in ("w", "wb", "x", "xb"):
        w = _writer(path, workspace, True if mode.startswith("x") else None)
        return w if mode.endswith("b") else TextWriter(w, encoding=encoding)
    raise ValueError(f"mode {mode!r} is not supported; use r, rb, w, wb, x or xb")


# -- copies to and from the container's /tmp ------------------------------------------------
def copy_in(path: str, workspace: str = "", directory: str = "/tmp") -> str:
    """Copy a workspace file into the container (under /tmp); return the local path."""
    name = path.rsplit("/", 1)[-1]
    fd, local = tempfile.mkstemp(prefix="writ-", suffix=f"-{name}", dir=directory)
    try:
        with builtins.open(fd, "wb") as out, open(path, "rb", workspace) as src:
            _copy(src, out)
    except BaseException:
        os.unlink(local)
        raise
    return local


def copy_out(local_path: str, path: str, workspace: str = "",
             create: bool | None = None) -> int:
    """Copy a local file (e.g. under /tmp) to a workspace path, atomically; return the
    bytes written. ``create`` as for ``write_bytes``."""
    w = _writer(path, workspace, create)
    try:
        with builtins.open(local_path, "rb") as src:
            while block := src.read(CHUNK):
                w.write(block)
    except BaseException:
        w.abort()
        raise
    w.close()
    return w.bytes_written


def _copy(src: Any, out: Any) -> None:
    try:
        # Kernel-side copy when both are real files (a broker descriptor and /tmp).
        in_fd, out_fd = src.fileno(), out.fileno()
        while os.sendfile(out_fd, in_fd, None, 1 << 30):
            pass
    except (OSError, io.UnsupportedOperation, AttributeError):
        while block := src.read(CHUNK):
            out.write(block)
