"""Mediated file changes (write, create, mkdir, delete, rename, stat, descriptors) from
inside a real container, against a real broker.

The token grants everything on ``demo:out/**`` (plus reads of ``reports/**``);
``private/secret.txt`` sits next to it. To keep containers few, most tests run one probe
invocation that performs a list of operations (``fs_ops``) and then match each outcome
with its audit record: every operation, allowed or denied, leaves exactly one.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from writ._proto import audit_pb2, tool_pb2

from .conftest import PROBE_IMAGE, RunningBroker, make_workspace, wait_for
from .test_file_containment import SECRET, SYMLINK, Swapper

ALL_OPS = ["READ", "LIST", "STAT", "WRITE", "CREATE", "DELETE", "MKDIR", "RENAME"]
WRITER = "probe-writer"
MAX_WRITE = 8 << 20
WRITER_MANIFEST: dict[str, Any] = {
    "name": WRITER, "image": PROBE_IMAGE, "description": "attack probe with write ops (tests)",
    "files": [{"paths": ["**"], "ops": ALL_OPS}],
    "limits": {"memory_mb": 128, "cpus": 0.5, "pids": 64, "timeout_s": 30, "tmp_mb": 8},
}
GRANT: dict[str, Any] = {
    "tools": [{"name": WRITER}],
    "files": [{"id": "out", "workspace": "demo", "paths": ["out/**"], "ops": ALL_OPS},
              {"id": "reports", "workspace": "demo", "paths": ["reports/**"],
               "ops": ["READ", "LIST", "STAT"]}],
}
FILE_OPS = ("file.read", "file.list", "file.stat", "file.write", "file.create", "file.mkdir",
            "file.delete", "file.rename")
Row = tuple[str, str, str, str, str, int]


def writer_broker(root: Path, docker_client: Any, **config: Any) -> RunningBroker:
    """A broker on a fresh workspace (with an empty out/) serving the writer probe."""
    ws = make_workspace(Path(os.path.realpath(root)))
    (ws / "out").mkdir()
    rb = RunningBroker(ws.parent / "state", ws, docker_client, **config)
    rb.register(WRITER_MANIFEST)
    return rb


@pytest.fixture(scope="module")
def wb(tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
       probe_image: str) -> Iterator[RunningBroker]:
    rb = writer_broker(tmp_path_factory.mktemp("w"), docker_client,
                       deny_globs=["**/secrets/**"], max_write_bytes=MAX_WRITE)
    yield rb
    rb.stop()


@pytest.fixture(scope="module")
def token(wb: RunningBroker) -> str:
    return wb.mint(GRANT)


@pytest.fixture
def ws(wb: RunningBroker) -> Path:
    return wb.workspace


@pytest.fixture(autouse=True)
def _secret_untouched(wb: RunningBroker) -> Iterator[None]:
    yield
    private = wb.workspace / "private"
    assert sorted(os.listdir(private)) == ["secret.txt"]
    assert (private / "secret.txt").read_text() == SECRET
    assert os.stat(private / "secret.txt").st_nlink == 1


def record(e: audit_pb2.AuditEvent) -> Row:
    return (e.operation, audit_pb2.Decision.Name(e.decision), e.target, e.status, e.reason,
            e.bytes)


def invoke(wb: RunningBroker, token: str, action: str, rows: int = 0,
           **args: Any) -> tuple[Any, list[Row]]:
    """Run the probe; return its result and the file records of that invocation (waiting
    for ``rows`` of them: a stream the transport ended is recorded a moment later)."""
    seq = wb.last_seq()
    out = wb.agent.invoke(WRITER, {"action": action, **args}, token)
    assert out.ok, f"probe failed: {out.error_code}: {out.error_message}\n{out.output!r}"

    def records() -> list[Row]:
        return [record(e) for e in wb.audit_since(seq)
                if e.operation in FILE_OPS and e.invocation_id == out.invocation_id]

    wait_for(lambda: len(records()) >= rows, timeout=10)
    return out.result["result"], records()


def ops(wb: RunningBroker, token: str, *specs: dict[str, Any],
        pipe: bool = True) -> list[tuple[Any, Row]]:
    """Each operation's outcome beside its one audit record."""
    outcomes, rows = invoke(wb, token, "fs_ops", ops=list(specs), pipe=pipe)
    assert len(rows) == len(outcomes), rows
    return list(zip(outcomes, rows, strict=True))


def ok(value: Any = None) -> dict[str, Any]:
    return {"ok": value}


