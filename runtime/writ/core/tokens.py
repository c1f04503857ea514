"""Capability tokens: a chain of protobuf blocks sealed with a chained HMAC.

    mac_0 = HMAC-SHA256(root_key[key_id], block_0)      block_0: the user grant
    mac_i = HMAC-SHA256(mac_{i-1}, block_i)             block_i: a narrowing, or a binding

Whoever holds a token can append a block and compute the next MAC without any key
(offline attenuation); nobody can remove or alter a block, because that needs the MAC of
the chain before it, which the token no longer carries. Every block's grant is another
layer every operation must pass, so appending can only narrow. Only the broker, which
holds the root keys, can verify.

Unverified and verified tokens are different types: only ``UnverifiedToken.verify``
produces a ``VerifiedToken``, and the decision function accepts only what that yields.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from .._proto import capabilities_pb2 as caps
from .._proto import token_pb2
from ..errors import AttenuationWidens, BrokerError, CaveatUnmet, TokenInvalid
from .attenuation import widening
from .policy import Authority

PREFIX = "writ1."
VERSION = 1
MAX_TOKEN_CHARS = 64 * 1024
MAX_BLOCKS = 32


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")  # the one-shot C path: no HMAC object


class Keyring:
    """Broker root keys by id; ``current`` seals new tokens, the others still verify."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError(f"current key {current!r} is not in the keyring")
        self._keys = dict(keys)
        self.current = current

    def key(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def sealing_key(self) -> tuple[str, bytes]:
        return self.current, self._keys[self.current]


@dataclass(frozen=True)
class VerifiedToken:
    """A token whose chain verified. Caveats (expiry, binding) are checked by ``decide``
    and ``check_binding``, not here: a verified token may still be unusable."""

    token_id: str        # hex id of the last block
    grant_id: str        # hex id of the root block
    blocks: tuple[token_pb2.TokenBlock, ...]
    layer_keys: tuple[str, ...] = ()  # per block: the budget-counter key (see verify)

    @property
    def grant(self) -> caps.Grant:
        return self.blocks[0].grant

    @property
    def block_ids(self) -> tuple[str, ...]:
        """Hex ids of every block: revoking any of them revokes this token."""
        return tuple(b.id.hex() for b in self.blocks)

    def authority(self, manifest: caps.Manifest | None = None) -> Authority:
        return Authority.from_blocks(self.blocks, manifest, self.layer_keys)

    def check_binding(self, invocation_id: str) -> None:
        """Raise CaveatUnmet unless the token is bound to exactly this invocation."""
        bound = [b.invocation_id for b in self.blocks if b.invocation_id]
        if not bound:
            raise CaveatUnmet("token is not bound to an invocation; tools receive a bound "
                              "token from the broker")
        wrong = [b for b in bound if b != invocation_id]
        if wrong:
            raise CaveatUnmet(f"token is bound to invocation {wrong[0]}, not to this one")


class UnverifiedToken:
    """A parsed but unchecked token. Safe to inspect for ids (audit), never to trust."""

    def __init__(self, msg: token_pb2.Token, blocks: tuple[token_pb2.TokenBlock, ...]) -> None:
        self._msg = msg
        self._blocks = blocks

    @classmethod
    def parse(cls, text: str) -> UnverifiedToken:
        """Decode ``writ1.<base64url>``.

        Raises:
            TokenInvalid: empty, oversized, wrong prefix, bad base64 or protobuf, wrong
                version, no blocks or too many.
        """
        if not text:
            raise TokenInvalid("no token presented")
        if len(text) > MAX_TOKEN_CHARS:
            raise TokenInvalid(f"token longer than {MAX_TOKEN_CHARS} characters")
        if not text.startswith(PREFIX):
            raise TokenInvalid(f"malformed token: expected the prefix {PREFIX!r}")
        body = text[len(PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            # The decoder skips stray characters and ignores padding and trailing bits, so
            # many texts decode alike; accept only the one canonical encoding.
            if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != body:
                raise ValueError("not canonical base64url")
            msg = token_pb2.Token.FromString(raw)
            blocks = tuple(token_pb2.TokenBlock.FromString(b) for b in msg.blocks)
        except (binascii.Error, ValueError, DecodeError):
            raise TokenInvalid("malformed token: not valid base64url protobuf") from None
        if msg.version != VERSION:
            raise TokenInvalid(f"unsupported token version {msg.version}")
        if not 1 <= len(blocks) <= MAX_BLOCKS:
            raise TokenInvalid(f"token must have 1 to {MAX_BLOCKS} blocks, has {len(blocks)}")
        if len(msg.mac) != hashlib.sha256().digest_size:
            raise TokenInvalid("malformed token: bad MAC length")
        return cls(msg, blocks)

    @property
    def token_id(self) -> str:
        return self._blocks[-1].id.hex()

    @property
    def blocks(self) -> tuple[token_pb2.TokenBlock, ...]:
        """The claimed blocks; nothing here is verified."""
        return self._blocks

    @property
    def grant_id(self) -> str:
        return self._blocks[0].id.hex()

    def verify(self, keyring: Keyring) -> VerifiedToken:
        """Recompute the MAC chain with the root key named by the token.

        Raises:
            TokenInvalid: unknown key id or MAC mismatch (forged or altered).
        """
        key = keyring.key(self._msg.key_id)
        if key is None:
            raise TokenInvalid(f"token sealed with unknown key {self._msg.key_id!r}")
        mac = key
        chain = []
        for raw in self._msg.blocks:
            mac = _mac(mac, raw)
            chain.append(mac)
        # Constant-time compare: a timing oracle on the MAC would allow forgery.
        if not hmac.compare_digest(mac, self._msg.mac):
            raise TokenInvalid("token signature does not verify: forged or altered")
        # Trailing blocks without a grant add no layer (the broker's binding block is one,
        # unique to each invocation): memoize the chain without them, so the cache holds
        # the tokens agents present, not one entry per call that is never seen again.
        layers = len(self._blocks)
        while layers > 1 and not self._blocks[layers - 1].HasField("grant"):
            layers -= 1
        problem = _chain_problem(tuple(self._msg.blocks[:layers]))
        if problem:
            raise (TokenInvalid if problem.startswith("malformed") else AttenuationWidens)(problem)
        # Budget counters are keyed by the chain MAC at each block, not by block ids: ids
        # are chosen by whoever attenuates, so keying by them would let one token's holder
        # spend another token's counters. A chain MAC cannot be chosen without the key.
        layer_keys = tuple(hashlib.sha256(m).hexdigest()[:32] for m in chain)
        return VerifiedToken(self.token_id, self.grant_id, self._blocks, layer_keys)

    def attenuate(self, block: token_pb2.TokenBlock) -> str:
        """Append a block and reseal offline; returns the new token text. A fresh block
        id is set if the block has none."""
        if not block.id:
            block.id = secrets.token_bytes(16)
        raw = block.SerializeToString(deterministic=True)
        msg = token_pb2.Token(version=VERSION, key_id=self._msg.key_id,
                              blocks=[*self._msg.blocks, raw], mac=_mac(self._msg.mac, raw))
        return encode(msg)


@functools.lru_cache(maxsize=4096)
def _chain_problem(raw_blocks: tuple[bytes, ...]) -> str:
    """Why a MAC-valid chain is still unacceptable, or "". A pure function of the block
    bytes, so it is memoized: a token presented on every call of an invocation is checked
    once. (The MAC itself is recomputed on every verification.)"""
    blocks = [token_pb2.TokenBlock.FromString(b) for b in raw_blocks]
    if not blocks[0].HasField("grant"):
        return "malformed token: the root block holds no grant"
    grants = [blocks[0].grant]
    for i, block in enumerate(blocks[1:], 1):
        if block.HasField("grant"):
            problem = widening(grants, block.grant)
            if problem:
                return f"token block {i} widens its parent: {problem}"
            grants.append(block.grant)
    return ""


def encode(msg: token_pb2.Token) -> str:
    return PREFIX + base64.urlsafe_b64encode(msg.SerializeToString()).rstrip(b"=").decode()


def mint(keyring: Keyring, grant: caps.Grant, issued_at: int) -> tuple[str, str]:
    """Seal a grant (its expires_at must be set) as a new root token.

    Returns:
        (token text, token id hex).
    """
    if not grant.expires_at:
        raise BrokerError("refusing to mint a token without expiry")
    block = token_pb2.TokenBlock(id=secrets.token_bytes(16), issued_at=issued_at, grant=grant)
    raw = block.SerializeToString(deterministic=True)
    key_id, key = keyring.sealing_key()
    msg = token_pb2.Token(version=VERSION, key_id=key_id, blocks=[raw], mac=_mac(key, raw))
    return encode(msg), block.id.hex()


def attenuate(token: UnverifiedToken, grant: caps.Grant, issued_at: int) -> str:
    """Narrow a token offline: append ``grant`` as one more layer. Needs no key; the
    broker refuses the result at verification if the block widens anything."""
    return token.attenuate(token_pb2.TokenBlock(issued_at=issued_at, grant=grant))


def bind(token: UnverifiedToken, invocation_id: str, tool: str, issued_at: int) -> str:
    """Attenuate a token to one invocation of one tool (done by the broker at Invoke)."""
    return token.attenuate(token_pb2.TokenBlock(issued_at=issued_at,
                                                invocation_id=invocation_id, tool=tool))
