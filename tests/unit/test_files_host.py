"""The file mediators on a real directory, without a container: the write stream's edge
cases (no finish, a header in a later message, the cap, budgets, pipes), the journal that
removes a crashed write's temporary file, the descriptor socket's refusals, and listings
hiding writes in flight. The same code runs behind the tool socket in the integration
tests; here each case takes milliseconds."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from writ._proto import audit_pb2, tool_pb2
from writ._proto import capabilities_pb2 as caps
from writ.audit.memory_sink import MemorySink
from writ.budgets import Budgets
from writ.core.policy import Authority, Layer
from writ.errors import BrokerError
from writ.mediators import files, files_write
from writ.mediators._context import CallContext
from writ.mediators._fdpass import DescriptorDesk
from writ.mediators._workspaces import Workspaces

ALL = [caps.READ, caps.LIST, caps.STAT, caps.WRITE, caps.CREATE, caps.DELETE, caps.MKDIR,
       caps.RENAME]
MiB = 1 << 20


class Env:
    def __init__(self, tmp: Path, budget: int = 0, cap: int = 8 * MiB) -> None:
        self.root = tmp / "ws"
        self.root.mkdir()
        grant = caps.Grant(files=[caps.FileRule(id="all", workspace="demo", paths=["**"],
                                                ops=ALL, write_budget_bytes=budget)],
                           expires_at=int(time.time()) + 600)
        self.authority = Authority((Layer.of_grant("grant", grant, "b1"),),
                                   expires_at=grant.expires_at)
        self.sink = MemorySink()
        self.budgets = Budgets(tmp / "state.db")
        self.journal = tmp / "pending-writes"
        self.workspaces = Workspaces({"demo": self.root}, max_write_bytes=cap,
                                     journal=self.journal)
        self.desk = DescriptorDesk(tmp / "fd.sock")

    def ctx(self) -> CallContext:
        async def record(ev: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
            return self.sink.record(ev)

        return CallContext(self.authority, time.time(), record, audit_pb2.AuditEvent(),
                           self.budgets)

    def records(self) -> list[tuple[str, str, str, str, int]]:
        return [(e.operation, audit_pb2.Decision.Name(e.decision), e.status, e.reason,
                 e.bytes) for e in self.sink.events]

    def write(self, *messages: tool_pb2.WriteFileRequest) -> tool_pb2.WriteFileResponse | str:
        async def stream() -> AsyncIterator[tool_pb2.WriteFileRequest]:
            for m in messages:
                yield m

        async def run() -> tool_pb2.WriteFileResponse | str:
            await self.desk.start(os.getuid(), os.getgid())
            try:
                return await files_write.write_file(self.ctx(), self.workspaces, self.desk,
                                                    stream())
            except BrokerError as err:
                return f"{err.code}: {err.details}"
            finally:
                await self.desk.close()

        return asyncio.run(run())

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.root.rglob(".writ-*"))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.workspaces.close()
    e.budgets.close()


def head(path: str, mode: int = 3, **kw: Any) -> tool_pb2.WriteFileRequest:
    return tool_pb2.WriteFileRequest(path=path, mode=mode, **kw)  # type: ignore[arg-type]


def data(b: bytes, finish: bool = False) -> tool_pb2.WriteFileRequest:
    return tool_pb2.WriteFileRequest(data=b, finish=finish)


# -- messages ---------------------------------------------------------------------------------
def test_a_finished_stream_is_committed_and_a_replacement_keeps_the_mode(env: Env) -> None:
    resp = env.write(head("a.txt", data=b"one"), data(b"-two", finish=True))
    assert isinstance(resp, tool_pb2.WriteFileResponse)
    assert (resp.bytes_written, resp.created) == (7, True)
    assert (env.root / "a.txt").read_bytes() == b"one-two"
    os.chmod(env.root / "a.txt", 0o640)
    resp = env.write(head("a.txt", mode=1, data=b"3", finish=True))
    assert isinstance(resp, tool_pb2.WriteFileResponse) and not resp.created
    assert (env.root / "a.txt").read_bytes() == b"3"
    assert os.stat(env.root / "a.txt").st_mode & 0o777 == 0o640
    assert env.records() == [
        ("file.create", "ALLOW", "OK", "CREATE demo:a.txt allowed by all", 7),
        ("file.write", "ALLOW", "OK", "WRITE demo:a.txt allowed by all", 1)]
    assert env.leftovers() == []
    assert env.journal.read_text().count("\t") == 2  # one line per write, settled later


@pytest.mark.parametrize(("messages", "answer"), [
    ([], "ABORTED: the write stream ended before its first message; nothing was written"),
    ([head("b.txt", data=b"x")], ("ABORTED: b.txt: the write stream ended after 1 bytes "
     "without its finishing message; nothing was written")),
    ([head("b.txt"), data(b"x"), head("c.txt", finish=True)],
     "INVALID_ARGUMENT: only the first message of a write names the file"),
    ([head("b.txt", mode=0)], ("INVALID_ARGUMENT: write mode 0 is not REPLACE, CREATE or "
     "CREATE_OR_REPLACE")),
    ([head("b.txt", mode=1, finish=True)], "NOT_FOUND: b.txt: no such file or directory"),
    ([head("b.txt", data=b"x" * (5 * MiB)), data(b"y" * (4 * MiB))],
     ("RESOURCE_EXHAUSTED: b.txt: write exceeds the broker's maximum of 8388608 bytes; "
     "nothing was written")),
    ([head("b.txt", source_ticket="nope")],
     "INVALID_ARGUMENT: unknown, used or expired source ticket"),
], ids=["empty", "no-finish", "header-later", "no-mode", "replace-missing", "cap",
        "bad-ticket"])
def test_an_unfinished_or_bad_stream_leaves_nothing(env: Env, messages: list[Any],
                                                    answer: str) -> None:
    assert env.write(*messages) == answer
    assert not (env.root / "b.txt").exists() and not (env.root / "c.txt").exists()
    assert env.leftovers() == []
    (record,) = env.records()
    assert record[1:3] == ("DENY", answer.split(":")[0])
    assert env.budgets.used(["b1/all/files"])["b1/all/files"] == 0  # released


def test_the_write_budget_is_reserved_ahead_and_released(tmp_path: Path) -> None:
    env = Env(tmp_path, budget=3 * MiB + 5)
    key = "b1/all/write_bytes"
    ok = env.write(head("a.bin", data=b"x" * MiB), data(b"x" * MiB), data(b"x", finish=True))
    assert isinstance(ok, tool_pb2.WriteFileResponse)
    assert env.budgets.used([key])[key] == 2 * MiB + 1  # the unused reservation went back
    refused = env.write(head("b.bin", data=b"y" * MiB), data(b"y" * MiB, finish=True))
    assert refused == (f"PERMISSION_DENIED: b.bin: write refused after {2 * MiB} bytes, "
                       "nothing was written: budget exhausted: all allows 3145733 write "
                       f"bytes in total, {3 * MiB + 1} used, this needs {MiB}")
    assert env.budgets.used([key])[key] == 2 * MiB + 1
    assert not (env.root / "b.bin").exists() and env.leftovers() == []


# -- pipes ------------------------------------------------------------------------------------
def _pipe_write(env: Env, path: str, payload: bytes, close: bool = True,
                finish: bool = True) -> tool_pb2.WriteFileResponse | str:
    r, w = os.pipe2(os.O_CLOEXEC)
    ticket = "t" * 32
    env.desk._in[ticket] = (r, time.monotonic() + 30)  # as if handed in on fd.sock

    def feed() -> None:
        try:
            os.write(w, payload)
        except BrokenPipeError:
            pass
        if close:
            os.close(w)

    threading.Thread(target=feed, daemon=True).start()
    msgs = [head(path, source_ticket=ticket)] + ([data(b"", finish=True)] if finish else [])
    return env.write(*msgs)


def test_a_pipe_is_drained_into_the_file(env: Env) -> None:
    payload = os.urandom(3 * MiB + 17)
    resp = _pipe_write(env, "p.bin", payload)
    assert isinstance(resp, tool_pb2.WriteFileResponse)
    assert resp.bytes_written == len(payload)
    assert (env.root / "p.bin").read_bytes() == payload
    assert env.records()[-1][1:] == ("ALLOW", "OK", "CREATE demo:p.bin allowed by all",
                                     len(payload))


def test_a_pipe_past_the_cap_or_without_finish_leaves_nothing(env: Env) -> None:
    assert _pipe_write(env, "big.bin", b"z" * (9 * MiB)) == (
        "RESOURCE_EXHAUSTED: big.bin: write exceeds the broker's maximum of 8388608 bytes; "
        "nothing was written")
    assert _pipe_write(env, "nofin.bin", b"z" * 10, finish=False) == (
        "ABORTED: nofin.bin: the write stream ended after 10 bytes without its finishing "
        "message; nothing was written")
    assert not (env.root / "big.bin").exists() and not (env.root / "nofin.bin").exists()
    assert env.leftovers() == []


# -- the journal and listings ----------------------------------------------------------------
def test_a_crashed_writes_temporary_file_is_removed_at_start(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "d").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    left = root / "d/.writ-0123456789abcdef.part"
    left.write_bytes(b"partial")
    (root / "d/keep.txt").write_text("keep")
    (root / "ln").symlink_to("elsewhere")
    (root / "elsewhere/.writ-fedcba9876543210.part").write_text("not through a link")
    journal = tmp_path / "pending-writes"
    journal.write_text("demo\td/.writ-0123456789abcdef.part\n"
                       "demo\td/keep.txt\n"                        # not a reserved name
                       "demo\tln/.writ-fedcba9876543210.part\n"    # through a symlink
                       "other\td/.writ-0123456789abcdef.part\n")   # no such workspace
    ws = Workspaces({"demo": root}, journal=journal)
    ws.close()
    assert not left.exists()
    assert (root / "d/keep.txt").exists()
    assert (root / "elsewhere/.writ-fedcba9876543210.part").exists()
    assert journal.read_text() == ""


def test_listing_hides_writes_in_flight(env: Env) -> None:
    (env.root / ".writ-0123456789abcdef.part").write_text("x")
    (env.root / ".writ-notreserved").write_text("x")

    async def run() -> list[str]:
        resp = await files.list_dir(env.ctx(), env.workspaces, tool_pb2.ListDirRequest())
        return [e.name for e in resp.entries]

    assert asyncio.run(run()) == [".writ-notreserved"]


# -- the descriptor socket -------------------------------------------------------------------
def test_the_descriptor_socket_takes_only_a_pipes_read_end(tmp_path: Path) -> None:
    desk = DescriptorDesk(tmp_path / "fd.sock")

    def offer(fds: list[int], line: bytes = b"send\n") -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(tmp_path / "fd.sock"))
            socket.send_fds(s, [line], fds)
            return s.recv(128)

    async def run() -> list[bytes]:
        await desk.start(os.getuid(), os.getgid())
        r, w = os.pipe()
        rw_fifo = tmp_path / "fifo"
        os.mkfifo(rw_fifo)
        fifo = os.open(rw_fifo, os.O_RDWR)
        f = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
        answers = await asyncio.gather(*(asyncio.to_thread(offer, fds, line) for fds, line
                                         in [([f], b"send\n"), ([w], b"send\n"),
                                             ([fifo], b"send\n"), ([r, r], b"send\n"),
                                             ([r], b"take\n"), ([], b"nope\n"),
                                             ([r], b"send\n")]))
        for fd in (r, w, fifo, f):
            os.close(fd)
        await desk.close()
        return answers

    *refused, good = asyncio.run(run())
    assert refused == [b"\x01not the read end of a pipe"] * 3 + [
        b"\x01one pipe, sent with the line 'send'"] * 2 + [
        b"\x01unknown, used or expired ticket"]
    assert good[:1] == b"\x00" and len(good) == 34 and good.endswith(b"\n")


# -- descriptors are not handed out for files the tool's uid could reopen for writing -----
def _acl(uid: int) -> bytes:
    """A POSIX ACL xattr granting ``uid`` read and write (version 2 format)."""
    import struct

    entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 6, uid), (0x04, 4, 0xFFFFFFFF),
               (0x10, 6, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)]  # user_obj, user, group, mask, other
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_no_descriptor_for_a_file_writable_by_the_tool(env: Env) -> None:
    for name in ("plain", "world", "acl"):
        (env.root / name).write_text(name)
    os.chmod(env.root / "world", 0o666)
    try:
        os.setxattr(env.root / "acl", "system.posix_acl_access", _acl(10001))
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs here: {exc}")

    async def run(path: str) -> str:
        await env.desk.start(os.getuid(), os.getgid())
        try:
            resp = await files.open_file(env.ctx(), env.workspaces, env.desk,
                                         tool_pb2.OpenFileRequest(path=path))
            return f"ticket of {len(resp.ticket)} for {resp.size} bytes"
        except BrokerError as err:
            return f"{err.code}: {err.details}"
        finally:
            await env.desk.close()

    assert asyncio.run(run("plain")) == "ticket of 32 for 5 bytes"
    assert asyncio.run(run("world")) == (
        "FAILED_PRECONDITION: world: writable by the tool's user (mode 666, or an ACL); a "
        "descriptor is not handed out, use ReadFile")
    assert asyncio.run(run("acl")).startswith("FAILED_PRECONDITION: acl: writable by the tool")
