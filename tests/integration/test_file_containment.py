"""Workspace escapes through the broker's file mediator, from inside a real container.

The token grants READ and LIST on ``demo:reports/**``; ``private/secret.txt`` sits next to
it. Every trick goes through the probe's read/listdir actions, so the request crosses the
real tool socket and the real token check. Each refusal asserts the exact status and message
(from core/paths.py or mediators/files.py) and the exact audit record.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from writ._proto import audit_pb2

from .conftest import RunningBroker, probe

SECRET = "TOP-SECRET-CONTENT\n"
BENIGN = "benign\n"
SYMLINK = "path goes through a symbolic link; links are not followed"


def row(e: audit_pb2.AuditEvent) -> tuple[str, str, str, str, str]:
    return (e.operation, audit_pb2.Decision.Name(e.decision), e.target, e.status, e.reason)


def file_records(broker: RunningBroker, seq: int) -> list[tuple[str, str, str, str, str]]:
    return [row(e) for e in broker.audit_since(seq)
            if e.operation in ("file.read", "file.list")]


@pytest.fixture
def ws(broker: RunningBroker) -> Path:
    return broker.workspace


def read(broker: RunningBroker, token: str, path: str, **args: Any) -> Any:
    return probe(broker, token, "read", path=path, **args)


def denied(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


# -- path syntax: refused before any filesystem call -----------------------------------------
@pytest.mark.parametrize(("path", "message"), [
    ("reports/../private/secret.txt",
     "path 'reports/../private/secret.txt' contains a '..' segment"),
    ("../etc/passwd", "path '../etc/passwd' contains a '..' segment"),
    ("./reports/q3.csv", "path './reports/q3.csv' contains a '.' segment"),
    ("/etc/passwd",
     "absolute path '/etc/passwd' refused: give a path relative to the workspace root"),
    ("reports/q3.csv\x00../../private/secret.txt", "path contains a NUL byte"),
    ("reports/q3\n.csv", "path contains a control character"),
    ("reports//q3.csv", "path 'reports//q3.csv' has an empty segment (doubled or trailing '/')"),
    ("reports/q3.csv/", "path 'reports/q3.csv/' has an empty segment (doubled or trailing '/')"),
    ("reports/Cafe\u0301.csv", "path 'reports/Cafe\u0301.csv' is not in Unicode NFC form"),
], ids=["dotdot-inside", "dotdot-leading", "dot", "absolute", "nul", "control-char",
        "double-slash", "trailing-slash", "not-nfc"])
def test_malformed_path_is_refused_before_the_filesystem(broker: RunningBroker,
                                                        probe_token: str, path: str,
                                                        message: str) -> None:
    seq = broker.last_seq()
    assert read(broker, probe_token, path) == denied("INVALID_ARGUMENT", message)
    # The record names the request as given (no workspace was named in it).
    assert file_records(broker, seq) == [
        ("file.read", "DENY", f":{path}", "INVALID_ARGUMENT", message)]


@pytest.mark.parametrize(("path", "message"), [
    ("reports/", "path 'reports/' has an empty segment (doubled or trailing '/')"),
    ("reports/..", "path 'reports/..' contains a '..' segment"),
    ("/", "absolute path '/' refused: give a path relative to the workspace root"),
], ids=["trailing-slash", "dotdot", "absolute-root"])
def test_malformed_listing_path_is_refused(broker: RunningBroker, probe_token: str, path: str,
                                           message: str) -> None:
    seq = broker.last_seq()
    assert probe(broker, probe_token, "listdir", path=path) == denied("INVALID_ARGUMENT",
                                                                      message)
    assert file_records(broker, seq) == [
        ("file.list", "DENY", f":{path}", "INVALID_ARGUMENT", message)]


# -- links and special files inside the granted folder ---------------------------------------
def _assert_symlink_denied(broker: RunningBroker, token: str, path: str) -> None:
    seq = broker.last_seq()
    message = f"{path}: {SYMLINK}"
    assert read(broker, token, path) == denied("PERMISSION_DENIED", message)
    assert file_records(broker, seq) == [
        ("file.read", "DENY", f"demo:{path}", "PERMISSION_DENIED", message)]


def test_symlink_to_a_private_file_is_denied(broker: RunningBroker, probe_token: str,
                                             ws: Path) -> None:
    (ws / "reports/ln-secret.txt").symlink_to("../private/secret.txt")
    _assert_symlink_denied(broker, probe_token, "reports/ln-secret.txt")


def test_symlink_to_a_host_file_is_denied(broker: RunningBroker, probe_token: str,
                                          ws: Path) -> None:
    (ws / "reports/ln-passwd").symlink_to("/etc/passwd")
    _assert_symlink_denied(broker, probe_token, "reports/ln-passwd")


def test_symlink_within_the_granted_folder_is_denied_too(broker: RunningBroker,
                                                         probe_token: str, ws: Path) -> None:
    # Links are refused wholesale, not judged by where they point.
    (ws / "reports/ln-q3.csv").symlink_to("q3.csv")
    _assert_symlink_denied(broker, probe_token, "reports/ln-q3.csv")


def test_symlinked_directory_component_is_denied(broker: RunningBroker, probe_token: str,
                                                 ws: Path) -> None:
    (ws / "reports/ln-dir").symlink_to("../private")
    _assert_symlink_denied(broker, probe_token, "reports/ln-dir/secret.txt")
    seq = broker.last_seq()
    message = f"reports/ln-dir: {SYMLINK}"
    assert probe(broker, probe_token, "listdir", path="reports/ln-dir") == denied(
        "PERMISSION_DENIED", message)
    assert file_records(broker, seq) == [
        ("file.list", "DENY", "demo:reports/ln-dir", "PERMISSION_DENIED", message)]


def test_fifo_is_not_read(broker: RunningBroker, probe_token: str, ws: Path) -> None:
    os.mkfifo(ws / "reports/fifo-1")
    seq = broker.last_seq()
    message = "reports/fifo-1: not a regular file (FIFO, device or socket)"
    # Answered at once: the broker opens without blocking on a FIFO with no writer.
    assert read(broker, probe_token, "reports/fifo-1") == denied("PERMISSION_DENIED", message)
    assert file_records(broker, seq) == [
        ("file.read", "DENY", "demo:reports/fifo-1", "PERMISSION_DENIED", message)]


def test_unix_socket_file_is_not_read(broker: RunningBroker, probe_token: str,
                                      ws: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(ws / "reports/sock-1"))
        seq = broker.last_seq()
        message = "reports/sock-1: not a regular file (FIFO, device or socket)"
        assert read(broker, probe_token, "reports/sock-1") == denied("PERMISSION_DENIED",
                                                                     message)
        assert file_records(broker, seq) == [
            ("file.read", "DENY", "demo:reports/sock-1", "PERMISSION_DENIED", message)]
    finally:
        sock.close()


def test_hard_link_to_a_private_file_is_denied(broker: RunningBroker, probe_token: str,
                                               ws: Path) -> None:
    os.link(ws / "private/secret.txt", ws / "reports/hl-secret.txt")
    try:
        seq = broker.last_seq()
        message = ("reports/hl-secret.txt: has 2 hard links; refused because a link may "
                   "alias a file outside the workspace")
        assert read(broker, probe_token, "reports/hl-secret.txt") == denied(
            "PERMISSION_DENIED", message)
        assert file_records(broker, seq) == [
            ("file.read", "DENY", "demo:reports/hl-secret.txt", "PERMISSION_DENIED", message)]
    finally:
        os.unlink(ws / "reports/hl-secret.txt")


# -- ordinary refusals -----------------------------------------------------------------------
def test_reading_a_directory_is_invalid(broker: RunningBroker, probe_token: str,
                                        ws: Path) -> None:
    (ws / "reports/dir-1").mkdir()
    seq = broker.last_seq()
    message = "reports/dir-1: is a directory; use ListDir"
    assert read(broker, probe_token, "reports/dir-1") == denied("INVALID_ARGUMENT", message)
    assert file_records(broker, seq) == [
        ("file.read", "DENY", "demo:reports/dir-1", "INVALID_ARGUMENT", message)]


def test_reading_a_missing_file_is_not_found(broker: RunningBroker, probe_token: str) -> None:
    seq = broker.last_seq()
    message = "reports/nope-1.csv: no such file or directory"
    assert read(broker, probe_token, "reports/nope-1.csv") == denied("NOT_FOUND", message)
    assert file_records(broker, seq) == [
        ("file.read", "DENY", "demo:reports/nope-1.csv", "NOT_FOUND", message)]


def test_file_below_a_regular_file_is_invalid(broker: RunningBroker, probe_token: str) -> None:
    seq = broker.last_seq()
    message = "reports/q3.csv/x: a path component is not a directory"
    assert read(broker, probe_token, "reports/q3.csv/x") == denied("INVALID_ARGUMENT", message)
    assert file_records(broker, seq) == [
        ("file.read", "DENY", "demo:reports/q3.csv/x", "INVALID_ARGUMENT", message)]


def test_workspace_not_in_the_grant_is_denied(broker: RunningBroker, probe_token: str) -> None:
    seq = broker.last_seq()
    message = "grant has no rule allowing READ elsewhere:reports/q3.csv"
    assert read(broker, probe_token, "reports/q3.csv", workspace="elsewhere") == denied(
        "PERMISSION_DENIED", message)
    assert file_records(broker, seq) == [
        ("file.read", "DENY", "elsewhere:reports/q3.csv", "PERMISSION_DENIED", message)]


# -- listing ---------------------------------------------------------------------------------
def test_listing_the_granted_folder_works(broker: RunningBroker, probe_token: str,
                                          ws: Path) -> None:
    folder = ws / "reports/listing-1"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "b.csv").write_text("b")
    (folder / "ln").symlink_to("../../private")
    seq = broker.last_seq()
    assert probe(broker, probe_token, "listdir", path="reports/listing-1") == {
        "entries": [["a.txt", "file"], ["b.csv", "file"], ["ln", "symlink"], ["sub", "dir"]]}
    assert file_records(broker, seq) == [
        ("file.list", "ALLOW", "demo:reports/listing-1", "OK",
         "LIST demo:reports/listing-1 allowed by reports")]


@pytest.mark.parametrize(("path", "shown"), [("", "."), ("private", "private")],
                         ids=["root", "private"])
def test_listing_outside_the_granted_folder_is_denied(broker: RunningBroker, probe_token: str,
                                                      path: str, shown: str) -> None:
    seq = broker.last_seq()
    message = f"grant has no rule allowing LIST demo:{shown}"
    assert probe(broker, probe_token, "listdir", path=path) == denied("PERMISSION_DENIED",
                                                                      message)
    assert file_records(broker, seq) == [
        ("file.list", "DENY", f"demo:{path}", "PERMISSION_DENIED", message)]


# -- races -----------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a: Path, b: Path) -> None:
    """Atomically swap two names (renameat2 RENAME_EXCHANGE): each always exists."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                       _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a))


