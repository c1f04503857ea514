"""Signed checkpoints: in the log and in the sidecar; verified with the public key; a
checkpoint signed by another key, a rewritten chain, a lost tail and a forged range are each
named with their location."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from writ._proto import audit_pb2
from writ.audit import (
    Checkpoint,
    CheckpointKey,
    FileSink,
    read_checkpoint_file,
    read_records,
    sidecar_path,
    verify_log,
)
from writ.audit.checkpoint import OPERATION
from writ.errors import AuditUnavailable
from writ.security import keys


def event(i: int) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(actor="agent", operation="file.read", target=f"demo:f{i}",
                                decision=audit_pb2.DENY if i % 3 == 0 else audit_pb2.ALLOW,
                                reason=f"r{i}", status="OK")


@pytest.fixture
def key(tmp_path: Path) -> CheckpointKey:
    return CheckpointKey.load_or_create(tmp_path / "state" / "audit-checkpoint.key")


def write(path: Path, key: CheckpointKey, n: int, every: int = 4) -> None:
    sink = FileSink(path, checkpoint_key=key, checkpoint_every=every)
    for i in range(1, n + 1):
        sink.record(event(i))
    sink.close()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def rechain(ls: list[str], start: int, signer: CheckpointKey | None = None) -> list[str]:
    """What an attacker with write access does after an edit: recompute every hash from
    ``start`` on (and, given a key, re-sign the checkpoints with it)."""
    prev = json.loads(ls[start - 1])["hash"] if start else ""
    for i in range(start, len(ls)):
        body = json.loads(ls[i])
        body["prev_hash"] = prev
        if body.get("operation") == OPERATION and signer is not None:
            cp = signer.sign(int(body["seq"]) - 1, prev, body["time"])
            body["detail"] = cp.to_json()
        body.pop("hash")
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        body["hash"] = prev = hashlib.sha256(text.encode()).hexdigest()
        ls[i] = json.dumps(body, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False) + "\n"
    return ls


# -- writing -------------------------------------------------------------------------------
def test_checkpoints_every_n_records_and_at_close(tmp_path: Path, key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 10, every=4)
    records = list(read_records(path))
    cps = [r for r in records if r.operation == OPERATION]
    # after records 4 and 8 (seqs 5 and 10 hold checkpoints), and one at close for 9 and 10
    assert [r.seq for r in cps] == [5, 10, 13]
    for r in cps:
        cp = Checkpoint.parse(r.detail, "test")
        assert cp.seq == r.seq - 1 and cp.head == r.prev_hash and cp.key_id == key.key_id
        assert cp.check_signature(key.trusted()) == ""
        assert r.actor == "broker" and r.target == f"seq {cp.seq}"
    side = read_checkpoint_file(sidecar_path(path))
    assert side == Checkpoint.parse(cps[-1].detail, "test")
    assert stat.S_IMODE(os.stat(sidecar_path(path)).st_mode) == 0o600
    v = verify_log(path, keys=key.trusted(), anchor=side)
    assert v.ok and v.signed_through == 13 and v.last_seq == 13
    assert [c.signature for c in v.checkpoints] == ["", "", ""]


def test_close_without_new_records_adds_no_checkpoint(tmp_path: Path,
                                                      key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 3, every=0)
    before = lines(path)
    FileSink(path, checkpoint_key=key).close()
    assert lines(path) == before
    assert json.loads(before[-1])["operation"] == OPERATION


def test_checkpoint_key_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "k" / "audit-checkpoint.key"
    first = CheckpointKey.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert CheckpointKey.load_or_create(path).key_id == first.key_id
    os.chmod(path, 0o644)
    with pytest.raises(keys.KeyFileError, match="readable by others"):
        CheckpointKey.load_or_create(path)


# -- verifying -----------------------------------------------------------------------------
def test_checkpoint_signed_by_another_key_is_named(tmp_path: Path, key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 10)
    other = CheckpointKey.load_or_create(tmp_path / "other.key")
    ls = lines(path)
    # Re-sign the first checkpoint (line 5) with another key; the chain stays intact.
    ls = rechain(ls, 4, signer=other)
    path.write_text("".join(ls))
    assert verify_log(path).ok  # without keys only the structure is checked
    v = verify_log(path, keys=key.trusted())
    assert v.problem is not None and v.problem.kind == "signature"
    assert (v.problem.line, v.problem.record) == (5, 5)
    assert v.problem.message == (
        f"record 5 (seq 5): checkpoint signed by key {other.key_id}, which is not among the "
        f"trusted key(s) ['{key.key_id}']")
    assert v.problem.located(path).startswith(f"{path}:5 (byte ")


def test_checkpoint_with_the_right_key_id_but_a_foreign_signature(
        tmp_path: Path, key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 6)
    ls = lines(path)
    body = json.loads(ls[4])
    cp = json.loads(body["detail"])
    forger = keys.Ed25519PrivateKey.generate()
    claimed = Checkpoint(cp["seq"], cp["head"], cp["time"], key.key_id, "")
    cp["signature"] = keys.b64(forger.sign(claimed.message()))
    body["detail"] = json.dumps(cp, sort_keys=True, separators=(",", ":"))
    ls[4] = json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
    path.write_text("".join(rechain(ls, 4)))
    v = verify_log(path, keys=key.trusted())
    assert v.problem is not None and v.problem.kind == "signature" and v.problem.line == 5
    assert v.problem.message.endswith(f"signature does not verify with key {key.key_id}")


def test_rewriting_the_whole_chain_after_an_edit_is_caught_by_the_signature(
        tmp_path: Path, key: CheckpointKey) -> None:
    """The chain alone cannot catch an attacker who recomputes every later hash; the signed
    checkpoint can."""
    path = tmp_path / "audit.jsonl"
    write(path, key, 10)
    ls = lines(path)
    body = json.loads(ls[2])
    body["decision"] = "ALLOW"
    ls[2] = json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
    ls = rechain(ls, 2)  # checkpoints keep their original (now wrong) detail
    path.write_text("".join(ls))
    v = verify_log(path, keys=key.trusted())
    assert v.problem is not None and v.problem.kind == "checkpoint" and v.problem.line == 5
    assert "states seq 4 head" in v.problem.message


def test_checkpoint_misstating_the_chain(tmp_path: Path, key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 6)
    ls = lines(path)
    body = json.loads(ls[4])
    body["detail"] = key.sign(3, json.loads(ls[2])["hash"]).to_json()  # covers seq 3, not 4
    ls[4] = json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
    path.write_text("".join(rechain(ls, 4)))
    v = verify_log(path, keys=key.trusted())
    assert v.problem is not None and v.problem.kind == "checkpoint"
    assert v.problem.message.startswith("record 5 (seq 5): checkpoint states seq 3 head ")


def test_unparseable_checkpoint_detail(tmp_path: Path, key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 5)
    ls = lines(path)
    body = json.loads(ls[4])
    body["detail"] = '{"seq": 4}'
    ls[4] = json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
    path.write_text("".join(rechain(ls, 4)))
    v = verify_log(path)
    assert v.problem is not None and v.problem.kind == "checkpoint"
    assert "checkpoint does not parse" in v.problem.message and v.problem.line == 5


# -- truncation ----------------------------------------------------------------------------
def test_checkpoint_past_the_end_proves_truncation(tmp_path: Path, key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 10)
    anchor = read_checkpoint_file(sidecar_path(path))
    assert anchor.seq == 12
    path.write_text("".join(lines(path)[:-4]))  # the tail is gone, chain still intact
    assert verify_log(path).ok
    v = verify_log(path, keys=key.trusted(), anchor=anchor)
    assert v.problem is not None and v.problem.kind == "truncated"
    assert v.problem.message.startswith(
        f"truncated: a checkpoint signed at {anchor.time} covers records through seq 12, "
        "but the log ends at seq 9")
    with pytest.raises(AuditUnavailable, match="truncated: a checkpoint signed at"):
        FileSink(path, checkpoint_key=key)


def test_truncating_the_log_to_nothing_is_caught(tmp_path: Path, key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 3)
    path.write_text("")
    with pytest.raises(AuditUnavailable, match="log ends at seq 0"):
        FileSink(path, checkpoint_key=key)


def test_rewritten_before_the_anchor(tmp_path: Path, key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 10)
    anchor = read_checkpoint_file(sidecar_path(path))
    ls = lines(path)
    body = json.loads(ls[1])
    body["reason"] = "nothing happened"
    ls[1] = json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
    other = CheckpointKey.load_or_create(tmp_path / "other.key")
    path.write_text("".join(rechain(ls, 1, signer=other)))
    v = verify_log(path, anchor=anchor)  # no keys: the anchor's head still disagrees
    assert v.problem is not None and v.problem.kind == "rewritten"
    assert "the log was rewritten up to there" in v.problem.message


def test_anchor_signed_by_another_key(tmp_path: Path, key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 4)
    other = CheckpointKey.load_or_create(tmp_path / "other.key")
    real = read_checkpoint_file(sidecar_path(path))
    forged = other.sign(real.seq, real.head, real.time)
    v = verify_log(path, keys=key.trusted(), anchor=forged)
    assert v.problem is not None and v.problem.kind == "signature"
    assert v.problem.message.startswith("external checkpoint (seq 4) signed by key ")


def test_corrupt_sidecar_refuses_the_sink(tmp_path: Path, key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 4)
    sidecar_path(path).write_text('{"seq": "many"}\n')
    with pytest.raises(AuditUnavailable, match=r"audit.checkpoint.json: checkpoint seq"):
        FileSink(path, checkpoint_key=key)


# -- ranges --------------------------------------------------------------------------------
def test_an_exported_range_verifies_up_to_its_last_checkpoint(
        tmp_path: Path, key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 20, every=5)
    ls = lines(path)
    part = tmp_path / "range.jsonl"
    part.write_text("".join(ls[7:16]))  # seqs 8..16
    v = verify_log(part, keys=key.trusted(), from_genesis=False)
    assert v.ok, v.problem
    assert (v.first_seq, v.last_seq) == (8, 16)
    assert v.signed_through == 12  # the checkpoint at seq 12 covers up to 11, and itself
    # a forged record inside the range is still caught
    body = json.loads(ls[9])
    body["reason"] = "forged"
    forged = list(ls[7:16])
    forged[2] = json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
    part.write_text("".join(forged))
    v = verify_log(part, keys=key.trusted(), from_genesis=False)
    assert v.problem is not None and v.problem.message == (
        "record 3 (seq 10): hash does not match content")
    # a gap inside the range
    part.write_text("".join(ls[7:10] + ls[11:16]))
    v = verify_log(part, from_genesis=False)
    assert v.problem is not None and v.problem.message == "record 4: seq is 12, expected 11"


def test_the_timer_signs_the_head_only_when_records_came(tmp_path: Path,
                                                         key: CheckpointKey) -> None:
    import asyncio

    from writ.audit import MemorySink, checkpoint_timer

    path = tmp_path / "audit.jsonl"
    sink = FileSink(path, checkpoint_key=key, checkpoint_every=0)

    async def go() -> None:
        timer = asyncio.ensure_future(checkpoint_timer(sink, 0.05))
        await asyncio.to_thread(sink.record, event(1))
        await asyncio.sleep(0.3)  # several ticks, one checkpoint: nothing new after it
        await asyncio.to_thread(sink.record, event(2))
        await asyncio.sleep(0.3)
        timer.cancel()
        # A sink without checkpoints ends the timer at its first tick.
        await asyncio.wait_for(checkpoint_timer(MemorySink(), 0.01), 1)

    asyncio.run(go())
    ops = [(r.seq, r.operation) for r in read_records(path)]
    assert ops == [(1, "file.read"), (2, OPERATION), (3, "file.read"), (4, OPERATION)]
    sink.close()  # nothing new: no third checkpoint
    assert len(list(read_records(path))) == 4


def test_a_replaced_checkpoint_key_refuses_the_old_log_with_a_hint(
        tmp_path: Path, key: CheckpointKey) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, key, 3)
    other = CheckpointKey.load_or_create(tmp_path / "new.key")
    with pytest.raises(AuditUnavailable) as info:
        FileSink(path, checkpoint_key=other)
    assert "which is not among the trusted key(s)" in info.value.details
    assert info.value.details.endswith("move the log aside (keep it with the old public key) "
                                       "and start a new one")
