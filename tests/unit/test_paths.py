"""clean_relpath: bad paths are refused with an exact message, good ones come back unchanged."""

from __future__ import annotations

import pytest
from writ.core.paths import MAX_NAME_BYTES, MAX_PATH_BYTES, clean_relpath
from writ.errors import PathInvalid

LONG_NAME = "x" * (MAX_NAME_BYTES + 1)
LONG_UTF8_NAME = "é" * 128          # 128 characters, 256 bytes
LONG_PATH = "a/" * 2048 + "a"      # 4097 bytes
DECOMPOSED = "e\u0301"             # "é" as e + COMBINING ACUTE ACCENT

BAD = [
    # (id, path, exact message)
    ("nul", "a\x00b", "path contains a NUL byte"),
    ("nul-only", "\x00", "path contains a NUL byte"),
    ("nul-before-absolute", "/etc\x00", "path contains a NUL byte"),
    ("newline", "a\nb", "path contains a control character"),
    ("carriage-return", "a\rb", "path contains a control character"),
    ("tab", "a\tb", "path contains a control character"),
    ("escape", "\x1b[31m", "path contains a control character"),
    ("unit-separator", "a\x1fb", "path contains a control character"),
    ("delete", "a\x7fb", "path contains a control character"),
    ("control-before-absolute", "/a\n", "path contains a control character"),
    ("absolute", "/etc/passwd", ("absolute path '/etc/passwd' refused: give a path relative "
     "to the workspace root")),
    ("root-slash", "/", "absolute path '/' refused: give a path relative to the workspace root"),
    ("double-slash-absolute", "//a", ("absolute path '//a' refused: give a path relative to "
     "the workspace root")),
    ("dotdot", "..", "path '..' contains a '..' segment"),
    ("dotdot-first", "../x", "path '../x' contains a '..' segment"),
    ("dotdot-middle", "a/../b", "path 'a/../b' contains a '..' segment"),
    ("dotdot-last", "a/..", "path 'a/..' contains a '..' segment"),
    ("dotdot-escape-deep", "reports/../../etc/passwd",
     "path 'reports/../../etc/passwd' contains a '..' segment"),
    ("dot-first", "./a", "path './a' contains a '.' segment"),
    ("dot-middle", "a/./b", "path 'a/./b' contains a '.' segment"),
    ("dot-last", "a/.", "path 'a/.' contains a '.' segment"),
    ("double-slash", "a//b", "path 'a//b' has an empty segment (doubled or trailing '/')"),
    ("trailing-slash", "a/", "path 'a/' has an empty segment (doubled or trailing '/')"),
    ("trailing-slash-deep", "reports/2024/",
     "path 'reports/2024/' has an empty segment (doubled or trailing '/')"),
    ("empty-before-dotdot", "a//..", ("path 'a//..' has an empty segment (doubled or trailing "
     "'/')")),
    ("name-too-long", LONG_NAME, f"a name in {LONG_NAME!r} is longer than 255 bytes"),
    ("name-too-long-nested", f"a/{LONG_NAME}/b",
     f"a name in {'a/' + LONG_NAME + '/b'!r} is longer than 255 bytes"),
    ("name-too-long-in-utf8-bytes", LONG_UTF8_NAME,
     f"a name in {LONG_UTF8_NAME!r} is longer than 255 bytes"),
    ("path-too-long", LONG_PATH, "path is longer than 4096 bytes"),
    ("path-too-long-in-utf8-bytes", "é" * 2049, "path is longer than 4096 bytes"),
    ("path-too-long-absolute", "/" + "a" * 4096, "path is longer than 4096 bytes"),
    ("not-nfc", DECOMPOSED, f"path {DECOMPOSED!r} is not in Unicode NFC form"),
    ("not-nfc-nested", f"reports/caf{DECOMPOSED}.csv",
     f"path {'reports/caf' + DECOMPOSED + '.csv'!r} is not in Unicode NFC form"),
    ("not-nfc-angstrom-sign", "\u212b", "path '\u212b' is not in Unicode NFC form"),
]

GOOD = [
    "a",
    "a/b",
    "reports/q3.csv",
    "reports/2024/q4/summary.md",
    ".hidden",
    "a/.hidden",
    "...",
    "..a",
    "a..",
    "a..b",
    ".a.",
    "with space",
    " leading-and-trailing-space ",
    "back\\slash",
    "caf\u00e9",                       # NFC é
    "\u65e5\u672c\u8a9e/\u6587\u66f8.txt",
    "\U0001f600.txt",
    "-rf",
    "~",
    "~/x",
    "*",
    "x" * MAX_NAME_BYTES,
    "é" * 127,                         # 254 bytes
    "/".join(["x" * 255] * 16),        # 4095 bytes
    "a/" * 2047 + "ab",                # exactly 4096 bytes
]


@pytest.mark.parametrize(("path", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_path_refused_with_exact_message(path: str, message: str) -> None:
    with pytest.raises(PathInvalid) as info:
        clean_relpath(path)
    assert str(info.value) == info.value.details == message
    assert info.value.code == "INVALID_ARGUMENT"


@pytest.mark.parametrize("path", GOOD, ids=[repr(p)[:40] for p in GOOD])
def test_good_path_returned_unchanged(path: str) -> None:
    assert clean_relpath(path) == path


@pytest.mark.parametrize("root", ["", "."])
def test_root_spellings_become_empty(root: str) -> None:
    assert clean_relpath(root) == ""


def test_length_boundaries_are_what_the_table_says() -> None:
    assert len(GOOD[-1].encode()) == MAX_PATH_BYTES
    assert len(GOOD[-2].encode()) == MAX_PATH_BYTES - 1
    assert len(LONG_PATH.encode()) == MAX_PATH_BYTES + 1
    assert len(LONG_UTF8_NAME) == 128 and len(LONG_UTF8_NAME.encode()) == 256
