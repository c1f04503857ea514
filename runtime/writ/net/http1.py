"""One HTTP/1.1 exchange with an upstream server, over a connection to an address the
caller already checked and pinned. Framing is h11's (a well-kept sans-I/O parser, see the
README's dependency table); this module only moves bytes and maps failures to statuses.
A connection carries one request and is closed after it: no pooling, so no request ever
rides a connection opened for another decision.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Sequence
from urllib.parse import quote_from_bytes

import h11

from ..errors import UpstreamFailed
from .hosts import IPAddress

MAX_RESPONSE_HEAD = 64 << 10
READ_CHUNK = 1 << 20  # also the stream buffer: a fast server fills it, one message carries it
Headers = Sequence[tuple[bytes, bytes]]


async def dial(address: IPAddress, port: int, tls_name: str | None,
               context: ssl.SSLContext | None) -> tuple[asyncio.StreamReader,
                                                         asyncio.StreamWriter]:
    """Connect to exactly ``address`` (never a name); with ``tls_name``, TLS that sends
    that server name and verifies the certificate against it."""
    try:
        return await asyncio.open_connection(
            str(address), port, ssl=context if tls_name else None,
            server_hostname=tls_name if tls_name else None, limit=READ_CHUNK)
    except ssl.SSLCertVerificationError as exc:
        raise UpstreamFailed(f"TLS certificate of {tls_name} at {address} did not verify: "
                             f"{exc.verify_message}") from None
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamFailed(f"could not connect to {address} port {port}: "
                             f"{exc.strerror or exc}") from None


class Exchange:
    """Send one request, read its response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        self.sent = 0
        self.received = 0

    async def _send(self, event: h11.Event) -> None:
        try:
            data = self._conn.send(event)
        except h11.LocalProtocolError as exc:
            raise UpstreamFailed(f"request does not frame as HTTP/1.1: {exc}") from None
        if data:
            self.sent += len(data)
            self._writer.write(data)
            try:
                await self._writer.drain()
            except OSError as exc:
                raise UpstreamFailed(f"server closed the connection while sending: "
                                     f"{exc.strerror or exc}") from None

    async def request(self, method: str, target: str, headers: Headers) -> None:
        try:
            event = h11.Request(method=method, target=target, headers=list(headers))
        except h11.LocalProtocolError:
            # Not h11's text: it quotes the refused value, which may be a secret the grant
            # attaches (a stored value ending in CR, say).
            raise UpstreamFailed("request does not frame as HTTP/1.1: h11 refuses its "
                                 "method, target or a header") from None
        await self._send(event)

    async def body(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())

    async def _next(self) -> h11.Event:
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamFailed(f"server's response is not valid HTTP/1.1: {exc}") from None
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                data = await self._reader.read(READ_CHUNK)
            except (OSError, ssl.SSLError) as exc:
                raise UpstreamFailed(f"reading the response failed: {exc}") from None
            if not data and self._conn.their_state is h11.SEND_RESPONSE and \
                    not self._conn.trailing_data[0]:
                # h11 would say "can't handle event type ConnectionClosed when role=SERVER".
                raise UpstreamFailed("server closed the connection without a response")
            self.received += len(data)
            self._conn.receive_data(data)

    async def response(self) -> h11.Response:
        """The final response head (1xx interim responses are skipped)."""
        while True:
            event = await self._next()
            if isinstance(event, h11.Response):
                size = sum(len(n) + len(v) + 4 for n, v in event.headers.raw_items())
                if size > MAX_RESPONSE_HEAD:
                    raise UpstreamFailed(f"server's response is not valid HTTP/1.1 for Writ: "
                                         f"its head is {size} bytes; at most "
                                         f"{MAX_RESPONSE_HEAD}")
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise UpstreamFailed("server closed the connection without a response")
            if not isinstance(event, h11.InformationalResponse):
                raise UpstreamFailed(f"unexpected {type(event).__name__} before the response")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The response body, de-framed."""
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise UpstreamFailed("server closed the connection mid-body")

    def close(self) -> None:
        self._writer.close()


MIN_CREDENTIAL = 8  # shorter credential parts are not searched for on their own


def secret_forms(value: bytes) -> list[bytes]:
    """The spellings of a stored secret a server is likely to echo: the value itself, the
    credential after an auth scheme ("Bearer <token>": the token alone), and each of those
    JSON-escaped ("/" as "\\/") and percent-encoded. Other encodings (base64, pieces fetched
    with Range) are not caught: see DESIGN.md, "Network"."""
    forms = [value]
    scheme, sep, credential = value.partition(b" ")
    if sep and scheme.isalpha() and len(credential) >= MIN_CREDENTIAL:
        forms.append(credential)
    out = []
    for f in forms:
        out += [f, f.replace(b"/", b"\\/"), quote_from_bytes(f, safe="").encode()]
    return sorted(set(out), key=len, reverse=True)


class Redactor:
    """Replaces every occurrence of the given secret values in a byte stream, also across
    chunk boundaries: however the stream is split, the output is ``scrub`` of the whole.
    At each position the longest value starting there is replaced.

    It holds back the last len(longest)-1 bytes, unscrubbed, until more arrive. Any value
    starting before them ends within what has arrived, so it matches exactly as in the
    whole. (Holding back scrubbed bytes instead would let a value one of whose prefixes is
    another value leak its rest when a chunk ends right after that prefix.)"""

    MARK = b"[secret withheld by writ]"

    def __init__(self, values: Sequence[bytes]) -> None:
        self._values = sorted({v for v in values if v}, key=len, reverse=True)
        self._keep = max((len(v) for v in self._values), default=1) - 1
        # Longest first: an alternation takes the first value that matches at a position.
        self._pattern = re.compile(b"|".join(re.escape(v) for v in self._values))
        self._tail = b""   # raw bytes not yet passed on

    def __bool__(self) -> bool:
        return bool(self._values)

    def scrub(self, data: bytes) -> bytes:
        return self._pattern.sub(self.MARK, data) if self._values else data

    def feed(self, data: bytes) -> bytes:
        if not self._values:
            return data
        buf = self._tail + data
        cut = len(buf) - self._keep
        out, done = bytearray(), 0
        for m in self._pattern.finditer(buf):
            if m.start() >= cut:
                break  # may yet grow into a longer value: wait for more bytes
            out += buf[done:m.start()] + self.MARK
            done = m.end()
        if done < cut:
            out += buf[done:cut]
            done = cut
        self._tail = buf[done:]
        return bytes(out)

    def flush(self) -> bytes:
        out, self._tail = self.scrub(self._tail), b""
        return out
