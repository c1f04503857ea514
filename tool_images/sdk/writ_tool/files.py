"""Files in the user's workspaces, reached only through the broker.

Paths are relative to a workspace root and "/"-separated. ``workspace`` may be omitted
when the token grants exactly one workspace. Every call raises
``writ_tool.PermissionDenied`` when the token does not allow it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._broker import connection
from ._proto import tool_pb2


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "file", "dir", "symlink", "other"
    size: int


def _chunks(path: str, workspace: str, offset: int, length: int) -> Iterator[bytes]:
    req = tool_pb2.ReadFileRequest(workspace=workspace, path=path, offset=offset, length=length)
    for chunk in connection().stream("ReadFile", req):
        yield chunk.data


def read_bytes(path: str, workspace: str = "", offset: int = 0, length: int = 0) -> bytes:
    """The file's bytes from ``offset`` (``length`` 0: to the end)."""
    return b"".join(_chunks(path, workspace, offset, length))


def read_text(path: str, workspace: str = "", encoding: str = "utf-8") -> str:
    return read_bytes(path, workspace).decode(encoding)


def listdir(path: str = "", workspace: str = "") -> list[Entry]:
    """Entries of a directory ("" is the workspace root)."""
    resp = connection().unary("ListDir", tool_pb2.ListDirRequest(workspace=workspace, path=path))
    return [Entry(e.name, e.kind, e.size) for e in resp.entries]


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


def open(path: str, mode: str = "r", workspace: str = "",
         encoding: str = "utf-8") -> io.IOBase:
    """Open a workspace file for streaming reads: ``with files.open("a.csv") as f:``.

    Only "r" and "rb" exist; writing arrives with mediated writes.
    """
    if mode not in ("r", "rb"):
        raise ValueError(f"mode {mode!r} is not supported; use 'r' or 'rb'")
    raw = io.BufferedReader(_StreamReader(_chunks(path, workspace, 0, 0)), 1 << 16)
    return raw if mode == "rb" else io.TextIOWrapper(raw, encoding=encoding)
