"""A Control request that does not parse: INVALID_ARGUMENT on the wire, and an audit record
for every method that records its decisions (none for the read-only ones)."""

from __future__ import annotations

import grpc
import pytest
from writ._proto import audit_pb2

from tests.integration.conftest import RunningBroker

BAD_UTF8 = b"\x0a\x02\xff\xfe"  # field 1 (a string in each request below): invalid UTF-8


@pytest.mark.parametrize("method, request_type, operation", [
    ("RevokeToken", "RevokeTokenRequest", "token.revoke"),
    ("PutSecret", "PutSecretRequest", "secret.put"),
    ("SeedAccount", "SeedAccountRequest", "ledger.seed"),
    ("Explain", "ExplainRequest", ""),
], ids=["revoke", "secret", "seed", "explain-read-only"])
def test_malformed_control_request(broker: RunningBroker, method: str, request_type: str,
                                   operation: str) -> None:
    seq = broker.last_seq()
    with grpc.insecure_channel(f"unix:{broker.config.control_socket}") as ch:
        call = ch.unary_unary(f"/writ.v1.Control/{method}",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as err:
            call(BAD_UTF8, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (f"malformed request: not a valid writ.v1.{request_type} "
                                   "(bad encoding, or invalid UTF-8 in a string field)")
    records = broker.audit_since(seq)
    if not operation:
        assert records == []
        return
    (ev,) = records
    assert (ev.operation, ev.decision, ev.status, ev.method) == (
        operation, audit_pb2.DENY, "INVALID_ARGUMENT", f"/writ.v1.Control/{method}")
