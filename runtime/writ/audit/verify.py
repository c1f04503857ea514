"""Reading and verifying an audit file.

``verify_log`` walks the file once and stops at the first problem, naming it with its line,
byte offset and record number: an edited record (its hash no longer matches), a deleted,
inserted or reordered one (seq or prev_hash breaks), a line that does not parse, a final
line cut short by an interrupted write (no newline), a record not in canonical form, an
in-log checkpoint that misstates the chain or, given trusted keys, is signed by another key;
and, given an external checkpoint, a log that lost its tail or was rewritten before it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format

from .._proto import audit_pb2
from ..security.keys import Ed25519PublicKey
from .checkpoint import OPERATION, Checkpoint
from .sink import chain_hash, record_line

UNPARSEABLE = "unparseable audit record"


@dataclass(frozen=True)
class Line:
    number: int    # 1-based line number
    offset: int    # byte offset of the line's start
    raw: bytes     # including the newline, if any


def _lines(path: Path) -> Iterator[Line]:
    with open(path, "rb") as f:
        offset = 0
        for number, raw in enumerate(f, 1):
            yield Line(number, offset, raw)
            offset += len(raw)


def _parse(line: Line, path: Path) -> audit_pb2.AuditEvent | None:
    """None for a blank line. Raises ValueError naming ``path:line``."""
    where = f"{path}:{line.number}: {UNPARSEABLE}"
    if not line.raw.endswith(b"\n"):
        raise ValueError(f"{where}: incomplete final line ({len(line.raw)} bytes, no "
                         "newline): a write was cut short")
    try:
        text = line.raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        return None
    try:
        data = json.loads(text)
        # ParseDict raises TypeError, not ParseError, on a bare JSON value.
        if not isinstance(data, dict):
            # ValueError, not TypeError: reported as an unparseable record.
            raise ValueError(  # noqa: TRY004
                f"expected a JSON object, got {type(data).__name__}")
        return json_format.ParseDict(data, audit_pb2.AuditEvent())
    except (ValueError, json_format.ParseError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def read_records(path: Path, live: bool = False) -> Iterator[audit_pb2.AuditEvent]:
    """Records in file order. Raises ValueError naming the line of a record that does not
    parse (an incomplete final line included, unless ``live``: a log the broker is writing
    can end in a line it has not finished, whose record nobody has acted on yet)."""
    for line in _lines(path):
        if live and not line.raw.endswith(b"\n"):
            return
        event = _parse(line, path)
        if event is not None:
            yield event


@dataclass
class Problem:
    kind: str       # unparseable, torn, seq, prev_hash, hash, form, checkpoint, signature,
                    # truncated, rewritten
    message: str
    line: int = 0   # 0: not tied to one line (a missing tail)
    offset: int = 0
    record: int = 0  # 1-based index of the record in this file

    def located(self, path: Path) -> str:
        if not self.line or self.message.startswith(f"{path}:"):
            return self.message
        return f"{path}:{self.line} (byte {self.offset}): {self.message}"


@dataclass
class CheckpointSeen:
    line: int
    record_seq: int       # seq of the audit.checkpoint record itself
    checkpoint: Checkpoint
    signature: str = ""   # "" verified, "unchecked" without keys, else why it failed


@dataclass
class Verification:
    path: Path
    records: int = 0                 # records checked and found good
    first_seq: int = 0
    last_seq: int = 0
    head: str = ""                   # hash of the last good record
    good_bytes: int = 0              # offset just past the last good line
    checkpoints: list[CheckpointSeen] = field(default_factory=list)
    signed_through: int = 0          # last record a verified checkpoint covers (or is)
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def torn_tail(self) -> bool:
        """The only problem is an unterminated final line: an interrupted, never
        acknowledged write (everything before it verified)."""
        return self.problem is not None and self.problem.kind == "torn"


def _check_checkpoint(event: audit_pb2.AuditEvent, line: Line, index: int, path: Path,
                      keys: dict[str, Ed25519PublicKey] | None,
                      out: Verification) -> Problem | None:
    where = f"record {index} (seq {event.seq}): checkpoint"
    try:
        cp = Checkpoint.parse(event.detail, f"{path}:{line.number}")
    except ValueError as exc:
        return Problem("checkpoint", f"{where} does not parse: {exc}", line.number,
                       line.offset, index)
    if cp.seq != event.seq - 1 or cp.head != event.prev_hash:
        return Problem("checkpoint", f"{where} states seq {cp.seq} head {cp.head[:16]}... but "
                       f"the chain has seq {event.seq - 1} head {event.prev_hash[:16]}...",
                       line.number, line.offset, index)
    seen = CheckpointSeen(line.number, event.seq, cp, "unchecked")
    out.checkpoints.append(seen)
    if keys is None:
        return None
    seen.signature = cp.check_signature(keys)
    if seen.signature:
        return Problem("signature", f"{where} {seen.signature}", line.number, line.offset,
                       index)
    # The checkpoint record itself is covered too: changing it breaks its signature.
    out.signed_through = event.seq
    return None


def verify_log(path: Path, keys: dict[str, Ed25519PublicKey] | None = None,
               anchor: Checkpoint | None = None, from_genesis: bool = True) -> Verification:
    """Walk the chain and stop at the first problem.

    Args:
        path: a JSON Lines audit file.
        keys: trusted checkpoint keys by key id; None checks checkpoints' structure only.
        anchor: a checkpoint kept elsewhere; the log must reach it and agree with it.
        from_genesis: False for an exported range, whose first record may have any seq and
            links to a predecessor that is not in the file.
    """
    out = Verification(path)
    prev: str | None = "" if from_genesis else None
    anchored_hash = ""
    index = 0
    for line in _lines(path):
        try:
            event = _parse(line, path)
        except ValueError as exc:
            torn = not line.raw.endswith(b"\n")
            out.problem = Problem("torn" if torn else "unparseable", str(exc), line.number,
                                  line.offset, index + 1)
            return out
        if event is None:
            out.good_bytes = line.offset + len(line.raw)
            continue
        index += 1
        if from_genesis:
            expected = index
        else:  # a range starts wherever its first record says, then counts on
            expected = out.first_seq + index - 1 if index > 1 else max(event.seq, 1)
        problem = None
        if event.seq != expected:
            problem = Problem("seq", f"record {index}: seq is {event.seq}, expected {expected}")
        elif prev is not None and event.prev_hash != prev:
            problem = Problem("prev_hash", f"record {index} (seq {event.seq}): prev_hash does "
                              "not match")
        elif chain_hash(event) != event.hash:
            problem = Problem("hash", f"record {index} (seq {event.seq}): hash does not match "
                              "content")
        elif record_line(event).encode() != line.raw:
            problem = Problem("form", f"record {index} (seq {event.seq}): not in canonical "
                              "form (the line was rewritten)")
        elif event.operation == OPERATION:
            problem = _check_checkpoint(event, line, index, path, keys, out)
        if problem is not None:
            problem.line, problem.offset, problem.record = line.number, line.offset, index
            out.problem = problem
            return out
        if index == 1:
            out.first_seq = event.seq
        prev = out.head = event.hash
        out.records, out.last_seq = index, event.seq
        out.good_bytes = line.offset + len(line.raw)
        if anchor is not None and event.seq == anchor.seq:
            anchored_hash = event.hash
    if anchor is not None:
        out.problem = _check_anchor(out, anchor, anchored_hash, keys)
    return out


def _check_anchor(out: Verification, anchor: Checkpoint, anchored_hash: str,
                  keys: dict[str, Ed25519PublicKey] | None) -> Problem | None:
    if keys is not None:
        why = anchor.check_signature(keys)
        if why:
            return Problem("signature", f"external checkpoint (seq {anchor.seq}) {why}")
    if anchor.seq > out.last_seq:
        return Problem("truncated", f"truncated: a checkpoint signed at {anchor.time} covers "
                       f"records through seq {anchor.seq}, but the log ends at seq "
                       f"{out.last_seq}: {anchor.seq - out.last_seq} or more record(s) were "
                       "removed from its end")
    if anchor.seq < out.first_seq:
        return Problem("truncated", f"the external checkpoint covers seq {anchor.seq}, "
                       f"before this file's first record (seq {out.first_seq})")
    if anchored_hash != anchor.head:
        return Problem("rewritten", f"record seq {anchor.seq} has hash {anchored_hash[:16]}... "
                       f"but the checkpoint signed at {anchor.time} states "
                       f"{anchor.head[:16]}...: the log was rewritten up to there")
    if keys is not None:
        out.signed_through = max(out.signed_through, anchor.seq)
    return None


def verify_chain(path: Path) -> tuple[int, str | None]:
    """Walk the chain. Returns (records checked, first problem or None); the count is the
    1-based index of the bad record when there is one."""
    v = verify_log(path)
    if v.problem is None:
        return v.records, None
    return v.problem.record, v.problem.message
