"""FileSink group commit: concurrent callers share durable writes, each returns only once its
own record is durable, chain order is file order; a failed write refuses every queued record;
a torn last line is cut off with evidence; one writer per log; canonical() is MessageToDict."""

from __future__ import annotations

import fcntl
import json
import os
import random
import threading
from pathlib import Path

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from writ._proto import audit_pb2
from writ.audit import FileSink, chain_hash, read_records, record_line, verify_log
from writ.audit import file_sink as file_sink_module
from writ.audit.sink import canonical
from writ.errors import AuditUnavailable


def event(i: int, reason: str = "") -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(actor="agent", method="/writ.v1.Control/Invoke",
                                token_id=f"{i:032x}", tool="read-file", operation="file.read",
                                target=f"demo:reports/{i}.csv", decision=audit_pb2.ALLOW,
                                reason=reason or f"record {i}", bytes=i, status="OK")


# -- canonical form ------------------------------------------------------------------------
def test_audit_event_is_flat() -> None:
    """canonical() handles scalar fields only; a message or repeated field needs it rewritten."""
    for f in audit_pb2.AuditEvent.DESCRIPTOR.fields:
        assert f.message_type is None and not f.is_repeated, f.name


texts = st.text(max_size=40)
u64 = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=300, deadline=None)
@given(seq=u64, nbytes=u64, decision=st.sampled_from([0, 1, 2, 7]), fields=st.dictionaries(
    st.sampled_from(["time", "prev_hash", "hash", "actor", "method", "token_id", "grant_id",
                     "tool", "invocation_id", "operation", "target", "reason", "rule",
                     "status", "detail"]), texts))
def test_canonical_is_message_to_dict(seq: int, nbytes: int, decision: int,
                                      fields: dict[str, str]) -> None:
    ev = audit_pb2.AuditEvent(seq=seq, bytes=nbytes, decision=decision, **fields)  # type: ignore[arg-type]
    assert canonical(ev) == json_format.MessageToDict(ev, preserving_proto_field_name=True)


