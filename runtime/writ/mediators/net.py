"""Mediated network: the broker makes every request a tool sends.

    HttpRequest: head -> check method, URL, headers, time limit -> for each hop: decide
                 (NetRequest) -> resolve and pin (special addresses only by IP literal)
                 -> attach the grant's secrets -> reserve budgets -> record ALLOW ->
                 connect to the pinned address, send, read the head -> [redirect asked
                 for: record the hop's outcome, build the next hop, loop] -> stream the
                 body back (secret values redacted, bytes charged) -> record net.response.
    Connect:     open(host, port) -> decide CONNECT https://host:port/ -> resolve and pin
                 -> reserve -> answer `open` -> read the ClientHello, its server name must
                 be the host -> record ALLOW -> dial the pinned address -> relay both ways (bytes
                 charged, time bounded) -> record net.response.

Denials and bad input are recorded with the reason and nothing is sent. Secret values
never travel toward the tool: not in response headers or bodies (redacted), not in errors
(they never include header values), not in audit records (which name the secret only).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import h11

from .._proto import audit_pb2, tool_pb2
from ..budgets import amounts
from ..core.matchers import DEFAULT_PORTS
from ..core.policy import Charge, Decision, NetRequest, decide
from ..errors import (
    BrokerError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    UpstreamFailed,
)
from ..net.hosts import IPAddress, Resolver, canonical_host, literal
from ..net.http1 import Exchange, Redactor, dial, secret_forms
from ..net.tls import MAX_HELLO, NeedMore, server_name
from ._context import CallContext
from ._fdpass import DescriptorDesk

__all__ = ["NetDeps", "http_request", "net_request", "tunnel"]

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 600.0
MAX_URL = 8192
MAX_HEADERS = 100
MAX_HEADER_VALUE = 8 << 10
MAX_HEADER_BYTES = 64 << 10
MAX_REDIRECTS = 10
DEFAULT_REDIRECTS = 5
REPLAY_BUFFER = 1 << 20     # a body up to this size can be re-sent on a 307/308 hop
CREDIT_STEP = 1 << 20       # byte budgets are reserved this much ahead, the rest released
METHOD = re.compile(r"[A-Z]{1,16}")
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
REDIRECTS = {301, 302, 303, 307, 308}
# Connection-specific headers: a proxy drops them (RFC 9110 7.6.1); the broker frames the
# request itself.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization",
              "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade"}


@dataclass
class NetDeps:
    resolver: Resolver
    secret: Callable[[str], bytes | None]   # stored secret by name
    tls: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    default_timeout_s: float = DEFAULT_TIMEOUT_S


def net_request(method: str, url: str) -> NetRequest:
    """A NetRequest from a method and an absolute http(s) URL, host in canonical form.

    Raises:
        InvalidArgument: not http(s), user information present, no host, a bad port, a
            host spelled in a non-canonical notation, control characters or spaces.
    """
    if len(url) > MAX_URL:
        raise InvalidArgument(f"URL is {len(url)} characters; at most {MAX_URL}")
    if any(c <= " " or c == "\x7f" or c == "\\" for c in url):
        raise InvalidArgument("URL contains spaces, control characters or backslashes; "
                              "percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"malformed URL {url[:200]!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidArgument(f"URL scheme must be http or https, not {parts.scheme!r}")
    if "@" in parts.netloc:
        raise InvalidArgument("URLs with user information are refused")
    if not parts.hostname:
        raise InvalidArgument(f"URL {url[:200]!r} has no host")
    if port == 0:
        raise InvalidArgument("port 0 is not a port")
    host = canonical_host(parts.netloc.rsplit(":", 1)[0] if parts.port is not None
                          else parts.netloc)
    return NetRequest(scheme, host, port or DEFAULT_PORTS[scheme], method.upper(),
                      parts.path or "/")


def _target(req: NetRequest, url: str) -> str:
    """Request target: the path and query of ``url``."""
    query = urlsplit(url).query
    return req.path + (f"?{query}" if query else "")


def _authority(req: NetRequest) -> str:
    host = f"[{req.host}]" if ":" in req.host else req.host
    return host if req.port == DEFAULT_PORTS[req.scheme] else f"{host}:{req.port}"


def _describe(req: NetRequest) -> str:
    return f"{req.method} {req.scheme}://{_authority(req)}{req.path}"


# -- request checks --------------------------------------------------------------------------
@dataclass
class _Head:
    method: str
    url: str
    req: NetRequest
    headers: list[tuple[str, str]]
    length: int | None        # the tool's Content-Length, if it gave one
    timeout_s: float
    follow: bool
    max_redirects: int
    pipe: bool


def _headers(raw: list[tool_pb2.Header], req: NetRequest) -> tuple[list[tuple[str, str]],
                                                                       int | None]:
    if len(raw) > MAX_HEADERS:
        raise InvalidArgument(f"{len(raw)} headers; at most {MAX_HEADERS}")
    total, out, length = 0, [], None
    for h in raw:
        name, value = h.name, h.value
        if not TOKEN.fullmatch(name):
            raise InvalidArgument(f"header name {name[:64]!r} is not an HTTP token")
        if len(value) > MAX_HEADER_VALUE or any(c in value for c in "\r\n\x00"):
            raise InvalidArgument(f"header {name}: value longer than {MAX_HEADER_VALUE} "
                                  "characters or containing CR, LF or NUL")
        # h11 refuses blanks around a value, vertical tab and form feed only once the
        # broker has dialled: trim or refuse them here, before any decision.
        value = value.strip(" \t")
        if any(c < " " and c != "\t" or c == "\x7f" for c in value):
            raise InvalidArgument(f"header {name}: value contains a control character")
        total += len(name) + len(value) + 4
        low = name.lower()
        if low == "host":
            if value.lower() not in (_authority(req), f"{_authority(req)}:{req.port}"):
                raise InvalidArgument(f"Host header {value[:100]!r} differs from the URL's "
                                      f"host {_authority(req)!r}; the broker sets Host")
            continue
        if low == "content-length":
            # ASCII digits only: str.isdigit also passes "²" and "٣", and int() refuses
            # more than 4300 digits.
            if not (value.isascii() and value.isdigit() and len(value) <= 18) or (
                    length is not None and int(value) != length):
                raise InvalidArgument(f"Content-Length {value[:32]!r} is not one decimal "
                                      "length")
            length = int(value)
            continue
        if low in HOP_BY_HOP:
            continue
        out.append((name, value))
    if total > MAX_HEADER_BYTES:
        raise InvalidArgument(f"request headers are {total} bytes; at most {MAX_HEADER_BYTES}")
    return out, length


def _head(part: tool_pb2.HttpRequestPart, default_timeout: float) -> _Head:
    if not part.HasField("head") or part.body:
        raise InvalidArgument("the first HttpRequest message must carry the head and no body")
    h = part.head
    if not METHOD.fullmatch(h.method):
        raise InvalidArgument(f"method {h.method[:20]!r} must be 1-16 upper-case letters")
    if h.method == "CONNECT":
        raise InvalidArgument("CONNECT is a tunnel: use Connect, not HttpRequest")
    req = net_request(h.method, h.url)
    headers, length = _headers(list(h.headers), req)
    if h.timeout_s < 0 or h.timeout_s != h.timeout_s or h.timeout_s > MAX_TIMEOUT_S:
        raise InvalidArgument(f"timeout_s must be between 0 and {MAX_TIMEOUT_S:g}")
    if h.max_redirects > MAX_REDIRECTS:
        raise InvalidArgument(f"max_redirects is at most {MAX_REDIRECTS}")
    return _Head(h.method, h.url, req, headers, length, h.timeout_s or default_timeout,
                 h.follow_redirects, h.max_redirects or DEFAULT_REDIRECTS, h.body_via_pipe)


# -- budgets ---------------------------------------------------------------------------------
class ByteMeter:
    """Charges net_bytes as they flow, reserving ahead in steps (1 MiB, or a sixteenth of
    the smallest cap) and releasing the unused rest at the end, so a 10 MiB body costs a
    few budget transactions, not hundreds."""

    def __init__(self, ctx: CallContext, charges: tuple[Charge, ...]) -> None:
        self._ctx = ctx
        self._charges = tuple(c for c in charges if c.kind == "net_bytes")
        # Ahead-of-use reservations stay small against the cap, so requests sharing a
        # budget are not refused for bytes another one reserved but never used.
        self._step = min([CREDIT_STEP] + [max(4096, c.cap // 16) for c in self._charges])
        self._credit = 0
        self.total = 0

    def take(self, n: int) -> None:
        """Raises PermissionDenied (naming the budget) when it would pass its cap."""
        self.total += n
        if not self._charges or n <= self._credit:
            self._credit -= min(n, self._credit)
            return
        want = n - self._credit
        try:
            self._ctx.budgets.charge(self._charges, net_bytes=max(want, self._step))
            self._credit += max(want, self._step) - n
        except PermissionDenied:
            self._ctx.budgets.charge(self._charges, net_bytes=want)
            self._credit = 0

    def settle(self) -> None:
        if self._credit and self._charges:
            self._ctx.budgets.release(amounts(self._charges, net_bytes=self._credit))
        self._credit = 0


# -- one hop ---------------------------------------------------------------------------------
@dataclass
class _Hop:
    req: NetRequest
    url: str
    ev: audit_pb2.AuditEvent
    decision: Decision
    address: IPAddress
    secrets: list[tuple[str, bytes, str]]   # (header, value, secret name)


def _event(ctx: CallContext, operation: str, target: str, **detail: object
           ) -> audit_pb2.AuditEvent:
    ev = ctx.event(operation, target)
    if detail:
        ev.detail = json.dumps(detail, sort_keys=True, separators=(",", ":"))
    return ev


def _add_detail(ev: audit_pb2.AuditEvent, **more: object) -> None:
    detail = json.loads(ev.detail) if ev.detail else {}
    detail.update(more)
    ev.detail = json.dumps(detail, sort_keys=True, separators=(",", ":"))


def _mark(err: BrokerError) -> BrokerError:
    """Note that ``err`` already has its audit record."""
    err.recorded = True  # type: ignore[attr-defined]
    return err


def _recorded(err: BrokerError) -> bool:
    return bool(getattr(err, "recorded", False))


async def _refuse(ctx: CallContext, ev: audit_pb2.AuditEvent, err: BrokerError) -> None:
    """Record ``ev`` as refused with ``err`` (a refusal has no effect: no wait for the
    disk), then raise it."""
    await ctx.record_error(ev, err, wait=False)
    raise _mark(err)


async def _within(deadline: float, aw: Awaitable[T]) -> T:
    """``aw`` bounded by the loop-time ``deadline``. (Generators here never yield inside a
    timeout block: a cancellation would land in the consumer, not here.)"""
    async with asyncio.timeout_at(deadline):
        return await aw


async def _check_hop(ctx: CallContext, deps: NetDeps, req: NetRequest, url: str,
                     ev: audit_pb2.AuditEvent) -> _Hop:
    """Decide, pin, look up secrets and reserve one request: recorded if refused."""
    decision = decide(ctx.authority, req, time.time())
    if not decision.allowed:
        await _refuse(ctx, ev, PermissionDenied(decision.reason))
    try:
        address = await deps.resolver.pin(req.host, req.port)
    except BrokerError as err:
        await _refuse(ctx, ev, err)
    _add_detail(ev, address=str(address))
    secrets = []
    for header, name in decision.secrets:
        value = deps.secret(name)
        if value is None:
            await _refuse(ctx, ev, FailedPrecondition(
                f"the grant attaches secret {name!r}, which the broker does not hold "
                "(`writ secrets set`)"))
        secrets.append((header, value or b"", name))
    if secrets:
        _add_detail(ev, secrets=sorted({s[2] for s in secrets}))
    try:
        ctx.budgets.charge(decision.charges, requests=1)
    except PermissionDenied as err:
        await _refuse(ctx, ev, err)
    return _Hop(req, url, ev, decision, address, secrets)


async def _record_done(ctx: CallContext, deps: NetDeps, hop: _Hop, status: int, sent: int,
                       received: int) -> None:
    done = _event(ctx, "net.response", hop.ev.target, address=str(hop.address),
                  http_status=status, sent=sent)
    done.decision, done.status, done.bytes = audit_pb2.ALLOW, "OK", received
    done.reason = f"{status} from {hop.address}" if status else f"tunnel to {hop.address} closed"
    done.rule = hop.decision.rule
    await ctx.record_event(done, wait=False)


# -- HttpRequest -----------------------------------------------------------------------------
async def _first(parts: AsyncIterator[tool_pb2.HttpRequestPart]) -> tool_pb2.HttpRequestPart:
    try:
        return await anext(parts)
    except StopAsyncIteration:
        raise InvalidArgument("empty HttpRequest stream: send the head first") from None


class _Body:
    """The tool's request body: streamed once, kept for a replay when small."""

    def __init__(self, parts: AsyncIterator[tool_pb2.HttpRequestPart]) -> None:
        self._parts = parts
        self.kept: bytearray | None = bytearray()
        self.done = False

    async def stream(self) -> AsyncIterator[bytes]:
        while not self.done:
            try:
                part = await anext(self._parts)
            except StopAsyncIteration:
                raise InvalidArgument("the request stream ended without `finish`; the "
                                      "request was abandoned") from None
            if part.HasField("head"):
                raise InvalidArgument("only the first HttpRequest message carries a head")
            if part.body:
                if self.kept is not None:
                    self.kept += part.body
                    if len(self.kept) > REPLAY_BUFFER:
                        self.kept = None
                yield part.body
            self.done = part.finish

    async def prefetch(self) -> bytes | None:
        """Read up to REPLAY_BUFFER bytes: the whole body when it is that small."""
        first = bytearray()
        async for chunk in self.stream():
            first += chunk
            if len(first) > REPLAY_BUFFER:
                break
        return bytes(first) if self.done else None


