"""Workspace-relative path validation: what a path string may look like before any
filesystem call sees it. Containment itself is enforced at open time (mediators/files.py)."""

from __future__ import annotations

import unicodedata

from ..errors import PathInvalid

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def clean_relpath(path: str) -> str:
    """Check a workspace-relative path and return it in canonical form.

    Args:
        path: "/"-separated, relative to the workspace root; "" or "." is the root.

    Returns:
        The path unchanged, or "" for the root.

    Raises:
        PathInvalid: naming the first problem found. Nothing is normalised silently: a
            path that would need rewriting is refused, so what is checked is what is used.
    """
    if path in ("", "."):
        return ""
    if "\x00" in path:
        raise PathInvalid("path contains a NUL byte")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise PathInvalid("path contains a control character")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise PathInvalid(f"path is longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/"):
        raise PathInvalid(f"absolute path {path!r} refused: give a path relative to the "
                          "workspace root")
    if not unicodedata.is_normalized("NFC", path):
        raise PathInvalid(f"path {path!r} is not in Unicode NFC form")
    for segment in path.split("/"):
        if segment == "":
            raise PathInvalid(f"path {path!r} has an empty segment (doubled or trailing '/')")
        if segment in (".", ".."):
            raise PathInvalid(f"path {path!r} contains a {segment!r} segment")
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise PathInvalid(f"a name in {path!r} is longer than {MAX_NAME_BYTES} bytes")
    return path
