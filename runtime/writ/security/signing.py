"""Manifest signatures and the strict broker's pinning.

A security team approves a tool by signing its manifest together with the image id it
reviewed: ``writ caps sign`` writes ``<tool>.sig.json`` beside the manifest::

    {"format": "writ-manifest-signature-v1", "tool": "read-file",
     "image": "writ-tool/read-file:latest", "image_id": "sha256:...",
     "manifest_sha256": "<sha256 of the manifest's canonical JSON>",
     "key_id": "<signer>", "signed_at": "<RFC 3339>", "signature": "<base64 Ed25519>"}

The signature covers every other field (so the image id and the manifest hash), prefixed by
a domain string. The manifest's canonical JSON is its protobuf JSON mapping (field names as
in the .proto) with sorted keys and no spaces: the manifest as the broker sees it, however
the YAML was spelled.

In strict mode (``writ serve --strict --trusted-key FILE``) the broker registers a tool only
with a signature by a trusted key over exactly this manifest and the image id its tag
resolves to now; it keeps the signature (``signatures/<tool>.sig.json`` in the state dir)
and, at every Invoke, refuses the tool if its tag has since moved to another image. Checks
run in this order, each refusal naming what failed: present, well formed, known key,
signature valid, manifest the one signed, image the one signed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from google.protobuf import json_format

from .._proto import capabilities_pb2 as caps
from ..audit.sink import detail_json, dumps, now_rfc3339
from ..errors import FailedPrecondition, InvalidArgument, PermissionDenied
from ..state import ToolRecord
from . import keys

FORMAT = "writ-manifest-signature-v1"
DOMAIN = b"writ-manifest-signature-v1\n"
SUFFIX = ".sig.json"
_FIELDS = ("format", "tool", "image", "image_id", "manifest_sha256", "key_id", "signed_at",
           "signature")


# -- refusals, each with its status ----------------------------------------------------------
class SignatureMissing(FailedPrecondition):
    """Strict mode and no signature."""


class SignatureMalformed(InvalidArgument):
    """The signature document does not parse; the message names the field."""


class SignerUnknown(PermissionDenied):
    """Signed, but not by a key this broker trusts."""


class SignatureInvalid(PermissionDenied):
    """The signature does not verify: the signature document was altered."""


class ManifestNotApproved(PermissionDenied):
    """A valid signature over another manifest."""


class ImageNotApproved(FailedPrecondition):
    """A valid signature over another image: the tag now names a different image."""


def manifest_sha256(manifest: caps.Manifest) -> str:
    return hashlib.sha256(detail_json(manifest).encode()).hexdigest()


@dataclass(frozen=True)
class Signature:
    format: str
    tool: str
    image: str
    image_id: str
    manifest_sha256: str
    key_id: str
    signed_at: str
    signature: str

    def message(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "signature"}
        return DOMAIN + dumps(body).encode()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def parse(cls, text: str, where: str = "signature") -> Signature:
        """Raises SignatureMalformed naming ``where`` and the field."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SignatureMalformed(f"{where}: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SignatureMalformed(f"{where}: expected a JSON object")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise SignatureMalformed(f"{where}: unknown field(s) {unknown}")
        for name in _FIELDS:
            if not isinstance(data.get(name), str) or not data[name]:
                raise SignatureMalformed(f"{where}.{name}: missing or not a string")
        if data["format"] != FORMAT:
            raise SignatureMalformed(f"{where}.format: {data['format']!r} is not {FORMAT!r}")
        if not data["image_id"].startswith("sha256:") or len(data["image_id"]) != 71:
            raise SignatureMalformed(f"{where}.image_id: {data['image_id']!r} is not an "
                                     "image id (sha256:<64 hex>)")
        return cls(**data)


def sign(manifest: caps.Manifest, image_id: str, private: keys.Ed25519PrivateKey) -> Signature:
    """Approve ``manifest`` for the image ``image_id`` (sha256:...)."""
    unsigned = Signature(FORMAT, manifest.name, manifest.image, image_id,
                         manifest_sha256(manifest), keys.key_id(private.public_key()),
                         now_rfc3339(), "-")
    signature = keys.b64(private.sign(unsigned.message()))
    checked = Signature(**{**asdict(unsigned), "signature": signature})
    Signature.parse(checked.to_json())  # refuse to write what the broker would refuse
    return checked


