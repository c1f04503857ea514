"""Bench section "agents": what an agent sees, against a broker with a warm pool.

Floors, all measured in this run, and why each is the honest one:

- warm invoke vs ``docker exec true`` in a running container of the same image and flags:
  the cheapest way to run anything in an already-isolated box without Writ (dockerd's exec
  API, as an agent runtime would call it). A warm Writ call also checks the token, records
  the decision durably, hands over the token, runs the tool and records its end.
- mediated Stat (the SDK's ops socket) vs a raw Unix-socket round trip of a 100-byte
  length-prefixed frame to an asyncio echo server in another process: the framing a
  mediated operation rides on; Writ adds the token check, the decision, the audit record
  (chained, not waited for: a stat has no effect outside the broker) and the stat itself.
- sustained calls/s vs ``docker run --rm`` per second, same image, flags, limits and
  concurrency, running the interpreter start and imports a tool pays: every Writ call uses
  a fresh container, so container starts bound its sustained rate.
- broker RSS and open descriptors after 1,000 more calls (WRIT_BENCH_LEAK_CALLS) vs
  before them, taken once every figure above has run (hundreds of calls at 1, 8 and 32
  agents), so what the broker grows lazily for its peak concurrency is already there:
  must come back to that level.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import psutil

from .. import images
from ..client import AsyncClient
from ..launcher._seccomp import load_profile
from ..manifests import parse_grant, parse_manifest
from ..testing import broker_process
from ._common import Figure, p50, pct
from .invoke import BENCH_IMAGE, BENCH_TOOL, LIMITS, TOOL_START, hardened_docker_run

POOL = 4          # warm containers per tool
PACE_S = 0.7      # between latency samples: the pool refills one container in ~0.4 s
TARGET_P50_MS, TARGET_P99_MS = 25.0, 100.0
TARGET_OP_US = 500.0  # mediated operation round trip, p50
DOCKER_POOL = 10  # docker-py's DEFAULT_MAX_POOL_SIZE: idle dockerd connections it keeps
LEAK_AGENTS = 8   # concurrency of the leak check's calls
LEAK_RSS_MB = 2.0  # allocator noise; a leak of even 2 KB per call shows past this


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def docker_exec_floor(n: int, seccomp_file: Path) -> list[float]:
    """``docker exec true`` (dockerd's API) in a running container of the same image/flags."""
    api = docker.from_env(timeout=120).api
    cid = subprocess.run(hardened_docker_run(seccomp_file, "sleep", "infinity", detach=True),
                         check=True, capture_output=True, text=True).stdout.strip()
    try:
        def once() -> None:
            api.exec_start(api.exec_create(cid, ["true"])["Id"])

        once()
        return [_timed(once) for _ in range(n)]
    finally:
        subprocess.run(["docker", "rm", "-f", cid], check=True, capture_output=True)


# The floor's server: an asyncio Unix-socket echo of length-prefixed frames, in its own
# process (as the broker is), answering each frame from data_received.
_ECHO_SERVER = """
import asyncio, struct, sys
class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        while len(self.buf) >= 4:
            n = struct.unpack(">I", self.buf[:4])[0]
            if len(self.buf) < 4 + n:
                return
            self.transport.write(self.buf[:4 + n])
            self.buf = self.buf[4 + n:]
async def main():
    server = await asyncio.get_running_loop().create_unix_server(Echo, sys.argv[1])
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def raw_socket_floor(n: int, sock: Path) -> list[float]:
    """µs per 100-byte request/response on a persistent Unix-socket connection to an
    asyncio server in another process: the framing a mediated operation rides on."""
    server = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER, str(sock)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        frame = struct.pack(">I", 100) + b"x" * 100
        lat = []
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(sock))
            for _ in range(n):
                t0 = time.perf_counter_ns()
                s.sendall(frame)
                got = 0
                while got < len(frame):
                    got += len(s.recv(len(frame) - got))
                lat.append((time.perf_counter_ns() - t0) / 1000)
        return lat[n // 10:]
    finally:
        server.kill()
        server.wait()


def _raw_runs_per_s(count: int, concurrency: int, seccomp_file: Path) -> float:
    cmd = hardened_docker_run(seccomp_file, *TOOL_START)
    left = list(range(count))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not left:
                    return
                left.pop()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count / (time.perf_counter() - t0)


async def _calls_per_s(address: Path, token: str, count: int, concurrency: int) -> float:
    left = count

    async def agent(c: AsyncClient) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            out = await c.invoke("bench", {}, token, timeout=120)
            if not out.ok:
                raise RuntimeError(f"bench call failed: {out.error_code}: {out.error_message}")

    async with AsyncClient(address) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(agent(c) for _ in range(concurrency)))
        return count / (time.perf_counter() - t0)


def _descriptors(pid: int) -> tuple[int, int]:
    """(sockets, every other open descriptor) of a process."""
    kinds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            kinds.append(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))
    return sum(kinds), len(kinds) - sum(kinds)


def _settled(proc: psutil.Process, timeout: float = 30.0) -> tuple[float, int, int]:
    """(RSS MB, sockets, other descriptors) once the counts hold still: clean-up after the
    last reply (container removal, closing records) and the pool refill run afterwards."""
    deadline = time.monotonic() + timeout
    seen: list[tuple[int, int]] = []
    while time.monotonic() < deadline:
        seen.append(_descriptors(proc.pid))
        if len(seen) >= 6 and len(set(seen[-6:])) == 1:
            break
        time.sleep(0.5)
    return (proc.memory_info().rss / 2**20, *seen[-1])


def run(quick: bool) -> list[Figure]:
    """Warm invoke latency, in-box Stat, sustained calls/s at 1/8/32 agents, broker leaks."""
    n_warm, n_stat = (12, 300) if quick else (60, 2000)
    # Calls per concurrency level; they also warm the broker up for the leak check.
    plan = [(1, 10), (8, 40), (32, 64)] if quick else [(1, 40), (8, 320), (32, 640)]
    # The leak check: this many more calls at LEAK_AGENTS at once, after all of the above.
    n_leak = int(os.environ.get("WRIT_BENCH_LEAK_CALLS", "200" if quick else "1000"))
    raw_plan = [(1, 5), (8, 16), (32, 32)] if quick else [(1, 20), (8, 80), (32, 128)]
    client = docker.from_env(timeout=300)
    images.build_base(client, say=lambda _m: None)
    images.build_tool(client, BENCH_TOOL, say=lambda _m: None)
    tmp = Path(tempfile.mkdtemp(prefix="writ-bench-"))
    ws = tmp / "ws"
    ws.mkdir()
    (ws / "small.txt").write_bytes(b"x" * 100)
    seccomp_file = tmp / "seccomp.json"
    seccomp_file.write_text(load_profile())
    try:
        with broker_process(tmp / "state", {"bench": ws}, echo=False,
                            warm_per_tool=POOL) as bp:
            bp.operator.register_tool(parse_manifest({
                "name": "bench", "image": BENCH_IMAGE, "limits": LIMITS,
                "files": [{"paths": ["**"], "ops": ["READ", "STAT"]}]}))
            token = bp.operator.mint_token(parse_grant({
                "tools": [{"name": "bench"}],
                "files": [{"workspace": "bench", "paths": ["**"], "ops": ["READ", "STAT"]}]}),
                ttl_s=86400).token
            agent = bp.agent
            address = bp.state_dir / "agent.sock"
            # Every code path has run, and the broker has grown what it keeps for the most
            # concurrency it will see (executor threads, dockerd connections): the leak
            # check below compares against that, not against a cold process.
            asyncio.run(_calls_per_s(address, token, plan[-1][0] * 2, plan[-1][0]))
            time.sleep(POOL * PACE_S + 1)  # the pool is full again
            warm, cold = [], 0
            for _ in range(n_warm):
                t0 = time.perf_counter()
                out = agent.invoke("bench", {}, token)
                ms = (time.perf_counter() - t0) * 1000
                assert out.ok, out.error_message
                if out.warm:
                    warm.append(ms)
                else:
                    cold += 1
                time.sleep(PACE_S)
            out = agent.invoke("bench", {"action": "read_loop", "op": "stat", "n": n_stat,
                                         "path": "small.txt"}, token)
            assert out.ok, out.error_message
            stat = [ns / 1000 for ns in out.result["latencies_ns"]][n_stat // 10:]

            rates = {c: asyncio.run(_calls_per_s(address, token, n, c)) for c, n in plan}
            # Hundreds of calls have run at every concurrency: whatever the broker keeps
            # (executor threads, dockerd connections, caches, allocator arenas) has grown.
            broker = psutil.Process(bp.proc.pid)
            rss0, socks0, fds0 = _settled(broker)
            asyncio.run(_calls_per_s(address, token, n_leak, LEAK_AGENTS))
            rss1, socks1, fds1 = _settled(broker)
        exec_floor = docker_exec_floor(n_warm, seccomp_file)
        raw = raw_socket_floor(n_stat, tmp / "raw.sock")
        raw_rates = {c: _raw_runs_per_s(n, c, seccomp_file) for c, n in raw_plan}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    calls, warmed = f"{n_leak:,}", f"{sum(n for _, n in plan) + plan[-1][0] * 2 + n_warm:,}"
    w50, w99 = p50(warm), pct(warm, 0.99)
    figures = [
        Figure(f"warm invoke, trivial tool ({len(warm)}/{len(warm) + cold} warm)", "ms",
               w50, w99, "docker exec true, running container", p50(exec_floor),
               pct(exec_floor, 0.99), target=f"p50 <= {TARGET_P50_MS:g} ms, p99 <= "
               f"{TARGET_P99_MS:g} ms", met=w50 <= TARGET_P50_MS and w99 <= TARGET_P99_MS),
        Figure("mediated Stat round trip (in box)", "µs", p50(stat), pct(stat, 0.99),
               "raw Unix-socket round trip, 100 B", p50(raw), pct(raw, 0.99),
               target=f"p50 <= {TARGET_OP_US:g} µs", met=p50(stat) <= TARGET_OP_US),
    ]
    for c, _ in plan:
        figures.append(Figure(
            f"sustained invokes/s, {c} agent{'s' if c > 1 else ''}", "ops/s", rates[c], None,
            f"docker run --rm/s, {c} at once", raw_rates[c], None, higher_is_better=True,
            target="ratio >= 0.8", met=rates[c] >= 0.8 * raw_rates[c]))
    figures += [
        Figure(f"broker RSS after {calls} more calls", "MB", rss1, None,
               f"before them (after {warmed} calls)", rss0, None,
               target=f"delta <= {LEAK_RSS_MB:g} MB", met=rss1 - rss0 <= LEAK_RSS_MB),
        Figure(f"broker descriptors after {calls} more calls", "fds", fds1, None,
               "before them (sockets apart)", fds0, None, target="delta == 0",
               met=fds1 == fds0),
        # docker-py keeps up to DOCKER_POOL idle dockerd connections, however many calls
        # ran: a leak grows with the calls, this moves within that bound.
        Figure(f"broker sockets after {calls} more calls", "fds", socks1, None,
               "broker sockets before them", socks0, None,
               target=f"delta <= {DOCKER_POOL} (dockerd connection pool)",
               met=socks1 - socks0 <= DOCKER_POOL),
    ]
    return figures
