"""The server name in a TLS ClientHello (net/tls.py), read from real ClientHellos the
stdlib's TLS client writes, re-framed, truncated, corrupted and hand-edited.

``server_name(data)`` returns the name (lower case) or None, raises NeedMore until the
whole ClientHello has arrived and InvalidArgument for anything that is not one. The
tunnel's ``_client_hello`` (mediators/net.py) then compares it with the granted host.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from writ._proto import tool_pb2
from writ.errors import InvalidArgument, PermissionDenied
from writ.mediators.net import _client_hello
from writ.net.tls import MAX_HELLO, NeedMore, server_name

NOT_TLS = "the tunnel's first bytes are not a TLS ClientHello ({})"


def client_hello(name: str | None) -> bytes:
    """The first flight of the stdlib TLS client (TLS 1.3 capable) for ``name``; an IP
    literal or None sends no server_name extension."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


HELLO = client_hello("api.example.com")
BODY = HELLO[5:]  # the handshake message: one record carries it


def record(body: bytes, ctype: int = 0x16, version: bytes = b"\x03\x01") -> bytes:
    return bytes([ctype]) + version + struct.pack("!H", len(body)) + body


def refused(data: bytes) -> str:
    with pytest.raises(InvalidArgument) as info:
        server_name(data)
    return info.value.details


def test_the_stdlib_hello_is_one_record() -> None:
    assert HELLO[0] == 0x16 and HELLO[1] == 3
    assert struct.unpack("!H", HELLO[3:5])[0] == len(BODY)
    assert BODY[0] == 1 and int.from_bytes(BODY[1:4], "big") == len(BODY) - 4


@pytest.mark.parametrize(("sent", "read"), [
    ("api.example.com", "api.example.com"),
    ("API.Example.COM", "api.example.com"),
    ("localhost", "localhost"),
    ("bücher.example", "xn--bcher-kva.example"),   # the client sends the IDNA form
    ("a" * 63 + ".example", "a" * 63 + ".example"),
    (".".join(["a" * 63] * 3 + ["d" * 61]), ".".join(["a" * 63] * 3 + ["d" * 61])),
    ("127.0.0.1", None),
    ("::1", None),
    (None, None),
], ids=["name", "upper-case", "single-label", "idna", "long-label", "long-name",
        "ipv4-sends-none", "ipv6-sends-none", "no-name"])
def test_server_name_of_a_real_client_hello(sent: str | None, read: str | None) -> None:
    assert server_name(client_hello(sent)) == read


def test_bytes_after_the_hello_are_ignored() -> None:
    assert server_name(HELLO + record(b"\x00" * 10, ctype=0x17)) == "api.example.com"


def test_byte_by_byte_needs_more_until_the_last_byte() -> None:
    for n in range(len(HELLO)):
        with pytest.raises(NeedMore):
            server_name(HELLO[:n])
    assert server_name(HELLO) == "api.example.com"


