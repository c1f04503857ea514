"""The sink protocol and the record hash shared by every sink."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .._proto import audit_pb2


class AuditSink(Protocol):
    def record(self, event: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        """Assign seq, time and chain hashes, make the record durable, return it.

        Raises:
            AuditUnavailable: the record could not be made durable; the caller must not act.
        """
        ...

    def append(self, event: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        """Assign seq, time and chain hashes and return at once: the record is durable no
        later than the next record ``record`` makes durable, or the next ``sync``. Only for
        operations with no effect outside the broker (DESIGN.md, "Audit").

        Raises:
            AuditUnavailable: the sink refuses records.
        """
        ...

    def sync(self) -> None:
        """Return once every record chained so far is durable. Raises AuditUnavailable."""
        ...

    def all_durable(self) -> bool:
        """True when no chained record waits for its write (``sync`` would not wait)."""
        ...

    def close(self) -> None: ...


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_INT64 = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}
# AuditEvent is flat (scalars only): its canonical dict is exactly what
# json_format.MessageToDict(preserving_proto_field_name=True) gives (set fields only, 64-bit
# integers as strings, enums by name), built about five times faster on the append path.
# tests/unit/test_audit_sink.py holds the two to the same output and AuditEvent to flat.


def canonical(event: audit_pb2.AuditEvent) -> dict[str, object]:
    out: dict[str, object] = {}
    for fd, value in event.ListFields():
        if fd.type == FieldDescriptor.TYPE_ENUM and fd.enum_type is not None:
            known = fd.enum_type.values_by_number.get(value)
            out[fd.name] = known.name if known is not None else value
        elif fd.type in _INT64:
            out[fd.name] = str(value)
        else:
            out[fd.name] = value
    return out


def dumps(body: Any) -> str:
    """The one JSON spelling used for hashing, lines and details: sorted keys, no spaces,
    UTF-8 kept as is."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(event: audit_pb2.AuditEvent) -> str:
    """sha256 over the canonical JSON of the record without its own ``hash`` field
    (sorted keys, no spaces): language-neutral, so anyone can re-verify the file."""
    body = canonical(event)
    body.pop("hash", None)
    return hashlib.sha256(dumps(body).encode()).hexdigest()


def record_line(event: audit_pb2.AuditEvent) -> str:
    """The record as it is stored: one line of canonical JSON, newline-terminated."""
    return dumps(canonical(event)) + "\n"


def detail_json(value: Message | dict[str, Any]) -> str:
    """Canonical JSON for ``AuditEvent.detail``: a message as its JSON mapping (field names
    as in the .proto), or a plain mapping."""
    if isinstance(value, Message):
        value = json_format.MessageToDict(value, preserving_proto_field_name=True)
    return dumps(value)
