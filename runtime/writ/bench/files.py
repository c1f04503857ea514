"""Bench section "files": a 256 MiB file read and written through the broker from inside
a container, beside the same bytes moved between disk and a container over a raw Unix
socket in the same run.

Writ figures (timed inside the box, each including its RPC, check, audit record and, for
the write, the broker's fsync and atomic rename):
  - read via a descriptor: OpenFile, redeem the ticket, read() it to the end;
  - read via the gRPC stream (1 MiB messages), the fallback;
  - write via the gRPC client stream (1 MiB messages), on close.
Floors (a container of the same image on a bind-mounted socket dir; no broker):
  - read: the host reads the file from disk in 1 MiB blocks and sends it on a Unix socket;
  - write: the box sends the bytes; the host writes them to disk and fsyncs, then acks.
Target: each Writ rate at least half its floor (ratio >= 0.5).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import docker

from .. import images
from ..launcher._seccomp import load_profile
from ..launcher._spec import TOOL_USER
from ..manifests import parse_grant, parse_manifest
from ..testing import broker_process
from ._common import Figure, p50
from .invoke import BENCH_IMAGE, BENCH_TOOL

SIZE = 256 << 20
BLOCK = 1 << 20
MB = 1e6
LIMITS = {"memory_mb": 256, "cpus": 1.0, "pids": 64, "timeout_s": 600, "tmp_mb": 8}

# Runs in the floor's container: connect once per repetition, move SIZE bytes, time it.
FLOOR_SCRIPT = """
import os, socket, sys, time
size, reps, block = int(sys.argv[1]), int(sys.argv[2]), 1 << 20
buf = bytearray(block)
data = bytes(range(256)) * (block // 256)
out = []
for mode in ("read", "write"):
    for i in range(reps + 1):  # the first round untimed, as in the Writ runs
        os.sync()  # as the Writ runs do: no dirty pages left to throttle this one
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        t0 = time.perf_counter()
        s.connect(f"/run/raw/{mode}.sock")
        if mode == "read":
            got = 0
            while got < size:
                n = s.recv_into(buf)
                if not n:
                    raise SystemExit("short read")
                got += n
        else:
            for _ in range(size // block):
                s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            if s.recv(1) != b"k":
                raise SystemExit("no ack")
        if i:
            out.append(f"{mode} {time.perf_counter() - t0}")
        s.close()
print("\\n".join(out))
"""


class _FloorServer:
    """Host side of the floors: serves the file from disk, or stores what it receives."""

    def __init__(self, folder: Path, source: Path, sink: Path) -> None:
        folder.mkdir(mode=0o777)
        os.chmod(folder, 0o777)  # the box runs as the tool's uid
        self.source, self.sink = source, sink
        self.socks = []
        for mode, serve in (("read", self._send), ("write", self._receive)):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(folder / f"{mode}.sock"))
            os.chmod(folder / f"{mode}.sock", 0o777)
            s.listen(4)
            self.socks.append(s)
            threading.Thread(target=self._loop, args=(s, serve), daemon=True).start()

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
        buf = bytearray(BLOCK)
        fd = os.open(self.sink, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while n := conn.recv_into(buf):
                os.write(fd, memoryview(buf)[:n])
            os.fsync(fd)
        finally:
            os.close(fd)
        conn.sendall(b"k")

    def close(self) -> None:
        for s in self.socks:
            s.close()


def _floors(tmp: Path, source: Path, reps: int) -> dict[str, list[float]]:
    server = _FloorServer(tmp / "raw", source, tmp / "ws" / "raw-out.bin")
    seccomp_file = tmp / "seccomp.json"
    seccomp_file.write_text(load_profile())
    try:
        cmd = ["docker", "run", "--rm", "--network", "none", "--read-only",
               "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "--security-opt", f"seccomp={seccomp_file}", "--user", TOOL_USER,
               "--memory", f"{LIMITS['memory_mb']}m", "--cpus", str(LIMITS["cpus"]),
               "-v", f"{tmp / 'raw'}:/run/raw", BENCH_IMAGE,
               "python3", "-c", FLOOR_SCRIPT, str(SIZE), str(reps)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    finally:
        server.close()
    times: dict[str, list[float]] = {"read": [], "write": []}
    for line in out.split("\n"):
        if line.strip():
            mode, seconds = line.split()
            times[mode].append(float(seconds))
    return times


def _rates(seconds: list[float]) -> list[float]:
    return [SIZE / s / MB for s in seconds]


def run(quick: bool) -> list[Figure]:
    """Reads (descriptor, gRPC stream) and a streamed write of 256 MiB vs raw sockets."""
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
    try:
        with broker_process(tmp / "state", {"bench": ws}, echo=False) as bp:
            bp.operator.register_tool(parse_manifest({
                "name": "bench", "image": BENCH_IMAGE, "limits": LIMITS,
                "files": [{"paths": ["**"], "ops": ["READ", "WRITE", "CREATE"]}]}))
            token = bp.operator.mint_token(parse_grant({
                "tools": [{"name": "bench"}],
                "files": [{"workspace": "bench", "paths": ["**"],
                           "ops": ["READ", "WRITE", "CREATE"]}]})).token
            out = bp.agent.invoke("bench", {"action": "files", "path": "big.bin",
                                            "out": "out.bin", "size": SIZE, "reps": reps},
                                  token)
            assert out.ok, f"{out.error_code}: {out.error_message}"
            writ = out.result
        floors = _floors(tmp, ws / "big.bin", reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    read_floor, write_floor = _rates(floors["read"]), _rates(floors["write"])
    figures = []
    for key, name, floor, floor_name in (
            ("descriptor", "file read 256 MiB, descriptor (in box)", read_floor,
             "disk -> raw Unix socket -> box"),
            ("stream", "file read 256 MiB, gRPC stream (in box)", read_floor,
             "disk -> raw Unix socket -> box"),
            ("write", "file write 256 MiB, pipe + fsync (in box)", write_floor,
             "box -> raw Unix socket -> disk + fsync")):
        rates = _rates(writ[key])
        ratio = p50(rates) / p50(floor)
        figures.append(Figure(name, "MB/s", p50(rates), min(rates), floor_name, p50(floor),
                              min(floor), higher_is_better=True, target="ratio >= 0.5",
                              met=ratio >= 0.5))
    return figures
