"""Capability tokens: round trip, forgery, key rotation, offline attenuation, binding, and
known-answer vectors pinned in tests/vectors/token_v1.json.

Forgery raises TokenInvalid; a genuine token whose caveat does not hold raises CaveatUnmet.
Every negative test asserts the exact message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from writ._proto import capabilities_pb2 as caps
from writ._proto import token_pb2
from writ.core import tokens
from writ.core.policy import FileAccess, ToolCall, decide
from writ.core.tokens import (
    MAX_BLOCKS,
    MAX_TOKEN_CHARS,
    Keyring,
    UnverifiedToken,
    VerifiedToken,
    bind,
    encode,
    mint,
)
from writ.errors import AttenuationWidens, BrokerError, CaveatUnmet, TokenInvalid

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "token_v1.json").read_text())
NOW = 1_700_000_000
EXP = NOW + 3600
KEYRING = Keyring({"k1": b"\x01" * 32}, "k1")
SIG_FAIL = "token signature does not verify: forged or altered"
MALFORMED = "malformed token: not valid base64url protobuf"


def demo_grant(**kw: Any) -> caps.Grant:
    g = caps.Grant(
        tools=[caps.ToolRule(name="read-file"), caps.ToolRule(name="word-count")],
        files=[caps.FileRule(id="reports", workspace="demo", paths=["reports/**"],
                             ops=[caps.READ, caps.LIST, caps.STAT])],
        expires_at=EXP)
    for k, v in kw.items():
        setattr(g, k, v)
    return g


def minted(g: caps.Grant | None = None, keyring: Keyring = KEYRING) -> str:
    return mint(keyring, g or demo_grant(), NOW)[0]


def unpack(text: str) -> token_pb2.Token:
    body = text[len(tokens.PREFIX):]
    return token_pb2.Token.FromString(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def narrowing(g: caps.Grant) -> token_pb2.TokenBlock:
    return token_pb2.TokenBlock(issued_at=NOW, grant=g)


def verify(text: str, keyring: Keyring = KEYRING) -> VerifiedToken:
    return UnverifiedToken.parse(text).verify(keyring)


def attenuated(*grants: caps.Grant) -> str:
    text = minted()
    for g in grants:
        text = UnverifiedToken.parse(text).attenuate(narrowing(g))
    return text


# -- round trip ----------------------------------------------------------------------------
def test_mint_parse_verify_round_trip() -> None:
    g = demo_grant(not_before=NOW - 5)
    text, token_id = mint(KEYRING, g, NOW)
    assert text.startswith("writ1.") and "=" not in text
    unverified = UnverifiedToken.parse(text)
    assert unverified.token_id == unverified.grant_id == token_id
    assert len(bytes.fromhex(token_id)) == 16
    token = unverified.verify(KEYRING)
    assert (token.token_id, token.grant_id) == (token_id, token_id)
    assert token.grant == g
    assert token.blocks[0].issued_at == NOW
    a = token.authority()
    assert [layer.name for layer in a.layers] == ["grant"]
    assert (a.not_before, a.expires_at, a.bindings) == (NOW - 5, EXP, ())
    assert decide(a, ToolCall("read-file"), NOW).allowed
    assert decide(a, FileAccess("demo", "reports/q3.csv", caps.READ), NOW).allowed
    assert not decide(a, FileAccess("demo", "private/x", caps.READ), NOW).allowed


def test_mint_gives_fresh_ids() -> None:
    assert len({mint(KEYRING, demo_grant(), NOW)[1] for _ in range(20)}) == 20


def test_mint_refuses_a_grant_without_expiry() -> None:
    with pytest.raises(BrokerError) as info:
        mint(KEYRING, demo_grant(expires_at=0), NOW)
    assert info.value.details == "refusing to mint a token without expiry"


def test_authority_with_manifest_puts_the_ceiling_first() -> None:
    m = caps.Manifest(name="read-file", image="x:1", files=[
        caps.FileRule(paths=["**"], ops=[caps.READ])])
    a = verify(minted()).authority(m)
    assert [layer.name for layer in a.layers] == ["manifest of 'read-file'", "grant"]
    assert not decide(a, FileAccess("demo", "reports", caps.LIST), NOW).allowed


# -- forgery -------------------------------------------------------------------------------
def _flip_mac(i: int) -> Callable[[str], str]:
    def f(text: str) -> str:
        msg = unpack(text)
        mac = bytearray(msg.mac)
        mac[i] ^= 0x01
        msg.mac = bytes(mac)
        return encode(msg)
    return f


def _edit_block(i: int, edit: Callable[[token_pb2.TokenBlock], None]) -> Callable[[str], str]:
    def f(text: str) -> str:
        msg = unpack(text)
        block = token_pb2.TokenBlock.FromString(msg.blocks[i])
        edit(block)
        msg.blocks[i] = block.SerializeToString(deterministic=True)
        return encode(msg)
    return f


def _add_tool(b: token_pb2.TokenBlock) -> None:
    b.grant.tools.add(name="shell")


def _widen_paths(b: token_pb2.TokenBlock) -> None:
    b.grant.files[0].paths[:] = ["**"]


def _extend_expiry(b: token_pb2.TokenBlock) -> None:
    b.grant.expires_at = EXP + 10**9


def _rebind(b: token_pb2.TokenBlock) -> None:
    b.invocation_id = "inv-other"


def _flip_raw_bit(i: int) -> Callable[[str], str]:
    def f(text: str) -> str:
        msg = unpack(text)
        raw = bytearray(msg.blocks[i])
        raw[-1] ^= 0x01
        msg.blocks[i] = bytes(raw)
        return encode(msg)
    return f


def _drop_block(i: int) -> Callable[[str], str]:
    def f(text: str) -> str:
        msg = unpack(text)
        del msg.blocks[i]
        return encode(msg)
    return f


def _reverse_blocks(text: str) -> str:
    msg = unpack(text)
    msg.blocks[:] = list(reversed(msg.blocks))
    return encode(msg)


def _swap_first_two(text: str) -> str:
    msg = unpack(text)
    blocks = list(msg.blocks)
    blocks[0], blocks[1] = blocks[1], blocks[0]
    msg.blocks[:] = blocks
    return encode(msg)


def _duplicate_last(text: str) -> str:
    msg = unpack(text)
    msg.blocks.append(msg.blocks[-1])
    return encode(msg)


def _set(field: str, value: Any) -> Callable[[str], str]:
    def f(text: str) -> str:
        msg = unpack(text)
        setattr(msg, field, value)
        return encode(msg)
    return f


def _drop_attenuation_keep_root_mac(text: str) -> str:
    """The holder of an attenuated token cannot get back to its parent: the parent's MAC
    is not in the token."""
    msg = unpack(text)
    del msg.blocks[1:]
    return encode(msg)


ONE_BLOCK = minted()
NARROW = caps.Grant(files=[caps.FileRule(workspace="demo", paths=["reports/q3.csv"],
                                         ops=[caps.READ])], expires_at=NOW + 60)
# Block 2 is empty: trivially within block 1, and it allows nothing at all.
THREE_BLOCKS = attenuated(NARROW, caps.Grant())
BOUND = bind(UnverifiedToken.parse(ONE_BLOCK), "inv-1", "read-file", NOW)


def _unpadded_token() -> str:
    """A genuine token whose base64url body needs padding, so its last character carries
    unused low bits (the length depends only on the grant)."""
    for n in range(1, 4):
        g = demo_grant()
        g.tools.add(name="t" * n)
        text = minted(g)
        if len(text[6:]) % 4 in (2, 3):
            return text
    raise AssertionError("unreachable: three consecutive lengths cover every remainder")


UNPADDED = _unpadded_token()

FORGERIES: list[tuple[str, str, Callable[[str], str], str]] = [
    # (id, original token, tamper, exact TokenInvalid message)
    ("mac-byte-0-flipped", ONE_BLOCK, _flip_mac(0), SIG_FAIL),
    ("mac-byte-15-flipped", ONE_BLOCK, _flip_mac(15), SIG_FAIL),
    ("mac-byte-31-flipped", THREE_BLOCKS, _flip_mac(31), SIG_FAIL),
    ("mac-zeroed", ONE_BLOCK, _set("mac", bytes(32)), SIG_FAIL),
    ("mac-truncated", ONE_BLOCK, lambda t: _set("mac", unpack(t).mac[:31])(t),
     "malformed token: bad MAC length"),
    ("mac-empty", ONE_BLOCK, _set("mac", b""), "malformed token: bad MAC length"),
    ("root-grant-tool-added", ONE_BLOCK, _edit_block(0, _add_tool), SIG_FAIL),
    ("root-grant-paths-widened", ONE_BLOCK, _edit_block(0, _widen_paths), SIG_FAIL),
    ("root-grant-expiry-extended", ONE_BLOCK, _edit_block(0, _extend_expiry), SIG_FAIL),
    ("root-raw-bit-flipped", ONE_BLOCK, _flip_raw_bit(0), SIG_FAIL),
    ("attenuation-widened", THREE_BLOCKS, _edit_block(1, _widen_paths), SIG_FAIL),
    ("attenuation-expiry-extended", THREE_BLOCKS, _edit_block(1, _extend_expiry), SIG_FAIL),
    ("binding-changed", BOUND, _edit_block(1, _rebind), SIG_FAIL),
    ("last-block-removed", THREE_BLOCKS, _drop_block(2), SIG_FAIL),
    ("middle-block-removed", THREE_BLOCKS, _drop_block(1), SIG_FAIL),
    ("root-block-removed", THREE_BLOCKS, _drop_block(0), SIG_FAIL),
    ("binding-removed", BOUND, _drop_block(1), SIG_FAIL),
    ("attenuations-stripped", THREE_BLOCKS, _drop_attenuation_keep_root_mac, SIG_FAIL),
    ("blocks-reversed", THREE_BLOCKS, _reverse_blocks, SIG_FAIL),
    ("first-two-swapped", THREE_BLOCKS, _swap_first_two, SIG_FAIL),
    ("last-block-duplicated", THREE_BLOCKS, _duplicate_last, SIG_FAIL),
    ("unknown-key-id", ONE_BLOCK, _set("key_id", "k9"), "token sealed with unknown key 'k9'"),
    ("empty-key-id", ONE_BLOCK, _set("key_id", ""), "token sealed with unknown key ''"),
    ("version-2", ONE_BLOCK, _set("version", 2), "unsupported token version 2"),
    ("version-0", ONE_BLOCK, _set("version", 0), "unsupported token version 0"),
    ("zero-blocks", ONE_BLOCK, _drop_block(0), "token must have 1 to 32 blocks, has 0"),
    ("block-not-a-tokenblock", ONE_BLOCK,
     lambda t: encode(token_pb2.Token(version=1, key_id="k1", blocks=[b"\xff\xff\xff"],
                                      mac=unpack(t).mac)), MALFORMED),
    # text level
    ("empty-text", ONE_BLOCK, lambda t: "", "no token presented"),
    ("wrong-prefix-version", ONE_BLOCK, lambda t: "writ2." + t[6:],
     "malformed token: expected the prefix 'writ1.'"),
    ("wrong-prefix-case", ONE_BLOCK, lambda t: t.upper(),
     "malformed token: expected the prefix 'writ1.'"),
    ("bearer-prefix", ONE_BLOCK, lambda t: "Bearer " + t,
     "malformed token: expected the prefix 'writ1.'"),
    ("no-prefix", ONE_BLOCK, lambda t: t[6:], "malformed token: expected the prefix 'writ1.'"),
    ("leading-space", ONE_BLOCK, lambda t: " " + t,
     "malformed token: expected the prefix 'writ1.'"),
    ("bad-base64-chars", ONE_BLOCK, lambda t: "writ1.!!!!", MALFORMED),
    ("standard-base64-alphabet", ONE_BLOCK,
     lambda t: "writ1." + base64.b64encode(b"\xfb\xff" * 6).decode(), MALFORMED),
    ("stray-char-inside", ONE_BLOCK, lambda t: t[:20] + "*" + t[20:], MALFORMED),
    ("whitespace-inside", ONE_BLOCK, lambda t: t[:20] + " " + t[20:], MALFORMED),
    ("trailing-newline", ONE_BLOCK, lambda t: t + "\n", MALFORMED),
    ("padding-added", ONE_BLOCK, lambda t: t + "=" * (-len(t[6:]) % 4 or 4), MALFORMED),
    ("trailing-bits-changed", UNPADDED, lambda t: t[:-1] + _sibling(t[-1]), MALFORMED),
    ("one-char-dropped", ONE_BLOCK, lambda t: t[:-1], MALFORMED),
    ("impossible-length", ONE_BLOCK, lambda t: "writ1.A", MALFORMED),
    ("not-protobuf", ONE_BLOCK,
     lambda t: "writ1." + base64.urlsafe_b64encode(b"\xff" * 9).decode(), MALFORMED),
    ("prefix-only", ONE_BLOCK, lambda t: "writ1.", "unsupported token version 0"),
    ("oversized", ONE_BLOCK, lambda t: "writ1." + "A" * MAX_TOKEN_CHARS,
     f"token longer than {MAX_TOKEN_CHARS} characters"),
    ("oversized-garbage", ONE_BLOCK, lambda t: "x" * (MAX_TOKEN_CHARS + 1),
     "token longer than 65536 characters"),
]


def _sibling(ch: str) -> str:
    """Another base64url character with the same high bits (differs only in the low bits
    a final character of this token does not use)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    i = alphabet.index(ch)
    return alphabet[i ^ 1]