@pytest.mark.parametrize("split", [1, 2, 3, 4, 5, 38, 39, len(BODY) // 2, len(BODY) - 1])
def test_a_hello_split_across_two_records(split: int) -> None:
    data = record(BODY[:split]) + record(BODY[split:])
    assert server_name(data) == "api.example.com"
    for n in range(len(data)):
        with pytest.raises(NeedMore):
            server_name(data[:n])


def test_every_split_into_two_records_reads_the_same() -> None:
    for split in range(1, len(BODY)):
        assert server_name(record(BODY[:split]) + record(BODY[split:])) == "api.example.com"


def test_a_hello_in_one_byte_records() -> None:
    data = b"".join(record(BODY[i:i + 1]) for i in range(len(BODY)))
    assert server_name(data) == "api.example.com"
    with pytest.raises(NeedMore):
        server_name(data[:-1])


# -- what is not a ClientHello --------------------------------------------------------------
@pytest.mark.parametrize(("data", "why"), [
    (b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n", "not a handshake record"),
    (b"\x80\x2e\x01\x03\x01" + b"\x00" * 60, "not a handshake record"),     # SSLv2 hello
    (record(BODY, ctype=0x17), "not a handshake record"),                  # application data
    (record(BODY, ctype=0x15), "not a handshake record"),                  # alert
    (record(BODY, version=b"\x02\x00"), "not a handshake record"),
    (record(BODY, version=b"\x04\x01"), "not a handshake record"),
    (record(b""), "record length 0"),
    (b"\x16\x03\x01\x40\x01" + b"\x00" * 100, "record length 16385"),
    (b"\x16\x03\x01\xff\xff", "record length 65535"),
    (record(b"\x02" + BODY[1:]), "first handshake message is not a ClientHello"),
    (record(b"\x00\x00\x00\x00"), "first handshake message is not a ClientHello"),
    (record(b"\x01" + (MAX_HELLO - 3).to_bytes(3, "big")), (f"ClientHello of {MAX_HELLO + 1} "
     "bytes")),
    (record(b"\x01\xff\xff\xff"), f"ClientHello of {4 + 0xFFFFFF} bytes"),
    (record(BODY[:4]) + record(BODY[4:], ctype=0x14), "not a handshake record"),
    (record(b"\x01\x00\x00\x05" + b"\x03\x03\x00\x00\x00"), "truncated ClientHello"),
], ids=["http", "sslv2", "application-data", "alert", "version-2", "version-4",
        "empty-record", "record-too-long", "record-max", "server-hello", "hello-request",
        "hello-too-large", "hello-huge", "second-record-not-handshake", "short-body"])
def test_what_is_not_a_client_hello(data: bytes, why: str) -> None:
    assert refused(data) == NOT_TLS.format(why)


def test_a_hello_whose_announced_length_fits_but_never_comes_needs_more() -> None:
    data = record(b"\x01" + (MAX_HELLO - 4).to_bytes(3, "big") + b"\x03\x03")
    with pytest.raises(NeedMore):
        server_name(data)


# -- hand-built ClientHellos ---------------------------------------------------------------
def vec(width: int, body: bytes) -> bytes:
    return len(body).to_bytes(width, "big") + body


def sni(*names: tuple[int, bytes]) -> bytes:
    """A server_name extension listing (name_type, name) entries."""
    return b"\x00\x00" + vec(2, vec(2, b"".join(bytes([t]) + vec(2, n) for t, n in names)))


def hello_with(extensions: bytes | None) -> bytes:
    body = b"\x03\x03" + b"\x11" * 32 + vec(1, b"") + vec(2, b"\x13\x01") + vec(1, b"\x00")
    if extensions is not None:
        body += vec(2, extensions)
    return record(b"\x01" + vec(3, body))


OTHER_EXT = b"\x00\x2b" + vec(2, b"\x02\x03\x04")  # supported_versions


@pytest.mark.parametrize(("extensions", "name"), [
    (None, None),
    (b"", None),
    (OTHER_EXT, None),
    (sni((0, b"a.example")), "a.example"),
    (OTHER_EXT + sni((0, b"a.example")) + OTHER_EXT, "a.example"),
    (sni((0, b"A.EXAMPLE")), "a.example"),
    (sni((1, b"ignored"), (0, b"a.example")), "a.example"),
    (sni((7, b"ignored")), None),
    (sni(), None),
    (sni((0, b"")), ""),
    (sni((0, b"a.example.")), "a.example."),
    (sni((0, b"a.example\x00.evil")), "a.example\x00.evil"),
], ids=["no-extensions", "empty-extensions", "no-sni", "sni", "sni-among-others",
        "upper-case-lowered", "other-name-type-skipped", "only-other-name-type",
        "empty-name-list", "empty-name", "trailing-dot-kept", "nul-kept"])
def test_hand_built_hellos(extensions: bytes | None, name: str | None) -> None:
    assert server_name(hello_with(extensions)) == name


@pytest.mark.parametrize(("extensions", "why"), [
    (sni((0, b"a.example")) + sni((0, b"a.example")), "two server_name extensions"),
    (sni((0, b"a.example")) + OTHER_EXT + sni((0, b"b.example")), "two server_name extensions"),
    (sni((0, b"a.example"), (0, b"b.example")), "two host names in server_name"),
    (sni((0, b"caf\xc3\xa9.example")), "server name is not ASCII"),
    (sni((0, b"\xff")), "server name is not ASCII"),
    (b"\x00\x00\x00\x05\x00\x03\x00\x00\x09", "truncated ClientHello"),
    (b"\x00\x00\x00\x00", "truncated ClientHello"),
    (b"\x00\x2b\x00\x09\x02", "truncated ClientHello"),
    (b"\x00", "truncated ClientHello"),
], ids=["two-sni", "two-sni-apart", "two-names", "non-ascii-utf8", "non-ascii-byte",
        "name-longer-than-its-list", "sni-without-list", "extension-overruns", "half-a-type"])
def test_malformed_server_names(extensions: bytes, why: str) -> None:
    assert refused(hello_with(extensions)) == NOT_TLS.format(why)


def test_a_non_ascii_name_in_a_real_hello_is_refused() -> None:
    # Same length, so every length field of the stdlib's hello stays right.
    data = HELLO.replace(b"api.example.com", b"\xe1pi.example.com")
    assert data != HELLO
    assert refused(data) == NOT_TLS.format("server name is not ASCII")


def test_a_real_hello_with_a_second_server_name_is_refused() -> None:
    pos = 4 + 2 + 32                                       # header, version, random
    pos += 1 + BODY[pos]                                   # session id
    pos += 2 + int.from_bytes(BODY[pos:pos + 2], "big")    # cipher suites
    pos += 1 + BODY[pos]                                   # compression methods
    extensions = BODY[pos + 2:]
    assert len(extensions) == int.from_bytes(BODY[pos:pos + 2], "big")
    rebuilt = BODY[4:pos] + vec(2, extensions)
    assert server_name(record(b"\x01" + vec(3, rebuilt))) == "api.example.com"
    doubled = BODY[4:pos] + vec(2, extensions + sni((0, b"evil.example")))
    assert refused(record(b"\x01" + vec(3, doubled))) == NOT_TLS.format(
        "two server_name extensions")


# -- properties ----------------------------------------------------------------------------
def outcome(data: bytes) -> str:
    """What server_name makes of ``data``; any other exception fails the test."""
    try:
        return f"name {server_name(data)!r}"
    except NeedMore:
        return "need more"
    except InvalidArgument as exc:
        assert exc.details.startswith("the tunnel's first bytes are not a TLS ClientHello (")
        return "not tls"


def test_every_truncation_needs_more() -> None:
    hellos = [HELLO, client_hello(None), record(BODY[:40]) + record(BODY[40:])]
    for data in hellos:
        assert [outcome(data[:n]) for n in range(len(data))] == ["need more"] * len(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupting_a_real_hello_only_ever_refuses_or_reads(data: st.DataObject) -> None:
    raw = bytearray(HELLO)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    outcome(bytes(raw[:cut]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_only_ever_refuses_or_needs_more(garbage: bytes) -> None:
    assert not outcome(garbage).startswith("name ") or garbage[:1] == b"\x16"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_inside_a_handshake_record_never_crashes(body: bytes) -> None:
    outcome(record(b"\x01" + vec(3, body)))


# == the tunnel compares it with the granted host ===========================================
async def _parts(*chunks: bytes) -> AsyncIterator[tool_pb2.TunnelPart]:
    for c in chunks:
        yield tool_pb2.TunnelPart(data=c)


# A ClientHello announcing MAX_HELLO bytes: three full records and most of a fourth are
# more than MAX_HELLO bytes on the wire, and it is still incomplete.
TOO_LARGE = (record(b"\x01" + (MAX_HELLO - 4).to_bytes(3, "big") + b"\x00" * 16380),
             record(b"\x00" * 16384), record(b"\x00" * 16384),
             record(b"\x00" * 16384)[:-4])


def tunnel_hello(host: str, *chunks: bytes) -> bytes:
    return asyncio.run(_client_hello(_parts(*chunks), host))


def tunnel_refusal(host: str, *chunks: bytes) -> tuple[str, str]:
    with pytest.raises((PermissionDenied, InvalidArgument)) as info:
        tunnel_hello(host, *chunks)
    return info.value.code, info.value.details


def test_the_tunnel_passes_the_hello_when_the_name_is_the_host() -> None:
    halves = (HELLO[:100], HELLO[100:300], HELLO[300:])
    assert tunnel_hello("api.example.com", *halves) == HELLO


def test_the_tunnel_passes_bytes_that_arrived_with_the_hello() -> None:
    extra = record(b"early data", ctype=0x17)
    assert tunnel_hello("api.example.com", HELLO + extra) == HELLO + extra


def test_a_literal_host_accepts_a_hello_without_a_name() -> None:
    hello = client_hello("127.0.0.1")
    assert tunnel_hello("127.0.0.1", hello) == hello


@pytest.mark.parametrize(("host", "chunks", "code", "message"), [
    ("api.example.com", (client_hello("evil.example"),), "PERMISSION_DENIED",
     ("the TLS ClientHello asks for 'evil.example', but the tunnel is granted for "
     "api.example.com")),
    ("api.example.com", (client_hello("api.example.com."),), "PERMISSION_DENIED",
     ("the TLS ClientHello asks for 'api.example.com.', but the tunnel is granted for "
     "api.example.com")),
    ("api.example.com", (client_hello(None),), "PERMISSION_DENIED",
     "the TLS ClientHello names no server; the tunnel is granted for api.example.com only"),
    ("127.0.0.1", (client_hello("api.example.com"),), "PERMISSION_DENIED",
     ("the TLS ClientHello asks for 'api.example.com', but the tunnel is granted for "
     "127.0.0.1")),
    ("api.example.com", (HELLO[:200],), "INVALID_ARGUMENT",
     "the tunnel closed before a TLS ClientHello arrived"),
    ("api.example.com", (), "INVALID_ARGUMENT",
     "the tunnel closed before a TLS ClientHello arrived"),
    ("api.example.com", (b"GET / HTTP/1.1\r\n\r\n",), "INVALID_ARGUMENT",
     NOT_TLS.format("not a handshake record")),
    ("api.example.com", TOO_LARGE, "INVALID_ARGUMENT", "ClientHello too large"),
], ids=["other-name", "trailing-dot", "no-name-for-a-name", "name-for-a-literal",
        "closed-midway", "closed-at-once", "plain-http", "too-large"])
def test_the_tunnel_refuses(host: str, chunks: tuple[bytes, ...], code: str,
                            message: str) -> None:
    assert tunnel_refusal(host, *chunks) == (code, message)
