"""The in-container forwarder: an HTTP proxy on loopback that unmodified programs reach
through ``HTTP_PROXY``/``HTTPS_PROXY``, relaying every request to the broker socket.

It holds no authority and makes no decision: a plain-HTTP request becomes one
``HttpRequest`` (the broker checks method, host and path), and ``CONNECT host:port``
becomes one ``Connect`` tunnel (the broker checks host and port, dials the address it
resolved, and lets the bytes through only if the TLS ClientHello names that host). The
container has no route anywhere else, so a program that ignores the proxy variables, or
a forwarder that died, reaches nothing: failure is closed by construction.

One request per client connection (``Connection: close``). A refusal is answered with an
HTTP status (403 denied, 400 bad request, 502 unreachable, 504 too slow, 429 budget
spent) and the broker's message as the body, plus an ``X-Writ-Status`` header carrying
the broker's status name.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import BinaryIO

import grpc

from . import net
from ._broker import BrokerError, connection, translate
from ._proto import tool_pb2
from .net import CHUNK

MAX_HEAD = 64 << 10
HTTP_STATUS = {"PERMISSION_DENIED": 403, "UNAUTHENTICATED": 403, "INVALID_ARGUMENT": 400,
               "DEADLINE_EXCEEDED": 504, "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 502,
               "FAILED_PRECONDITION": 412, "NOT_FOUND": 404}
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade"}


class _BadRequest(Exception):
    pass


def _read_head(f: BinaryIO) -> tuple[str, str, list[tuple[str, str]]]:
    line = f.readline(MAX_HEAD)
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest("malformed request line")
    headers: list[tuple[str, str]] = []
    size = len(line)
    while True:
        line = f.readline(MAX_HEAD)
        size += len(line)
        if size > MAX_HEAD:
            raise _BadRequest("request head too large")
        if line in (b"\r\n", b"\n", b""):
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _BadRequest("malformed header line")
        headers.append((name.strip(), value.strip()))
    return parts[0].upper(), parts[1], headers


def _chunked(f: BinaryIO) -> Iterator[bytes]:
    while True:
        size_line = f.readline(1024).split(b";")[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _BadRequest("malformed chunked body") from None
        if size == 0:
            while f.readline(MAX_HEAD) not in (b"\r\n", b"\n", b""):
                pass  # trailers are dropped
            return
        data = f.read(size)
        f.readline(8)
        yield data


def _sized(f: BinaryIO, n: int) -> Iterator[bytes]:
    while n > 0:
        data = f.read(min(n, CHUNK))
        if not data:
            raise _BadRequest("body shorter than its Content-Length")
        n -= len(data)
        yield data


def _answer(sock: socket.socket, status: int, reason: str, message: str,
            writ_status: str = "") -> None:
    body = (message + "\n").encode("utf-8", "replace")
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n")
    if writ_status:
        head += f"X-Writ-Status: {writ_status}\r\n"
    try:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
    except OSError:
        pass


def _refused(sock: socket.socket, err: BrokerError) -> None:
    status = HTTP_STATUS.get(err.code, 502)
    _answer(sock, status, "Refused by Writ", err.message, err.code)


class Forwarder:
    """Listens on 127.0.0.1; one thread per client connection."""

    def __init__(self, port: int = 0) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Forwarder:
        threading.Thread(target=self._serve, name="writ-forwarder", daemon=True).start()
        return self

    def export(self) -> None:
        """Point this process and its children at the forwarder."""
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
                     "all_proxy"):
            os.environ[name] = self.url
        for name in ("NO_PROXY", "no_proxy"):
            os.environ.pop(name, None)

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with client:
            f = client.makefile("rb", buffering=CHUNK)
            try:
                method, target, headers = _read_head(f)
                if method == "CONNECT":
                    self._tunnel(client, f, target)
                else:
                    self._request(client, f, method, target, headers)
            except _BadRequest as exc:
                _answer(client, 400, "Bad Request", f"writ forwarder: {exc}")
            except BrokerError as err:
                _refused(client, err)
            except OSError:
                pass  # the client went away

    def _request(self, client: socket.socket, f: BinaryIO, method: str, target: str,
                 headers: list[tuple[str, str]]) -> None:
        if not target.lower().startswith(("http://", "https://")):
            raise _BadRequest("a proxy request needs an absolute URL (http://host/path)")
        lowered = {n.lower(): v for n, v in headers}
        body: Iterator[bytes] = iter(())
        if "chunked" in lowered.get("transfer-encoding", "").lower():
            body = _chunked(f)
        elif lowered.get("content-length"):
            if not lowered["content-length"].isdigit():
                raise _BadRequest("bad Content-Length")
            body = _sized(f, int(lowered["content-length"]))
        passed = [(n, v) for n, v in headers
                  if n.lower() not in HOP_BY_HOP and n.lower() != "content-length"]
        # The SDK's own request: a large body comes back on a pipe, not in messages.
        r = net.stream(target, method, headers=passed, body=body)
        out = [f"HTTP/1.1 {r.status} {r.reason or 'Status'}"]
        out += [f"{n}: {v}" for n, v in r.headers if n.lower() not in HOP_BY_HOP]
        out.append("Connection: close")  # without Content-Length, the close ends the body
        client.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1", "replace"))
        try:
            for chunk in r.iter_bytes():
                client.sendall(chunk)
        except BrokerError:
            pass  # the head is out: all the client can be told now is the early close
        finally:
            r.close()

    def _tunnel(self, client: socket.socket, f: BinaryIO, target: str) -> None:
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit():
            raise _BadRequest("CONNECT needs host:port")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        opened = threading.Event()
        closed = threading.Event()

        def parts() -> Iterator[tool_pb2.TunnelPart]:
            yield tool_pb2.TunnelPart(open=tool_pb2.TunnelOpen(host=host, port=int(port)))
            while not opened.wait(0.5):   # the client may speak only after its 200
                if closed.is_set():
                    return
            while True:
                data = f.read1(CHUNK)  # type: ignore[attr-defined]
                if not data:
                    return
                yield tool_pb2.TunnelPart(data=data)

        conn = connection()
        replies = conn.stub.Connect(parts(), metadata=conn.metadata)
        try:
            next(replies)  # host and port allowed, address pinned
            client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            opened.set()
            for part in replies:
                if part.data:
                    client.sendall(part.data)
        except grpc.RpcError as err:
            if not opened.is_set():
                raise translate(err) from None
            # The client already has its 200 (a refused server name, say): all it can be
            # told now is the close.
        finally:
            closed.set()
            replies.cancel()