@pytest.mark.parametrize(("original", "tamper", "message"),
                         [f[1:] for f in FORGERIES], ids=[f[0] for f in FORGERIES])
def test_forgery_raises_token_invalid(original: str, tamper: Callable[[str], str],
                                      message: str) -> None:
    verify(original)  # the original is genuine
    forged = tamper(original)
    assert forged != original
    with pytest.raises(TokenInvalid) as info:
        verify(forged)
    assert str(info.value) == info.value.details == message
    assert info.value.code == "UNAUTHENTICATED"


def test_trailing_bits_sibling_really_decodes_alike() -> None:
    """Guards the 'trailing-bits-changed' row: without the canonical check it would be the
    same token under a second spelling."""
    t = UNPADDED
    body, other = t[6:], t[6:-1] + _sibling(t[-1])
    pad = "=" * (-len(body) % 4)
    assert len(body) % 4 in (2, 3)
    assert base64.urlsafe_b64decode(body + pad) == base64.urlsafe_b64decode(other + pad)


def test_token_of_exactly_max_chars_is_not_refused_for_length() -> None:
    text = "writ1." + "A" * (MAX_TOKEN_CHARS - 6)
    with pytest.raises(TokenInvalid) as info:
        UnverifiedToken.parse(text)
    assert "longer than" not in info.value.details


