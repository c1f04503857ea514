"""The sink protocol and the record hash shared by every sink."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf import json_format

from .._proto import audit_pb2


class AuditSink(Protocol):
    def record(self, event: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        """Assign seq, time and chain hashes, make the record durable, return it.

        Raises:
            AuditUnavailable: the record could not be made durable; the caller must not act.
        """
        ...

    def close(self) -> None: ...


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(event: audit_pb2.AuditEvent) -> dict[str, object]:
    return json_format.MessageToDict(event, preserving_proto_field_name=True)


def chain_hash(event: audit_pb2.AuditEvent) -> str:
    """sha256 over the canonical JSON of the record without its own ``hash`` field
    (sorted keys, no spaces): language-neutral, so anyone can re-verify the file."""
    body = canonical(event)
    body.pop("hash", None)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
