"""The server name a TLS client asks for, read from its ClientHello (RFC 8446 4.1.2, RFC
6066 section 3) without terminating TLS. The broker relays a CONNECT tunnel only when the
name matches the host the grant allowed, so a tunnel opened for one host cannot carry a
session to another host on the same address."""

from __future__ import annotations

import struct

from ..errors import InvalidArgument

MAX_HELLO = 64 << 10  # more than any real ClientHello; bytes beyond it are not waited for
HANDSHAKE, CLIENT_HELLO, SERVER_NAME, HOST_NAME = 0x16, 0x01, 0x0000, 0x00


class NeedMore(Exception):
    """The ClientHello is not complete yet."""


def _not_tls(why: str) -> InvalidArgument:
    return InvalidArgument(f"the tunnel's first bytes are not a TLS ClientHello ({why})")


def _handshake(data: bytes) -> bytes:
    """The first handshake message, reassembled from as many records as it spans."""
    body, pos = b"", 0
    while True:
        if len(data) < pos + 5:
            raise NeedMore
        ctype, major, length = data[pos], data[pos + 1], struct.unpack_from("!H", data, pos + 3)[0]
        if ctype != HANDSHAKE or major != 3:
            raise _not_tls("not a handshake record")
        if length == 0 or length > 1 << 14:
            raise _not_tls(f"record length {length}")
        if len(data) < pos + 5 + length:
            raise NeedMore
        body += data[pos + 5: pos + 5 + length]
        pos += 5 + length
        if len(body) >= 4:
            if body[0] != CLIENT_HELLO:
                raise _not_tls("first handshake message is not a ClientHello")
            need = 4 + int.from_bytes(body[1:4], "big")
            if need > MAX_HELLO:
                raise _not_tls(f"ClientHello of {need} bytes")
            if len(body) >= need:
                return body[4:need]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _not_tls("truncated ClientHello")
        out = self.data[self.pos: self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def vector(self, width: int) -> bytes:
        return self.take(self.u8() if width == 1 else self.u16())

    def done(self) -> bool:
        return self.pos >= len(self.data)


def server_name(data: bytes) -> str | None:
    """The host name the ClientHello at the start of ``data`` asks for (lower case), or
    None when it sends none.

    Raises:
        NeedMore: the ClientHello is incomplete; call again with more bytes.
        InvalidArgument: not a TLS ClientHello, or a malformed one.
    """
    r = _Reader(_handshake(data))
    r.take(2 + 32)      # legacy_version, random
    r.vector(1)         # legacy_session_id
    r.vector(2)         # cipher_suites
    r.vector(1)         # legacy_compression_methods
    if r.done():
        return None     # no extensions at all
    ext = _Reader(r.vector(2))
    found: str | None = None
    while not ext.done():
        kind, body = ext.u16(), ext.vector(2)
        if kind != SERVER_NAME:
            continue
        if found is not None:
            raise _not_tls("two server_name extensions")
        names = _Reader(_Reader(body).vector(2))
        while not names.done():
            name_type, name = names.u8(), names.vector(2)
            if name_type != HOST_NAME:
                continue
            if found is not None:
                raise _not_tls("two host names in server_name")
            try:
                found = name.decode("ascii").lower()
            except UnicodeDecodeError:
                raise _not_tls("server name is not ASCII") from None
    return found