def test_same_key_id_other_key_does_not_verify() -> None:
    with pytest.raises(TokenInvalid) as info:
        verify(ONE_BLOCK, Keyring({"k1": b"\x02" * 32}, "k1"))
    assert info.value.details == SIG_FAIL


def test_max_blocks_verify_and_one_more_is_refused() -> None:
    text = minted()
    for _ in range(MAX_BLOCKS - 1):
        text = UnverifiedToken.parse(text).attenuate(narrowing(NARROW))
    token = verify(text)
    assert len(token.blocks) == MAX_BLOCKS
    too_many = UnverifiedToken.parse(text).attenuate(narrowing(NARROW))
    with pytest.raises(TokenInvalid) as info:
        UnverifiedToken.parse(too_many)
    assert info.value.details == f"token must have 1 to {MAX_BLOCKS} blocks, has {MAX_BLOCKS + 1}"


def test_forgery_and_caveat_are_different_errors() -> None:
    assert not issubclass(TokenInvalid, CaveatUnmet) and not issubclass(CaveatUnmet, TokenInvalid)
    assert (TokenInvalid.code, CaveatUnmet.code) == ("UNAUTHENTICATED", "PERMISSION_DENIED")


# -- key rotation --------------------------------------------------------------------------
def test_key_rotation_old_key_still_verifies_while_kept() -> None:
    old = Keyring({"k1": b"\x01" * 32}, "k1")
    old_token = minted(keyring=old)
    rotated = Keyring({"k1": b"\x01" * 32, "k2": b"\x02" * 32}, "k2")
    assert verify(old_token, rotated).grant == demo_grant()
    new_token = minted(keyring=rotated)
    assert unpack(new_token).key_id == "k2"
    assert unpack(old_token).key_id == "k1"
    verify(new_token, rotated)
    # An attenuation of an old token keeps its key id and still verifies.
    verify(UnverifiedToken.parse(old_token).attenuate(narrowing(NARROW)), rotated)
    retired = Keyring({"k2": b"\x02" * 32}, "k2")
    with pytest.raises(TokenInvalid) as info:
        verify(old_token, retired)
    assert info.value.details == "token sealed with unknown key 'k1'"
    with pytest.raises(TokenInvalid) as info:
        verify(new_token, old)
    assert info.value.details == "token sealed with unknown key 'k2'"