async def http_request(ctx: CallContext, deps: NetDeps,
                       parts: AsyncIterator[tool_pb2.HttpRequestPart],
                       desk: DescriptorDesk | None = None
                       ) -> AsyncIterator[tool_pb2.HttpResponsePart]:
    ev = _event(ctx, "net.request", "")
    try:
        first = await _first(parts)
        ev.target = f"{first.head.method[:16]} {first.head.url[:200]}"
        head = _head(first, deps.default_timeout_s)
    except BrokerError as err:
        await _refuse(ctx, ev, err)
    ev.target = _describe(head.req)
    body = _Body(parts)
    body.done = first.finish  # a request without a body: head and finish in one message
    loop = asyncio.get_running_loop()
    hop = await _check_hop(ctx, deps, head.req, head.url, ev)
    deadline = loop.time() + min(head.timeout_s, hop.decision.timeout_s or MAX_TIMEOUT_S)
    meter = ByteMeter(ctx, hop.decision.charges)
    exchange: Exchange | None = None
    pipe: _PipeOut | None = None
    try:
        await ctx.record_decision(hop.ev, hop.decision)
        hop, answered, response, hops, meter = await _within(
            deadline, _follow(ctx, deps, head, body, hop, meter))
        exchange = answered
        redactor = Redactor([f for _, v, _ in hop.secrets for f in secret_forms(v)])
        encoding = dict(response.headers).get(b"content-encoding", b"identity").strip()
        if redactor and encoding.lower() != b"identity":
            # Not quoting the encoding: the server chose it, it could echo the secret.
            raise UpstreamFailed(f"{_describe(hop.req)}: the server encoded its body "
                                 "(Content-Encoding) in answer to a request carrying a "
                                 "secret; a body the broker cannot search for the secret is "
                                 "not passed on")
        ticket = ""
        if head.pipe and desk is not None and _worth_a_pipe(response) and desk.has_room():
            pipe, ticket = _PipeOut.issued(desk)
        opening = tool_pb2.HttpResponsePart(head=tool_pb2.HttpResponseHead(
            status=response.status_code,
            reason=redactor.scrub(bytes(response.reason)).decode("latin-1"),
            headers=_response_headers(response.headers.raw_items(), redactor), url=hop.url,
            redirects=hops, body_ticket=ticket))
        chunks = answered.chunks()
        received = 0
        if pipe is None and not _worth_a_pipe(response):
            # A small body of known length travels with the head: one message, where
            # each message costs about a millisecond of gRPC framing.
            small = bytearray()
            while (chunk := await _within(deadline, anext(chunks, None))) is not None:
                meter.take(len(chunk))
                received += len(chunk)
                small += redactor.feed(chunk)
            opening.body = bytes(small + redactor.flush())
            yield opening
        else:
            yield opening
            while (chunk := await _within(deadline, anext(chunks, None))) is not None:
                meter.take(len(chunk))
                received += len(chunk)
                out = redactor.feed(chunk)
                if out and pipe is not None:
                    await _within(deadline, pipe.write(out))
                elif out:
                    yield tool_pb2.HttpResponsePart(body=out)
            tail = redactor.flush()
            if tail and pipe is not None:
                await _within(deadline, pipe.write(tail))
            elif tail:
                yield tool_pb2.HttpResponsePart(body=tail)
        if pipe is not None:
            pipe.close()  # the tool reads to the end; the stream's OK says it was whole
        await _record_done(ctx, deps, hop, response.status_code, answered.sent, received)
    except TimeoutError:
        late = DeadlineExceeded(f"{_describe(hop.req)} took longer than its time limit "
                                f"({head.timeout_s:g} s, or less by the grant's rule)")
        await ctx.record_failure(hop.ev, late, wait=False)
        raise late from None
    except BrokerError as err:
        if not _recorded(err):
            await ctx.record_failure(hop.ev, err, wait=False)
        raise
    finally:
        meter.settle()
        if exchange is not None:
            exchange.close()
        if pipe is not None:
            pipe.close()


