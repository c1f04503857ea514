"""Servers for the mediated network's tests and demo: plain HTTP and HTTPS on the host's
loopback, recording every request they receive, and a throwaway CA whose server
certificate names the given host names and 127.0.0.1."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TLS_NAME = "secure.test"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Certs:
    ca_pem: str
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_certs(directory: Path, names: tuple[str, ...] = (TLS_NAME,)) -> Certs:
    """A CA and a server certificate for ``names`` and 127.0.0.1, signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "writ test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names] +
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    (directory / "ca.pem").write_text(ca_pem)
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return Certs(ca_pem, directory / "ca.pem", directory / "server.pem",
                 directory / "server.key")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _any(self) -> None:
        body = self._body()
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.seen.append(Seen(self.command, self.path, dict(self.headers.items()),
                                     body))
        path = url.path
        if path == "/slow":
            time.sleep(float(q.get("s", "5")))
            self._send(200, b"slow")
        elif path == "/big":
            n = int(q.get("n", "1024"))
            self._send(200, self.server.payload(n), {"Content-Type": "application/octet-stream"})
        elif path == "/redirect":
            self._send(int(q.get("code", "302")), b"", {"Location": q["to"]})
        elif path == "/huge-header":
            self._send(200, b"x", {"X-Huge": "h" * (100 << 10)})
        elif path.startswith("/api/") or path == "/reflect":
            # A reflecting endpoint: echoes every request header back, in a header and in
            # the body, the way httpbin.org/headers does.
            echo = json.dumps({"headers": dict(self.headers.items()),
                               "len": len(body)}).encode()
            self._send(200, echo, {"X-Echo-Auth": self.headers.get("Authorization", ""),
                                   "Content-Type": "application/json"})
        else:
            self._send(200, json.dumps({"path": self.path, "method": self.command,
                                        "len": len(body)}).encode(),
                       {"Content-Type": "application/json"})

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[Seen] = []
        self._payloads: dict[int, bytes] = {}

    def payload(self, n: int) -> bytes:
        if n not in self._payloads:
            self._payloads[n] = bytes(range(256)) * (n // 256) + b"z" * (n % 256)
        return self._payloads[n]


@dataclass
class LoopbackServer:
    scheme: str
    port: int
    server: _Server
    thread: threading.Thread = field(repr=False)

    @property
    def seen(self) -> list[Seen]:
        return self.server.seen

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_server(certs: Certs | None = None) -> LoopbackServer:
    srv = _Server()
    if certs is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs.cert_file, certs.key_file)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return LoopbackServer("https" if certs else "http", srv.server_address[1], srv, thread)