def test_keyring_current_must_be_in_it() -> None:
    with pytest.raises(ValueError, match="current key 'k3' is not in the keyring"):
        Keyring({"k1": b"x"}, "k3")


# -- offline attenuation -------------------------------------------------------------------
def test_attenuation_verifies_and_narrows() -> None:
    root = UnverifiedToken.parse(ONE_BLOCK)
    text = root.attenuate(narrowing(NARROW))  # no key involved
    token = verify(text)
    assert token.grant_id == root.grant_id
    assert token.token_id != root.token_id
    assert token.token_id == token.blocks[-1].id.hex()
    a = token.authority()
    assert [layer.name for layer in a.layers] == ["grant", "attenuation 1"]
    assert a.expires_at == NOW + 60
    assert decide(a, FileAccess("demo", "reports/q3.csv", caps.READ), NOW).allowed
    d = decide(a, FileAccess("demo", "reports/summary.md", caps.READ), NOW)
    assert (d.allowed, d.reason) == (
        False, "attenuation 1 has no rule allowing READ demo:reports/summary.md")
    # NARROW names no tool: the attenuated token may invoke nothing.
    assert not decide(a, ToolCall("read-file"), NOW).allowed
    assert decide(verify(ONE_BLOCK).authority(), ToolCall("read-file"), NOW).allowed


