"""The broker checks a call's input against the tool manifest's input schema before it
decides the call: bad input is INVALID_ARGUMENT with the offending field, a DENY record,
no container and no budget spent."""

from __future__ import annotations

from typing import Any

import pytest
from writ._proto import audit_pb2
from writ.client import WritError

from tests.integration.conftest import PROBE_IMAGE, RunningBroker

SCHEMA = {"type": "object", "properties": {
    "action": {"type": "string", "enum": ["caps", "mounts"]},
    "limit": {"type": "integer", "minimum": 1}},
    "required": ["action"], "additionalProperties": False}


@pytest.fixture(scope="module")
def typed(broker: RunningBroker) -> RunningBroker:
    broker.register({"name": "typed-probe", "image": PROBE_IMAGE, "input_schema": SCHEMA,
                     "limits": {"memory_mb": 128, "timeout_s": 20}})
    return broker


@pytest.mark.parametrize("args, problem", [
    ({}, "'action' is a required property"),
    ({"action": "net_connect"}, "'net_connect' is not one of ['caps', 'mounts'] (at action)"),
    ({"action": "caps", "limit": 0}, "0 is less than the minimum of 1 (at limit)"),
    ({"action": "caps", "extra": 1}, ("Additional properties are not allowed ('extra' was "
                                     "unexpected)")),
], ids=["missing", "enum", "minimum", "additional"])
def test_input_outside_the_schema_is_refused_before_any_container(
        typed: RunningBroker, docker_client: Any, args: dict[str, Any], problem: str) -> None:
    token = typed.mint({"tools": [{"name": "typed-probe", "max_calls": 5}]})
    seq = typed.last_seq()
    with pytest.raises(WritError) as err:
        typed.agent.invoke("typed-probe", args, token)
    assert err.value.code == "INVALID_ARGUMENT"
    assert err.value.details == ("input does not match the input schema of 'typed-probe': "
                                 + problem)
    (ev,) = typed.audit_since(seq)
    assert (ev.operation, ev.decision, ev.status) == ("tool.invoke", audit_pb2.DENY,
                                                      "INVALID_ARGUMENT")
    assert ev.invocation_id == ""
    # No budget was spent: five valid calls still fit in max_calls 5.
    ok = typed.agent.invoke("typed-probe", {"action": "caps"}, token)
    assert ok.ok


def test_a_manifest_whose_schema_is_not_json_schema_is_refused(typed: RunningBroker) -> None:
    with pytest.raises(Exception) as err:
        typed.register({"name": "bad-schema", "image": PROBE_IMAGE,
                        "input_schema": {"type": "objekt"}})
    assert "input_schema: not valid JSON Schema" in str(err.value)
