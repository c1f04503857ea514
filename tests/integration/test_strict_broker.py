"""A strict broker (`writ serve --strict --trusted-key`, a real process) registers and runs
only tools whose manifest a trusted key signed for the image their tag names: unsigned,
unknown key, edited manifest, another digest and garbage are each refused with their own
status and audited; an image swapped under the same tag is refused at Invoke."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from writ._proto import audit_pb2, control_pb2
from writ._proto import capabilities_pb2 as caps
from writ.audit import read_records
from writ.client import Client, WritError
from writ.manifests import parse_grant, parse_manifest
from writ.security import keys, signing

from tests.conftest import TEST_RUN_ID

from .conftest import PROBE_IMAGE, PROBE_MANIFEST, make_workspace
from .test_audit_crash import Serve

WORD_COUNT_IMAGE = "writ-tool/word-count:latest"


@dataclass
class Env:
    root: Path
    state: Path
    workspace: Path
    team: keys.Ed25519PrivateKey
    rogue: keys.Ed25519PrivateKey
    tag: str
    manifest: caps.Manifest
    probe_id: str
    other_id: str

    def serve(self, *flags: str) -> Serve:
        return Serve(self.state, "--workspace", f"demo={self.workspace}", *flags)

    def strict(self) -> Serve:
        return self.serve("--strict", "--trusted-key", str(self.root / "team.pub"))

    def audit(self) -> list[audit_pb2.AuditEvent]:
        return list(read_records(self.state / "audit.jsonl"))


@pytest.fixture
def env(docker_client: Any, probe_image: str) -> Iterator[Env]:
    root = Path(tempfile.mkdtemp(prefix="wstrict"))
    repo = f"writ-test/strict-{TEST_RUN_ID}"
    probe = docker_client.images.get(PROBE_IMAGE)
    probe.tag(repo, "latest")
    manifest = parse_manifest({**PROBE_MANIFEST, "name": "strict-probe",
                               "image": f"{repo}:latest"})
    try:
        yield Env(root, root / "state", make_workspace(root),
                  keys.generate(root / "team.key", root / "team.pub"),
                  keys.generate(root / "rogue.key", root / "rogue.pub"),
                  f"{repo}:latest", manifest, str(probe.id),
                  str(docker_client.images.get(WORD_COUNT_IMAGE).id))
    finally:
        try:
            docker_client.images.remove(f"{repo}:latest", noprune=True)
        except Exception:  # noqa: BLE001, S110 - already untagged by the test
            pass
        shutil.rmtree(root, ignore_errors=True)


def register(client: Client, manifest: caps.Manifest, signature: str) -> control_pb2.ToolInfo:
    return client.register_tool(manifest, signature_json=signature)


def refused(client: Client, manifest: caps.Manifest, signature: str) -> WritError:
    with pytest.raises(WritError) as info:
        register(client, manifest, signature)
    return info.value


def last(env: Env, operation: str) -> audit_pb2.AuditEvent:
    return [e for e in env.audit() if e.operation == operation][-1]


def widened(m: caps.Manifest) -> caps.Manifest:
    out = caps.Manifest()
    out.CopyFrom(m)
    out.files[0].ops.append(caps.WRITE)
    return out


def grant_for(tool: str) -> caps.Grant:
    return parse_grant({"tools": [{"name": tool}],
                        "files": [{"workspace": "demo", "paths": ["reports/**"],
                                   "ops": ["READ"]}]})


def test_strict_broker_refuses_each_bad_signature_and_a_swapped_image(
        env: Env, docker_client: Any) -> None:
    good = signing.sign(env.manifest, env.probe_id, env.team).to_json()
    serve = env.strict()
    try:
        with serve.operator() as op, Client(env.state / "agent.sock", timeout=60) as agent:
            cases = [
                ("", "FAILED_PRECONDITION",
                 "strict mode: the manifest of 'strict-probe' is unsigned"),
                (signing.sign(env.manifest, env.probe_id, env.rogue).to_json(),
                 "PERMISSION_DENIED", "which is not a trusted key"),
                (signing.sign(env.manifest, env.other_id, env.team).to_json(),
                 "FAILED_PRECONDITION", f"is {env.probe_id} here, but key "),
                ("{not json", "INVALID_ARGUMENT", "signature: not JSON"),
                (good.replace(env.probe_id, env.other_id), "PERMISSION_DENIED",
                 "the signature does not verify"),
            ]
            for signature, code, text in cases:
                err = refused(op, env.manifest, signature)
                assert (err.code, text in err.details) == (code, True), err
                rec = last(env, "tool.register")
                assert (rec.decision, rec.status, rec.reason) == (audit_pb2.DENY, code,
                                                                  err.details)
            # a manifest edited after signing
            err = refused(op, widened(env.manifest), good)
            assert err.code == "PERMISSION_DENIED"
            assert "manifest of 'strict-probe' differs from the one key" in err.details
            assert op.list_tools() == []

            info = register(op, env.manifest, good)
            assert info.image_id == env.probe_id
            rec = last(env, "tool.register")
            assert rec.decision == audit_pb2.ALLOW
            assert f"manifest signed by {keys.key_id(env.team.public_key())}" in rec.reason

            token = op.mint_token(grant_for("strict-probe"), 300).token
            out = agent.invoke("strict-probe", {"action": "read", "path": "reports/q3.csv"},
                               token)
            assert out.ok and out.result["result"] == {"text": "region,revenue\nnorth,1\n"}

            # The same tag now names another image: refused before any container starts.
            docker_client.images.get(WORD_COUNT_IMAGE).tag(env.tag.split(":")[0], "latest")
            seq = env.audit()[-1].seq
            with pytest.raises(WritError) as info_:
                agent.invoke("strict-probe", {"action": "read", "path": "reports/q3.csv"},
                             token)
            assert info_.value.code == "FAILED_PRECONDITION"
            assert (f"now resolves to {env.other_id}, not the {env.probe_id} its signed "
                    "manifest approves" in info_.value.details)
            since = [e for e in env.audit() if e.seq > seq]
            assert [(e.operation, e.decision, e.status) for e in since] == [
                ("tool.invoke", audit_pb2.DENY, "FAILED_PRECONDITION")]
            # ... and registering it again under the old approval is refused too.
            err = refused(op, env.manifest, good)
            assert err.code == "FAILED_PRECONDITION"
            assert f"is {env.other_id} here, but key" in err.details
    finally:
        serve.stop()


def test_tool_registered_unsigned_is_refused_once_the_broker_is_strict(env: Env) -> None:
    serve = env.serve()
    try:
        with serve.operator() as op:
            assert register(op, env.manifest, "").image_id == env.probe_id
            token = op.mint_token(grant_for("strict-probe"), 300).token
    finally:
        serve.stop()
    serve = env.strict()
    try:
        with Client(env.state / "agent.sock", timeout=60) as agent, \
                pytest.raises(WritError) as info:
            agent.invoke("strict-probe", {"action": "read", "path": "reports/q3.csv"}, token)
        assert info.value.code == "FAILED_PRECONDITION"
        assert "tool 'strict-probe' was registered without a signature" in info.value.details
        assert last(env, "tool.invoke").status == "FAILED_PRECONDITION"
    finally:
        serve.stop()


def test_strict_without_a_trusted_key_does_not_start(env: Env) -> None:
    proc = subprocess.run([sys.executable, "-m", "writ.cli", "--state-dir", str(env.state),
                           "serve", "--strict"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2
    assert "INVALID_ARGUMENT: strict mode needs at least one --trusted-key" in proc.stderr
    (env.root / "bad.pub").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n")
    proc = subprocess.run([sys.executable, "-m", "writ.cli", "--state-dir", str(env.state),
                           "serve", "--strict", "--trusted-key", str(env.root / "bad.pub")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "bad.pub: not a PEM public key" in proc.stderr


def test_tool_register_cli_sends_the_signature_beside_the_manifest(env: Env) -> None:
    import yaml
    from google.protobuf import json_format

    manifest_file = env.root / "strict-probe.yaml"
    manifest_file.write_text(yaml.safe_dump(json_format.MessageToDict(
        env.manifest, preserving_proto_field_name=True)))
    sign = subprocess.run([sys.executable, "-m", "writ.cli", "caps", "sign", str(manifest_file),
                           "--key", str(env.root / "team.key")], capture_output=True,
                          text=True, timeout=60, check=False)
    assert sign.returncode == 0, sign.stderr
    assert (env.root / "strict-probe.sig.json").exists()  # image id asked of the engine
    serve = env.strict()
    try:
        reg = subprocess.run([sys.executable, "-m", "writ.cli", "--state-dir", str(env.state),
                              "tool", "register", str(manifest_file)], capture_output=True,
                             text=True, timeout=60, check=False)
        assert reg.returncode == 0, reg.stderr
        assert reg.stdout.startswith("registered strict-probe:")
    finally:
        serve.stop()