# -- group commit --------------------------------------------------------------------------
def test_concurrent_writers_share_writes_and_keep_one_chain(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    writes: list[int] = []
    real = file_sink_module._write_all

    def counting(fd: int, data: bytes) -> None:
        writes.append(data.count(b"\n"))
        real(fd, data)

    monkeypatch.setattr(file_sink_module, "_write_all", counting)
    returned: dict[int, list[audit_pb2.AuditEvent]] = {}
    barrier = threading.Barrier(16)

    def writer(w: int) -> None:
        barrier.wait()
        returned[w] = [sink.record(event(w * 1000 + i)) for i in range(40)]

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    records = list(read_records(path))
    assert [r.seq for r in records] == list(range(1, 641))
    assert verify_log(path).ok
    # Every caller got back exactly the record that is in the file at its seq ...
    by_seq = {r.seq: r for r in records}
    for events in returned.values():
        assert [e.seq for e in events] == sorted(e.seq for e in events)
        for e in events:
            assert by_seq[e.seq] == e
    # ... and records were written in batches: fewer writes than records.
    assert sum(writes) == 640
    assert len(writes) < 640


def test_record_returns_only_after_its_line_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Record, then act: whatever record() returned is already in the file (the write is
    synchronous, O_DSYNC), also for a caller that waited behind another's write."""
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    flags = fcntl.fcntl(sink._fd, fcntl.F_GETFL)
    assert flags & os.O_DSYNC and flags & os.O_APPEND
    gate = threading.Event()
    real = file_sink_module._write_all

    def slow(fd: int, data: bytes) -> None:
        gate.wait(5)
        real(fd, data)

    monkeypatch.setattr(file_sink_module, "_write_all", slow)
    done: list[int] = []

    def writer(i: int) -> None:
        done.append(sink.record(event(i)).seq)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    threading.Event().wait(0.2)
    assert done == [] and path.read_bytes() == b""  # nobody returned before the write
    gate.set()
    for t in threads:
        t.join()
    assert sorted(done) == [1, 2, 3, 4]
    assert len(list(read_records(path))) == 4
    sink.close()


def test_failed_write_refuses_every_queued_record_and_cuts_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    sink.record(event(1))
    good = path.read_bytes()
    real = file_sink_module._write_all
    fail = threading.Event()
    fail.set()

    def half_then_fail(fd: int, data: bytes) -> None:
        if fail.is_set():
            os.write(fd, data[: len(data) // 2])  # a short write, then the disk gives up
            raise OSError(28, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(file_sink_module, "_write_all", half_then_fail)
    errors: list[str] = []

    def writer(i: int) -> None:
        try:
            sink.record(event(i))
        except AuditUnavailable as err:
            errors.append(err.details)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 6
    assert all("No space left on device" in e for e in errors)
    assert path.read_bytes() == good  # the half line was cut off
    # The disk recovers: the chain continues from the last durable record.
    fail.clear()
    assert sink.record(event(9)).seq == 2
    sink.close()
    assert verify_log(path).ok and verify_log(path).records == 2


def test_acknowledged_records_are_exactly_those_in_the_file_under_failures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """16 writers, one write in five fails after writing part of its batch: every record
    record() returned is in the file, none that raised is, and the chain verifies."""
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    real = file_sink_module._write_all
    rng = random.Random(11)
    lock = threading.Lock()

    def flaky(fd: int, data: bytes) -> None:
        with lock:
            fail = rng.random() < 0.2
        if fail:
            os.write(fd, data[: len(data) // 3])
            raise OSError(5, "Input/output error")
        real(fd, data)

    monkeypatch.setattr(file_sink_module, "_write_all", flaky)
    acked: list[str] = []
    refused: list[str] = []

    def writer(w: int) -> None:
        for i in range(60):
            ev = event(w * 1000 + i)
            try:
                sink.record(ev)
            except AuditUnavailable:
                with lock:
                    refused.append(ev.token_id)
            else:
                with lock:
                    acked.append(ev.token_id)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    in_file = [r.token_id for r in read_records(path)]
    assert refused and acked
    assert sorted(in_file) == sorted(acked)
    v = verify_log(path)
    assert v.ok and v.records == len(acked)


def test_sink_that_cannot_cut_back_refuses_everything(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    sink.record(event(1))
    os.close(sink._fd)
    sink._fd = os.open(os.devnull, os.O_RDONLY)  # write and ftruncate both fail
    for i in (2, 3):
        with pytest.raises(AuditUnavailable):
            sink.record(event(i))
    assert sink._broken is not None and "restart the broker" in sink._broken
    sink.close()
    assert verify_log(path).records == 1


def test_second_writer_on_the_same_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = FileSink(path)
    with pytest.raises(AuditUnavailable) as info:
        FileSink(path)
    assert info.value.details.endswith(f"{path} is open for writing by another process")
    first.close()
    FileSink(path).close()  # released on close


# -- an interrupted write ------------------------------------------------------------------
def test_torn_last_line_is_cut_off_kept_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    for i in range(1, 4):
        sink.record(event(i))
    sink.close()
    whole = path.read_bytes()
    torn = record_line(event(4)).encode()[:57]  # what a killed write leaves
    path.write_bytes(whole + torn)

    v = verify_log(path)
    assert v.problem is not None and v.problem.kind == "torn" and v.problem.line == 4
    assert v.problem.offset == len(whole) == v.good_bytes
    assert "incomplete final line (57 bytes, no newline)" in v.problem.message

    sink = FileSink(path)
    sink.record(event(5))
    sink.close()
    kept = tmp_path / f"audit.jsonl.torn-{len(whole)}"
    assert kept.read_bytes() == torn
    records = list(read_records(path))
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    recover = records[3]
    assert recover.operation == "audit.recover" and recover.actor == "broker"
    assert f"57 bytes at byte {len(whole)}" in recover.reason and kept.name in recover.reason
    assert verify_log(path).ok


def test_a_bad_line_before_the_end_is_not_treated_as_torn(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    for i in range(1, 4):
        sink.record(event(i))
    sink.close()
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][:40] + b"\n"
    path.write_bytes(b"".join(lines))
    v = verify_log(path)
    assert v.problem is not None and v.problem.kind == "unparseable" and v.problem.line == 2
    with pytest.raises(AuditUnavailable):
        FileSink(path)


def test_non_canonical_line_is_named(tmp_path: Path) -> None:
    """Whitespace or key order changed: same content, hash still matches, but the line is
    not what the broker wrote."""
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    for i in range(1, 4):
        sink.record(event(i))
    sink.close()
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = json.dumps(json.loads(lines[2]), indent=None) + "\n"  # ", " and ": "
    path.write_text("".join(lines))
    v = verify_log(path)
    assert v.problem is not None and v.problem.kind == "form"
    assert v.problem.message == "record 3 (seq 3): not in canonical form (the line was rewritten)"
    assert v.problem.located(path) == f"{path}:3 (byte {v.problem.offset}): {v.problem.message}"


def test_records_written_match_chain_hash(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    rng = random.Random(7)
    for i in range(50):
        ev = event(i, reason="".join(rng.choice("ab\u00e9\u2713\n\"\\") for _ in range(20)))
        ev.detail = json.dumps({"k": i})
        returned = sink.record(ev)
        assert returned.hash == chain_hash(returned)
    sink.close()
    assert verify_log(path).ok
