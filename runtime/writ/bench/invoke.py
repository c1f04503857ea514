"""Bench section "invoke": cold invoke vs a raw `docker run` of the same image and flags,
and the round trip of one mediated ReadFile vs a raw Unix-socket echo."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import docker

from .. import images
from ..launcher._seccomp import load_profile
from ..launcher._spec import TOOL_USER
from ..manifests import parse_grant, parse_manifest
from ..testing import broker_process
from ._common import Figure, p50, pct

BENCH_TOOL = images.IMAGES_DIR / "bench"
BENCH_IMAGE = images.tool_tag(BENCH_TOOL)
LIMITS = {"memory_mb": 256, "cpus": 1.0, "pids": 64, "timeout_s": 60, "tmp_mb": 32}


def hardened_docker_run(seccomp_file: Path, *command: str, detach: bool = False) -> list[str]:
    """`docker run` of the bench image with the launcher's hardening flags and limits."""
    return ["docker", "run", "--detach" if detach else "--rm", "--network", "none",
            "--read-only", "--tmpfs", f"/tmp:rw,noexec,nosuid,nodev,size={LIMITS['tmp_mb']}m",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--security-opt", f"seccomp={seccomp_file}", "--user", TOOL_USER,
            "--cgroupns", "private", "--ipc", "private",
            "--pids-limit", str(LIMITS["pids"]), "--memory", f"{LIMITS['memory_mb']}m",
            "--memory-swap", f"{LIMITS['memory_mb']}m", "--cpus", str(LIMITS["cpus"]),
            BENCH_IMAGE, *command]


# The same interpreter start and imports a tool pays (python3 + grpc + SDK).
TOOL_START = ("python3", "-c", "import writ_tool.run")


def raw_docker_run(n: int, seccomp_file: Path) -> list[float]:
    """The floor: `docker run --rm` of the same image with the same hardening flags,
    running the same interpreter start and imports a tool pays."""
    cmd = hardened_docker_run(seccomp_file, *TOOL_START)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def raw_unix_roundtrip(n: int) -> list[float]:
    """The floor for a mediated call: 100-byte request/response on a Unix socket, in µs."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def echo() -> None:
        while data := b.recv(4096):
            b.sendall(data)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    msg, lat = b"x" * 100, []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        a.sendall(msg)
        got = 0
        while got < len(msg):
            got += len(a.recv(4096))
        lat.append((time.perf_counter_ns() - t0) / 1000)
    a.close()
    t.join(2)
    b.close()
    return lat


def run(quick: bool) -> list[Figure]:
    """Cold invoke vs raw docker run; mediated ReadFile round trip vs raw Unix socket."""
    n_cold, n_reads = (5, 300) if quick else (20, 2000)
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
        with broker_process(tmp / "state", {"bench": ws}, echo=False) as bp:
            bp.operator.register_tool(parse_manifest({
                "name": "bench", "image": BENCH_IMAGE, "limits": LIMITS,
                "files": [{"paths": ["**"], "ops": ["READ"]}]}))
            token = bp.operator.mint_token(parse_grant({
                "tools": [{"name": "bench"}],
                "files": [{"workspace": "bench", "paths": ["**"], "ops": ["READ"]}]})).token
            bp.agent.invoke("bench", {}, token)  # warm the page cache and the engine
            cold = []
            for _ in range(n_cold):
                t0 = time.perf_counter()
                out = bp.agent.invoke("bench", {}, token)
                assert out.ok, out.error_message
                cold.append((time.perf_counter() - t0) * 1000)
            raw = raw_docker_run(n_cold, seccomp_file)
            out = bp.agent.invoke("bench", {"action": "read_loop", "n": n_reads,
                                            "path": "small.txt"}, token)
            assert out.ok, out.error_message
            reads = [ns / 1000 for ns in out.result["latencies_ns"]][n_reads // 10:]
        unix = raw_unix_roundtrip(n_reads)[n_reads // 10:]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = p50(cold) / p50(raw)
    return [
        Figure("cold invoke, trivial tool", "ms", p50(cold), pct(cold, 0.99),
               "raw docker run, same image + flags", p50(raw), pct(raw, 0.99),
               target="ratio <= 1.2", met=ratio <= 1.2),
        Figure("mediated ReadFile round trip (in box)", "µs", p50(reads), pct(reads, 0.99),
               "raw Unix socket 100 B echo", p50(unix), pct(unix, 0.99),
               target="p50 <= 500 µs", met=p50(reads) <= 500),
    ]
