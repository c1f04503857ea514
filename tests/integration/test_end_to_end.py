"""The whole idea, once: an allowed read, a denied read, both audited."""

from __future__ import annotations

from writ._proto import audit_pb2

from .conftest import RunningBroker, probe


def test_granted_read_succeeds_and_is_audited(broker: RunningBroker, probe_token: str) -> None:
    seq = broker.last_seq()
    assert probe(broker, probe_token, "read", path="reports/q3.csv") == {
        "text": "region,revenue\nnorth,1\n"}
    reads = [e for e in broker.audit_since(seq) if e.operation == "file.read"]
    assert len(reads) == 1
    assert reads[0].decision == audit_pb2.ALLOW
    assert reads[0].target == "demo:reports/q3.csv"
    assert reads[0].rule == "reports"
    assert reads[0].bytes == len("region,revenue\nnorth,1\n")
    assert reads[0].actor == "tool:probe"


def test_read_outside_grant_is_denied_and_audited(broker: RunningBroker,
                                                  probe_token: str) -> None:
    seq = broker.last_seq()
    result = probe(broker, probe_token, "read", path="private/secret.txt")
    assert result == {"code": "PERMISSION_DENIED",
                      "message": "grant has no rule allowing READ demo:private/secret.txt"}
    reads = [e for e in broker.audit_since(seq) if e.operation == "file.read"]
    assert [(e.decision, e.target, e.status) for e in reads] == [
        (audit_pb2.DENY, "demo:private/secret.txt", "PERMISSION_DENIED")]