def verify(manifest: caps.Manifest, text: str, trusted: dict[str, keys.Ed25519PublicKey],
           image_id: str, where: str = "signature") -> Signature:
    """Check a signature document against a manifest and the image id found locally.

    Raises:
        SignatureMalformed, SignerUnknown, SignatureInvalid, ManifestNotApproved,
        ImageNotApproved: in that order of checking; the message says what differs.
    """
    sig = Signature.parse(text, where)
    public = trusted.get(sig.key_id)
    if public is None:
        raise SignerUnknown(f"{where}: signed by key {sig.key_id}, which is not a trusted key "
                            f"(trusted: {sorted(trusted) or 'none'})")
    try:
        raw = keys.unb64(sig.signature, f"{where}.signature")
    except ValueError as exc:
        raise SignatureMalformed(str(exc)) from None
    if not keys.verify(public, raw, sig.message()):
        raise SignatureInvalid(f"{where}: the signature does not verify with key {sig.key_id}; "
                               "the signature file was altered after signing")
    if sig.tool != manifest.name:
        raise ManifestNotApproved(f"{where}: signed for tool {sig.tool!r}, not "
                                  f"{manifest.name!r}")
    actual = manifest_sha256(manifest)
    if actual != sig.manifest_sha256:
        raise ManifestNotApproved(
            f"{where}: manifest of {manifest.name!r} differs from the one key {sig.key_id} "
            f"signed (sha256 {actual[:16]}..., signed {sig.manifest_sha256[:16]}...)")
    if image_id != sig.image_id:
        raise ImageNotApproved(
            f"{where}: image {manifest.image} is {image_id} here, but key {sig.key_id} "
            f"approved {sig.image_id}; the image changed since review: re-review and re-sign")
    return sig


def signature_path(manifest_path: Path) -> Path:
    """capabilities/read-file.yaml -> capabilities/read-file.sig.json"""
    return manifest_path.with_name(manifest_path.stem + SUFFIX)


# -- the broker side -----------------------------------------------------------------------
class Pinning:
    """What RegisterTool and Invoke ask about signatures (strict or not)."""

    def __init__(self, strict: bool, trusted: dict[str, keys.Ed25519PublicKey],
                 store: Path) -> None:
        if strict and not trusted:
            raise InvalidArgument("strict mode needs at least one --trusted-key")
        self.strict = strict
        self.trusted = trusted
        self.store = store
        # Signatures already verified, by (tool, registered_at, signature text).
        self._checked: dict[tuple[str, str, str], str] = {}

    @classmethod
    def from_files(cls, strict: bool, key_files: list[Path], store: Path) -> Pinning:
        """Raises InvalidArgument naming a key file that does not load, or strict mode
        without keys."""
        try:
            trusted = keys.load_public_keys(key_files)
        except keys.KeyFileError as exc:
            raise InvalidArgument(f"trusted key: {exc}") from None
        return cls(strict, trusted, store)

    def _path(self, tool: str) -> Path:
        return self.store / f"{tool}{SUFFIX}"

    def check_register(self, manifest: caps.Manifest, image_id: str, text: str) -> str:
        """Decide a registration; returns the signer's key id ("" when unsigned or not
        checkable). Keeps the signature for later Invokes.

        Raises:
            SignatureMissing: strict and unsigned. The refusals of ``verify``.
        """
        if not text:
            if self.strict:
                raise SignatureMissing(
                    f"strict mode: the manifest of {manifest.name!r} is unsigned; a security "
                    "team approves it with `writ caps sign` and it is registered with the "
                    "signature")
            self._path(manifest.name).unlink(missing_ok=True)
            return ""
        if not self.trusted:
            Signature.parse(text)  # still refuse garbage
            return ""
        sig = verify(manifest, text, self.trusted, image_id)
        self.store.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self._path(manifest.name).with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self._path(manifest.name))
        return sig.key_id

    def check_invoke(self, tool: ToolRecord, resolve: Callable[[str], str]) -> None:
        """Strict mode: the tool's kept signature still holds and its tag still names the
        signed image. ``resolve`` maps an image reference to its local image id.

        Raises:
            SignatureMissing: registered without a signature (before strict mode).
            ImageNotApproved: the tag now names another image, or no longer exists.
            The refusals of ``verify`` (a trusted key was removed, the store edited).
        """
        if not self.strict:
            return
        path = self._path(tool.name)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise SignatureMissing(
                f"strict mode: tool {tool.name!r} was registered without a signature; "
                "register it again with its signature") from None
        key = (tool.name, tool.registered_at, text)
        if key not in self._checked:
            verify(tool.manifest, text, self.trusted, tool.image_id, f"kept signature of "
                   f"{tool.name!r}")
            if len(self._checked) > 1024:
                self._checked.clear()
            self._checked[key] = "ok"
        try:
            current = resolve(tool.image)
        except Exception as exc:  # noqa: BLE001 - any failure to resolve refuses the run
            details = getattr(exc, "details", str(exc))
            raise ImageNotApproved(f"strict mode: image {tool.image} of {tool.name!r} no "
                                   f"longer resolves ({details}); the signed image was "
                                   f"{tool.image_id}") from None
        if current != tool.image_id:
            raise ImageNotApproved(
                f"strict mode: image {tool.image} of {tool.name!r} now resolves to {current}, "
                f"not the {tool.image_id} its signed manifest approves; the image was "
                "replaced: re-review, re-sign and register it again")


def registration_detail(manifest: caps.Manifest, image_id: str, signer: str) -> str:
    """``detail`` of a tool.register record: what was pinned, and who approved it."""
    return detail_json({"manifest": json_format.MessageToDict(
        manifest, preserving_proto_field_name=True), "image_id": image_id, "signed_by": signer})