PIPE_ABOVE = 256 << 10     # bodies larger than this (or of unknown length) go by pipe
PIPE_SIZE = 1 << 20        # the pipe's buffer (F_SETPIPE_SZ), when the kernel allows it
F_SETPIPE_SZ = 1031


def _worth_a_pipe(response: h11.Response) -> bool:
    length = dict(response.headers).get(b"content-length")
    return length is None or not length.isdigit() or int(length) > PIPE_ABOVE


def _settle(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class _PipeOut:
    """The write end of a pipe whose read end waits at the descriptor desk for the tool.
    Writes never block the event loop; a tool that stops reading stalls only its own
    request, until the time limit."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    @classmethod
    def issued(cls, desk: DescriptorDesk) -> tuple[_PipeOut, str]:
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(w, False)  # the write end only: the tool's end stays blocking
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
        return cls(w), desk.issue(r)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            assert self.fd is not None
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                await self._writable()
            except BrokenPipeError:
                raise FailedPrecondition("the tool closed the body's pipe before its end; "
                                         "the rest was not read") from None

    async def _writable(self) -> None:
        assert self.fd is not None
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(self.fd, _settle, ready)
        try:
            await ready
        finally:
            loop.remove_writer(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


async def _follow(ctx: CallContext, deps: NetDeps, head: _Head, body: _Body, hop: _Hop,
                  meter: ByteMeter) -> tuple[_Hop, Exchange, h11.Response, int, ByteMeter]:
    """Send the request; while the answer is a redirect the tool asked to follow, check
    and record the next hop and send it there. Returns the answering hop and exchange."""
    method, hops, replay = head.method, 0, None
    while True:
        exchange = await _send(deps, hop, method, head, body, meter, replay)
        try:
            response = await exchange.response()
            nxt = _redirect(head, response, hops, method, body)
        except BaseException:
            exchange.close()
            raise
        if nxt is None or _carries_secret(nxt[1], hop):
            # A Location holding a secret value (plain or percent-encoded) is not followed:
            # the next URL would reach the tool, errors and audit records. The tool gets
            # this response, its Location redacted.
            return hop, exchange, response, hops, meter
        exchange.close()
        await _record_done(ctx, deps, hop, response.status_code, exchange.sent, 0)
        meter.settle()
        method, location = nxt
        hops += 1
        replay = bytes(body.kept or b"") if method == head.method else b""
        url = urljoin(hop.url, location)
        ev = _event(ctx, "net.request", f"{method} {url[:200]}",
                    redirect_from=_describe(hop.req), hop=hops)
        try:
            req = net_request(method, url)
        except BrokerError as err:
            await _refuse(ctx, ev, InvalidArgument(
                f"redirect to {url[:200]!r} refused: {err.details}"))
        ev.target = _describe(req)
        try:
            hop = await _check_hop(ctx, deps, req, url, ev)
        except BrokerError as err:
            raise _mark(type(err)(f"redirect refused: {err.details}")) from None
        meter = ByteMeter(ctx, hop.decision.charges)
        await ctx.record_decision(hop.ev, hop.decision)


def _carries_secret(location: str, hop: _Hop) -> bool:
    raw = location.encode("latin-1", "replace")
    decoded = unquote_to_bytes(raw)
    return any(v in raw or v in decoded for _, v, _ in hop.secrets)


def _redirect(head: _Head, response: h11.Response, hops: int, method: str,
              body: _Body) -> tuple[str, str] | None:
    """(method, location) of the next hop, or None to return this response."""
    status = response.status_code
    if not head.follow or status not in REDIRECTS:
        return None
    location = dict(response.headers).get(b"location")
    if not location:
        return None
    if hops >= head.max_redirects:
        raise FailedPrecondition(f"more than {head.max_redirects} redirects")
    if status == 303 or (status in (301, 302) and method == "POST"):
        method = "GET" if method != "HEAD" else "HEAD"
    elif method != "GET" and method != "HEAD" and body.kept is None:
        return None  # a large body cannot be re-sent: hand the tool the 307/308
    return method, location.decode("latin-1")


async def _send(deps: NetDeps, hop: _Hop, method: str, head: _Head, body: _Body,
                meter: ByteMeter, replay: bytes | None) -> Exchange:
    req = hop.req
    reader, writer = await dial(hop.address, req.port,
                                req.host if req.scheme == "https" else None, deps.tls)
    exchange = Exchange(reader, writer)
    try:
        secret_names = {h.lower() for h, _, _ in hop.secrets}
        if hop.secrets:
            # Redaction reads the body as it comes: an echoed secret inside a compressed
            # body would pass it. Ask for none (http_request refuses one sent anyway).
            secret_names.add("accept-encoding")
        headers = [(b"host", _authority(req).encode())]
        headers += [(n.encode(), v.encode("latin-1", "replace")) for n, v in head.headers
                    if n.lower() not in secret_names]
        headers += [(h.encode(), v) for h, v, _ in hop.secrets]
        if hop.secrets:
            headers.append((b"accept-encoding", b"identity"))
        if replay is not None:           # a redirect hop: the body is known (or empty)
            chunks: list[bytes] = [replay] if replay else []
            if replay or method not in ("GET", "HEAD"):
                headers.append((b"content-length", str(len(replay)).encode()))
            await _request(exchange, method, req, hop.url, headers, meter)
            for c in chunks:
                meter.take(len(c))
                await exchange.body(c)
            await exchange.end()
            return exchange
        if head.length is not None:
            headers.append((b"content-length", str(head.length).encode()))
            await _request(exchange, method, req, hop.url, headers, meter)
            async for c in body.stream():
                meter.take(len(c))
                await exchange.body(c)
        else:
            small = await body.prefetch()
            if small is not None:
                if small or method in ("POST", "PUT", "PATCH"):
                    headers.append((b"content-length", str(len(small)).encode()))
                await _request(exchange, method, req, hop.url, headers, meter)
                if small:
                    meter.take(len(small))
                    await exchange.body(small)
            else:
                headers.append((b"transfer-encoding", b"chunked"))
                await _request(exchange, method, req, hop.url, headers, meter)
                kept = bytes(body.kept or b"")
                meter.take(len(kept))
                await exchange.body(kept)
                async for c in body.stream():
                    meter.take(len(c))
                    await exchange.body(c)
        await exchange.end()
        return exchange
    except BaseException:
        exchange.close()
        raise


async def _request(exchange: Exchange, method: str, req: NetRequest, url: str,
                   headers: list[tuple[bytes, bytes]], meter: ByteMeter) -> None:
    meter.take(sum(len(n) + len(v) + 4 for n, v in headers) + len(url) + 16)
    await exchange.request(method, _target(req, url), headers)


def _response_headers(raw: Sequence[tuple[bytes, bytes]], redactor: Redactor) -> list[tool_pb2.Header]:
    out = []
    chunked = any(name.lower() == b"transfer-encoding" for name, _ in raw)
    for name, value in raw:
        if name.lower() in (b"transfer-encoding", b"connection", b"keep-alive"):
            continue  # the body reaches the tool de-framed
        if name.lower() == b"content-length" and (chunked or redactor):
            # Wrong for what the tool gets: h11 framed the body by Transfer-Encoding, or a
            # redacted secret changes its length. The end of the stream ends the body.
            continue
        if redactor.scrub(name) != name:
            continue  # a name echoing a secret: a marked-up name would not be a header name
        out.append(tool_pb2.Header(name=name.decode("latin-1"),
                                   value=redactor.scrub(value).decode("latin-1")))
    return out


# -- Connect (TLS tunnel) ----------------------------------------------------------------------
async def tunnel(ctx: CallContext, deps: NetDeps,
                 parts: AsyncIterator[tool_pb2.TunnelPart]) -> AsyncIterator[tool_pb2.TunnelPart]:
    ev = _event(ctx, "net.connect", "")
    try:
        first = await anext(parts, None)
        if first is None or not first.HasField("open") or first.data:
            raise InvalidArgument("the first Connect message must name host and port, and "
                                  "carry no data")
        ev.target = f"CONNECT {first.open.host[:200]}:{first.open.port}"
        if not 0 < first.open.port < 65536:
            raise InvalidArgument(f"port {first.open.port} is not a port")
        host = canonical_host(first.open.host)
    except BrokerError as err:
        await _refuse(ctx, ev, err)
    assert first is not None
    req = NetRequest("https", host, first.open.port, "CONNECT", "/")
    ev.target = _describe(req)
    loop = asyncio.get_running_loop()
    hop = await _check_hop(ctx, deps, req, f"https://{_authority(req)}/", ev)
    if hop.secrets:
        _add_detail(ev, secrets_not_sent="a tunnel is opaque: secrets are not added")
    limit = hop.decision.timeout_s or deps.default_timeout_s
    deadline = loop.time() + limit
    meter = ByteMeter(ctx, hop.decision.charges)
    # Host and port pass: the client may now send its ClientHello (a proxy answers its
    # CONNECT with 200 at this point). Nothing is dialled until the server name passes too.
    yield tool_pb2.TunnelPart(open=tool_pb2.TunnelOpen(host=host, port=req.port,
                                                       address=str(hop.address)))
    try:
        hello = await _within(deadline, _client_hello(parts, host))
    except TimeoutError:
        await _refuse(ctx, ev, DeadlineExceeded("no TLS ClientHello within the time limit"))
    except BrokerError as err:
        await _refuse(ctx, ev, err)
    await ctx.record_decision(ev, hop.decision)
    writer: asyncio.StreamWriter | None = None
    pump: asyncio.Future[int] | None = None
    received = 0
    try:
        reader, upstream = await _within(deadline, dial(hop.address, req.port, None, None))
        writer = upstream
        meter.take(len(hello))
        upstream.write(hello)
        pump = asyncio.ensure_future(_pump(parts, upstream, meter))
        # A tool-side failure (budget, bad message) closes the server side, ending the read.
        pump.add_done_callback(lambda f: None if f.cancelled() or f.exception() is None
                               else upstream.close())
        while data := await _within(deadline, reader.read(256 << 10)):
            meter.take(len(data))
            received += len(data)
            yield tool_pb2.TunnelPart(data=data)
        sent = len(hello) + await _within(deadline, pump)
        await _record_done(ctx, deps, hop, 0, sent, received)
    except TimeoutError:
        late = DeadlineExceeded(f"tunnel to {_authority(req)} passed its time limit "
                                f"({limit:g} s)")
        await ctx.record_failure(hop.ev, late, wait=False)
        raise late from None
    except BrokerError as err:
        await ctx.record_failure(hop.ev, err, wait=False)
        raise
    except OSError as exc:
        failed = UpstreamFailed(f"tunnel to {hop.address}: {exc.strerror or exc}")
        await ctx.record_failure(hop.ev, failed, wait=False)
        raise failed from None
    finally:
        if pump is not None:
            pump.cancel()
        meter.settle()
        if writer is not None:
            writer.close()


async def _pump(parts: AsyncIterator[tool_pb2.TunnelPart], writer: asyncio.StreamWriter,
                meter: ByteMeter) -> int:
    """Tool to server; returns the bytes relayed once the tool ends its side."""
    n = 0
    async for part in parts:
        if part.HasField("open"):
            raise InvalidArgument("only the first Connect message names the destination")
        if part.data:
            meter.take(len(part.data))
            writer.write(part.data)
            await writer.drain()
            n += len(part.data)
    with contextlib.suppress(OSError):
        writer.write_eof()
    return n


async def _client_hello(parts: AsyncIterator[tool_pb2.TunnelPart], host: str) -> bytes:
    """The tool's first bytes, once they hold a whole ClientHello naming ``host``."""
    buf = b""
    async for part in parts:
        buf += part.data
        try:
            name = server_name(buf)
        except NeedMore:
            if len(buf) > MAX_HELLO:
                raise InvalidArgument("ClientHello too large") from None
            continue
        if name is None and literal(host) is None:
            raise PermissionDenied(f"the TLS ClientHello names no server; the tunnel is "
                                   f"granted for {host} only")
        if name is not None and name != host:
            raise PermissionDenied(f"the TLS ClientHello asks for {name[:100]!r}, but the "
                                   f"tunnel is granted for {host}")
        return buf
    raise InvalidArgument("the tunnel closed before a TLS ClientHello arrived")
