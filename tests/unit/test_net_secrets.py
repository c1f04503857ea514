"""A secret the grant attaches reaches the server and nothing the tool can read: the whole
HttpRequest path (mediators/net.py ``http_request``) against a loopback server that echoes
the secret back in every place a response has: body (split across writes), header values
and names, the reason phrase, a redirect's Location (plain and percent-encoded). Audit
records are checked too.

The rules here are built directly with scheme http: rulecheck allows secrets only over
https (tested in test_net_rules.py), but redaction does not depend on the scheme, and a
plain loopback server needs no certificate.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from writ._proto import audit_pb2, token_pb2, tool_pb2
from writ._proto import capabilities_pb2 as caps
from writ.budgets import Budgets
from writ.core.policy import Authority
from writ.errors import BrokerError
from writ.mediators._context import CallContext
from writ.mediators.net import NetDeps, http_request
from writ.net.hosts import AddressPolicy, Resolver
from writ.net.http1 import Redactor

SECRET = b"sk-live-0123456789abcdef"
MARK = Redactor.MARK.decode()
Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Result:
    parts: list[tool_pb2.HttpResponsePart]
    error: BrokerError | None
    events: list[audit_pb2.AuditEvent]
    seen: list[bytes] = field(default_factory=list)
    port: int = 0

    @property
    def head(self) -> tool_pb2.HttpResponseHead:
        return self.parts[0].head

    @property
    def body(self) -> bytes:
        return b"".join(p.body for p in self.parts)


async def _fetch(tmp: Path, answer: Answer, path: str = "/v1/a",
                 headers: tuple[tuple[str, str], ...] = (), follow: bool = True,
                 secret_prefix: str = "/v1/") -> Result:
    seen: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        request = await r.readuntil(b"\r\n\r\n")
        seen.append(request)
        await answer(request, w)
        w.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rule = caps.NetRule(host="127.0.0.1", schemes=["http"], ports=[port], methods=["GET"],
                        path_prefixes=["/v1/"], secrets=[caps.SecretHeader(
                            secret="api-key", header="Authorization", path_prefix=secret_prefix)])
    grant = caps.Grant(expires_at=4_000_000_000, net=[rule])
    authority = Authority.from_blocks([token_pb2.TokenBlock(id=b"\x00" * 16, grant=grant)],
                                      None)
    events: list[audit_pb2.AuditEvent] = []

    async def record(ev: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        events.append(ev)
        return ev

    budgets = Budgets(tmp / "budgets.sqlite")
    ctx = CallContext(authority, 0.0, record, audit_pb2.AuditEvent(), budgets)
    deps = NetDeps(resolver=Resolver(AddressPolicy(own=list)),
                   secret=lambda name: SECRET if name == "api-key" else None)

    async def parts() -> AsyncIterator[tool_pb2.HttpRequestPart]:
        yield tool_pb2.HttpRequestPart(head=tool_pb2.HttpRequestHead(
            method="GET", url=f"http://127.0.0.1:{port}{path}", follow_redirects=follow,
            headers=[tool_pb2.Header(name=n, value=v) for n, v in headers]))
        yield tool_pb2.HttpRequestPart(finish=True)

    out: list[tool_pb2.HttpResponsePart] = []
    error = None
    try:
        async for p in http_request(ctx, deps, parts()):
            out.append(p)
    except BrokerError as exc:
        error = exc
    finally:
        server.close()
        await server.wait_closed()
        budgets.close()
    return Result(out, error, events, seen, port)


def fetch(tmp: Path, answer: Answer, **kw: object) -> Result:
    result = asyncio.run(_fetch(tmp, answer, **kw))  # type: ignore[arg-type]
    # Nothing the tool receives, and no audit record, holds the value.
    for p in result.parts:
        assert SECRET not in p.SerializeToString()
    if result.error is not None:
        assert SECRET.decode() not in result.error.details
    for ev in result.events:
        assert SECRET not in ev.SerializeToString()
    return result


def canned(data: bytes) -> Answer:
    async def answer(_request: bytes, w: asyncio.StreamWriter) -> None:
        w.write(data)
        await w.drain()
    return answer


def test_the_server_gets_the_secret_in_place_of_the_tool_header(tmp_path: Path) -> None:
    r = fetch(tmp_path, canned(b"HTTP/1.1 204 No Content\r\n\r\n"),
              headers=(("Authorization", "Bearer forged"), ("X-Kept", "1")))
    assert r.error is None and r.head.status == 204
    (request,) = r.seen
    assert b"Authorization: " + SECRET + b"\r\n" in request
    assert b"forged" not in request and b"X-Kept: 1\r\n" in request
    assert [(e.operation, e.decision) for e in r.events] == [
        ("net.request", audit_pb2.ALLOW), ("net.response", audit_pb2.ALLOW)]
    assert '"secrets":["api-key"]' in r.events[0].detail


def test_no_secret_on_a_path_outside_its_prefix_is_still_refused_by_the_rule(
        tmp_path: Path) -> None:
    r = fetch(tmp_path, canned(b"HTTP/1.1 204 No Content\r\n\r\n"), path="/v2/a")
    assert r.error is not None and r.error.code == "PERMISSION_DENIED"
    assert r.seen == []


@pytest.mark.parametrize(("answer", "secret_prefix", "headers"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok", "/v1/none/",
     [("Content-Length", "2"), ("X-A", "1")]),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok", "/v1/", [("X-A", "1")]),
    ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n"
     b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
     "/v1/none/", []),
], ids=["length-kept-without-secrets", "length-dropped-with-secrets",
        "length-dropped-beside-chunked"])
def test_the_tool_gets_a_content_length_only_when_it_is_right(
        tmp_path: Path, answer: bytes, secret_prefix: str,
        headers: list[tuple[str, str]]) -> None:
    r = fetch(tmp_path, canned(answer), secret_prefix=secret_prefix)
    assert r.body == b"ok"
    assert [(h.name, h.value) for h in r.head.headers] == headers


def test_an_echo_in_the_body_split_across_writes_is_withheld(tmp_path: Path) -> None:
    async def answer(_request: bytes, w: asyncio.StreamWriter) -> None:
        body = b"token=" + SECRET + b"; again " + SECRET
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for piece in (body[:10], body[10:30], body[30:]):
            w.write(piece)
            await w.drain()
            await asyncio.sleep(0.01)

    r = fetch(tmp_path, answer)
    assert r.body == f"token={MARK}; again {MARK}".encode()


def test_echoes_in_the_response_head_are_withheld(tmp_path: Path) -> None:
    r = fetch(tmp_path, canned(
        b"HTTP/1.1 200 " + SECRET + b"\r\nX-Echo: Bearer " + SECRET + b"\r\n" + SECRET +
        b": 1\r\nContent-Length: 0\r\n\r\n"))
    assert r.head.reason == MARK
    # Content-Length is dropped too: redaction may change the body's length.
    assert [(h.name, h.value) for h in r.head.headers] == [("X-Echo", f"Bearer {MARK}")]


@pytest.mark.parametrize("location", [
    b"/v1/next?token=" + SECRET,
    b"/v1/" + SECRET,
    b"/v1/next?token=" + b"".join(b"%%%02X" % c for c in SECRET),
], ids=["in-the-query", "in-the-path", "percent-encoded"])
def test_a_redirect_carrying_the_secret_is_not_followed(tmp_path: Path, location: bytes) -> None:
    r = fetch(tmp_path, canned(b"HTTP/1.1 302 Found\r\nLocation: " + location +
                               b"\r\nContent-Length: 0\r\n\r\n"))
    assert r.error is None
    assert (r.head.status, r.head.redirects) == (302, 0)
    assert len(r.seen) == 1
    (loc,) = [h.value for h in r.head.headers if h.name == "Location"]
    assert loc == location.decode().replace(SECRET.decode(), MARK)


def test_a_redirect_without_the_secret_is_followed_and_carries_it_again(
        tmp_path: Path) -> None:
    async def answer(request: bytes, w: asyncio.StreamWriter) -> None:
        if request.startswith(b"GET /v1/a "):
            w.write(b"HTTP/1.1 302 Found\r\nLocation: /v1/b\r\nContent-Length: 0\r\n\r\n")
        else:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()

    r = fetch(tmp_path, answer)
    assert (r.head.status, r.head.redirects, r.body) == (200, 1, b"ok")
    assert r.head.url.endswith("/v1/b")
    assert [req.split(b"\r\n")[0] for req in r.seen] == [b"GET /v1/a HTTP/1.1",
                                                        b"GET /v1/b HTTP/1.1"]
    assert all(b"Authorization: " + SECRET + b"\r\n" in req for req in r.seen)


def test_the_tool_cannot_ask_for_a_compressed_echo(tmp_path: Path) -> None:
    r = fetch(tmp_path, canned(b"HTTP/1.1 204 No Content\r\n\r\n"),
              headers=(("Accept-Encoding", "gzip, br"),))
    (request,) = r.seen
    assert b"accept-encoding: identity\r\n" in request
    assert b"gzip" not in request


def test_without_secrets_the_tool_may_ask_for_compression(tmp_path: Path) -> None:
    r = fetch(tmp_path, canned(b"HTTP/1.1 204 No Content\r\n\r\n"), secret_prefix="/v1/none/",
              headers=(("Accept-Encoding", "gzip"),))
    (request,) = r.seen
    assert b"Accept-Encoding: gzip\r\n" in request and b"identity" not in request


@pytest.mark.parametrize("encoding", [b"gzip", b"GZIP", b"br", SECRET])
def test_a_compressed_body_answering_a_secret_is_refused(tmp_path: Path,
                                                          encoding: bytes) -> None:
    body = gzip.compress(b"Authorization: " + SECRET)
    r = fetch(tmp_path, canned(b"HTTP/1.1 200 OK\r\nContent-Encoding: " + encoding +
                               b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body))
    assert r.parts == []
    assert r.error is not None and r.error.code == "UNAVAILABLE"
    assert r.error.details == (
        f"GET http://127.0.0.1:{r.port}/v1/a: the server encoded its body (Content-Encoding) "
        "in answer to a request carrying a secret; a body the broker cannot search for the "
        "secret is not passed on")
    assert [(e.decision, e.status) for e in r.events] == [
        (audit_pb2.ALLOW, "OK"), (audit_pb2.DENY, "UNAVAILABLE")]


@pytest.mark.parametrize("encoding", [b"identity", b" Identity "])
def test_an_identity_encoded_body_is_passed_on(tmp_path: Path, encoding: bytes) -> None:
    r = fetch(tmp_path, canned(b"HTTP/1.1 200 OK\r\nContent-Encoding: " + encoding +
                               b"\r\nContent-Length: 2\r\n\r\nok"))
    assert (r.error, r.body) == (None, b"ok")
