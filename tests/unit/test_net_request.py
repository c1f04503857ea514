"""The broker's checks of a tool's HTTP request before any decision (mediators/net.py):
``net_request`` (URL to NetRequest), ``_headers`` (what the tool may set), ``_head``
(method, time limit, redirects), and ``ByteMeter`` (net_bytes charged ahead in steps on a
real Budgets file, the unused rest released).

Every refusal is an InvalidArgument with the exact message the tool sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import h11
import pytest
from writ._proto import capabilities_pb2 as caps
from writ._proto import token_pb2, tool_pb2
from writ.budgets import Budgets
from writ.core.policy import Authority, Charge, NetRequest, decide
from writ.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from writ.mediators._context import CallContext
from writ.mediators.net import (
    CREDIT_STEP,
    DEFAULT_REDIRECTS,
    MAX_HEADER_BYTES,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_REDIRECTS,
    MAX_TIMEOUT_S,
    MAX_URL,
    ByteMeter,
    _Body,
    _head,
    _headers,
    _redirect,
    net_request,
)

HINT = "use ASCII (IDNA) and an explicit '*.' prefix for wildcards"
CONTROL = "URL contains spaces, control characters or backslashes; percent-encode them"


def invalid(fn: object, *args: object) -> str:
    with pytest.raises(InvalidArgument) as info:
        fn(*args)  # type: ignore[operator]
    assert info.value.code == "INVALID_ARGUMENT"
    return info.value.details


# == net_request ============================================================================
def R(scheme: str, host: str, port: int, path: str = "/", method: str = "GET") -> NetRequest:
    return NetRequest(scheme, host, port, method, path)


# (row id, URL, the NetRequest it becomes)
URLS = [
    ("http-default-port", "http://api.example.com", R("http", "api.example.com", 80)),
    ("https-default-port", "https://api.example.com/v1/x", R("https", "api.example.com", 443,
                                                              "/v1/x")),
    ("explicit-default-port", "https://api.example.com:443/", R("https", "api.example.com",
                                                                443)),
    ("other-port", "http://api.example.com:8080/a", R("http", "api.example.com", 8080, "/a")),
    ("port-leading-zero", "http://api.example.com:080/", R("http", "api.example.com", 80)),
    ("max-port", "http://api.example.com:65535/", R("http", "api.example.com", 65535)),
    ("scheme-upper", "HTTPS://api.example.com/", R("https", "api.example.com", 443)),
    ("host-mixed-case", "https://Api.Example.COM/", R("https", "api.example.com", 443)),
    ("host-trailing-dot", "https://api.example.com./", R("https", "api.example.com", 443)),
    ("host-trailing-dot-and-port", "https://api.example.com.:8443/",
     R("https", "api.example.com", 8443)),
    ("idna", "https://bücher.example/", R("https", "xn--bcher-kva.example", 443)),
    ("idna-fullwidth", "https://ＥＸＡＭＰＬＥ.com/", R("https", "example.com", 443)),
    # UTS 46 drops a zero-width space: the name dialled (and checked) is the visible one
    ("idna-zero-width-dropped", "https://\u200bapi.example/", R("https", "api.example", 443)),
    ("ipv4", "http://127.0.0.1:8080/x", R("http", "127.0.0.1", 8080, "/x")),
    ("ipv4-trailing-dot", "http://127.0.0.1./", R("http", "127.0.0.1", 80)),
    ("ipv6", "http://[::1]:8080/x", R("http", "::1", 8080, "/x")),
    ("ipv6-default-port", "http://[::1]/", R("http", "::1", 80)),
    ("ipv6-long-form", "http://[0:0:0:0:0:0:0:1]/", R("http", "::1", 80)),
    ("ipv6-upper", "https://[2001:DB8::1]:8443/p?q", R("https", "2001:db8::1", 8443, "/p")),
    ("ipv6-mapped-v4", "http://[::ffff:127.0.0.1]/", R("http", "::ffff:7f00:1", 80)),
    ("no-path", "https://api.example.com", R("https", "api.example.com", 443)),
    ("query-only", "https://api.example.com?q=1", R("https", "api.example.com", 443)),
    ("fragment-only", "https://api.example.com#f", R("https", "api.example.com", 443)),
    ("query-not-in-path", "https://api.example.com/v1/x?y=/admin", R("https", "api.example.com",
                                                                     443, "/v1/x")),
    ("at-in-path", "https://api.example.com/@evil.example", R("https", "api.example.com", 443,
                                                              "/@evil.example")),
    ("at-in-query", "https://api.example.com?x@evil.example", R("https", "api.example.com",
                                                                443)),
    ("at-in-fragment", "https://api.example.com#@evil.example", R("https", "api.example.com",
                                                                  443)),
    ("encoded-dots-kept", "https://api.example.com/v1/%2e%2e/admin",
     R("https", "api.example.com", 443, "/v1/%2e%2e/admin")),
    ("dot-segments-kept", "https://api.example.com/v1/../admin",
     R("https", "api.example.com", 443, "/v1/../admin")),
]


@pytest.mark.parametrize(("url", "expected"), [r[1:] for r in URLS], ids=[r[0] for r in URLS])
def test_net_request(url: str, expected: NetRequest) -> None:
    assert net_request("get", url) == expected


def test_the_method_is_upper_cased() -> None:
    assert net_request("pAtCh", "https://a.example/").method == "PATCH"


# (row id, URL, exact refusal)
BAD_URLS = [
    ("ftp", "ftp://api.example.com/", "URL scheme must be http or https, not 'ftp'"),
    ("ws", "ws://api.example.com/", "URL scheme must be http or https, not 'ws'"),
    ("file", "file:///etc/passwd", "URL scheme must be http or https, not 'file'"),
    ("scheme-relative", "//api.example.com/", "URL scheme must be http or https, not ''"),
    ("relative", "/v1/x", "URL scheme must be http or https, not ''"),
    ("no-host", "http:///x", "URL 'http:///x' has no host"),
    ("only-a-port", "http://:80/", "URL 'http://:80/' has no host"),
    ("userinfo", "http://user:pw@api.example.com/", "URLs with user information are refused"),
    ("empty-userinfo", "http://@api.example.com/", "URLs with user information are refused"),
    ("userinfo-confusion", "http://api.example.com:443@evil.example/",
     "URLs with user information are refused"),
    ("userinfo-literal", "http://127.0.0.1:1@evil.example/",
     "URLs with user information are refused"),
    ("port-zero", "http://api.example.com:0/", "port 0 is not a port"),
    ("port-too-big", "http://api.example.com:65536/",
     "malformed URL 'http://api.example.com:65536/': Port out of range 0-65535"),
    ("port-huge", "http://api.example.com:99999999999999999999/",
     "malformed URL 'http://api.example.com:99999999999999999999/': Port out of range 0-65535"),
    ("port-negative", "http://api.example.com:-1/",
     ("malformed URL 'http://api.example.com:-1/': Port could not be cast to integer value "
     "as '-1'")),
    ("port-plus", "http://api.example.com:+80/",
     ("malformed URL 'http://api.example.com:+80/': Port could not be cast to integer value "
     "as '+80'")),
    ("port-arabic-digit", "http://api.example.com:٣/",
     ("malformed URL 'http://api.example.com:٣/': Port could not be cast to integer value "
     "as '٣'")),
    ("port-superscript", "http://api.example.com:²/",
     ("malformed URL 'http://api.example.com:²/': Port could not be cast to integer value "
     "as '²'")),
    ("two-ports", "http://api.example.com:80:80/",
     ("malformed URL 'http://api.example.com:80:80/': Port could not be cast to integer value "
     "as '80:80'")),
    ("empty-port", "http://api.example.com:/",
     f"host 'api.example.com:': 'api.example.com:' is not a host name (label 'com:'); {HINT}"),
    ("ipv6-unbracketed", "http://::1/",
     "malformed URL 'http://::1/': Port could not be cast to integer value as ':1'"),
    ("ipv6-unclosed", "http://[::1/", "malformed URL 'http://[::1/': Invalid IPv6 URL"),
    ("ipv6-zone-encoded", "http://[fe80::1%25eth0]/",
     "host '[fe80::1%25eth0]': zone ids and percent-encoding are refused"),
    ("ipv6-zone-raw", "http://[fe80::1%eth0]:80/",
     "host '[fe80::1%eth0]': zone ids and percent-encoding are refused"),
    ("ipv6-then-junk", "http://[::1]x/",
     f"host '[::1]x': '[::1]x' is not a host name (label '[::1]x'); {HINT}"),
    ("ipv6-trailing-dot", "http://[::1]./",
     "host '[::1].': IP literal '[::1]' is not in canonical form (::1)"),
    ("ipvfuture-name", "http://[v1.api.example.com]/",
     "host '[v1.api.example.com]': brackets hold only an IPv6 address"),
    ("ipvfuture-port", "http://[v1.x]:8080/", "host '[v1.x]': brackets hold only an IPv6 address"),
    ("decimal-ip", "http://2130706433/",
     "host '2130706433': IP literal '2130706433' is not in canonical form (127.0.0.1)"),
    ("octal-ip", "http://0177.0.0.1:8080/",
     "host '0177.0.0.1': IP literal '0177.0.0.1' is not in canonical form (127.0.0.1)"),
    ("hex-ip", "http://0x7f.1/",
     "host '0x7f.1': IP literal '0x7f.1' is not in canonical form (127.0.0.1)"),
    ("short-ip", "http://127.1/",
     "host '127.1': IP literal '127.1' is not in canonical form (127.0.0.1)"),
    ("percent-encoded-host", "http://%31%32%37.0.0.1/",
     "host '%31%32%37.0.0.1': zone ids and percent-encoding are refused"),
    ("percent-encoded-dot", "http://api%2eexample.com/",
     "host 'api%2eexample.com': zone ids and percent-encoding are refused"),
    ("underscore", "http://a_b.example/",
     f"host 'a_b.example': 'a_b.example' is not a host name (label 'a_b'); {HINT}"),
    ("two-trailing-dots", "http://api.example.com../",
     f"host 'api.example.com..': 'api.example.com.' is not a host name (label ''); {HINT}"),
    ("zero-width-label", "http://\u200b.example/",
     "host '\\u200b.example' is not a valid name: Empty Label"),
    # characters refused anywhere in the URL
    ("space-in-host", "http://api example.com/", CONTROL),
    ("space-in-path", "http://api.example.com/a b", CONTROL),
    ("space-before-port", "http://api.example.com: 80/", CONTROL),
    ("tab", "http://api.example.com/\t", CONTROL),
    ("newline", "http://api.example.com/\n", CONTROL),
    ("cr-in-host", "http://api.example.com\r.evil/", CONTROL),
    ("nul", "http://api.example.com\x00.evil/", CONTROL),
    ("del", "http://api.example.com/\x7f", CONTROL),
    ("backslash-host", "http://evil.example\\@api.example.com/", CONTROL),
    ("backslash-path", "http://api.example.com\\..\\admin", CONTROL),
    ("leading-space", " http://api.example.com/", CONTROL),
    ("too-long", "http://api.example.com/" + "a" * (MAX_URL - 22),
     f"URL is {MAX_URL + 1} characters; at most {MAX_URL}"),
]


@pytest.mark.parametrize(("url", "message"), [r[1:] for r in BAD_URLS],
                         ids=[r[0] for r in BAD_URLS])
def test_bad_urls_are_refused(url: str, message: str) -> None:
    assert invalid(net_request, "GET", url) == message


def test_a_url_at_the_length_limit_is_read() -> None:
    url = "http://api.example.com/" + "a" * (MAX_URL - 23)
    assert len(url) == MAX_URL
    assert net_request("GET", url).path == "/" + "a" * (MAX_URL - 23)


# == _headers ===============================================================================
REQ = net_request("GET", "https://api.example.com/v1/x")
REQ_PORT = net_request("GET", "https://api.example.com:8443/v1/x")
REQ_V6 = net_request("GET", "http://[::1]:8080/")


def H(*pairs: tuple[str, str]) -> list[tool_pb2.Header]:
    return [tool_pb2.Header(name=n, value=v) for n, v in pairs]


# (row id, request, headers, (headers passed on, Content-Length))
ACCEPTED = [
    ("none", REQ, [], ([], None)),
    ("order-and-case-kept", REQ, [("X-B", "2"), ("x-a", "1"), ("X-B", "3")],
     ([("X-B", "2"), ("x-a", "1"), ("X-B", "3")], None)),
    ("host-equal", REQ, [("Host", "api.example.com")], ([], None)),
    ("host-upper", REQ, [("HOST", "API.EXAMPLE.COM")], ([], None)),
    ("host-with-default-port", REQ, [("host", "api.example.com:443")], ([], None)),
    ("host-with-port", REQ_PORT, [("Host", "api.example.com:8443")], ([], None)),
    ("host-v6", REQ_V6, [("Host", "[::1]:8080")], ([], None)),
    ("host-blanks-trimmed", REQ, [("Host", " api.example.com\t")], ([], None)),
    ("content-length", REQ, [("Content-Length", "5")], ([], 5)),
    ("content-length-zero", REQ, [("content-length", "0")], ([], 0)),
    ("content-length-leading-zeros", REQ, [("Content-Length", "007")], ([], 7)),
    ("content-length-twice-equal", REQ, [("Content-Length", "5"), ("content-length", "05")],
     ([], 5)),
    ("content-length-18-digits", REQ, [("Content-Length", "9" * 18)], ([], 10**18 - 1)),
    ("content-length-blanks", REQ, [("Content-Length", " 5 ")], ([], 5)),
    ("hop-by-hop-dropped", REQ, [(h, "x") for h in (
        "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization",
        "Proxy-Authenticate", "TE", "Trailer", "Transfer-Encoding", "Upgrade")] +
     [("X-Kept", "y")], ([("X-Kept", "y")], None)),
    ("value-blanks-trimmed", REQ, [("X-A", "  a b\t")], ([("X-A", "a b")], None)),
    ("value-inner-tab", REQ, [("X-A", "a\tb")], ([("X-A", "a\tb")], None)),
    ("value-empty", REQ, [("X-A", "")], ([("X-A", "")], None)),
    ("value-non-ascii", REQ, [("X-A", "café")], ([("X-A", "café")], None)),
    ("value-at-the-limit", REQ, [("X-A", "v" * MAX_HEADER_VALUE)],
     ([("X-A", "v" * MAX_HEADER_VALUE)], None)),
    ("token-punctuation", REQ, [("!#$%&'*+.^_`|~-", "x")], ([("!#$%&'*+.^_`|~-", "x")], None)),
    ("name-64", REQ, [("X" * 64, "x")], ([("X" * 64, "x")], None)),
    ("max-count", REQ, [(f"X-{i}", "v") for i in range(MAX_HEADERS)],
     ([(f"X-{i}", "v") for i in range(MAX_HEADERS)], None)),
]


@pytest.mark.parametrize(("req", "headers", "expected"), [r[1:] for r in ACCEPTED],
                         ids=[r[0] for r in ACCEPTED])
def test_headers_accepted(req: NetRequest, headers: list[tuple[str, str]],
                          expected: tuple[list[tuple[str, str]], int | None]) -> None:
    assert _headers(H(*headers), req) == expected


VALUE = (f"value longer than {MAX_HEADER_VALUE} characters or containing CR, LF or NUL")
BIG = [(f"X-{i}", "v" * 8000) for i in range(9)]

REFUSED_HEADERS = [
    ("host-other", REQ, [("Host", "evil.example")],
     ("Host header 'evil.example' differs from the URL's host 'api.example.com'; the broker "
     "sets Host")),
    ("host-second-differs", REQ, [("Host", "api.example.com"), ("Host", "evil.example")],
     ("Host header 'evil.example' differs from the URL's host 'api.example.com'; the broker "
     "sets Host")),
    ("host-without-the-port", REQ_PORT, [("Host", "api.example.com")],
     ("Host header 'api.example.com' differs from the URL's host 'api.example.com:8443'; the "
     "broker sets Host")),
    ("host-other-port", REQ, [("Host", "api.example.com:8443")],
     ("Host header 'api.example.com:8443' differs from the URL's host 'api.example.com'; the "
     "broker sets Host")),
    ("host-trailing-dot", REQ, [("Host", "api.example.com.")],
     ("Host header 'api.example.com.' differs from the URL's host 'api.example.com'; the "
     "broker sets Host")),
    ("host-unicode", net_request("GET", "https://bücher.example/"), [("Host", "bücher.example")],
     ("Host header 'bücher.example' differs from the URL's host 'xn--bcher-kva.example'; the "
     "broker sets Host")),
    ("host-v6-unbracketed", REQ_V6, [("Host", "::1:8080")],
     "Host header '::1:8080' differs from the URL's host '[::1]:8080'; the broker sets Host"),
    ("host-empty", REQ, [("Host", "")],
     "Host header '' differs from the URL's host 'api.example.com'; the broker sets Host"),
    ("crlf", REQ, [("X-Bad", "a\r\nInjected: 1")], f"header X-Bad: {VALUE}"),
    ("lf", REQ, [("X-Bad", "a\nb")], f"header X-Bad: {VALUE}"),
    ("cr", REQ, [("X-Bad", "a\rb")], f"header X-Bad: {VALUE}"),
    ("nul", REQ, [("X-Bad", "a\x00b")], f"header X-Bad: {VALUE}"),
    ("crlf-in-host", REQ, [("Host", "api.example.com\r\nX: 1")], f"header Host: {VALUE}"),
    ("too-long", REQ, [("X-Bad", "v" * (MAX_HEADER_VALUE + 1))], f"header X-Bad: {VALUE}"),
    ("soh", REQ, [("X-Bad", "a\x01b")], "header X-Bad: value contains a control character"),
    ("vertical-tab", REQ, [("X-Bad", "a\x0bb")],
     "header X-Bad: value contains a control character"),
    ("form-feed", REQ, [("X-Bad", "a\x0cb")], "header X-Bad: value contains a control character"),
    ("escape", REQ, [("X-Bad", "\x1b[31m")], "header X-Bad: value contains a control character"),
    ("del", REQ, [("X-Bad", "a\x7f")], "header X-Bad: value contains a control character"),
    ("name-space", REQ, [("X Bad", "v")], "header name 'X Bad' is not an HTTP token"),
    ("name-colon", REQ, [("X:Bad", "v")], "header name 'X:Bad' is not an HTTP token"),
    ("name-empty", REQ, [("", "v")], "header name '' is not an HTTP token"),
    ("name-crlf", REQ, [("X\r\nY", "v")], "header name 'X\\r\\nY' is not an HTTP token"),
    ("name-unicode", REQ, [("X-Ä", "v")], "header name 'X-Ä' is not an HTTP token"),
    ("name-65", REQ, [("X" * 65, "v")], f"header name '{'X' * 64}' is not an HTTP token"),
    ("too-many", REQ, [(f"X-{i}", "v") for i in range(MAX_HEADERS + 1)],
     f"{MAX_HEADERS + 1} headers; at most {MAX_HEADERS}"),
    ("too-many-bytes", REQ, BIG,
     f"request headers are {9 * (3 + 8000 + 4)} bytes; at most {MAX_HEADER_BYTES}"),
    ("dropped-headers-count-too", REQ, [(f"Upgrade-{i}"[:7], "v" * 8000) for i in range(9)],
     f"request headers are {9 * (7 + 8000 + 4)} bytes; at most {MAX_HEADER_BYTES}"),
    ("content-length-differs", REQ, [("Content-Length", "5"), ("Content-Length", "6")],
     "Content-Length '6' is not one decimal length"),
    ("content-length-list", REQ, [("Content-Length", "5, 5")],
     "Content-Length '5, 5' is not one decimal length"),
    ("content-length-negative", REQ, [("Content-Length", "-1")],
     "Content-Length '-1' is not one decimal length"),
    ("content-length-plus", REQ, [("Content-Length", "+5")],
     "Content-Length '+5' is not one decimal length"),
    ("content-length-hex", REQ, [("Content-Length", "0x5")],
     "Content-Length '0x5' is not one decimal length"),
    ("content-length-fraction", REQ, [("Content-Length", "5.0")],
     "Content-Length '5.0' is not one decimal length"),
    ("content-length-empty", REQ, [("Content-Length", "")],
     "Content-Length '' is not one decimal length"),
    ("content-length-underscore", REQ, [("Content-Length", "1_0")],
     "Content-Length '1_0' is not one decimal length"),
    # str.isdigit() passes these; int() reads the first and raises on the second
    ("content-length-arabic-digit", REQ, [("Content-Length", "٣")],
     "Content-Length '٣' is not one decimal length"),
    ("content-length-superscript", REQ, [("Content-Length", "²")],
     "Content-Length '²' is not one decimal length"),
    ("content-length-19-digits", REQ, [("Content-Length", "9" * 19)],
     f"Content-Length '{'9' * 19}' is not one decimal length"),
    ("content-length-5000-digits", REQ, [("Content-Length", "9" * 5000)],
     f"Content-Length '{'9' * 32}' is not one decimal length"),
]


@pytest.mark.parametrize(("req", "headers", "message"), [r[1:] for r in REFUSED_HEADERS],
                         ids=[r[0] for r in REFUSED_HEADERS])
def test_headers_refused(req: NetRequest, headers: list[tuple[str, str]], message: str) -> None:
    assert invalid(_headers, H(*headers), req) == message


# == _head ==================================================================================
def part(method: str = "GET", url: str = "https://api.example.com/v1/x", body: bytes = b"",
         **kw: object) -> tool_pb2.HttpRequestPart:
    return tool_pb2.HttpRequestPart(head=tool_pb2.HttpRequestHead(method=method, url=url, **kw),
                                    body=body)


def test_head_defaults() -> None:
    h = _head(part(headers=[tool_pb2.Header(name="X-A", value="1")]), 30.0)
    assert (h.method, h.url, h.req) == ("GET", "https://api.example.com/v1/x", REQ)
    assert (h.headers, h.length) == ([("X-A", "1")], None)
    assert (h.timeout_s, h.follow, h.max_redirects) == (30.0, False, DEFAULT_REDIRECTS)


@pytest.mark.parametrize(("kw", "field", "value"), [
    ({"timeout_s": 0.25}, "timeout_s", 0.25),
    ({"timeout_s": MAX_TIMEOUT_S}, "timeout_s", MAX_TIMEOUT_S),
    ({"timeout_s": 0.0}, "timeout_s", 7.0),
    ({"max_redirects": MAX_REDIRECTS}, "max_redirects", MAX_REDIRECTS),
    ({"max_redirects": 1}, "max_redirects", 1),
    ({"max_redirects": 0}, "max_redirects", DEFAULT_REDIRECTS),
    ({"follow_redirects": True}, "follow", True),
], ids=["short-timeout", "max-timeout", "zero-timeout-is-the-default", "max-redirects",
        "one-redirect", "zero-redirects-is-the-default", "follow"])
def test_head_fields(kw: dict[str, object], field: str, value: object) -> None:
    assert getattr(_head(part(**kw), 7.0), field) == value


@pytest.mark.parametrize(("p", "message"), [
    (tool_pb2.HttpRequestPart(body=b"x"), ("the first HttpRequest message must carry the head "
     "and no body")),
    (tool_pb2.HttpRequestPart(), ("the first HttpRequest message must carry the head and no "
     "body")),
    (part(body=b"early"), "the first HttpRequest message must carry the head and no body"),
    (part(method="get"), "method 'get' must be 1-16 upper-case letters"),
    (part(method=""), "method '' must be 1-16 upper-case letters"),
    (part(method="BREW-COFFEE"), "method 'BREW-COFFEE' must be 1-16 upper-case letters"),
    (part(method="GET "), "method 'GET ' must be 1-16 upper-case letters"),
    (part(method="GET\r\n"), "method 'GET\\r\\n' must be 1-16 upper-case letters"),
    (part(method="A" * 17), f"method '{'A' * 17}' must be 1-16 upper-case letters"),
    (part(method="É"), "method 'É' must be 1-16 upper-case letters"),
    (part(method="CONNECT"), "CONNECT is a tunnel: use Connect, not HttpRequest"),
    (part(timeout_s=-1.0), f"timeout_s must be between 0 and {MAX_TIMEOUT_S:g}"),
    (part(timeout_s=math.nan), f"timeout_s must be between 0 and {MAX_TIMEOUT_S:g}"),
    (part(timeout_s=math.inf), f"timeout_s must be between 0 and {MAX_TIMEOUT_S:g}"),
    (part(timeout_s=MAX_TIMEOUT_S + 0.001), (f"timeout_s must be between 0 and "
     f"{MAX_TIMEOUT_S:g}")),
    (part(max_redirects=MAX_REDIRECTS + 1), f"max_redirects is at most {MAX_REDIRECTS}"),
    # the order of the checks: method, URL, headers, time limit, redirects
    (part(method="get", url="ftp://x/"), "method 'get' must be 1-16 upper-case letters"),
    (part(url="ftp://x/", headers=[tool_pb2.Header(name="X Y", value="")]),
     "URL scheme must be http or https, not 'ftp'"),
    (part(timeout_s=-1.0, headers=[tool_pb2.Header(name="X Y", value="")]),
     "header name 'X Y' is not an HTTP token"),
    (part(timeout_s=-1.0, max_redirects=99), (f"timeout_s must be between 0 and "
     f"{MAX_TIMEOUT_S:g}")),
], ids=["no-head", "empty", "head-with-body", "lower-case-method", "empty-method",
        "method-with-dash", "method-with-space", "method-with-crlf", "method-17", "method-accent",
        "connect", "negative-timeout", "nan-timeout", "infinite-timeout", "timeout-over",
        "too-many-redirects", "method-before-url", "url-before-headers",
        "headers-before-timeout", "timeout-before-redirects"])
def test_head_refusals(p: tool_pb2.HttpRequestPart, message: str) -> None:
    assert invalid(_head, p, 30.0) == message


# == ByteMeter ==============================================================================
MiB = CREDIT_STEP
KEY = "00" * 16 + "/net[0]/net_bytes"


@pytest.fixture
def budgets(tmp_path: Path) -> Iterator[Budgets]:
    b = Budgets(tmp_path / "budgets.sqlite")
    yield b
    b.close()


async def _unused_recorder(ev: object) -> object:
    raise AssertionError("a ByteMeter records nothing")


def meter(budgets: Budgets, *charges: Charge) -> ByteMeter:
    ctx = CallContext(authority=Authority.from_blocks([], None), now=0.0,
                      record=_unused_recorder, base=None, budgets=budgets)  # type: ignore[arg-type]
    return ByteMeter(ctx, charges)


def used(budgets: Budgets, key: str = KEY) -> int:
    return budgets.used([key])[key]


def net_bytes(cap: int, key: str = KEY) -> Charge:
    return Charge(key, "net_bytes", cap)


def test_bytes_are_reserved_a_step_ahead_and_the_rest_released(budgets: Budgets) -> None:
    m = meter(budgets, net_bytes(16 * MiB))     # a step: 1 MiB (a sixteenth of the cap)
    m.take(100)
    assert used(budgets) == MiB
    m.take(1000)
    m.take(MiB - 1100)                # exactly the credit: no new reservation
    assert used(budgets) == MiB
    m.take(1)
    assert used(budgets) == 2 * MiB
    m.settle()
    assert used(budgets) == MiB + 1 == m.total
    m.settle()                        # settling twice releases nothing more
    assert used(budgets) == MiB + 1


def test_a_take_larger_than_a_step_reserves_exactly_it(budgets: Budgets) -> None:
    m = meter(budgets, net_bytes(10 * MiB))
    m.take(3 * MiB + 5)
    assert used(budgets) == 3 * MiB + 5
    m.settle()
    assert used(budgets) == 3 * MiB + 5


def test_the_cap_is_reached_exactly_and_never_passed(budgets: Budgets) -> None:
    m = meter(budgets, net_bytes(100))
    m.take(60)                        # a step does not fit: exactly 60
    m.take(40)
    assert used(budgets) == 100
    with pytest.raises(PermissionDenied) as info:
        m.take(1)
    assert info.value.details == ("budget exhausted: net[0] allows 100 net bytes in total, "
                                  "100 used, this needs 1")
    m.settle()
    assert used(budgets) == 100


def test_a_step_that_does_not_fit_falls_back_to_the_exact_amount(budgets: Budgets) -> None:
    cap = 16 * MiB + MiB // 2                   # a step: 1 MiB
    m = meter(budgets, net_bytes(cap))
    m.take(15 * MiB)                            # more than a step: exactly that
    m.take(100)                                 # a step fits
    assert used(budgets) == 16 * MiB
    m.take(MiB)                       # needs 100 more; another step would pass the cap
    assert used(budgets) == 16 * MiB + 100
    with pytest.raises(PermissionDenied) as info:
        m.take(MiB // 2 - 99)
    assert info.value.details == (f"budget exhausted: net[0] allows {cap} net bytes "
                                  f"in total, {16 * MiB + 100} used, this needs {MiB // 2 - 99}")
    m.take(MiB // 2 - 100)            # what is left still fits
    m.settle()
    assert used(budgets) == cap


@pytest.mark.parametrize("cap, reserved", [
    (64 * MiB, MiB),                            # at most 1 MiB ahead
    (MiB + MiB // 2, (MiB + MiB // 2) // 16),   # a sixteenth of a smaller cap
    (32 * 1024, 4096),                          # never less than 4 KiB ...
    (1000, 1),                                  # ... unless that passes the cap: exact
], ids=["large", "small", "floor", "tiny"])
def test_a_step_is_at_most_a_sixteenth_of_the_cap(budgets: Budgets, cap: int,
                                                 reserved: int) -> None:
    m = meter(budgets, net_bytes(cap))
    m.take(1)
    assert used(budgets) == reserved


def test_budget_left_by_an_earlier_request_counts(budgets: Budgets) -> None:
    first = meter(budgets, net_bytes(1000))
    first.take(900)
    first.settle()
    second = meter(budgets, net_bytes(1000))
    with pytest.raises(PermissionDenied) as info:
        second.take(101)
    assert info.value.details == ("budget exhausted: net[0] allows 1000 net bytes in total, "
                                  "900 used, this needs 101")
    second.take(100)
    assert used(budgets) == 1000


def test_every_layer_is_charged_and_the_tightest_refuses(budgets: Budgets) -> None:
    grant = net_bytes(10 * MiB, "00" * 16 + "/wide/net_bytes")
    narrowed = net_bytes(500, "01" * 16 + "/narrow/net_bytes")
    m = meter(budgets, grant, narrowed)
    m.take(400)
    assert budgets.used([grant.key, narrowed.key]) == {grant.key: 400, narrowed.key: 400}
    with pytest.raises(PermissionDenied) as info:
        m.take(101)
    assert info.value.details == ("budget exhausted: narrow allows 500 net bytes in total, "
                                  "400 used, this needs 101")
    assert budgets.used([grant.key, narrowed.key]) == {grant.key: 400, narrowed.key: 400}


def test_other_kinds_are_not_charged_and_no_budget_charges_nothing(budgets: Budgets) -> None:
    requests = Charge("00" * 16 + "/net[0]/requests", "requests", 1)
    m = meter(budgets, requests)
    m.take(50 * MiB)
    m.settle()
    assert m.total == 50 * MiB
    assert used(budgets, requests.key) == 0


def test_the_charges_decide_names_are_the_ones_metered(budgets: Budgets) -> None:
    rule = caps.NetRule(id="api", host="api.example.com", schemes=["https"], methods=["GET"],
                        path_prefixes=["/"], max_bytes=2 * MiB, max_requests=5)
    grant = caps.Grant(expires_at=2_000_000_000, net=[rule])
    authority = Authority.from_blocks([token_pb2.TokenBlock(id=b"\x00" * 16, grant=grant)],
                                      None)
    decision = decide(authority, REQ, 1_700_000_000)
    assert decision.allowed
    m = meter(budgets, *decision.charges)
    m.take(2 * MiB)
    with pytest.raises(PermissionDenied) as info:
        m.take(1)
    assert info.value.details == (f"budget exhausted: api allows {2 * MiB} net bytes in total, "
                                  f"{2 * MiB} used, this needs 1")


# == _redirect: which answers are followed, and with which method ==========================
def _body(kept: bytes | None) -> _Body:
    b = _Body(None)  # type: ignore[arg-type]  # never streamed here
    b.kept = None if kept is None else bytearray(kept)
    return b


def _response(status: int, *headers: tuple[bytes, bytes]) -> h11.Response:
    return h11.Response(status_code=status, headers=list(headers))


LOC = (b"Location", b"/next")

# (row id, status, response headers, method, kept body, follow, hops, expected)
REDIRECTS: list[tuple[str, int, tuple[tuple[bytes, bytes], ...], str, bytes | None, bool, int,
                      tuple[str, str] | None]] = [
    ("not-asked-to-follow", 302, (LOC,), "GET", b"", False, 0, None),
    ("not-a-redirect", 200, (LOC,), "GET", b"", True, 0, None),
    ("not-modified", 304, (LOC,), "GET", b"", True, 0, None),
    ("multiple-choices", 300, (LOC,), "GET", b"", True, 0, None),
    ("no-location", 302, (), "GET", b"", True, 0, None),
    ("empty-location", 302, ((b"Location", b""),), "GET", b"", True, 0, None),
    ("301-get", 301, (LOC,), "GET", b"", True, 0, ("GET", "/next")),
    ("302-post-becomes-get", 302, (LOC,), "POST", b"x", True, 0, ("GET", "/next")),
    ("301-post-becomes-get", 301, (LOC,), "POST", None, True, 0, ("GET", "/next")),
    ("302-put-stays-put", 302, (LOC,), "PUT", b"x", True, 0, ("PUT", "/next")),
    ("302-put-too-large-to-replay", 302, (LOC,), "PUT", None, True, 0, None),
    ("303-post-becomes-get", 303, (LOC,), "POST", None, True, 0, ("GET", "/next")),
    ("303-delete-becomes-get", 303, (LOC,), "DELETE", b"", True, 0, ("GET", "/next")),
    ("303-head-stays-head", 303, (LOC,), "HEAD", b"", True, 0, ("HEAD", "/next")),
    ("307-post-replayed", 307, (LOC,), "POST", b"x", True, 0, ("POST", "/next")),
    ("308-post-too-large", 308, (LOC,), "POST", None, True, 0, None),
    ("307-get-without-body", 307, (LOC,), "GET", None, True, 0, ("GET", "/next")),
    ("location-header-case", 302, ((b"LOCATION", b"/n"),), "GET", b"", True, 0, ("GET", "/n")),
    ("location-latin-1", 302, ((b"Location", b"/caf\xe9"),), "GET", b"", True, 0,
     ("GET", "/caf\xe9")),
    ("last-hop-allowed", 302, (LOC,), "GET", b"", True, DEFAULT_REDIRECTS - 1,
     ("GET", "/next")),
]


@pytest.mark.parametrize(("status", "headers", "method", "kept", "follow", "hops", "expected"),
                         [r[1:] for r in REDIRECTS], ids=[r[0] for r in REDIRECTS])
def test_redirects(status: int, headers: tuple[tuple[bytes, bytes], ...], method: str,
                   kept: bytes | None, follow: bool, hops: int,
                   expected: tuple[str, str] | None) -> None:
    head = _head(part(method=method, follow_redirects=follow), 30.0)
    assert _redirect(head, _response(status, *headers), hops, method, _body(kept)) == expected


@pytest.mark.parametrize("limit", [1, DEFAULT_REDIRECTS, MAX_REDIRECTS])
def test_one_redirect_too_many_is_refused(limit: int) -> None:
    head = _head(part(follow_redirects=True, max_redirects=limit), 30.0)
    with pytest.raises(FailedPrecondition) as info:
        _redirect(head, _response(302, LOC), limit, "GET", _body(b""))
    assert info.value.details == f"more than {limit} redirects"