class Swapper:
    """Swaps two names as fast as it can on a thread, while the probe reads."""

    def __init__(self, a: Path, b: Path) -> None:
        self.a, self.b = a, b
        self.swaps = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                exchange(self.a, self.b)
                self.swaps += 1
                if self.swaps % 64 == 0:
                    time.sleep(0)  # let the broker's threads in
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread by __exit__
            self.error = exc

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise self.error


def _race(broker: RunningBroker, token: str, swapping: tuple[Path, Path], path: str,
          seconds: float) -> tuple[dict[str, int], int, Counter[tuple[str, ...]]]:
    seq = broker.last_seq()
    with Swapper(*swapping) as swapper:
        seen = probe(broker, token, "read_loop", path=path, seconds=seconds)
    reads = Counter(
        (audit_pb2.Decision.Name(e.decision), e.status, e.reason, str(e.bytes))
        for e in broker.audit_since(seq) if e.operation == "file.read")
    return seen, swapper.swaps, reads


def test_directory_swapped_for_a_symlink_mid_read_never_leaks(broker: RunningBroker,
                                                              probe_token: str,
                                                              ws: Path) -> None:
    # reports/swap is, at any instant, either a real folder holding a benign secret.txt or
    # a symlink to private/ (which holds the real one).
    (ws / "reports/swap").mkdir()
    (ws / "reports/swap/secret.txt").write_text(BENIGN)
    (ws / "reports/swap-alt").symlink_to("../private")
    path = "reports/swap/secret.txt"
    seen, swaps, reads = _race(broker, probe_token, (ws / "reports/swap",
                                                     ws / "reports/swap-alt"), path, 2.5)
    assert not any(SECRET.strip() in outcome for outcome in seen), seen
    assert set(seen) == {f"text:{BENIGN}", "code:PERMISSION_DENIED"}, seen
    assert swaps >= 1000, swaps
    # One record per attempt: the benign bytes, or the symlink refusal naming the full path.
    assert reads == {
        ("ALLOW", "OK", f"READ demo:{path} allowed by reports", str(len(BENIGN))):
            seen[f"text:{BENIGN}"],
        ("DENY", "PERMISSION_DENIED", f"{path}: {SYMLINK}", "0"):
            seen["code:PERMISSION_DENIED"],
    }


