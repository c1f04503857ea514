"""Ed25519 keys on disk: the broker's audit checkpoint key and security teams' signing keys.

Private keys are PKCS#8 PEM, unencrypted, written 0600 with O_EXCL (never overwritten);
public keys are SubjectPublicKeyInfo PEM. A key id is the first 16 hex digits of sha256 of
the raw 32-byte public key: short enough to read aloud, long enough not to collide by chance.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["Ed25519PrivateKey", "Ed25519PublicKey", "KeyFileError", "b64", "generate",
           "key_id", "load_private", "load_public", "load_public_keys", "public_pem",
           "unb64", "verify"]


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 key; the message names it."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    """Strict standard base64. Raises ValueError naming ``what``."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ValueError(f"{what}: not valid base64") from None


def verify(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def generate(private_path: Path, public_path: Path | None = None) -> Ed25519PrivateKey:
    """Create a new key; refuses to overwrite an existing file.

    Raises:
        FileExistsError: ``private_path`` exists.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL and 0600 at creation: the key is never readable by others, not even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    if public_path is not None:
        public_path.write_text(public_pem(key.public_key()))
    return key


def load_private(path: Path) -> Ed25519PrivateKey:
    """Raises KeyFileError naming the file when it is missing or not an Ed25519 private key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read private key: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """A public key file, or the public half of a private key file.

    Raises:
        KeyFileError: missing, unreadable, or not Ed25519; the message names the file.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read public key: {exc.strerror}") from None
    if b"PRIVATE KEY" in data:
        return load_private(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public_keys(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id. Raises KeyFileError for the first file that does not load."""
    return {key_id(k): k for k in (load_public(p) for p in paths)}
