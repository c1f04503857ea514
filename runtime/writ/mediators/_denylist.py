"""The broker's mandatory deny list: paths no grant can open, in any workspace.

Pure: no I/O. Checked on the path string before ``decide``, so it holds even when a
grant allows ``**`` and for files that do not exist yet (a create, a rename's
destination). Operators extend it (``writ serve --deny-glob``); they cannot shrink it.

Matching is deliberately looser than the filesystem, so a trick spelling still matches:
both sides are NFKC-normalised and case-folded (``.SSH``, fullwidth ``．ｓｓｈ``), and each
path segment loses trailing dots and spaces (``.bashrc.``, ``.env ``), which some
filesystems and tools drop. A broader match only ever denies more.
SECURITY LIMITATION: look-alike letters from other scripts (Cyrillic ``ѕ`` for ``s``) are
different names to the kernel and to the shell, so they are not folded; such a file is not
the one the pattern protects.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from ..core.matchers import glob_regex
from ..core.paths import clean_relpath
from ..errors import InvalidArgument, PathInvalid

# Why each default: writing these runs code later (hooks, shell start-up files, git config
# with core.fsmonitor / core.hooksPath), and reading these leaks credentials.
DEFAULT_DENY_GLOBS = (
    "**/.git/hooks/**", "**/.git/config", "**/.gitconfig",
    "**/.bashrc", "**/.bash_profile", "**/.bash_login", "**/.bash_logout", "**/.profile",
    "**/.zshrc", "**/.zshenv", "**/.zprofile", "**/.zlogin",
    "**/.ssh/**", "**/.gnupg/**", "**/.netrc", "**/.env",
    "**/*.pem", "**/*.key", "**/id_rsa*", "**/id_dsa*", "**/id_ecdsa*", "**/id_ed25519*",
    # The broker's own temporary files while a write streams (_fsops.TEMP_RE): no tool may
    # read another's bytes in flight, replace them, or move them into place.
    "**/.writ-*.part",
)


def fold(text: str) -> str:
    """The comparison form: NFKC, then case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def _fold_path(path: str) -> str:
    segments = []
    for seg in fold(path).split("/"):
        stripped = seg.rstrip(". ")
        segments.append(stripped or seg)
    return "/".join(segments)


def check_glob(pattern: str) -> str:
    """A deny pattern as written by an operator: a clean relative glob.

    Raises:
        InvalidArgument: empty, absolute, with `.`/`..`/empty segments or control characters.
    """
    try:
        clean = clean_relpath(pattern)
    except PathInvalid as exc:
        raise InvalidArgument(f"deny glob {pattern!r}: {exc.details}") from None
    if not clean:
        raise InvalidArgument("deny glob is empty")
    return clean


class DenyList:
    """The default patterns plus the operator's."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.patterns = tuple(dict.fromkeys([*DEFAULT_DENY_GLOBS,
                                             *(check_glob(p) for p in extra)]))
        self._compiled = [(p, glob_regex(fold(p))) for p in self.patterns]

    def match(self, path: str) -> str | None:
        """The first pattern matching the clean relative ``path``, or None."""
        if not path:
            return None  # the workspace root itself
        folded = _fold_path(path)
        for pattern, rx in self._compiled:
            if rx.fullmatch(folded):
                return pattern
        return None

    def reason(self, path: str, pattern: str) -> str:
        return f"{path}: refused by the broker's deny list ({pattern})"