def err(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def allow(op: str, target: str, reason: str, nbytes: int = 0) -> Row:
    return (op, "ALLOW", target, "OK", reason, nbytes)


def refuse(op: str, target: str, code: str, message: str) -> Row:
    return (op, "DENY", target, code, message, 0)


def leftovers(folder: Path) -> list[str]:
    """Temporary files a write could have left behind (there must be none)."""
    return [p.name for p in folder.rglob("*") if ".writ-" in p.name]


# -- the operations work ---------------------------------------------------------------------
VIA = pytest.mark.parametrize("pipe", [True, False], ids=["pipe", "messages"])


@VIA
def test_write_create_replace_stat_read_back(wb: RunningBroker, token: str, ws: Path,
                                             pipe: bool) -> None:
    if (ws / "out/f1").exists():
        shutil.rmtree(ws / "out/f1")
    (ws / "out/f1").mkdir()
    got = ops(wb, token, *(
              {"op": "create", "path": "out/f1/a.txt", "data": "alpha"},
              {"op": "create", "path": "out/f1/a.txt", "data": "again"},
              {"op": "write", "path": "out/f1/a.txt", "data": "alpha-2"},
              {"op": "replace", "path": "out/f1/b.txt", "data": "x"},
              {"op": "write", "path": "out/f1/b.txt", "data": "bee"},
              {"op": "stat", "path": "out/f1/a.txt"},
              {"op": "read", "path": "out/f1/a.txt"},
              {"op": "open", "path": "out/f1/b.txt"}), pipe=pipe)
    assert got == [
        (ok(5), allow("file.create", "demo:out/f1/a.txt", "CREATE demo:out/f1/a.txt allowed by out", 5)),
        (err("ALREADY_EXISTS", "out/f1/a.txt: already exists"),
         refuse("file.create", "demo:out/f1/a.txt", "ALREADY_EXISTS", "out/f1/a.txt: already exists")),
        (ok(7), allow("file.write", "demo:out/f1/a.txt", "WRITE demo:out/f1/a.txt allowed by out", 7)),
        (err("NOT_FOUND", "out/f1/b.txt: no such file or directory"),
         refuse("file.write", "demo:out/f1/b.txt", "NOT_FOUND", "out/f1/b.txt: no such file or directory")),
        (ok(3), allow("file.create", "demo:out/f1/b.txt", "CREATE demo:out/f1/b.txt allowed by out", 3)),
        (ok(["file", 7]), allow("file.stat", "demo:out/f1/a.txt", "STAT demo:out/f1/a.txt allowed by out")),
        (ok("alpha-2"), allow("file.read", "demo:out/f1/a.txt", "READ demo:out/f1/a.txt allowed by out", 7)),
        (ok("bee"), allow("file.read", "demo:out/f1/b.txt", "READ demo:out/f1/b.txt allowed by out", 3)),
    ]
    assert (ws / "out/f1/a.txt").read_text() == "alpha-2"
    assert sorted(os.listdir(ws / "out/f1")) == ["a.txt", "b.txt"]


def test_mkdir_delete_rename(wb: RunningBroker, token: str, ws: Path) -> None:
    got = ops(wb, token,
              {"op": "mkdir", "path": "out/m1"},
              {"op": "mkdir", "path": "out/m1"},
              {"op": "create", "path": "out/m1/a.txt", "data": "a"},
              {"op": "create", "path": "out/m1/b.txt", "data": "b"},
              {"op": "delete", "path": "out/m1"},
              {"op": "rename", "path": "out/m1/a.txt", "to": "out/m1/b.txt"},
              {"op": "rename", "path": "out/m1/a.txt", "to": "out/m1/b.txt", "replace": True},
              {"op": "rename", "path": "out/m1/b.txt", "to": "out/m1/b.txt"},
              {"op": "rename", "path": "out/m1/b.txt", "to": "reports/b.txt"},
              {"op": "rename", "path": "out/m1", "to": "out/m2"},
              {"op": "delete", "path": "out/m1/b.txt"},
              {"op": "delete", "path": "out/m1"},
              {"op": "delete", "path": "out/m1"})
    reason = "RENAME demo:out/m1/a.txt allowed by out; RENAME demo:out/m1/b.txt allowed by out"
    assert got == [
        (ok(), allow("file.mkdir", "demo:out/m1", "MKDIR demo:out/m1 allowed by out")),
        (err("ALREADY_EXISTS", "out/m1: already exists"),
         refuse("file.mkdir", "demo:out/m1", "ALREADY_EXISTS", "out/m1: already exists")),
        (ok(1), allow("file.create", "demo:out/m1/a.txt",
                      "CREATE demo:out/m1/a.txt allowed by out", 1)),
        (ok(1), allow("file.create", "demo:out/m1/b.txt",
                      "CREATE demo:out/m1/b.txt allowed by out", 1)),
        (err("FAILED_PRECONDITION", "out/m1: directory is not empty"),
         refuse("file.delete", "demo:out/m1", "FAILED_PRECONDITION",
                "out/m1: directory is not empty")),
        (err("ALREADY_EXISTS", "out/m1/b.txt: already exists"),
         refuse("file.rename", "demo:out/m1/a.txt -> demo:out/m1/b.txt", "ALREADY_EXISTS",
                "out/m1/b.txt: already exists")),
        (ok(), allow("file.rename", "demo:out/m1/a.txt -> demo:out/m1/b.txt", reason)),
        (err("INVALID_ARGUMENT", "out/m1/b.txt: source and destination are the same"),
         refuse("file.rename", "demo:out/m1/b.txt -> demo:out/m1/b.txt", "INVALID_ARGUMENT",
                "out/m1/b.txt: source and destination are the same")),
        # Both ends must be allowed: reports/** is read-only.
        (err("PERMISSION_DENIED", "grant has no rule allowing RENAME demo:reports/b.txt"),
         refuse("file.rename", "demo:out/m1/b.txt -> demo:reports/b.txt", "PERMISSION_DENIED",
                "grant has no rule allowing RENAME demo:reports/b.txt")),
        # Directories are not moved: everything beneath would change path unchecked.
        (err("INVALID_ARGUMENT", "out/m1: is a directory"),
         refuse("file.rename", "demo:out/m1 -> demo:out/m2", "INVALID_ARGUMENT",
                "out/m1: is a directory")),
        (ok(), allow("file.delete", "demo:out/m1/b.txt", "DELETE demo:out/m1/b.txt allowed by out")),
        (ok(), allow("file.delete", "demo:out/m1", "DELETE demo:out/m1 allowed by out")),
        (err("NOT_FOUND", "out/m1: no such file or directory"),
         refuse("file.delete", "demo:out/m1", "NOT_FOUND", "out/m1: no such file or directory")),
    ]
    assert not (ws / "out/m1").exists() and not (ws / "reports/b.txt").exists()


def test_writes_outside_the_grant_and_to_odd_targets_are_refused(
        wb: RunningBroker, token: str, ws: Path) -> None:
    (ws / "out/d1").mkdir()
    got = ops(wb, token,
              {"op": "write", "path": "reports/q3.csv", "data": "pwned"},
              {"op": "write", "path": "private/new.txt", "data": "x"},
              {"op": "write", "path": "", "data": "x"},
              {"op": "write", "path": "out/d1", "data": "x"},
              {"op": "write", "path": "out/nodir/x.txt", "data": "x"},
              {"op": "read", "path": "out/d1"},
              {"op": "mkdir", "path": "out/nodir/sub"},
              {"op": "delete", "path": "reports/q3.csv"},
              {"op": "stat", "path": "private/secret.txt"})
    assert got == [
        (err("PERMISSION_DENIED", "grant has no rule allowing WRITE demo:reports/q3.csv"),
         refuse("file.write", "demo:reports/q3.csv", "PERMISSION_DENIED",
                "grant has no rule allowing WRITE demo:reports/q3.csv")),
        (err("PERMISSION_DENIED", "grant has no rule allowing WRITE demo:private/new.txt"),
         refuse("file.write", "demo:private/new.txt", "PERMISSION_DENIED",
                "grant has no rule allowing WRITE demo:private/new.txt")),
        (err("PERMISSION_DENIED", "grant has no rule allowing WRITE demo:."),
         refuse("file.write", "demo:", "PERMISSION_DENIED",
                "grant has no rule allowing WRITE demo:.")),
        (err("INVALID_ARGUMENT", "out/d1: is a directory"),
         refuse("file.write", "demo:out/d1", "INVALID_ARGUMENT", "out/d1: is a directory")),
        (err("NOT_FOUND", "out/nodir: no such file or directory"),
         refuse("file.write", "demo:out/nodir/x.txt", "NOT_FOUND",
                "out/nodir: no such file or directory")),
        (err("INVALID_ARGUMENT", "out/d1: is a directory; use ListDir"),
         refuse("file.read", "demo:out/d1", "INVALID_ARGUMENT",
                "out/d1: is a directory; use ListDir")),
        (err("NOT_FOUND", "out/nodir: no such file or directory"),
         refuse("file.mkdir", "demo:out/nodir/sub", "NOT_FOUND",
                "out/nodir: no such file or directory")),
        (err("PERMISSION_DENIED", "grant has no rule allowing DELETE demo:reports/q3.csv"),
         refuse("file.delete", "demo:reports/q3.csv", "PERMISSION_DENIED",
                "grant has no rule allowing DELETE demo:reports/q3.csv")),
        (err("PERMISSION_DENIED", "grant has no rule allowing STAT demo:private/secret.txt"),
         refuse("file.stat", "demo:private/secret.txt", "PERMISSION_DENIED",
                "grant has no rule allowing STAT demo:private/secret.txt")),
    ]
    assert (ws / "reports/q3.csv").read_text() == "region,revenue\nnorth,1\n"
    assert not (ws / "private/new.txt").exists() and not (ws / "out/nodir").exists()


# -- bad paths: refused before the filesystem ------------------------------------------------
LONG_NAME = "n" * 256
LONG_PATH = "out/" + "/".join(["d" * 200] * 21)
SYNTAX = [
    ("out/../private/secret.txt", "path 'out/../private/secret.txt' contains a '..' segment"),
    ("/etc/passwd",
     "absolute path '/etc/passwd' refused: give a path relative to the workspace root"),
    ("out/a\x00b.txt", "path contains a NUL byte"),
    (f"out/{LONG_NAME}", f"a name in 'out/{LONG_NAME}' is longer than 255 bytes"),
    (LONG_PATH, "path is longer than 4096 bytes"),
    ("out/Cafe\u0301.txt", "path 'out/Cafe\u0301.txt' is not in Unicode NFC form"),
    ("out/x.txt/", "path 'out/x.txt/' has an empty segment (doubled or trailing '/')"),
    ("out/.", "path 'out/.' contains a '.' segment"),
]


@pytest.mark.parametrize("op", ["write", "create", "mkdir", "delete", "stat"])
def test_malformed_paths_are_refused_for_every_operation(wb: RunningBroker, token: str,
                                                         op: str) -> None:
    got = ops(wb, token, *({"op": op, "path": p, "data": "x"} for p, _ in SYNTAX))
    operation = {"write": "file.write", "create": "file.create", "mkdir": "file.mkdir",
                 "delete": "file.delete", "stat": "file.stat"}[op]
    assert got == [(err("INVALID_ARGUMENT", m),
                    refuse(operation, f":{p}", "INVALID_ARGUMENT", m)) for p, m in SYNTAX]


def test_malformed_rename_destination_is_refused(wb: RunningBroker, token: str,
                                                 ws: Path) -> None:
    (ws / "out/r0.txt").write_text("r0")
    got = ops(wb, token, *({"op": "rename", "path": "out/r0.txt", "to": p} for p, _ in SYNTAX))
    assert got == [(err("INVALID_ARGUMENT", m),
                    refuse("file.rename", f"demo:out/r0.txt -> {p}", "INVALID_ARGUMENT", m))
                   for p, m in SYNTAX]
    assert (ws / "out/r0.txt").read_text() == "r0"


def _b64(msg: Any) -> str:
    data = msg if isinstance(msg, bytes) else msg.SerializeToString()
    return base64.b64encode(data).decode()


# A StatRequest / WriteFileRequest whose path (field 2) holds bytes that are not UTF-8.
BAD_UTF8 = b"\x12\x06out/\xff\xfe"


def test_invalid_utf8_is_invalid_argument_and_audited(wb: RunningBroker, token: str) -> None:
    message = ("malformed request: not a valid writ.v1.{} (bad encoding, or invalid UTF-8 "
               "in a string field)")
    outcomes = []
    rows: list[Row] = []
    first = tool_pb2.WriteFileRequest(path="out/u.txt", mode=3).SerializeToString()
    for method, stream, messages in [
            ("Stat", False, [BAD_UTF8]),
            ("ListDir", False, [BAD_UTF8]),
            ("WriteFile", True, [BAD_UTF8 + b"\x18\x03"]),   # the first message, mode 3
            ("WriteFile", True, [first, BAD_UTF8])]:        # a later message
        got, records = invoke(wb, token, "raw_call", method=f"/writ.v1.ToolBroker/{method}",
                              stream=stream, messages=[_b64(m) for m in messages])
        outcomes.append(got)
        rows += records
    kinds = ["StatRequest", "ListDirRequest", "WriteFileRequest", "WriteFileRequest"]
    assert outcomes == [err("INVALID_ARGUMENT", message.format(k)) for k in kinds]
    assert rows == [
        refuse("file.stat", "", "INVALID_ARGUMENT", message.format("StatRequest")),
        refuse("file.list", "", "INVALID_ARGUMENT", message.format("ListDirRequest")),
        refuse("file.write", ":", "INVALID_ARGUMENT", message.format("WriteFileRequest")),
        refuse("file.create", "demo:out/u.txt", "INVALID_ARGUMENT",
               message.format("WriteFileRequest")),
    ]
    assert not (wb.workspace / "out/u.txt").exists()


# -- the deny list: before any grant, for files that do not exist, whatever the spelling -----
DENIED = [
    ("out/.git/hooks/pre-commit", "**/.git/hooks/**"),
    ("out/.Git/HOOKS/post-checkout", "**/.git/hooks/**"),
    ("out/.git/config", "**/.git/config"),
    ("out/.ssh/authorized_keys", "**/.ssh/**"),
    ("out/.SSH", "**/.ssh/**"),
    ("out/\uff0essh/authorized_keys", "**/.ssh/**"),      # fullwidth full stop
    ("out/.bashrc", "**/.bashrc"),
    ("out/.bashrc.", "**/.bashrc"),                      # trailing dot
    ("out/.Profile", "**/.profile"),
    ("out/.zshrc", "**/.zshrc"),
    ("out/.env ", "**/.env"),                            # trailing space
    ("out/server.PEM", "**/*.pem"),
    ("out/tls/site.key", "**/*.key"),
    ("out/ID_RSA.pub", "**/id_rsa*"),
    ("out/secrets/token.txt", "**/secrets/**"),          # the operator's --deny-glob
]


def test_deny_list_refuses_writes_even_where_the_grant_allows(wb: RunningBroker,
                                                              token: str, ws: Path) -> None:
    got = ops(wb, token, *({"op": "write", "path": p, "data": "echo pwned"} for p, _ in DENIED),
              {"op": "mkdir", "path": "out/.git/hooks"},
              {"op": "rename", "path": "out/hook.sh", "to": "out/.git/hooks/pre-push"})
    expected = [(p, pat, "file.write", f"demo:{p}") for p, pat in DENIED] + [
        ("out/.git/hooks", "**/.git/hooks/**", "file.mkdir", "demo:out/.git/hooks"),
        ("out/.git/hooks/pre-push", "**/.git/hooks/**", "file.rename",
         "demo:out/hook.sh -> demo:out/.git/hooks/pre-push")]
    assert got == [
        (err("PERMISSION_DENIED", f"{p}: refused by the broker's deny list ({pat})"),
         refuse(op, target, "PERMISSION_DENIED",
                f"{p}: refused by the broker's deny list ({pat})"))
        for p, pat, op, target in expected]
    assert not set(os.listdir(ws / "out")) & {".git", ".Git", ".ssh", ".SSH", ".bashrc",
                                              ".bashrc.", ".env ", "secrets", "server.PEM"}


def test_deny_list_holds_against_a_grant_of_everything(wb: RunningBroker, ws: Path) -> None:
    (ws / "private/.ssh").mkdir()
    (ws / "private/.ssh/id_rsa").write_text("-----BEGIN KEY-----\n")
    try:
        everything = wb.mint({"tools": [{"name": WRITER}],
                              "files": [{"id": "all", "workspace": "demo", "paths": ["**"],
                                         "ops": ALL_OPS}]})
        got = ops(wb, everything, {"op": "read", "path": "private/.ssh/id_rsa"},
                  {"op": "open", "path": "private/.ssh/id_rsa"},
                  {"op": "list", "path": "private/.ssh"},
                  {"op": "delete", "path": "private/.ssh/id_rsa"})
        message = "private/.ssh/id_rsa: refused by the broker's deny list (**/.ssh/**)"
        assert [g[0] for g in got] == [err("PERMISSION_DENIED", message)] * 2 + [
            err("PERMISSION_DENIED",
                "private/.ssh: refused by the broker's deny list (**/.ssh/**)"),
            err("PERMISSION_DENIED", message)]
        assert [g[1][:4] for g in got] == [
            ("file.read", "DENY", "demo:private/.ssh/id_rsa", "PERMISSION_DENIED"),
            ("file.read", "DENY", "demo:private/.ssh/id_rsa", "PERMISSION_DENIED"),
            ("file.list", "DENY", "demo:private/.ssh", "PERMISSION_DENIED"),
            ("file.delete", "DENY", "demo:private/.ssh/id_rsa", "PERMISSION_DENIED")]
        assert (ws / "private/.ssh/id_rsa").read_text() == "-----BEGIN KEY-----\n"
    finally:
        shutil.rmtree(ws / "private/.ssh")


# -- links and special files -----------------------------------------------------------------
def test_symlinks_hard_links_and_special_files_are_never_written_through(
        wb: RunningBroker, token: str, ws: Path) -> None:
    (ws / "out/ln-dir").symlink_to("../private")
    (ws / "out/ln-file").symlink_to("../private/secret.txt")
    os.link(ws / "private/secret.txt", ws / "out/hl-secret")
    os.mkfifo(ws / "out/fifo")
    os.mknod(ws / "out/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (ws / "out/plain.txt").write_text("plain")
    try:
        got = ops(wb, token,
                  {"op": "write", "path": "out/ln-dir/secret.txt", "data": "pwned"},
                  {"op": "create", "path": "out/ln-dir/new.txt", "data": "pwned"},
                  {"op": "mkdir", "path": "out/ln-dir/sub"},
                  {"op": "delete", "path": "out/ln-dir/secret.txt"},
                  {"op": "rename", "path": "out/ln-dir/secret.txt", "to": "out/stolen.txt"},
                  {"op": "rename", "path": "out/plain.txt", "to": "out/ln-dir/planted.txt"},
                  {"op": "write", "path": "out/ln-file", "data": "pwned"},
                  {"op": "create", "path": "out/ln-file", "data": "pwned"},
                  {"op": "rename", "path": "out/plain.txt", "to": "out/ln-file",
                   "replace": True},
                  {"op": "delete", "path": "out/ln-file"},
                  {"op": "stat", "path": "out/ln-file"},
                  {"op": "write", "path": "out/hl-secret", "data": "pwned"},
                  {"op": "rename", "path": "out/hl-secret", "to": "out/stolen.txt"},
                  {"op": "delete", "path": "out/hl-secret"},
                  {"op": "write", "path": "out/fifo", "data": "x"},
                  {"op": "read", "path": "out/fifo"},
                  {"op": "write", "path": "out/null", "data": "x"},
                  {"op": "read", "path": "out/null"},
                  {"op": "open", "path": "out/null"})
    finally:
        for name in ("ln-dir", "ln-file", "hl-secret", "fifo", "null"):
            (ws / "out" / name).unlink()
    link_dir = f"out/ln-dir: {SYMLINK}"
    hard = ("out/hl-secret: has 2 hard links; refused because a link may alias a file outside "
            "the workspace")
    special = "not a regular file (FIFO, device or socket)"
    expected = [
        ("file.write", "demo:out/ln-dir/secret.txt", "PERMISSION_DENIED", link_dir),
        ("file.create", "demo:out/ln-dir/new.txt", "PERMISSION_DENIED", link_dir),
        ("file.mkdir", "demo:out/ln-dir/sub", "PERMISSION_DENIED", link_dir),
        ("file.delete", "demo:out/ln-dir/secret.txt", "PERMISSION_DENIED", link_dir),
        ("file.rename", "demo:out/ln-dir/secret.txt -> demo:out/stolen.txt",
         "PERMISSION_DENIED", link_dir),
        ("file.rename", "demo:out/plain.txt -> demo:out/ln-dir/planted.txt",
         "PERMISSION_DENIED", link_dir),
        ("file.write", "demo:out/ln-file", "PERMISSION_DENIED", f"out/ln-file: {SYMLINK}"),
        ("file.create", "demo:out/ln-file", "ALREADY_EXISTS", "out/ln-file: already exists"),
        ("file.rename", "demo:out/plain.txt -> demo:out/ln-file", "PERMISSION_DENIED",
         f"out/ln-file: {SYMLINK}"),
        ("file.delete", "demo:out/ln-file", "PERMISSION_DENIED", f"out/ln-file: {SYMLINK}"),
        None,  # stat describes the link itself, never its target
        ("file.write", "demo:out/hl-secret", "PERMISSION_DENIED", hard),
        ("file.rename", "demo:out/hl-secret -> demo:out/stolen.txt", "PERMISSION_DENIED", hard),
        ("file.delete", "demo:out/hl-secret", "PERMISSION_DENIED", hard),
        ("file.write", "demo:out/fifo", "PERMISSION_DENIED", f"out/fifo: {special}"),
        ("file.read", "demo:out/fifo", "PERMISSION_DENIED", f"out/fifo: {special}"),
        ("file.write", "demo:out/null", "PERMISSION_DENIED", f"out/null: {special}"),
        ("file.read", "demo:out/null", "PERMISSION_DENIED", f"out/null: {special}"),
        ("file.read", "demo:out/null", "PERMISSION_DENIED", f"out/null: {special}"),
    ]
    for (outcome, rec), want in zip(got, expected, strict=True):
        if want is None:
            assert outcome == ok(["symlink", 0])
            assert rec == allow("file.stat", "demo:out/ln-file",
                                "STAT demo:out/ln-file allowed by out")
            continue
        op, target, code, message = want
        assert (outcome, rec) == (err(code, message), refuse(op, target, code, message))
    assert (ws / "out/plain.txt").read_text() == "plain"
    assert not (ws / "out/stolen.txt").exists()
    assert leftovers(ws) == []


# -- quotas ----------------------------------------------------------------------------------
def test_write_and_file_budgets_are_enforced_and_leave_nothing_behind(
        wb: RunningBroker, ws: Path) -> None:
    (ws / "out/q").mkdir()
    limited = wb.mint({"tools": [{"name": WRITER}],
                       "files": [{"id": "quota", "workspace": "demo", "paths": ["out/q/**"],
                                  "ops": ALL_OPS, "write_budget_bytes": 3000,
                                  "create_budget_files": 3, "read_budget_bytes": 2500}]})
    got = ops(wb, limited,
              {"op": "create", "path": "out/q/a", "data": "a" * 1000},
              {"op": "create", "path": "out/q/b", "data": "b" * 1000},
              {"op": "write", "path": "out/q/a", "data": "A" * 1001},
              {"op": "mkdir", "path": "out/q/d"},
              {"op": "create", "path": "out/q/c", "data": "c"},
              {"op": "write", "path": "out/q/b", "data": "B" * 999},
              {"op": "open", "path": "out/q/a"},
              {"op": "read", "path": "out/q/b"},
              {"op": "read", "path": "out/q/b"})
    spent = "budget exhausted: quota allows {} {} in total, {} used, this needs {}"
    assert [o for o, _ in got] == [
        ok(1000), ok(1000),
        err("PERMISSION_DENIED", "out/q/a: write refused after 1001 bytes, nothing was "
            "written: " + spent.format(3000, "write bytes", 2000, 1001)),
        ok(),
        err("PERMISSION_DENIED", spent.format(3, "files", 3, 1)),
        ok(999),
        ok("a" * 1000), ok("B" * 999),
        err("PERMISSION_DENIED", spent.format(2500, "read bytes", 1999, 999)),
    ]
    assert [(r[0], r[1], r[3], r[5]) for _, r in got] == [
        ("file.create", "ALLOW", "OK", 1000), ("file.create", "ALLOW", "OK", 1000),
        ("file.write", "DENY", "PERMISSION_DENIED", 0), ("file.mkdir", "ALLOW", "OK", 0),
        ("file.create", "DENY", "PERMISSION_DENIED", 0), ("file.write", "ALLOW", "OK", 999),
        ("file.read", "ALLOW", "OK", 1000), ("file.read", "ALLOW", "OK", 999),
        ("file.read", "DENY", "PERMISSION_DENIED", 0)]
    assert got[2][1][4] == got[2][0]["message"]
    assert (ws / "out/q/a").read_text() == "a" * 1000   # the refused write changed nothing
    assert sorted(os.listdir(ws / "out/q")) == ["a", "b", "d"]


# -- streams that never finish properly ------------------------------------------------------
def _no_file(ws: Path, path: str) -> None:
    assert not (ws / path).exists()
    assert leftovers(ws) == []


@VIA
def test_a_tool_that_streams_forever_hits_the_cap(wb: RunningBroker, token: str,
                                                  ws: Path, pipe: bool) -> None:
    got, rows = invoke(wb, token, "write_stream", path="out/forever.bin", pipe=pipe)
    message = (f"out/forever.bin: write exceeds the broker's maximum of {MAX_WRITE} bytes; "
               "nothing was written")
    assert (got["code"], got["message"]) == ("RESOURCE_EXHAUSTED", message)
    assert MAX_WRITE < got["sent"] < 8 * MAX_WRITE  # refused while streaming (+ buffers)
    assert rows == [refuse("file.create", "demo:out/forever.bin", "RESOURCE_EXHAUSTED", message)]
    _no_file(ws, "out/forever.bin")


@VIA
def test_a_write_past_the_budget_is_refused_mid_stream(wb: RunningBroker, ws: Path,
                                                       pipe: bool) -> None:
    limited = wb.mint({"tools": [{"name": WRITER}],
                       "files": [{"id": "small", "workspace": "demo", "paths": ["out/**"],
                                  "ops": ALL_OPS, "write_budget_bytes": 3 << 20}]})
    got, rows = invoke(wb, limited, "write_stream", path="out/over.bin", pipe=pipe)
    assert got["code"] == "PERMISSION_DENIED"
    # In messages the refusal comes at the message that passes the budget; from a pipe, at
    # the batch of bytes waiting in it that would (sizes vary with the pipe's filling).
    match = re.fullmatch(
        r"out/over\.bin: write refused after (\d+) bytes, nothing was written: budget "
        r"exhausted: small allows 3145728 write bytes in total, (\d+) used, this needs (\d+)",
        got["message"])
    assert match, got["message"]
    total, used, needs = (int(x) for x in match.groups())
    assert total > 3 << 20 and used + needs > 3 << 20 and used <= 3 << 20
    if not pipe:
        assert (total, used, needs) == (4 << 20, 3 << 20, 1 << 20)
    assert rows == [refuse("file.create", "demo:out/over.bin", "PERMISSION_DENIED",
                           got["message"])]
    _no_file(ws, "out/over.bin")


@pytest.mark.parametrize("how", ["abort-pipe", "abort-messages", "oversized"])
def test_an_unfinished_write_leaves_nothing(wb: RunningBroker, token: str, ws: Path,
                                            how: str) -> None:
    (ws / "out/keep.txt").write_text("old")
    if how.startswith("abort"):
        got, rows = invoke(wb, token, "write_stream", rows=1, path="out/keep.txt", chunks=3,
                           abort=True, pipe=how == "abort-pipe")
        assert got == {"aborted": "tool gave up", "sent": 3 << 20}
    else:
        head = tool_pb2.WriteFileRequest(path="out/keep.txt", mode=3, data=b"new")
        got, rows = invoke(wb, token, "raw_call", rows=1, method="/writ.v1.ToolBroker/WriteFile",
                           stream=True, messages=[_b64(head)], big_data=2 << 20)
        assert got["code"] == "RESOURCE_EXHAUSTED", got
    assert [r[:4] for r in rows] == [("file.write", "DENY", "demo:out/keep.txt", "ABORTED")]
    assert rows[0][4].startswith("out/keep.txt: the write ")
    assert rows[0][4].endswith("; nothing was written")
    assert (ws / "out/keep.txt").read_text() == "old"
    assert leftovers(ws) == []


def test_an_oversized_first_message_is_refused_and_audited(wb: RunningBroker,
                                                          token: str) -> None:
    got, rows = invoke(wb, token, "raw_call", rows=1, method="/writ.v1.ToolBroker/WriteFile",
                       stream=True, messages=[], big_data=2 << 20)
    assert got["code"] == "RESOURCE_EXHAUSTED", got
    assert rows == [refuse("file.write", ":", "ABORTED", "the write stream ended before its "
                           "first message; nothing was written")]
    assert not (wb.workspace / "out/big.txt").exists()


@VIA
def test_a_tool_dying_mid_write_leaves_nothing(wb: RunningBroker, token: str, ws: Path,
                                               pipe: bool) -> None:
    seq = wb.last_seq()
    out = wb.agent.invoke(WRITER, {"action": "write_stream", "path": "out/dying.bin",
                                   "chunks": 2, "die": True, "pipe": pipe}, token)
    assert not out.ok

    def records() -> list[Row]:
        return [record(e) for e in wb.audit_since(seq) if e.operation in FILE_OPS]

    wait_for(lambda: len(records()) >= 1)
    rows = records()
    assert [r[:4] for r in rows] == [("file.create", "DENY", "demo:out/dying.bin", "ABORTED")]
    _no_file(ws, "out/dying.bin")


# -- descriptors -----------------------------------------------------------------------------
def test_a_handed_descriptor_reads_but_cannot_write(wb: RunningBroker, token: str,
                                                    ws: Path) -> None:
    got, rows = invoke(wb, token, "descriptor", path="reports/q3.csv")
    # Read-only, and the file (0644, owned by the broker's user) cannot be reopened for
    # writing through /proc/self/fd by the tool's user.
    assert got == {"text": "region,revenue\nnorth,1\n", "write": "EBADF", "reopen": "EACCES"}
    assert rows == [allow("file.read", "demo:reports/q3.csv",
                          "READ demo:reports/q3.csv allowed by reports", 23)]


def test_no_descriptor_for_a_file_the_tool_could_reopen_for_writing(
        wb: RunningBroker, token: str, ws: Path) -> None:
    (ws / "out/shared.txt").write_text("shared")
    os.chmod(ws / "out/shared.txt", 0o666)
    got, rows = invoke(wb, token, "fs_ops", ops=[{"op": "open", "path": "out/shared.txt"}])
    message = ("out/shared.txt: writable by the tool's user (mode 666, or an ACL); a "
               "descriptor is not handed out, use ReadFile")
    # files.open fell back to a streamed read: one refusal, then one allowed read.
    assert got == [ok("shared")]
    assert rows == [refuse("file.read", "demo:out/shared.txt", "FAILED_PRECONDITION", message),
                    allow("file.read", "demo:out/shared.txt",
                          "READ demo:out/shared.txt allowed by out", 6)]


def test_a_ticket_is_good_for_one_descriptor(wb: RunningBroker, token: str) -> None:
    got, rows = invoke(wb, token, "ticket_twice", path="reports/q3.csv")
    assert got == [{"status": "00", "fds": 1, "message": ""},
                   {"status": "01", "fds": 0, "message": "unknown, used or expired ticket"}]
    assert len(rows) == 1


def test_no_descriptor_outside_the_grant(wb: RunningBroker, token: str) -> None:
    got, rows = invoke(wb, token, "fs_ops", ops=[{"op": "open", "path": "private/secret.txt"}])
    message = "grant has no rule allowing READ demo:private/secret.txt"
    assert got == [err("PERMISSION_DENIED", message)]
    assert rows == [refuse("file.read", "demo:private/secret.txt", "PERMISSION_DENIED",
                           message)]


# -- races: a host process swaps names while the tool changes files --------------------------
def _loop(wb: RunningBroker, token: str, swapping: tuple[Path, Path], specs: list[Any],
          seconds: float) -> tuple[dict[str, int], int, list[Row]]:
    with Swapper(*swapping) as swapper:
        seen, rows = invoke(wb, token, "fs_loop", ops=specs, seconds=seconds)
    return seen, swapper.swaps, rows


def test_directory_swapped_for_a_symlink_mid_write_and_rename_never_escapes(
        wb: RunningBroker, token: str, ws: Path) -> None:
    # out/swap is, at any instant, a real folder or a symlink to private/.
    (ws / "out/swap").mkdir()
    (ws / "out/swap/a.txt").write_text("a")
    (ws / "out/swap-alt").symlink_to("../private")
    specs = [{"op": "write", "path": "out/swap/new.txt", "data": "planted"},
             {"op": "rename", "path": "out/swap/a.txt", "to": "out/swap/b.txt"},
             {"op": "rename", "path": "out/swap/b.txt", "to": "out/swap/a.txt"},
             {"op": "delete", "path": "out/swap/new.txt"},
             {"op": "open", "path": "out/swap/a.txt"}]
    seen, swaps, rows = _loop(wb, token, (ws / "out/swap", ws / "out/swap-alt"), specs, 3.0)
    assert swaps >= 1000, swaps
    assert seen.get("ok", 0) > 0 and seen.get("code:PERMISSION_DENIED", 0) > 0, seen
    # Nothing else is possible: each step either ran in the real folder or was refused.
    assert set(seen) <= {"ok", "code:PERMISSION_DENIED", "code:NOT_FOUND",
                         "code:ALREADY_EXISTS"}, seen
    assert sum(seen.values()) == len(rows)
    # Changes name the held parent; a read names its whole path (one kernel resolution).
    denied = {(r[0], r[4]) for r in rows if r[3] == "PERMISSION_DENIED"}
    assert {op for op, _ in denied} == {"file.write", "file.rename", "file.delete",
                                        "file.read"}, denied
    assert {m for _, m in denied} == {f"out/swap: {SYMLINK}", f"out/swap/a.txt: {SYMLINK}"}
    # private/ is checked by the autouse fixture: still exactly secret.txt, unchanged.
    assert leftovers(ws) == []


def test_file_swapped_for_a_symlink_mid_write_never_writes_through(
        wb: RunningBroker, token: str, ws: Path) -> None:
    (ws / "out/swapf.txt").write_text("benign")
    (ws / "out/swapf-alt.txt").symlink_to("../private/secret.txt")
    specs = [{"op": "write", "path": "out/swapf.txt", "data": "overwritten"}]
    seen, swaps, rows = _loop(wb, token, (ws / "out/swapf.txt", ws / "out/swapf-alt.txt"),
                              specs, 2.0)
    assert swaps >= 1000, swaps
    # Refused while the link is at the name; once a rename has replaced the link (as a
    # name), every later write simply succeeds.
    assert seen.get("ok", 0) > 0 and set(seen) <= {"ok", "code:PERMISSION_DENIED"}, seen
    assert {r[4] for r in rows if r[1] == "DENY"} <= {f"out/swapf.txt: {SYMLINK}"}
    # Whatever the interleaving, a symlink at the name is refused or replaced as a name,
    # never written through: the secret is unchanged (autouse fixture).
    assert leftovers(ws) == []


def test_only_the_read_end_of_a_pipe_is_taken_in(wb: RunningBroker, token: str,
                                                 ws: Path) -> None:
    got, rows = invoke(wb, token, "hand_in", path="out/handed.txt")
    assert got == {
        "file": "\x01not the read end of a pipe",
        "write_end": "\x01not the read end of a pipe",
        "socket": "\x01not the read end of a pipe",
        "two": "\x01one pipe, sent with the line 'send'",
        "not_send": "\x01one pipe, sent with the line 'send'",
        "good": "\x00",
        "unknown_ticket": err("INVALID_ARGUMENT", "unknown, used or expired source ticket"),
        "data_with_pipe": err("INVALID_ARGUMENT",
                              "a write from a pipe carries its bytes in the pipe only"),
    }
    assert rows == [
        refuse("file.create", "demo:out/handed.txt", "INVALID_ARGUMENT",
               "unknown, used or expired source ticket"),
        refuse("file.create", "demo:out/handed.txt", "INVALID_ARGUMENT",
               "a write from a pipe carries its bytes in the pipe only")]
    _no_file(ws, "out/handed.txt")


def test_a_write_refused_before_the_pipe_is_taken_does_not_hang(wb: RunningBroker,
                                                                token: str, ws: Path) -> None:
    got, rows = invoke(wb, token, "forged_write", path="out/forged.bin")
    assert (got["code"], got["message"]) == ("UNAUTHENTICATED",
                                             "token signature does not verify: forged or altered")
    assert got["seconds"] < 10, got  # not the 30 s until the unused pipe ticket expires
    assert rows == []  # refused at the token check (recorded as token.check), no file op
    _no_file(ws, "out/forged.bin")


def test_file_like_writes_and_copies_through_tmp(wb: RunningBroker, token: str,
                                                 ws: Path) -> None:
    (ws / "out/c1").mkdir()
    got, rows = invoke(wb, token, "fs_ops", ops=[
        {"op": "open_w", "path": "out/c1/t.txt", "data": "text\n"},
        {"op": "open_x", "path": "out/c1/t.txt", "data": "again"},
        {"op": "copy", "path": "out/c1/t.txt", "to": "out/c1/t2.txt", "data": "more\n"},
        {"op": "copy", "path": "private/secret.txt", "to": "out/c1/leak.txt"}])
    denied = "grant has no rule allowing READ demo:private/secret.txt"
    assert got == [ok(5), err("ALREADY_EXISTS", "out/c1/t.txt: already exists"),
                   ok([True, 10]), err("PERMISSION_DENIED", denied)]
    # A copy is a descriptor read (all of it charged) and a write: one record each.
    assert rows == [
        allow("file.create", "demo:out/c1/t.txt", "CREATE demo:out/c1/t.txt allowed by out", 5),
        refuse("file.create", "demo:out/c1/t.txt", "ALREADY_EXISTS",
               "out/c1/t.txt: already exists"),
        allow("file.read", "demo:out/c1/t.txt", "READ demo:out/c1/t.txt allowed by out", 5),
        allow("file.create", "demo:out/c1/t2.txt", "CREATE demo:out/c1/t2.txt allowed by out",
              10),
        refuse("file.read", "demo:private/secret.txt", "PERMISSION_DENIED", denied)]
    assert (ws / "out/c1/t.txt").read_text() == "text\n"
    assert (ws / "out/c1/t2.txt").read_text() == "text\nmore\n"
    assert not (ws / "out/c1/leak.txt").exists()
