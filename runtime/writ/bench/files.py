"""Bench section "files": a 256 MiB file read and written through the broker from inside a
container, in turns with the same bytes moved between disk and the same container over a
raw Unix socket (the floors), round after round in one invocation.

Writ figures (timed inside the box, each including its RPC, check, audit record and, for
the write, the broker's fsync and atomic rename):
  - read via a descriptor: OpenFile, redeem the ticket, read() it to the end;
  - read via the gRPC stream (1 MiB messages), the fallback;
  - write via a handed-in pipe the broker splices into its temporary file, on close.
Floors (no broker; a plain socket the bench binds in the invocation's socket directory,
the box's one mount, once the invocation has started):
  - read: the host reads the file from disk in 1 MiB blocks and sends it;
  - write: the box sends the bytes; the host writes them to a new file, fsyncs, renames it
    over the old one (the storage work of an atomic replace), then acks.
Interleaving matters on a small shared machine: measured minutes apart, the two sides of a
ratio meet different loads. The order of the steps matters too (see the bench tool).
Target: each Writ rate at least half its floor (ratio >= 0.5).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import docker

from .. import images
from ..manifests import parse_grant, parse_manifest
from ..testing import broker_process
from ._common import Figure, p50
from .invoke import BENCH_IMAGE, BENCH_TOOL

SIZE = 256 << 20
BLOCK = 1 << 20
MB = 1e6
LIMITS = {"memory_mb": 256, "cpus": 1.0, "pids": 64, "timeout_s": 900, "tmp_mb": 8}
RAW_DIR = "raw"  # inside the invocation's socket dir: /run/writ/raw in the box


class _FloorServer:
    """Host side of the floors: serves the file from disk, or stores what it receives."""

    def __init__(self, source: Path, sink: Path) -> None:
        self.source, self.sink = source, sink
        self.socks: list[socket.socket] = []

    def bind_in(self, folder: Path) -> None:
        staged = folder.with_name(folder.name + ".tmp")
        staged.mkdir(mode=0o755)
        for mode, serve in (("read", self._send), ("write", self._receive)):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(staged / f"{mode}.sock"))
            os.chmod(staged / f"{mode}.sock", 0o777)  # the box runs as the tool's uid
            s.listen(4)
            self.socks.append(s)
            threading.Thread(target=self._loop, args=(s, serve), daemon=True).start()
        staged.rename(folder)  # both sockets appear at once

    @staticmethod
    def _loop(s: socket.socket, serve: Callable[[socket.socket], None]) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            with conn:
                serve(conn)

    def _send(self, conn: socket.socket) -> None:
        buf = bytearray(BLOCK)
        with open(self.source, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                conn.sendall(memoryview(buf)[:n])

    def _receive(self, conn: socket.socket) -> None:
        # The same storage work as Writ's atomic replace: a new file, fsynced, renamed over
        # the old one (whose pages stay in use until then).
        buf = bytearray(BLOCK)
        fresh = self.sink.with_name(self.sink.name + ".new")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            while n := conn.recv_into(buf):
                os.write(fd, memoryview(buf)[:n])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(fresh, self.sink)
        conn.sendall(b"k")

    def close(self) -> None:
        for s in self.socks:
            s.close()


def _serve_floors_when_started(run_dir: Path, server: _FloorServer,
                               stop: threading.Event) -> None:
    """Bind the floor's sockets in the first invocation directory that appears."""
    while not stop.is_set():
        for inv in run_dir.glob("i*"):
            if (inv / "broker.sock").exists():
                server.bind_in(inv / RAW_DIR)
                return
        time.sleep(0.01)


def _rates(seconds: list[float]) -> list[float]:
    return [SIZE / s / MB for s in seconds]


def run(quick: bool) -> list[Figure]:
    """Reads (descriptor, gRPC stream) and a piped write of 256 MiB vs raw sockets."""
    reps = 3 if quick else 9
    client = docker.from_env(timeout=300)
    images.build_base(client, say=lambda _m: None)
    images.build_tool(client, BENCH_TOOL, say=lambda _m: None)
    tmp = Path(tempfile.mkdtemp(prefix="writ-bench-files-"))
    ws = tmp / "ws"
    ws.mkdir()
    block = os.urandom(BLOCK)
    with open(ws / "big.bin", "wb") as f:
        f.writelines(block for _ in range(SIZE // BLOCK))
    server = _FloorServer(ws / "big.bin", ws / "raw-out.bin")
    stop = threading.Event()
    try:
        with broker_process(tmp / "state", {"bench": ws}, echo=False) as bp:
            bp.operator.register_tool(parse_manifest({
                "name": "bench", "image": BENCH_IMAGE, "limits": LIMITS,
                "files": [{"paths": ["**"], "ops": ["READ", "WRITE", "CREATE"]}]}))
            token = bp.operator.mint_token(parse_grant({
                "tools": [{"name": "bench"}],
                "files": [{"workspace": "bench", "paths": ["**"],
                           "ops": ["READ", "WRITE", "CREATE"]}]})).token
            watcher = threading.Thread(target=_serve_floors_when_started,
                                       args=(tmp / "state" / "run", server, stop), daemon=True)
            watcher.start()
            out = bp.agent.invoke("bench", {"action": "files", "path": "big.bin",
                                            "out": "out.bin", "size": SIZE, "reps": reps,
                                            "raw_dir": f"/run/writ/{RAW_DIR}"}, token)
            assert out.ok, f"{out.error_code}: {out.error_message}"
            times = out.result
    finally:
        stop.set()
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    read_floor, write_floor = _rates(times["raw_read"]), _rates(times["raw_write"])
    figures = []
    for key, name, floor, floor_name in (
            ("descriptor", "file read 256 MiB, descriptor (in box)", read_floor,
             "disk -> raw Unix socket -> box"),
            ("stream", "file read 256 MiB, gRPC stream (fallback)", read_floor,
             "disk -> raw Unix socket -> box"),
            ("write", "file write 256 MiB, pipe + fsync (in box)", write_floor,
             "box -> raw Unix socket -> disk + fsync")):
        rates = _rates(times[key])
        ratio = p50(rates) / p50(floor)
        # "p99" is the slowest repetition: with a handful of samples, the worst one seen.
        figures.append(Figure(name, "MB/s", p50(rates), min(rates), floor_name, p50(floor),
                              min(floor), higher_is_better=True, target="ratio >= 0.5",
                              met=ratio >= 0.5))
    return figures
