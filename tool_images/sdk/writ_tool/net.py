"""HTTP through the broker: the container has no network, so the broker makes the request,
after checking it against the invocation's grant.

    from writ_tool import net

    r = net.fetch("https://api.example.com/v1/items", method="POST", json={"name": "x"})
    r.status, r.header("content-type"), r.json()

    with net.stream("https://example.com/big.tar") as r:   # the body as it arrives
        for chunk in r.iter_bytes():
            ...

The broker resolves the host itself and refuses private, loopback, link-local and
metadata addresses unless the grant names the address; redirects are followed only with
``follow_redirects=True`` and each hop is checked like a new request. Credentials the
grant attaches (an ``Authorization`` header, say) are added by the broker and never seen
here. Raises ``PermissionDenied`` (not granted, budget spent), ``InvalidArgument``
(malformed URL or headers) or ``BrokerError`` (``code`` UNAVAILABLE: the server could not
be reached; DEADLINE_EXCEEDED: the time limit passed).

Unmodified HTTP clients work too: ``HTTP_PROXY``/``HTTPS_PROXY`` point at a forwarder on
loopback inside the container (see ``writ_tool.proxy``).
"""

from __future__ import annotations

import json as _json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import grpc

from . import _desk
from ._broker import InvalidArgument, connection, translate
from ._proto import tool_pb2

CHUNK = 1 << 20  # the broker's largest body message
HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    url: str                  # the URL that answered, after redirects
    redirects: int
    content: bytes = b""
    _parts: Iterator[tool_pb2.HttpResponsePart] | None = field(default=None, repr=False)
    _pipe: int | None = field(default=None, repr=False)   # the body's pipe, when the broker
                                                          # sent it that way
    _first: bytes = field(default=b"", repr=False)        # body bytes sent with the head

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), or None."""
        low = name.lower()
        return next((v for n, v in self.headers if n.lower() == low), None)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return _json.loads(self.content)

    def iter_bytes(self) -> Iterator[bytes]:
        """The body as it arrives (``stream`` only; ``fetch`` has read it already)."""
        if self._parts is None:
            if self.content:
                yield self.content
            return
        parts, self._parts = self._parts, None
        pipe, self._pipe = self._pipe, None
        first, self._first = self._first, b""
        if first:
            yield first
        try:
            if pipe is not None:
                try:
                    while data := os.read(pipe, CHUNK):
                        yield data
                finally:
                    os.close(pipe)
            # Messages carry the body, or (after a pipe) nothing: the stream's end says
            # whether the body was whole.
            for part in parts:
                if part.body:
                    yield part.body
        except grpc.RpcError as err:
            raise translate(err) from None

    def read(self) -> bytes:
        if self._parts is not None:
            self.content = b"".join(self.iter_bytes())
        return self.content

    def close(self) -> None:
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        parts, self._parts = self._parts, None
        cancel = getattr(parts, "cancel", None)
        if cancel is not None:
            cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _headers(headers: HeaderInput | None) -> list[tool_pb2.Header]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [tool_pb2.Header(name=str(n), value=str(v)) for n, v in items]


def _body(body: bytes | str | Iterable[bytes] | None) -> Iterator[bytes]:
    if body is None:
        return
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        for i in range(0, len(data), CHUNK):
            yield data[i:i + CHUNK]
        return
    for chunk in body:
        for i in range(0, len(chunk), CHUNK):
            yield bytes(chunk[i:i + CHUNK])


def _parts(head: tool_pb2.HttpRequestHead,
           body: bytes | str | Iterable[bytes] | None) -> Iterator[tool_pb2.HttpRequestPart]:
    if body is None:
        yield tool_pb2.HttpRequestPart(head=head, finish=True)  # one message, not two
        return
    yield tool_pb2.HttpRequestPart(head=head)
    for chunk in _body(body):
        yield tool_pb2.HttpRequestPart(body=chunk)
    yield tool_pb2.HttpRequestPart(finish=True)


def stream(url: str, method: str = "GET", headers: HeaderInput | None = None,
           body: bytes | str | Iterable[bytes] | None = None, json: Any = None,
           timeout: float | None = None, follow_redirects: bool = False,
           max_redirects: int = 0) -> Response:
    """Send the request; return once the response head arrived. Read the body with
    ``iter_bytes()`` or ``read()``; use as a context manager to close it early."""
    hdrs = _headers(headers)
    if json is not None:
        if body is not None:
            raise InvalidArgument("INVALID_ARGUMENT", "give body or json, not both")
        body = _json.dumps(json).encode()
        if not any(h.name.lower() == "content-type" for h in hdrs):
            hdrs.append(tool_pb2.Header(name="Content-Type", value="application/json"))
    conn = connection()
    head = tool_pb2.HttpRequestHead(method=method.upper(), url=url, headers=hdrs,
                                    timeout_s=timeout or 0.0,
                                    follow_redirects=follow_redirects,
                                    max_redirects=max_redirects,
                                    body_via_pipe=_desk.available())
    try:
        replies = conn.stub.HttpRequest(_parts(head, body), metadata=conn.metadata)
        first = next(replies)
    except grpc.RpcError as err:
        raise translate(err) from None
    h = first.head
    response = Response(h.status, h.reason, [(x.name, x.value) for x in h.headers], h.url,
                        h.redirects, _parts=replies, _first=first.body)
    if h.body_ticket:
        try:
            response._pipe = _desk.redeem(h.body_ticket)
            os.set_blocking(response._pipe, True)
        except BaseException:
            replies.cancel()
            raise
    return response


def fetch(url: str, method: str = "GET", headers: HeaderInput | None = None,
          body: bytes | str | Iterable[bytes] | None = None, json: Any = None,
          timeout: float | None = None, follow_redirects: bool = False,
          max_redirects: int = 0) -> Response:
    """One request through the broker; the whole body is read into ``content``."""
    r = stream(url, method, headers, body, json, timeout, follow_redirects, max_redirects)
    r.read()
    return r