def test_attenuation_keeps_a_given_block_id() -> None:
    text = UnverifiedToken.parse(ONE_BLOCK).attenuate(
        token_pb2.TokenBlock(id=b"\x07" * 16, grant=NARROW))
    assert verify(text).token_id == "07" * 16


def test_attenuation_of_attenuation() -> None:
    token = verify(THREE_BLOCKS)
    a = token.authority()
    assert [layer.name for layer in a.layers] == ["grant", "attenuation 1", "attenuation 2"]
    assert not decide(a, ToolCall("read-file"), NOW).allowed  # attenuation 1 names no tool
    assert not decide(a, FileAccess("demo", "reports/q3.csv", caps.READ), NOW).allowed


def test_attenuation_cannot_extend_expiry() -> None:
    later = caps.Grant(tools=[caps.ToolRule(name="read-file")], expires_at=EXP + 10**6)
    with pytest.raises(AttenuationWidens) as info:
        verify(attenuated(later))
    assert info.value.details == (f"token block 1 widens its parent: expires_at {EXP + 10**6} "
                                  f"is after its parent's {EXP}")


def test_attenuation_adding_a_tool_is_refused() -> None:
    only_read = caps.Grant(tools=[caps.ToolRule(name="read-file")])
    more = caps.Grant(tools=[caps.ToolRule(name="read-file"), caps.ToolRule(name="shell")])
    with pytest.raises(AttenuationWidens) as info:
        verify(attenuated(only_read, more))
    assert info.value.details == ("token block 2 widens its parent: tools[1] is not within "
                                  "the grant")
    word_count = caps.Grant(tools=[caps.ToolRule(name="word-count")])
    with pytest.raises(AttenuationWidens) as info:
        verify(attenuated(only_read, word_count))  # in the grant, but not in attenuation 1
    assert info.value.details == ("token block 2 widens its parent: tools[0] is not within "
                                  "attenuation 1")


def test_attenuation_widening_a_path_is_refused() -> None:
    wider = caps.Grant(files=[caps.FileRule(workspace="demo", paths=["**"], ops=[caps.READ])])
    with pytest.raises(AttenuationWidens) as info:
        verify(attenuated(wider))
    assert info.value.details == ("token block 1 widens its parent: files[0] is not within the "
                                  "grant: path '**' is not within ['reports/**']")


# -- binding -------------------------------------------------------------------------------
def test_bound_token_passes_for_its_invocation() -> None:
    token = verify(BOUND)
    token.check_binding("inv-1")
    assert token.blocks[-1].tool == "read-file"
    a = token.authority()
    assert a.bindings == ("inv-1",)
    assert [layer.name for layer in a.layers] == ["grant"]  # a binding adds no layer
    assert decide(a, ToolCall("read-file"), NOW).allowed


def test_bound_token_refused_for_another_invocation() -> None:
    with pytest.raises(CaveatUnmet) as info:
        verify(BOUND).check_binding("inv-2")
    assert info.value.details == "token is bound to invocation inv-1, not to this one"


def test_unbound_token_refused_on_an_invocation_socket() -> None:
    with pytest.raises(CaveatUnmet) as info:
        verify(ONE_BLOCK).check_binding("inv-1")
    assert info.value.details == ("token is not bound to an invocation; tools receive a "
                                  "bound token from the broker")


