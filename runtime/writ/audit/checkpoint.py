"""Signed checkpoints of the chain head.

A checkpoint states "record ``seq`` of this log has hash ``head``", signed with the
broker's Ed25519 checkpoint key. Because every record carries its predecessor's hash, a
verified signature over record n's hash authenticates records 1..n: an external party that
holds the public key can check any range that ends at a checkpoint.

Checkpoints live in two places:

- in the log, as an ``audit.checkpoint`` record (itself chained) whose ``detail`` is the
  checkpoint's canonical JSON: a reader of the log alone can verify every range up to the
  last one;
- in the sidecar ``audit.checkpoint.json`` next to the log, the latest checkpoint only,
  replaced atomically after its record is durable. It is what operators copy off the
  machine. A checkpoint whose ``seq`` lies past the end of the log proves that the log lost
  its tail (the broker refuses to start; ``writ audit verify --checkpoint`` says so).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..security import keys
from .sink import dumps, now_rfc3339

KEY_FILE = "audit-checkpoint.key"
SIDECAR_SUFFIX = ".checkpoint.json"  # audit.jsonl -> audit.checkpoint.json
OPERATION = "audit.checkpoint"
DOMAIN = b"writ-audit-checkpoint-v1\n"  # keeps these signatures from meaning anything else
HEX = set("0123456789abcdef")


def sidecar_path(log: Path) -> Path:
    return log.with_name(log.stem + SIDECAR_SUFFIX)


@dataclass(frozen=True)
class Checkpoint:
    seq: int          # the last record covered
    head: str         # that record's hash
    time: str         # when the broker signed it (RFC 3339 UTC)
    key_id: str       # which checkpoint key signed it
    signature: str    # base64 Ed25519 over DOMAIN + canonical JSON of the other fields

    def message(self) -> bytes:
        body = {"seq": self.seq, "head": self.head, "time": self.time, "key_id": self.key_id}
        return DOMAIN + dumps(body).encode()

    def to_json(self) -> str:
        return dumps(asdict(self))

    @classmethod
    def parse(cls, text: str, where: str) -> Checkpoint:
        """Raises ValueError naming ``where`` and the field at fault."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: checkpoint is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(  # noqa: TRY004 - reported like every other parse failure
                f"{where}: checkpoint is not a JSON object")
        extra = set(data) - {"seq", "head", "time", "key_id", "signature"}
        if extra:
            raise ValueError(f"{where}: checkpoint has unknown field(s) {sorted(extra)}")
        seq = data.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ValueError(f"{where}: checkpoint seq {seq!r} is not a positive integer")
        for name in ("head", "time", "key_id", "signature"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise ValueError(f"{where}: checkpoint {name} is missing or not a string")
        if len(data["head"]) != 64 or not set(data["head"]) <= HEX:
            raise ValueError(f"{where}: checkpoint head is not a sha256 hex digest")
        return cls(seq, data["head"], data["time"], data["key_id"], data["signature"])

    def check_signature(self, trusted: dict[str, keys.Ed25519PublicKey]) -> str:
        """"" when a trusted key signed it; otherwise why not (for a report)."""
        public = trusted.get(self.key_id)
        if public is None:
            return (f"signed by key {self.key_id}, which is not among the trusted key(s) "
                    f"{sorted(trusted)}")
        try:
            signature = keys.unb64(self.signature, "signature")
        except ValueError as exc:
            return str(exc)
        if not keys.verify(public, signature, self.message()):
            return f"signature does not verify with key {self.key_id}"
        return ""


class CheckpointKey:
    """The broker's signing key for checkpoints, kept 0600 in its state dir."""

    def __init__(self, private: keys.Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = keys.key_id(self.public)

    @classmethod
    def load_or_create(cls, path: Path) -> CheckpointKey:
        if not path.exists():
            keys.generate(path)
        # The key proves the log's past to outsiders: refuse one others could have read.
        mode = os.stat(path).st_mode & 0o077
        if mode:
            raise keys.KeyFileError(f"{path}: checkpoint key is readable by others "
                                    f"(mode {os.stat(path).st_mode & 0o777:o}); chmod 600")
        return cls(keys.load_private(path))

    def sign(self, seq: int, head: str, time: str | None = None) -> Checkpoint:
        unsigned = Checkpoint(seq, head, time or now_rfc3339(), self.key_id, "")
        signature = keys.b64(self._private.sign(unsigned.message()))
        return Checkpoint(seq, head, unsigned.time, self.key_id, signature)

    def trusted(self) -> dict[str, keys.Ed25519PublicKey]:
        return {self.key_id: self.public}


def write_sidecar(path: Path, cp: Checkpoint) -> None:
    """Replace the sidecar atomically and durably (write, fsync, rename, fsync dir)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (cp.to_json() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_checkpoint_file(path: Path) -> Checkpoint:
    """Raises ValueError (naming the file) when it cannot be read or does not parse."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read checkpoint: {exc}") from None
    return Checkpoint.parse(text, str(path))


def checkpoint_fields(cp: Checkpoint) -> dict[str, Any]:
    """The audit record fields of an in-log checkpoint."""
    return {"actor": "broker", "operation": OPERATION, "target": f"seq {cp.seq}",
            "reason": f"signed head of records 1..{cp.seq} (key {cp.key_id})",
            "detail": cp.to_json()}
