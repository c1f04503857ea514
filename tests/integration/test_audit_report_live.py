"""The action-authority report from a live broker's own log: the grant from token.mint, what
the probe exercised, what it was denied, and the authority its manifest declares unused."""

from __future__ import annotations

import json

import pytest
from writ import cli
from writ._proto import audit_pb2
from writ._proto import capabilities_pb2 as caps
from writ.audit import query, report
from writ.manifests import parse_grant

from .conftest import PROBE_GRANT, RunningBroker, probe


def test_mint_and_register_records_carry_what_was_granted_and_pinned(
        broker: RunningBroker, probe_token: str) -> None:
    mints = [e for e in broker.audit() if e.operation == "token.mint"]
    grant = report.grant_of(mints[-1])
    assert grant is not None
    expected = parse_grant(PROBE_GRANT)
    assert list(grant.tools) == list(expected.tools)
    assert list(grant.files) == list(expected.files)
    assert grant.expires_at > 0  # the TTL the broker applied, as minted
    reg = [e for e in broker.audit() if e.operation == "tool.register"][-1]
    detail = json.loads(reg.detail)
    assert detail["manifest"]["name"] == "probe"
    assert detail["image_id"].startswith("sha256:") and detail["signed_by"] == ""


def test_report_shows_granted_exercised_and_denied(
        broker: RunningBroker, probe_token: str, capsys: pytest.CaptureFixture[str]) -> None:
    probe(broker, probe_token, "read", path="reports/q3.csv")
    probe(broker, probe_token, "read", path="private/secret.txt")
    grant_id = [e for e in broker.audit() if e.operation == "token.mint"][-1].grant_id

    delta = report.action_authority(broker.audit(), query.Filter(grant=grant_id))
    assert [g.grant_id for g in delta.granted] == [grant_id]
    assert delta.granted[0].rules == ["grant.tools[0]", "reports"]
    assert delta.granted[0].unused_rules == []
    exercised = {(r.operation, r.target, r.count) for r in delta.exercised}
    assert exercised == {("tool.invoke", "probe", 2), ("file.read", "demo:reports/q3.csv", 1)}
    denied = {(r.operation, r.target, r.reason) for r in delta.denied}
    assert denied == {("file.read", "demo:private/secret.txt",
                       "grant has no rule allowing READ demo:private/secret.txt")}

    code = cli.main(["--json", "--state-dir", str(broker.state_dir), "audit", "report",
                     "--grant", grant_id[:12]])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["records"] >= 6
    assert data["denied"][0]["status"] == "PERMISSION_DENIED"

    [usage] = [u for u in report.unused_authority(broker.audit(),
                                                  report.manifests_from_log(broker.audit()))
               if u.tool == "probe"]
    assert usage.used["files[0]"]["READ"] >= 1
    assert any("STAT never exercised" in line for line in usage.unused)
    suggested_ops = set(usage.suggested.files[0].ops)
    assert caps.READ in suggested_ops and caps.STAT not in suggested_ops
    events = [e for e in broker.audit() if e.operation == "file.read"]
    assert {e.decision for e in events} == {audit_pb2.ALLOW, audit_pb2.DENY}


def test_audit_verify_of_the_live_log(broker: RunningBroker,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--state-dir", str(broker.state_dir), "audit", "verify"])
    out = capsys.readouterr().out
    assert code == 0 and "chain intact" in out