def test_empty_invocation_id_does_not_match_unbound() -> None:
    with pytest.raises(CaveatUnmet):
        verify(ONE_BLOCK).check_binding("")


def test_two_different_bindings_never_pass() -> None:
    twice = bind(UnverifiedToken.parse(BOUND), "inv-2", "read-file", NOW)
    token = verify(twice)
    assert token.authority().bindings == ("inv-1", "inv-2")
    for inv, other in (("inv-1", "inv-2"), ("inv-2", "inv-1"), ("inv-3", "inv-1")):
        with pytest.raises(CaveatUnmet) as info:
            token.check_binding(inv)
        assert info.value.details == f"token is bound to invocation {other}, not to this one"


def test_same_binding_twice_passes() -> None:
    verify(bind(UnverifiedToken.parse(BOUND), "inv-1", "read-file", NOW)).check_binding("inv-1")


@settings(max_examples=50, deadline=None)
@given(a=st.text(min_size=1, max_size=12), b=st.text(min_size=1, max_size=12))
def test_bindings_property(a: str, b: str) -> None:
    token = verify(bind(UnverifiedToken.parse(bind(UnverifiedToken.parse(ONE_BLOCK), a, "t",
                                                     NOW)), b, "t", NOW))
    for inv in {a, b, a + b}:
        if a == b == inv:
            token.check_binding(inv)
        else:
            with pytest.raises(CaveatUnmet):
                token.check_binding(inv)


# -- property: attenuation never widens ----------------------------------------------------
TOOLS = ("read-file", "word-count", "fetch")
WORKSPACES = ("demo", "other")
PATTERNS = ("**", "*", "*.csv", "reports/**", "reports/*.csv", "private/**", "q?.csv")
PATHS = ("", "reports", "reports/q3.csv", "reports/a/b.md", "private/s.csv", "q3.csv", "x")
OPS = (caps.READ, caps.LIST, caps.STAT, caps.WRITE, caps.CREATE, caps.DELETE)
UNIVERSE = ([ToolCall(t) for t in TOOLS]
            + [FileAccess(ws, p, op) for ws in WORKSPACES for p in PATHS for op in OPS])

rules = st.builds(
    lambda ws, paths, ops, cap: caps.FileRule(workspace=ws, paths=paths, ops=ops,
                                              max_bytes=cap),
    st.sampled_from(WORKSPACES), st.lists(st.sampled_from(PATTERNS), max_size=3),
    st.lists(st.sampled_from(OPS), max_size=3), st.sampled_from((0, 10, 1000)))
attenuations = st.builds(
    lambda tools, files, nb, exp: caps.Grant(tools=[caps.ToolRule(name=t) for t in tools],
                                             files=files, not_before=nb, expires_at=exp),
    st.lists(st.sampled_from(TOOLS), max_size=3), st.lists(rules, max_size=3),
    st.sampled_from((0, NOW - 10, NOW + 10)), st.sampled_from((0, NOW - 10, NOW + 10, EXP)))
roots = st.builds(
    lambda tools, files: caps.Grant(tools=[caps.ToolRule(name=t) for t in tools], files=files,
                                    expires_at=EXP),
    st.lists(st.sampled_from(TOOLS), max_size=3), st.lists(rules, min_size=1, max_size=3))


@settings(max_examples=100, deadline=None)
@given(root=roots, chain=st.lists(attenuations | st.text(min_size=1, max_size=6),
                                  min_size=1, max_size=3))
def test_attenuation_never_widens_allowed_ops(root: caps.Grant, chain: list[Any]) -> None:
    text = minted(root)
    before = verify(text).authority()
    for link in chain:
        parsed = UnverifiedToken.parse(text)
        text = (bind(parsed, link, "t", NOW) if isinstance(link, str)
                else parsed.attenuate(narrowing(link)))
    try:
        after = verify(text).authority()
    except AttenuationWidens:
        return  # refused whole: nothing widened
    for op in UNIVERSE:
        d_after, d_before = decide(after, op, NOW), decide(before, op, NOW)
        if d_after.allowed:
            assert d_before.allowed, op
            assert (d_after.max_bytes or float("inf")) <= (d_before.max_bytes or float("inf"))


# -- known-answer vectors ------------------------------------------------------------------
KEY = bytes.fromhex(VECTORS["key_hex"])
KEY_ID = VECTORS["key_id"]
ROOT, BOUND_V = VECTORS["root"], VECTORS["bound"]


