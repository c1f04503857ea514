"""Bench section "net": GETs of a 1 KiB and a 10 MiB response from a server on the host's
loopback, made from inside a container through the broker, beside the same GETs made
directly from the host in the same run.

Writ figures (timed inside the box, each a whole request: the tool's call, the check, the
audit record before connecting, the broker's own connection to the pinned address, the
response streamed back, the outcome record):
  - 1 KiB through ``writ_tool.net.fetch`` (latency);
  - 1 KiB through the in-box forwarder with plain urllib (an unmodified client);
  - 10 MiB through ``writ_tool.net.fetch`` (throughput).
Floor: the same GET by ``http.client`` on the host, a new connection each time (the broker
opens one per request too), measured before and after the box's run.
No target is set by the issue; the ratios are the record.
"""

from __future__ import annotations

import http.client
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import docker

from .. import images
from ..manifests import parse_grant, parse_manifest
from ..testing import broker_process
from ._common import Figure, p50, pct
from .invoke import BENCH_IMAGE, BENCH_TOOL

SMALL, BIG = 1 << 10, 10 << 20
MB = 1e6
LIMITS = {"memory_mb": 256, "cpus": 1.0, "pids": 64, "timeout_s": 600, "tmp_mb": 8}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies: ClassVar[dict[str, bytes]] = {"/small": b"s" * SMALL, "/big": bytes(range(256)) * (BIG // 256)}

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = self.bodies[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _direct(port: int, path: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", path)
        got = len(conn.getresponse().read())
        conn.close()
        times.append(time.perf_counter() - t0)
        assert got == len(_Handler.bodies[path])
    return times


def run(quick: bool) -> list[Figure]:
    n_small, n_big = (50, 4) if quick else (300, 12)
    client = docker.from_env(timeout=300)
    images.build_base(client, say=lambda _m: None)
    images.build_tool(client, BENCH_TOOL, say=lambda _m: None)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="writ-bench-net-"))
    (tmp / "ws").mkdir()
    rule = {"schemes": ["http"], "host": "127.0.0.1", "ports": [port], "methods": ["GET"],
            "path_prefixes": ["/small", "/big"]}
    try:
        direct = {"/small": _direct(port, "/small", n_small), "/big": _direct(port, "/big", n_big)}
        with broker_process(tmp / "state", {"bench": tmp / "ws"}, echo=False) as bp:
            bp.operator.register_tool(parse_manifest({
                "name": "bench", "image": BENCH_IMAGE, "limits": LIMITS, "net": [rule]}))
            token = bp.operator.mint_token(parse_grant({
                "tools": [{"name": "bench"}], "net": [rule]})).token
            out = bp.agent.invoke("bench", {
                "action": "net", "small": f"http://127.0.0.1:{port}/small",
                "big": f"http://127.0.0.1:{port}/big", "n_small": n_small, "n_big": n_big},
                token)
            assert out.ok, f"{out.error_code}: {out.error_message}"
            box = out.result
        direct["/small"] += _direct(port, "/small", n_small)
        direct["/big"] += _direct(port, "/big", n_big)
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(tmp, ignore_errors=True)
    assert box["sdk_small_bytes"] == box["proxy_small_bytes"] == SMALL
    assert box["sdk_big_bytes"] == BIG

    def ms(values: list[float]) -> list[float]:
        return [v * 1000 for v in values]

    def rate(values: list[float]) -> list[float]:
        return [BIG / v / MB for v in values]

    floor_small = ms(direct["/small"])
    floor_big = rate(direct["/big"])
    figures = []
    for key, name in (("sdk_small", "mediated GET 1 KiB, net.fetch (in box)"),
                      ("proxy_small", "mediated GET 1 KiB, urllib via proxy")):
        lat = ms(box[key])
        figures.append(Figure(name, "ms", p50(lat), pct(lat, 0.99),
                              "direct GET 1 KiB from the host", p50(floor_small),
                              pct(floor_small, 0.99)))
    big = rate(box["sdk_big"])
    figures.append(Figure("mediated GET 10 MiB, net.fetch (in box)", "MB/s", p50(big),
                          min(big), "direct GET 10 MiB from the host", p50(floor_big),
                          min(floor_big), higher_is_better=True))
    return figures
