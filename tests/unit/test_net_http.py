"""One upstream HTTP/1.1 exchange and secret redaction (net/http1.py).

``Redactor`` replaces secret values in a response however the body is chunked: feeding
any split of a byte string and flushing gives exactly ``scrub`` of the whole. ``Exchange``
talks to a tiny asyncio server on loopback (or reads canned bytes from a StreamReader when
the test needs them to arrive in one piece): interim 1xx responses are skipped, and every
way a server can misbehave is an UpstreamFailed with the exact reason.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from writ.errors import UpstreamFailed
from writ.net.http1 import MAX_RESPONSE_HEAD, Exchange, Redactor, secret_forms

MARK = Redactor.MARK
NOT_HTTP = "server's response is not valid HTTP/1.1: "


# == Redactor ===============================================================================
def stream(values: list[bytes], chunks: list[bytes]) -> bytes:
    r = Redactor(values)
    return b"".join(r.feed(c) for c in chunks) + r.flush()


# (row id, secret values, chunks fed, exact output)
REDACT = [
    ("whole-value", [b"s3cret"], [b"token=s3cret;"], b"token=" + MARK + b";"),
    ("split-in-the-middle", [b"s3cret"], [b"token=s3c", b"ret;"], b"token=" + MARK + b";"),
    ("one-byte-chunks", [b"s3cret"], [bytes([c]) for c in b"a s3cret b"], b"a " + MARK + b" b"),
    ("value-at-the-very-end", [b"s3cret"], [b"xx", b"s3cre", b"t"], b"xx" + MARK),
    ("partial-value-at-the-end-kept", [b"s3cret"], [b"xx", b"s3cre"], b"xxs3cre"),
    ("twice-across-chunks", [b"abc"], [b"ab", b"cab", b"c"], MARK + MARK),
    ("self-overlapping", [b"aa"], [b"a", b"aa"], MARK + b"a"),
    ("empty-chunks", [b"abc"], [b"", b"a", b"", b"bc", b""], MARK),
    ("longest-first", [b"key", b"key-long"], [b"key-long key"], MARK + b" " + MARK),
    # A value that is a prefix of another, with a chunk ending right after the prefix: the
    # longer value is withheld whole (held-back bytes are raw, not already scrubbed).
    ("prefix-value-split-after-the-prefix", [b"XYZ-extra", b"XYZ"], [b"XYZ", b"-extra"],
     MARK),
    ("prefix-value-split-inside-the-rest", [b"XYZ-extra", b"XYZ"], [b"aXYZ-ex", b"tra"],
     b"a" + MARK),
    ("prefix-value-alone", [b"XYZ-extra", b"XYZ"], [b"XYZ", b"-ext"], MARK + b"-ext"),
    # A value that continues the mark's own last bytes is not matched against the mark.
    ("value-overlapping-the-mark", [b"writ]Z"], [b"writ]Z", b"Z"], MARK + b"Z"),
    ("value-inside-the-mark", [b"withheld"], [b"withheld", b"withheld"], MARK + MARK),
    ("no-values", [], [b"a", b"b"], b"ab"),
    ("empty-value-ignored", [b""], [b"a", b"b"], b"ab"),
    ("binary-values", [b"\x00\xff\r\n"], [b"\x00", b"\xff\r", b"\n\x00"], MARK + b"\x00"),
]


@pytest.mark.parametrize(("values", "chunks", "out"), [r[1:] for r in REDACT],
                         ids=[r[0] for r in REDACT])
def test_redactor(values: list[bytes], chunks: list[bytes], out: bytes) -> None:
    assert stream(values, chunks) == out
    assert Redactor(values).scrub(b"".join(chunks)) == out


def test_redactor_holds_back_only_what_could_still_be_a_value() -> None:
    r = Redactor([b"abcd"])
    assert r.feed(b"xyzab") == b"xy"      # "zab" could still become "abcd"
    assert r.feed(b"c") == b"z"
    assert r.feed(b"q") == b"a"           # only the last 3 bytes wait
    assert r.flush() == b"bcq"
    assert r.flush() == b""


def test_an_empty_redactor_is_false_and_passes_bytes_through() -> None:
    r = Redactor([b"", b""])
    assert not r
    assert r.feed(b"abc") == b"abc"
    assert r.scrub(b"abc") == b"abc"
    assert r.flush() == b""
    assert Redactor([b"x"])


def splits(data: st.DataObject, whole: bytes) -> list[bytes]:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=8)))
    return [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]


# Bytes from the mark's own alphabet too, so values can overlap it and each other.
ALPHABET = st.sampled_from(b"ab]tiw")
SMALL = st.lists(ALPHABET, min_size=0, max_size=40).map(bytes)
VALUE = st.lists(ALPHABET, min_size=1, max_size=6).map(bytes)


@settings(max_examples=150, deadline=None)
@given(st.lists(VALUE, min_size=1, max_size=3), SMALL, st.data())
def test_any_split_redacts_as_the_whole(values: list[bytes], whole: bytes,
                                        data: st.DataObject) -> None:
    chunks = splits(data, whole)
    assert stream(values, chunks) == Redactor(values).scrub(whole)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(b"XYZ"), min_size=1, max_size=5).map(bytes),
       st.lists(st.sampled_from(b"XYZ"), max_size=60).map(bytes), st.data())
def test_one_secret_never_survives_any_split(value: bytes, whole: bytes,
                                             data: st.DataObject) -> None:
    out = stream([value], splits(data, whole))
    assert value not in out
    assert out.count(MARK) >= (1 if value in whole else 0)


# == Exchange ===============================================================================
@dataclass
class Outcome:
    status: int
    body: bytes
    sent: int
    received: int
    request: bytes


async def _exchange(answer: bytes, whole: bool = False, eof: bool = True) -> Outcome:
    """GET /x from a loopback server that answers ``answer`` then closes. With ``whole``,
    the response is read from a stream already holding all of ``answer`` (one read returns
    it), followed by EOF unless ``eof`` is False."""
    seen = bytearray()
    reader = None
    if whole:
        reader = asyncio.StreamReader(limit=len(answer) + 1)
        reader.feed_data(answer)
        if eof:
            reader.feed_eof()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.extend(await r.readuntil(b"\r\n\r\n"))
        w.write(answer)
        await w.drain()
        w.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sock_reader, writer = await asyncio.open_connection("127.0.0.1", port)
    exchange = Exchange(reader or sock_reader, writer)
    try:
        await exchange.request("GET", "/x", [(b"host", b"t.example")])
        await exchange.end()
        response = await exchange.response()
        body = b"".join([c async for c in exchange.chunks()])
        return Outcome(response.status_code, body, exchange.sent, exchange.received,
                       bytes(seen))
    finally:
        exchange.close()
        server.close()
        await server.wait_closed()


def exchange(answer: bytes, whole: bool = False, eof: bool = True) -> Outcome:
    return asyncio.run(_exchange(answer, whole, eof))


def failure(answer: bytes, whole: bool = False, eof: bool = True) -> str:
    with pytest.raises(UpstreamFailed) as info:
        exchange(answer, whole, eof)
    assert info.value.code == "UNAVAILABLE"
    return info.value.details


REQUEST = b"GET /x HTTP/1.1\r\nhost: t.example\r\n\r\n"


@pytest.mark.parametrize(("answer", "status", "body"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello"),
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 404, b""),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
     200, b"hello"),
    (b"HTTP/1.0 200 OK\r\n\r\nuntil the server closes", 200, b"until the server closes"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok"),
    ((b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
     b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"), 201, b"ok"),
], ids=["content-length", "empty-body", "chunked", "close-delimited", "100-skipped",
        "100-and-103-skipped"])
def test_responses_are_read_and_counted(answer: bytes, status: int, body: bytes) -> None:
    out = exchange(answer)
    assert (out.status, out.body) == (status, body)
    assert out.request == REQUEST
    assert out.sent == len(REQUEST)
    assert out.received == len(answer)


@pytest.mark.parametrize(("answer", "message"), [
    (b"", "server closed the connection without a response"),
    (b"HTTP/1.1 100 Continue\r\n\r\n", "server closed the connection without a response"),
    (b"HTTP/1.1 200", NOT_HTTP + "peer unexpectedly closed connection"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
     NOT_HTTP + "peer closed connection without sending complete message body "
     "(received 5 bytes, expected 10)"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
     NOT_HTTP + "peer closed connection without sending complete message body "
     "(incomplete chunked read)"),
    (b"garbage\r\n\r\n", NOT_HTTP + "illegal status line: bytearray(b'garbage')"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
     NOT_HTTP + "conflicting Content-Length headers"),
    (b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
     NOT_HTTP + "illegal header line: bytearray(b'Bad Header: x')"),
], ids=["nothing", "only-an-interim-response", "half-a-status-line", "closed-mid-body",
        "closed-mid-chunk", "not-http", "two-lengths", "bad-header"])
def test_misbehaving_servers_fail_upstream(answer: bytes, message: str) -> None:
    assert failure(answer) == message


def head_of(size: int) -> bytes:
    """A complete 200 response whose head is ``size`` bytes by Exchange's count (each
    header: name, value and 4)."""
    cl = len(b"content-length") + len(b"0") + 4
    return b"HTTP/1.1 200 OK\r\nX: " + b"v" * (size - cl - 5) + b"\r\nContent-Length: 0\r\n\r\n"


def test_a_head_at_the_limit_is_read() -> None:
    answer = head_of(MAX_RESPONSE_HEAD)
    assert exchange(answer, whole=True).status == 200


def test_a_complete_head_over_the_limit_is_refused() -> None:
    answer = head_of(MAX_RESPONSE_HEAD + 1)
    assert failure(answer, whole=True) == (
        f"server's response is not valid HTTP/1.1 for Writ: its head is "
        f"{MAX_RESPONSE_HEAD + 1} bytes; at most {MAX_RESPONSE_HEAD}")


def test_an_endless_head_is_cut_off_at_the_limit() -> None:
    answer = b"HTTP/1.1 200 OK\r\nX: " + b"v" * (MAX_RESPONSE_HEAD + 10)  # never ends
    # No EOF: without the limit the read would wait for the rest forever.
    assert failure(answer, whole=True, eof=False) == NOT_HTTP + "Receive buffer too long"


@pytest.mark.parametrize("header", [
    (b"authorization", b"Bearer s3cret\r"),      # a stored secret with a CR at its end
    (b"authorization", b" Bearer s3cret"),
    (b"x-s3cret name", b"v"),
], ids=["cr-in-value", "leading-blank", "space-in-name"])
def test_a_request_that_does_not_frame_is_refused_without_quoting_it(
        header: tuple[bytes, bytes]) -> None:
    async def go() -> tuple[str, int]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ex = Exchange(reader, writer)
        try:
            with pytest.raises(UpstreamFailed) as info:
                await ex.request("GET", "/x", [(b"host", b"t"), header])
            return info.value.details, ex.sent
        finally:
            ex.close()
            server.close()
            await server.wait_closed()

    details, sent = asyncio.run(go())
    assert details == ("request does not frame as HTTP/1.1: h11 refuses its method, target "
                       "or a header")
    assert sent == 0


@pytest.mark.parametrize("echoed", [
    b"Bearer sk-live/7Hq2x",          # the stored value
    b"sk-live/7Hq2x",                 # the credential without its scheme
    b"Bearer sk-live\\/7Hq2x",        # JSON-escaped
    b"sk-live%2F7Hq2x",               # percent-encoded
    b"Bearer%20sk-live%2F7Hq2x",
], ids=["value", "credential", "json", "percent-credential", "percent-value"])
def test_secret_forms_are_all_redacted(echoed: bytes) -> None:
    r = Redactor(secret_forms(b"Bearer sk-live/7Hq2x"))
    out = r.feed(b'{"auth": "' + echoed + b'"}') + r.flush()
    assert out == b'{"auth": "' + Redactor.MARK + b'"}'


def test_a_short_credential_is_not_searched_for_alone() -> None:
    assert secret_forms(b"Basic abc") == sorted(
        {b"Basic abc", b"Basic%20abc"}, key=len, reverse=True)