def test_file_swapped_for_a_symlink_mid_read_never_leaks(broker: RunningBroker,
                                                         probe_token: str, ws: Path) -> None:
    (ws / "reports/swapf.txt").write_text(BENIGN)
    (ws / "reports/swapf-alt.txt").symlink_to("../private/secret.txt")
    path = "reports/swapf.txt"
    seen, swaps, reads = _race(broker, probe_token, (ws / "reports/swapf.txt",
                                                     ws / "reports/swapf-alt.txt"), path, 1.5)
    assert not any(SECRET.strip() in outcome for outcome in seen), seen
    assert set(seen) == {f"text:{BENIGN}", "code:PERMISSION_DENIED"}, seen
    assert swaps >= 1000, swaps
    assert reads == {
        ("ALLOW", "OK", f"READ demo:{path} allowed by reports", str(len(BENIGN))):
            seen[f"text:{BENIGN}"],
        ("DENY", "PERMISSION_DENIED", f"{path}: {SYMLINK}", "0"):
            seen["code:PERMISSION_DENIED"],
    }


@pytest.fixture(autouse=True)
def _secret_untouched(ws: Path) -> Iterator[None]:
    yield
    assert (ws / "private/secret.txt").read_text() == SECRET
    assert os.stat(ws / "private/secret.txt").st_nlink == 1