def _vector_grant() -> caps.Grant:
    return json_format.ParseDict(ROOT["grant"], caps.Grant())


def _independent_token(blocks: list[bytes]) -> str:
    """The token format rebuilt from its description, without the module's helpers."""
    mac = KEY
    for raw in blocks:
        mac = hmac.new(mac, raw, hashlib.sha256).digest()
    msg = token_pb2.Token(version=1, key_id=KEY_ID, blocks=blocks, mac=mac)
    return "writ1." + base64.urlsafe_b64encode(msg.SerializeToString()).decode().rstrip("=")


def _root_block() -> bytes:
    return token_pb2.TokenBlock(id=bytes.fromhex(ROOT["block_id_hex"]),
                                issued_at=ROOT["issued_at"],
                                grant=_vector_grant()).SerializeToString(deterministic=True)


def _bound_block() -> bytes:
    return token_pb2.TokenBlock(id=bytes.fromhex(BOUND_V["block_id_hex"]),
                                issued_at=BOUND_V["issued_at"],
                                invocation_id=BOUND_V["invocation_id"],
                                tool=BOUND_V["tool"]).SerializeToString(deterministic=True)


def test_vector_blocks_are_the_pinned_bytes() -> None:
    assert _root_block().hex() == ROOT["block_hex"]
    assert _bound_block().hex() == BOUND_V["block_hex"]


def test_vector_rebuilt_independently() -> None:
    assert _independent_token([_root_block()]) == ROOT["token"]
    assert _independent_token([_root_block(), _bound_block()]) == BOUND_V["token"]
    assert unpack(ROOT["token"]).mac.hex() == ROOT["mac_hex"]
    assert unpack(BOUND_V["token"]).mac.hex() == BOUND_V["mac_hex"]


@pytest.fixture
def fixed_ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    ids = iter([bytes.fromhex(ROOT["block_id_hex"]), bytes.fromhex(BOUND_V["block_id_hex"])])

    def token_bytes(n: int) -> bytes:
        assert n == 16
        return next(ids)

    # tokens.py calls secrets.token_bytes through the module, so this reaches mint/attenuate.
    monkeypatch.setattr(secrets, "token_bytes", token_bytes)
    yield


def test_vector_mint_and_bind_reproduce_it(fixed_ids: None) -> None:
    keyring = Keyring({KEY_ID: KEY}, KEY_ID)
    text, token_id = mint(keyring, _vector_grant(), ROOT["issued_at"])
    assert (text, token_id) == (ROOT["token"], ROOT["token_id"])
    bound = bind(UnverifiedToken.parse(text), BOUND_V["invocation_id"], BOUND_V["tool"],
                 BOUND_V["issued_at"])
    assert bound == BOUND_V["token"]


def test_vector_pinned_text_verifies_and_decodes() -> None:
    keyring = Keyring({"older": b"\x00" * 32, KEY_ID: KEY}, "older")
    token = verify(ROOT["token"], keyring)
    assert (token.token_id, token.grant_id) == (ROOT["token_id"], ROOT["token_id"])
    assert token.grant == _vector_grant()
    assert token.blocks[0].issued_at == ROOT["issued_at"]
    bound = verify(BOUND_V["token"], keyring)
    assert (bound.token_id, bound.grant_id) == (BOUND_V["token_id"], ROOT["token_id"])
    bound.check_binding(BOUND_V["invocation_id"])
    a = bound.authority()
    now = ROOT["issued_at"] + 10
    d = decide(a, FileAccess("demo", "reports/q3.csv", caps.READ), now)
    assert (d.allowed, d.rule, d.max_bytes) == (True, "reports-read", 65536)
    assert decide(a, ToolCall("read-file"), now).rule == "rf"
    assert not decide(a, ToolCall("read-file"), 1700003600).allowed


def test_binding_blocks_do_not_grow_the_chain_check_cache() -> None:
    """Every call binds the agent's token to a new invocation: the memoized widening check
    must be keyed without that block, or the broker would keep one entry per call."""
    agent = UnverifiedToken.parse(minted())
    agent.verify(KEYRING)
    size = tokens._chain_problem.cache_info().currsize
    for i in range(50):
        bound = UnverifiedToken.parse(tokens.bind(agent, f"i{i:016x}", "read-file", NOW))
        assert bound.verify(KEYRING).block_ids[-1]
    assert tokens._chain_problem.cache_info().currsize == size
