"""`writ audit query | export | report | unused | verify | checkpoint-key` over a log written
by a real FileSink: filters, a re-verifiable export, the action-authority delta (granted,
exercised, denied) and each tool's unused authority with a tightened manifest."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from writ import cli
from writ._proto import audit_pb2
from writ.audit import (
    CheckpointKey,
    FileSink,
    detail_json,
    query,
    read_records,
    report,
    sidecar_path,
    verify_log,
)
from writ.audit.checkpoint import KEY_FILE
from writ.manifests import parse_grant, parse_manifest
from writ.security.signing import registration_detail

GRANT_ID = "a1" * 16
OTHER_GRANT = "b2" * 16
ATTENUATED = "c3" * 16
BOUND = "d4" * 16
MANIFEST = parse_manifest({
    "name": "fetcher", "image": "writ-tool/fetcher:latest", "description": "test",
    "files": [{"id": "ro", "paths": ["**"], "ops": ["READ", "STAT", "LIST"]},
              {"id": "out", "paths": ["out/**"], "ops": ["WRITE", "CREATE"]}],
    "net": [{"id": "api", "schemes": ["https"], "host": "api.example.com",
             "methods": ["GET", "POST"], "path_prefixes": ["/v1/"]}],
    "pay": [{"id": "shops", "payees": ["acme", "bolt"], "currency": "EUR",
             "max_per_payment": 500, "budget": 1000, "max_count": 3}],
})
GRANT = parse_grant({
    "tools": [{"id": "use-fetcher", "name": "fetcher"}],
    "files": [{"id": "reports", "workspace": "demo", "paths": ["reports/**"],
               "ops": ["READ", "LIST"]},
              {"workspace": "demo", "paths": ["out/**"], "ops": ["WRITE"]}],
    "net": [{"id": "weather", "schemes": ["https"], "host": "api.example.com",
             "methods": ["GET"], "path_prefixes": ["/v1/"]}],
    "expires_at": 4102444800,
})


def ev(operation: str, target: str, decision: int = audit_pb2.ALLOW, **kw: Any) \
        -> audit_pb2.AuditEvent:
    base = {"actor": "tool:fetcher", "tool": "fetcher", "grant_id": GRANT_ID,
            "token_id": BOUND, "invocation_id": "i1", "status": "OK" if decision == 1 else
            "PERMISSION_DENIED", "reason": f"{target} allowed" if decision == 1 else "no rule"}
    return audit_pb2.AuditEvent(operation=operation, target=target, decision=decision,
                                **{**base, **kw})


def history() -> list[audit_pb2.AuditEvent]:
    agent = {"actor": "agent", "token_id": GRANT_ID}
    return [
        audit_pb2.AuditEvent(actor="operator", operation="tool.register", target="fetcher",
                             decision=audit_pb2.ALLOW, status="OK", reason="pinned",
                             detail=registration_detail(MANIFEST, "sha256:" + "e" * 64, "")),
        audit_pb2.AuditEvent(actor="operator", operation="token.mint", target=GRANT_ID,
                             token_id=GRANT_ID, grant_id=GRANT_ID, decision=audit_pb2.ALLOW,
                             status="OK", detail=detail_json(GRANT)),
        ev("tool.invoke", "fetcher", **agent, rule="use-fetcher"),
        ev("file.read", "demo:reports/q3.csv", rule="reports", bytes=120),
        ev("file.read", "demo:reports/q3.csv", rule="reports", bytes=120),
        ev("file.list", "demo:reports", rule="reports"),
        ev("file.read", "demo:private/secret.txt", audit_pb2.DENY,
           reason="grant has no rule allowing READ demo:private/secret.txt"),
        ev("net.request", "GET https://api.example.com/v1/forecast", rule="weather",
           bytes=900),
        ev("net.request", "POST https://evil.example.net/x", audit_pb2.DENY,
           reason="no grant allows POST https://evil.example.net:443/x"),
        ev("tool.exit", "fetcher", reason="finished with a result"),
        # a second invocation through an attenuated token of the same grant
        ev("tool.invoke", "fetcher", actor="agent", token_id=ATTENUATED, invocation_id="i2",
           rule="use-fetcher"),
        ev("file.read", "demo:reports/q4.csv", invocation_id="i2", rule="reports"),
        # another grant, another tool: out of scope for most filters
        ev("tool.invoke", "word-count", actor="agent", tool="word-count",
           grant_id=OTHER_GRANT, token_id=OTHER_GRANT, invocation_id="i3", rule="tools[0]"),
        ev("token.check", "i3", audit_pb2.DENY, tool="word-count", grant_id=OTHER_GRANT,
           token_id="", invocation_id="i3", reason="malformed token", status="UNAUTHENTICATED"),
    ]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state_dir = tmp_path / "state"
    key = CheckpointKey.load_or_create(state_dir / KEY_FILE)
    sink = FileSink(state_dir / "audit.jsonl", checkpoint_key=key, checkpoint_every=0)
    for e in history():
        sink.record(e)
    sink.close()
    return state_dir


def run(capsys: pytest.CaptureFixture[str], state: Path, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--state-dir", str(state), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def records(state: Path) -> list[audit_pb2.AuditEvent]:
    return list(read_records(state / "audit.jsonl"))


# -- query ---------------------------------------------------------------------------------
def seqs(state: Path, **kw: Any) -> list[int]:
    return [e.seq for e in query.Filter(**kw).select(records(state))]


def test_filters(state: Path) -> None:
    assert seqs(state, tool="word-count") == [13, 14]
    assert seqs(state, invocation="i2") == [11, 12]
    assert seqs(state, decision="deny") == [7, 9, 14]
    assert seqs(state, operation="file.") == [4, 5, 6, 7, 12]
    assert seqs(state, operation="file.list") == [6]
    assert seqs(state, grant=OTHER_GRANT[:6]) == [13, 14]
    # a token follows into the invocations it started (their records carry the bound token)
    assert seqs(state, token=ATTENUATED[:8]) == [11, 12]
    assert seqs(state, token=GRANT_ID) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert seqs(state, from_seq=3, to_seq=5) == [3, 4, 5]
    times = [e.time for e in records(state)]
    assert seqs(state, since=times[4], until=times[6]) == [5, 6]
    assert seqs(state, since="1h") == list(range(1, 16))
    assert seqs(state, until="2000-01-01") == []


def test_parse_time() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert query.parse_time("2h", now) == "2026-11-22T10:00:00.000000Z"
    assert query.parse_time("7d", now) == "2026-11-15T12:00:00.000000Z"
    assert query.parse_time("2026-11-22") == "2026-11-22T00:00:00.000000Z"
    assert query.parse_time("2026-11-22T10:00+02:00") == "2026-11-22T08:00:00.000000Z"
    with pytest.raises(ValueError, match="use ISO 8601"):
        query.parse_time("yesterday")
    with pytest.raises(ValueError, match="decision 'maybe'"):
        query.Filter(decision="maybe")


def test_query_cli(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, state, "audit", "query", "--decision", "deny", "--tool",
                       "fetcher")
    assert code == 0 and len(out.splitlines()) == 2
    assert "DENY  file.read" in out and "demo:private/secret.txt" in out
    code, out, _ = run(capsys, state, "--json", "audit", "query", "--invocation", "i2")
    assert [r["seq"] for r in json.loads(out)] == ["11", "12"]
    code, out, _ = run(capsys, state, "audit", "tail", "-n", "2")
    assert [line.split()[0] for line in out.splitlines()] == ["14", "15"]
    with pytest.raises(SystemExit, match="use ISO 8601"):
        run(capsys, state, "audit", "query", "--since", "last tuesday")


def test_export_writes_json_lines_and_a_range_reverifies(
        state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "range.jsonl"
    code, _, err = run(capsys, state, "audit", "export", "--from-seq", "3", "--to-seq", "15",
                       "--out", str(out_file))
    assert code == 0 and "exported 13 record(s), seq 3..15 (contiguous" in err
    lines = out_file.read_text().splitlines()
    assert len(lines) == 13 and json.loads(lines[0])["seq"] == "3"
    original = (state / "audit.jsonl").read_text().splitlines()
    assert lines == original[2:15]  # byte for byte
    pub = tmp_path / "checkpoint.pub"
    _, pem, _ = run(capsys, state, "audit", "checkpoint-key")
    pub.write_text(pem)
    code, out, _ = run(capsys, state, "audit", "verify", "--range", "--file", str(out_file),
                       "--pubkey", str(pub))
    assert code == 0, out
    assert "13 record(s) (seq 3..15), chain intact; 1 checkpoint(s) signed by a trusted key; " \
        "authenticated through seq 15" in out
    code, out, _ = run(capsys, state, "audit", "export", "--decision", "deny")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == ["7", "9", "14"]


# -- the action-authority delta ------------------------------------------------------------
def test_delta_for_a_grant(state: Path) -> None:
    delta = report.action_authority(records(state), query.Filter(grant=GRANT_ID[:8]))
    assert [g.grant_id for g in delta.granted] == [GRANT_ID]
    g = delta.granted[0]
    assert g.rules == ["use-fetcher", "reports", "grant.files[1]", "weather"]
    assert g.unused_rules == ["grant.files[1]"]  # the out/** WRITE rule was never used
    assert any("reports/**" in line for line in g.authority)
    exercised = {(r.operation, r.target, r.count, r.bytes, r.rule) for r in delta.exercised}
    assert exercised == {
        ("tool.invoke", "fetcher", 2, 0, "use-fetcher"),
        ("file.read", "demo:reports/q3.csv", 2, 240, "reports"),
        ("file.list", "demo:reports", 1, 0, "reports"),
        ("net.request", "GET https://api.example.com/v1/forecast", 1, 900, "weather"),
        ("file.read", "demo:reports/q4.csv", 1, 0, "reports"),
    }
    denied = {(r.operation, r.target, r.count) for r in delta.denied}
    assert denied == {("file.read", "demo:private/secret.txt", 1),
                      ("net.request", "POST https://evil.example.net/x", 1)}
    text = report.render_delta(delta, width=150)
    head = text.splitlines()[0]
    assert head.startswith("GRANTED") and "| EXERCISED" in head and "| DENIED" in head
    assert "never exercised: grant.files[1]" in text
    assert text.splitlines()[-1] == (
        f"11 record(s) in scope (grant={GRANT_ID[:8]}): 7 exercised, 2 denied; 1 of 4 granted "
        "rule(s) never exercised")


def test_delta_for_a_tool_and_a_token(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, state, "--json", "audit", "report", "--tool", "word-count")
    data = json.loads(out)
    assert code == 0 and data["scope"] == {"tool": "word-count"}
    assert data["granted"][0]["grant"] is None  # its mint is not in this log
    assert [d["reason"] for d in data["denied"]] == ["malformed token"]
    code, out, _ = run(capsys, state, "audit", "report", "--token", ATTENUATED[:10])
    assert code == 0 and "1x file.read" in out and "demo:reports/q4.csv" in out
    assert "mint not in this log" not in out


# -- unused authority ----------------------------------------------------------------------
def test_unused_authority_and_the_tightened_manifest(state: Path) -> None:
    recs = records(state)
    manifests = report.manifests_from_log(recs)
    assert set(manifests) == {"fetcher"} and manifests["fetcher"].source == \
        "audit log seq 1"
    [usage] = report.unused_authority(recs, manifests)
    assert (usage.invocations, usage.exercised, usage.denied) == (2, 5, 2)
    assert usage.used == {"files[0]": {"READ": 3, "LIST": 1}, "net[0]": {"GET": 1}}
    assert usage.unused == [
        "files[0] (ro: **): STAT never exercised (LIST 1x, READ 3x)",
        "files[1] (out: out/**): never exercised",
        "net[0] (api: api.example.com): POST never exercised (GET 1x)",
        "pay[0] (shops): never exercised",
    ]
    s = usage.suggested
    assert [list(f.paths) for f in s.files] == [["**"]]
    assert [caps_names(f.ops) for f in s.files] == [["READ", "LIST"]]
    assert [list(n.methods) for n in s.net] == [["GET"]] and not s.pay
    assert s.name == "fetcher" and s.image == MANIFEST.image


def caps_names(ops: Any) -> list[str]:
    from writ._proto import capabilities_pb2 as caps

    return [caps.FileOp.Name(o) for o in ops]


def test_unused_cli(state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, state, "audit", "unused")
    assert code == 0
    assert out.startswith("fetcher: manifest from audit log seq 1; 2 invocation(s), 5 allowed "
                          "operation(s), 2 denied")
    assert "  unused: pay[0] (shops): never exercised" in out
    suggested = out[out.index("suggested manifest"):].split("\n", 1)[1]
    manifest = parse_manifest(yaml.safe_load("\n".join(
        line[4:] for line in suggested.splitlines() if line.startswith("    "))))
    assert manifest.name == "fetcher" and len(manifest.files) == 1
    # A manifest given on the command line, for a tool never used: no suggestion.
    other = tmp_path / "idle.yaml"
    other.write_text("name: idle\nimage: writ-tool/idle:latest\nfiles:\n  - paths: ['**']\n"
                     "    ops: [READ]\n")
    code, out, _ = run(capsys, state, "audit", "unused", "--manifest", str(other), "--tool",
                       "idle")
    assert out.splitlines()[1] == "  never used in this log: no suggestion"


def test_unexplained_use_is_listed_not_dropped(state: Path) -> None:
    recs = records(state) + [ev("file.write", "demo:elsewhere/x", seq=99)]
    [usage] = report.unused_authority(recs, report.manifests_from_log(recs))
    assert usage.unexplained == ["seq 99: file.write demo:elsewhere/x"]


def test_pay_use_maps_to_payees(state: Path) -> None:
    recs = records(state) + [ev("pay.charge", "acme 300 EUR", rule="x")]
    [usage] = report.unused_authority(recs, report.manifests_from_log(recs))
    assert usage.used["pay[0]"] == {"acme": 1}
    assert list(usage.suggested.pay[0].payees) == ["acme"]


# -- verify and the checkpoint key from the CLI --------------------------------------------
def test_verify_cli(state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = state / "audit.jsonl"
    code, out, _ = run(capsys, state, "audit", "verify")
    assert code == 0
    assert out.startswith(f"{log}: 15 record(s) (seq 1..15), chain intact; 1 checkpoint(s), "
                          "signatures NOT checked (give --pubkey)")
    assert f"reaches the checkpoint in {sidecar_path(log)} (seq 14)" in out
    code, out, _ = run(capsys, state, "--json", "audit", "checkpoint-key")
    data = json.loads(out)
    pub = tmp_path / "ck.pub"
    pub.write_text(data["public_key_pem"])
    code, out, _ = run(capsys, state, "--json", "audit", "verify", "--pubkey", str(pub))
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["signed_through"] == 15
    # a checkpoint key from another broker: the checkpoint is named with its location
    other = CheckpointKey.load_or_create(tmp_path / "other" / KEY_FILE)
    other_pub = tmp_path / "other.pub"
    other_pub.write_text(run(capsys, tmp_path / "other", "audit", "checkpoint-key")[1])
    code, out, _ = run(capsys, state, "audit", "verify", "--pubkey", str(other_pub))
    assert code == 1
    assert f"BROKEN: {log}:15 (byte " in out
    assert f"record 15 (seq 15): checkpoint signed by key {verify_key_id(state)}, which is " \
        f"not among the trusted key(s) ['{other.key_id}']" in out


def verify_key_id(state: Path) -> str:
    return CheckpointKey.load_or_create(state / KEY_FILE).key_id


def test_verify_cli_names_the_first_bad_record(state: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    log = state / "audit.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    body = json.loads(lines[6])
    body["decision"] = "ALLOW"
    lines[6] = json.dumps(body, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False) + "\n"
    log.write_text("".join(lines))
    offset = sum(len(line.encode()) for line in lines[:6])
    code, out, _ = run(capsys, state, "--json", "audit", "verify")
    data = json.loads(out)
    assert code == 1 and data["problem"] == {
        "kind": "hash", "message": "record 7 (seq 7): hash does not match content",
        "line": 7, "byte": offset, "record": 7}
    code, out, _ = run(capsys, state, "audit", "verify")
    assert out.splitlines()[0] == (f"{log}: BROKEN: {log}:7 (byte {offset}): record 7 (seq 7):"
                                   " hash does not match content")


def test_verify_cli_truncation_and_a_bad_checkpoint_file(
        state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = state / "audit.jsonl"
    kept = tmp_path / "kept-checkpoint.json"
    kept.write_text(sidecar_path(log).read_text())
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:10]))
    sidecar_path(log).unlink()  # the attacker removed the copy beside the log, not ours
    assert run(capsys, state, "audit", "verify")[0] == 0  # nothing left to compare with
    code, out, _ = run(capsys, state, "audit", "verify", "--checkpoint", str(kept))
    assert code == 1 and "truncated: a checkpoint signed at" in out
    assert "covers records through seq 14, but the log ends at seq 10" in out
    kept.write_text("{}")
    code, out, _ = run(capsys, state, "audit", "verify", "--checkpoint", str(kept))
    assert code == 2 and "cannot use checkpoint" in out


def test_unparseable_log_is_reported_by_every_reader(
        state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = state / "audit.jsonl"
    log.write_text(log.read_text() + "garbage\n")
    with pytest.raises(SystemExit, match=r"audit.jsonl:16: unparseable audit record"):
        run(capsys, state, "audit", "report")
    assert verify_log(log).problem is not None


def test_readers_skip_a_line_the_broker_is_still_writing(
        state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = state / "audit.jsonl"
    with open(log, "ab") as f:
        f.write(b'{"actor":"agent","decision":"AL')  # a write in progress
    code, out, _ = run(capsys, state, "audit", "tail", "-n", "1")
    assert code == 0 and out.split()[0] == "15"
    code, out, _ = run(capsys, state, "audit", "verify")  # not growing: really torn
    assert code == 1 and "incomplete final line (31 bytes, no newline)" in out
