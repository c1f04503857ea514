"""Manifest signatures: `writ caps keygen | sign | verify`, and the strict broker's pinning
decisions (Pinning) without a broker: every refusal has its own status and names what
differs; an image swapped under the same tag is refused at Invoke."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from writ import cli
from writ._proto import capabilities_pb2 as caps
from writ.errors import BrokerError, ImageNotFound, InvalidArgument
from writ.manifests import load_manifest_file
from writ.security import keys, signing
from writ.state import ToolRecord

REPO = Path(__file__).resolve().parents[2]
IMAGE_A = "sha256:" + "a" * 64
IMAGE_B = "sha256:" + "b" * 64


@pytest.fixture
def manifest_path(tmp_path: Path) -> Path:
    path = tmp_path / "read-file.yaml"
    path.write_text((REPO / "capabilities" / "read-file.yaml").read_text())
    return path


@pytest.fixture
def team(tmp_path: Path) -> tuple[keys.Ed25519PrivateKey, dict[str, keys.Ed25519PublicKey]]:
    key = keys.generate(tmp_path / "team.key", tmp_path / "team.pub")
    return key, keys.load_public_keys([tmp_path / "team.pub"])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- keys and the signature document -------------------------------------------------------
def test_keygen_writes_a_private_key_0600_and_refuses_to_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json", "caps", "keygen", "--out", str(tmp_path / "sec"))
    assert code == 0
    data = json.loads(out)
    assert stat.S_IMODE(os.stat(tmp_path / "sec.key").st_mode) == 0o600
    assert keys.key_id(keys.load_public(tmp_path / "sec.pub")) == data["key_id"]
    assert keys.key_id(keys.load_private(tmp_path / "sec.key").public_key()) == data["key_id"]
    with pytest.raises(SystemExit, match="exists; refusing to overwrite"):
        cli.main(["caps", "keygen", "--out", str(tmp_path / "sec")])


def test_sign_then_verify_with_the_cli(tmp_path: Path, manifest_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "caps", "keygen", "--out", str(tmp_path / "sec"))
    code, out, _ = run(capsys, "caps", "sign", str(manifest_path), "--key",
                       str(tmp_path / "sec.key"), "--image-id", IMAGE_A)
    assert code == 0
    sig_path = tmp_path / "read-file.sig.json"
    assert out.strip().endswith(str(sig_path))
    doc = json.loads(sig_path.read_text())
    assert doc["image_id"] == IMAGE_A and doc["tool"] == "read-file"
    assert doc["manifest_sha256"] == signing.manifest_sha256(load_manifest_file(manifest_path))
    code, out, _ = run(capsys, "caps", "verify", str(manifest_path), "--trusted-key",
                       str(tmp_path / "sec.pub"), "--image-id", IMAGE_A)
    assert code == 0 and out.startswith(f"ok: read-file approved for {IMAGE_A} by key ")
    # the same signature, another image: refused, naming both digests
    code, out, _ = run(capsys, "caps", "verify", str(manifest_path), "--trusted-key",
                       str(tmp_path / "sec.pub"), "--image-id", IMAGE_B)
    assert code == 1
    assert out.startswith("REFUSED (FAILED_PRECONDITION): ")
    assert f"is {IMAGE_B} here, but key {doc['key_id']} approved {IMAGE_A}" in out


def test_signature_is_over_the_parsed_manifest_not_its_spelling(
        tmp_path: Path, manifest_path: Path,
        team: tuple[keys.Ed25519PrivateKey, dict[str, keys.Ed25519PublicKey]]) -> None:
    key, trusted = team
    sig = signing.sign(load_manifest_file(manifest_path), IMAGE_A, key)
    respelled = manifest_path.read_text().replace("# read-file:", "# (comment changed)") \
        .replace("ops: [READ, STAT]", "ops:\n      - READ\n      - STAT")
    manifest_path.write_text(respelled)
    assert signing.verify(load_manifest_file(manifest_path), sig.to_json(), trusted,
                          IMAGE_A).key_id == sig.key_id


# -- every refusal, precisely --------------------------------------------------------------
def _tamper(doc: dict[str, str], field: str, value: str) -> str:
    return json.dumps({**doc, field: value})


REFUSALS = [
    # (id, how, expected exception, expected status, text in the message)
    ("not-json", lambda d, m: ("{nope", m), signing.SignatureMalformed, "INVALID_ARGUMENT",
     "signature: not JSON"),
    ("missing-field", lambda d, m: (json.dumps({k: v for k, v in d.items() if k != "key_id"}),
                                    m), signing.SignatureMalformed, "INVALID_ARGUMENT",
     "signature.key_id: missing or not a string"),
    ("unknown-field", lambda d, m: (json.dumps({**d, "x": "1"}), m),
     signing.SignatureMalformed, "INVALID_ARGUMENT", "unknown field(s) ['x']"),
    ("bad-image-id", lambda d, m: (_tamper(d, "image_id", "latest"), m),
     signing.SignatureMalformed, "INVALID_ARGUMENT", "'latest' is not an image id"),
    ("unknown-key", lambda d, m: (_tamper(d, "key_id", "0123456789abcdef"), m),
     signing.SignerUnknown, "PERMISSION_DENIED",
     "signed by key 0123456789abcdef, which is not a trusted key"),
    ("digest-edited-in-the-file", lambda d, m: (_tamper(d, "image_id", IMAGE_B), m),
     signing.SignatureInvalid, "PERMISSION_DENIED", "the signature does not verify"),
    ("not-base64", lambda d, m: (_tamper(d, "signature", "%%%"), m),
     signing.SignatureMalformed, "INVALID_ARGUMENT", "signature.signature: not valid base64"),
    ("manifest-widened", lambda d, m: (json.dumps(d), _widened(m)),
     signing.ManifestNotApproved, "PERMISSION_DENIED",
     "manifest of 'read-file' differs from the one key"),
    ("other-tool", lambda d, m: (json.dumps(d), _renamed(m)),
     signing.ManifestNotApproved, "PERMISSION_DENIED", "signed for tool 'read-file', not "),
]


def _widened(m: caps.Manifest) -> caps.Manifest:
    out = caps.Manifest()
    out.CopyFrom(m)
    out.files[0].ops.append(caps.WRITE)
    return out


def _renamed(m: caps.Manifest) -> caps.Manifest:
    out = caps.Manifest()
    out.CopyFrom(m)
    out.name = "read-file2"
    return out


@pytest.mark.parametrize(("how", "error", "code", "text"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
def test_each_bad_signature_is_refused_precisely(
        manifest_path: Path, team: tuple[keys.Ed25519PrivateKey,
                                         dict[str, keys.Ed25519PublicKey]],
        how: object, error: type[BrokerError], code: str, text: str) -> None:
    key, trusted = team
    manifest = load_manifest_file(manifest_path)
    doc = json.loads(signing.sign(manifest, IMAGE_A, key).to_json())
    sig_text, presented = how(doc, manifest)  # type: ignore[operator]
    with pytest.raises(error) as info:
        signing.verify(presented, sig_text, trusted, IMAGE_A)
    assert info.value.code == code
    assert text in info.value.details, info.value.details


def test_signature_by_another_key_with_our_key_id(
        manifest_path: Path, team: tuple[keys.Ed25519PrivateKey,
                                         dict[str, keys.Ed25519PublicKey]]) -> None:
    _, trusted = team
    manifest = load_manifest_file(manifest_path)
    forged = signing.sign(manifest, IMAGE_A, keys.Ed25519PrivateKey.generate())
    doc = {**json.loads(forged.to_json()), "key_id": next(iter(trusted))}
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(manifest, json.dumps(doc), trusted, IMAGE_A)


# -- the strict broker's decisions ---------------------------------------------------------
def record(manifest: caps.Manifest, image_id: str = IMAGE_A) -> ToolRecord:
    return ToolRecord(manifest.name, manifest.image, image_id, manifest, "2026-11-22T00:00:00Z")


def test_strict_needs_a_trusted_key(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="strict mode needs at least one --trusted-key"):
        signing.Pinning.from_files(True, [], tmp_path)
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(InvalidArgument, match=r"trusted key: .*bad.pub: not a PEM public key"):
        signing.Pinning.from_files(True, [tmp_path / "bad.pub"], tmp_path)


def test_strict_register_and_invoke(
        tmp_path: Path, manifest_path: Path,
        team: tuple[keys.Ed25519PrivateKey, dict[str, keys.Ed25519PublicKey]]) -> None:
    key, trusted = team
    pin = signing.Pinning(True, trusted, tmp_path / "signatures")
    manifest = load_manifest_file(manifest_path)
    with pytest.raises(signing.SignatureMissing) as info:
        pin.check_register(manifest, IMAGE_A, "")
    assert info.value.code == "FAILED_PRECONDITION"
    assert "strict mode: the manifest of 'read-file' is unsigned" in info.value.details
    text = signing.sign(manifest, IMAGE_A, key).to_json()
    with pytest.raises(signing.ImageNotApproved):
        pin.check_register(manifest, IMAGE_B, text)  # the tag names another image already
    assert pin.check_register(manifest, IMAGE_A, text) == keys.key_id(key.public_key())
    assert (tmp_path / "signatures" / "read-file.sig.json").read_text() == text

    tags = {"writ-tool/read-file:latest": IMAGE_A}
    pin.check_invoke(record(manifest), tags.__getitem__)
    # Same tag, another image: refused at Invoke.
    tags["writ-tool/read-file:latest"] = IMAGE_B
    with pytest.raises(signing.ImageNotApproved) as info:
        pin.check_invoke(record(manifest), tags.__getitem__)
    assert info.value.code == "FAILED_PRECONDITION"
    assert (f"now resolves to {IMAGE_B}, not the {IMAGE_A} its signed manifest approves"
            in info.value.details)

    def gone(image: str) -> str:
        raise ImageNotFound(image)

    with pytest.raises(signing.ImageNotApproved, match="no longer resolves"):
        pin.check_invoke(record(manifest), gone)


def test_strict_invoke_of_a_tool_registered_unsigned_before(
        tmp_path: Path, manifest_path: Path,
        team: tuple[keys.Ed25519PrivateKey, dict[str, keys.Ed25519PublicKey]]) -> None:
    _, trusted = team
    pin = signing.Pinning(True, trusted, tmp_path / "signatures")
    with pytest.raises(signing.SignatureMissing, match="registered without a signature"):
        pin.check_invoke(record(load_manifest_file(manifest_path)), lambda _: IMAGE_A)


def test_kept_signature_that_no_longer_verifies_is_refused(
        tmp_path: Path, manifest_path: Path,
        team: tuple[keys.Ed25519PrivateKey, dict[str, keys.Ed25519PublicKey]]) -> None:
    key, trusted = team
    manifest = load_manifest_file(manifest_path)
    text = signing.sign(manifest, IMAGE_A, key).to_json()
    signing.Pinning(True, trusted, tmp_path / "s").check_register(manifest, IMAGE_A, text)
    other = keys.Ed25519PrivateKey.generate()
    restarted = signing.Pinning(True, {keys.key_id(other.public_key()): other.public_key()},
                                tmp_path / "s")  # the team's key is no longer trusted
    with pytest.raises(signing.SignerUnknown, match="kept signature of 'read-file'"):
        restarted.check_invoke(record(manifest), lambda _: IMAGE_A)


def test_not_strict(tmp_path: Path, manifest_path: Path,
                    team: tuple[keys.Ed25519PrivateKey,
                                dict[str, keys.Ed25519PublicKey]]) -> None:
    key, trusted = team
    manifest = load_manifest_file(manifest_path)
    text = signing.sign(manifest, IMAGE_A, key).to_json()
    loose = signing.Pinning(False, {}, tmp_path / "s")
    assert loose.check_register(manifest, IMAGE_A, "") == ""
    assert loose.check_register(manifest, IMAGE_A, text) == ""  # no keys: not checkable
    with pytest.raises(signing.SignatureMalformed):
        loose.check_register(manifest, IMAGE_A, "{}")
    loose.check_invoke(record(manifest, IMAGE_B), lambda _: IMAGE_A)  # not pinned
    # With trusted keys a given signature is still checked, and a bad one refused.
    checked = signing.Pinning(False, trusted, tmp_path / "s")
    assert checked.check_register(manifest, IMAGE_A, text) == keys.key_id(key.public_key())
    with pytest.raises(signing.ImageNotApproved):
        checked.check_register(manifest, IMAGE_B, text)
