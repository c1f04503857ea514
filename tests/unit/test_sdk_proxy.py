"""The in-box forwarder's request parsing (tool_images/sdk/writ_tool/proxy.py): what an
unmodified client sends it is read exactly, and anything else is a 400, never a request."""

from __future__ import annotations

import io
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tool_images" / "sdk"))

from writ_tool import proxy


def head(raw: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    return proxy._read_head(io.BytesIO(raw))


def test_a_proxy_request_head() -> None:
    assert head(b"get http://h:8080/a?b=1 HTTP/1.1\r\nHost: h:8080\r\nX-A:  v \r\n\r\nBODY") == (
        "GET", "http://h:8080/a?b=1", [("Host", "h:8080"), ("X-A", "v")])


@pytest.mark.parametrize("raw, why", [
    (b"GET /relative\r\n\r\n", "malformed request line"),
    (b"GET http://h/ HTTP/2\r\n\r\n", "malformed request line"),
    (b"GET http://h/ HTTP/1.1 extra\r\n\r\n", "malformed request line"),
    (b"GET http://h/ HTTP/1.1\r\nno colon here\r\n\r\n", "malformed header line"),
    (b"GET http://h/ HTTP/1.1\r\n" + b"X: " + b"v" * (70 << 10) + b"\r\n\r\n",
     "request head too large"),
], ids=["no-version", "http2", "extra-word", "header", "too-large"])
def test_bad_heads_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(proxy._BadRequest, match=why):
        head(raw)


def test_chunked_body_is_decoded_and_trailers_dropped() -> None:
    raw = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    f = io.BytesIO(raw)
    assert b"".join(proxy._chunked(f)) == b"Wikipedia"
    assert f.read() == b"NEXT"


def test_bad_chunk_size_is_refused() -> None:
    with pytest.raises(proxy._BadRequest, match="malformed chunked body"):
        list(proxy._chunked(io.BytesIO(b"zz\r\n")))


def test_sized_body_reads_exactly_and_refuses_a_short_one() -> None:
    f = io.BytesIO(b"0123456789rest")
    assert b"".join(proxy._sized(f, 10)) == b"0123456789"
    assert f.read() == b"rest"
    with pytest.raises(proxy._BadRequest, match="shorter than its Content-Length"):
        list(proxy._sized(io.BytesIO(b"abc"), 10))


def test_refusals_map_to_http_statuses() -> None:
    a, b = socket.socketpair()
    with a, b:
        proxy._refused(a, proxy.BrokerError("PERMISSION_DENIED", "no rule allows it"))
        a.shutdown(socket.SHUT_WR)
        got = b.recv(4096)
    assert got.startswith(b"HTTP/1.1 403 Refused by Writ\r\n")
    assert b"X-Writ-Status: PERMISSION_DENIED\r\n" in got
    assert got.endswith(b"\r\n\r\nno rule allows it\n")
    assert proxy.HTTP_STATUS["DEADLINE_EXCEEDED"] == 504
    assert proxy.HTTP_STATUS["RESOURCE_EXHAUSTED"] == 429


def test_forwarder_listens_on_loopback_only() -> None:
    fwd = proxy.Forwarder()
    try:
        host, port = fwd._listener.getsockname()
        assert host == "127.0.0.1" and fwd.url == f"http://127.0.0.1:{port}"
    finally:
        fwd._listener.close()
