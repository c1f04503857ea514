"""The audit ordering rule (DESIGN.md, "Audit"): a record appended without waiting is
chained at once and is durable no later than the next record made durable by ``record`` or
``sync``; if it is lost, no later record (so no later effect) is accepted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from writ._proto import audit_pb2
from writ.audit import FileSink, read_records, verify_log
from writ.audit import file_sink as file_sink_module
from writ.audit.memory_sink import MemorySink
from writ.errors import AuditUnavailable


def event(i: int, operation: str = "file.stat") -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(actor="tool:t", method="/writ.v1.ToolBroker/Stat",
                                operation=operation, target=f"ws:{i}", reason=f"record {i}",
                                decision=audit_pb2.ALLOW, status="OK")


def _gated_writes(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[bytes]]:
    """Every write waits for the gate; the data of each is kept, in order."""
    gate = threading.Event()
    writes: list[bytes] = []
    real = file_sink_module._write_all

    def gated(fd: int, data: bytes) -> None:
        gate.wait(10)
        writes.append(bytes(data))
        real(fd, data)

    monkeypatch.setattr(file_sink_module, "_write_all", gated)
    return gate, writes


def test_append_returns_chained_before_any_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    gate, _ = _gated_writes(monkeypatch)
    first, second = sink.append(event(1)), sink.append(event(2))
    assert (first.seq, second.seq) == (1, 2) and second.prev_hash == first.hash
    assert path.read_bytes() == b"" and not sink.all_durable()
    gate.set()
    sink.sync()
    assert sink.all_durable()
    assert [r.seq for r in read_records(path)] == [1, 2]
    sink.close()


def test_non_durable_append_then_durable_record_writes_both_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stat appended, then a write recorded: when record() returns, both lines are on
    disk, the stat's first (one synchronous write, or the flusher's before it)."""
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    gate, writes = _gated_writes(monkeypatch)
    sink.append(event(1, "file.stat"))
    done: list[int] = []
    writer = threading.Thread(target=lambda: done.append(sink.record(
        event(2, "file.write")).seq))
    writer.start()
    writer.join(0.2)
    assert done == [] and path.read_bytes() == b""  # the write waits, the append did not
    gate.set()
    writer.join(10)
    assert done == [2]
    assert [(r.seq, r.operation) for r in read_records(path)] == [(1, "file.stat"),
                                                                 (2, "file.write")]
    assert b"".join(writes) == path.read_bytes()  # no line written twice or out of order
    assert verify_log(path).ok
    sink.close()


def test_flusher_writes_appended_records_nobody_waits_for(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    for i in range(1, 51):
        sink.append(event(i))
    deadline = time.monotonic() + 10
    while not sink.all_durable() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.all_durable()
    assert [r.seq for r in read_records(path)] == list(range(1, 51))
    sink.close()


def test_close_writes_appended_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    gate, _ = _gated_writes(monkeypatch)
    sink.append(event(1))
    threading.Timer(0.1, gate.set).start()
    sink.close()
    assert [r.seq for r in read_records(path)] == [1]


def test_lost_appended_record_refuses_every_later_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stat was answered, then its record's write failed: the stat happened unrecorded,
    so no effect may follow it. Unlike a failed durable record (the caller did not act),
    the sink does not recover when the disk does."""
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    sink.record(event(1, "file.write"))
    good = path.read_bytes()

    def fail(fd: int, data: bytes) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(file_sink_module, "_write_all", fail)
    sink.append(event(2))
    with pytest.raises(AuditUnavailable):
        sink.sync()
    monkeypatch.undo()  # the disk is back
    for refused in (lambda: sink.record(event(3, "file.write")), lambda: sink.append(event(4)),
                    sink.sync):
        with pytest.raises(AuditUnavailable) as info:
            refused()
        assert "after the operations it recorded were answered" in info.value.details
    sink.close()
    assert path.read_bytes() == good


def test_memory_sink_appends_like_it_records() -> None:
    sink = MemorySink()
    sink.append(event(1))
    sink.record(event(2))
    sink.sync()
    assert [e.seq for e in sink.events] == [1, 2] and sink.all_durable()


CHILD = """
import sys
from pathlib import Path
from writ._proto import audit_pb2
from writ.audit import FileSink
sink = FileSink(Path(sys.argv[1]))
i = 0
while True:
    i += 1
    ev = audit_pb2.AuditEvent(actor="tool:t", operation="file.stat", target=str(i))
    if i % 5:
        sink.append(ev)  # a read: answered at once
    else:
        ev.operation = "file.write"
        print(sink.record(ev).seq, flush=True)  # an effect: acknowledged once durable
"""


@pytest.mark.parametrize("run_s", [0.3, 0.7])
def test_killed_writer_keeps_every_record_before_an_acknowledged_effect(
        tmp_path: Path, run_s: float) -> None:
    """SIGKILL mid-run: after recovery (a torn tail is cut off), the log verifies and holds
    every record up to the last effect acknowledged, the appended reads before it too."""
    path = tmp_path / "audit.jsonl"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    first = child.stdout.readline()  # it is writing: kill it a while later, mid-stream
    time.sleep(run_s)
    os.kill(child.pid, signal.SIGKILL)
    out, _ = child.communicate(timeout=10)
    acked = [int(line) for line in (first + out).split()]
    FileSink(path).close()  # recovery: cuts a torn last line, records audit.recover
    v = verify_log(path)
    assert v.ok
    seqs = [r.seq for r in read_records(path) if r.operation != "audit.recover"]
    assert seqs[:max(acked)] == list(range(1, max(acked) + 1))
