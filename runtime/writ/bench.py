"""`make bench`: Writ's figures beside floors measured in the same run.

Prints a table for people and writes bench-results.json for scripts (`--json` prints it).
Targets are checked here, never in timed tests: the machine is noisy, ratios within one
run are what mean something.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import docker

from . import images
from .launcher._seccomp import load_profile
from .launcher._spec import TOOL_USER
from .manifests import parse_grant, parse_manifest
from .testing import broker_process

BENCH_TOOL = images.IMAGES_DIR / "bench"
BENCH_IMAGE = images.tool_tag(BENCH_TOOL)
LIMITS = {"memory_mb": 256, "cpus": 1.0, "pids": 64, "timeout_s": 60, "tmp_mb": 32}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def raw_docker_run(n: int, seccomp_file: Path) -> list[float]:
    """The floor: `docker run --rm` of the same image with the same hardening flags,
    running the same interpreter start and imports a tool pays (python3 + grpc + SDK)."""
    cmd = ["docker", "run", "--rm", "--network", "none", "--read-only",
           "--tmpfs", f"/tmp:rw,noexec,nosuid,nodev,size={LIMITS['tmp_mb']}m",
           "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           "--security-opt", f"seccomp={seccomp_file}", "--user", TOOL_USER,
           "--cgroupns", "private", "--ipc", "private",
           "--pids-limit", str(LIMITS["pids"]), "--memory", f"{LIMITS['memory_mb']}m",
           "--memory-swap", f"{LIMITS['memory_mb']}m", "--cpus", str(LIMITS["cpus"]),
           BENCH_IMAGE, "python3", "-c", "import writ_tool.run"]
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


def run(n_cold: int, n_reads: int) -> dict[str, Any]:
    client = docker.from_env(timeout=300)
    print("building images (cached after the first run)...", file=sys.stderr, flush=True)
    images.build_base(client, say=lambda _m: None)
    images.build_tool(client, BENCH_TOOL, say=lambda _m: None)
    tmp = Path(tempfile.mkdtemp(prefix="writ-bench-"))
    ws = tmp / "ws"
    ws.mkdir()
    (ws / "small.txt").write_bytes(b"x" * 100)
    seccomp_file = tmp / "seccomp.json"
    seccomp_file.write_text(load_profile())
    results: dict[str, Any] = {}
    try:
        with broker_process(tmp / "state", {"bench": ws}, echo=False) as bp:
            bp.operator.register_tool(parse_manifest({
                "name": "bench", "image": BENCH_IMAGE, "limits": LIMITS,
                "files": [{"paths": ["**"], "ops": ["READ"]}]}))
            token = bp.operator.mint_token(parse_grant({
                "tools": [{"name": "bench"}],
                "files": [{"workspace": "bench", "paths": ["**"], "ops": ["READ"]}]})).token
            bp.agent.invoke("bench", {}, token)  # warm the page cache and the engine
            print(f"cold invokes x{n_cold}...", file=sys.stderr, flush=True)
            cold = []
            for _ in range(n_cold):
                t0 = time.perf_counter()
                out = bp.agent.invoke("bench", {}, token)
                assert out.ok, out.error_message
                cold.append((time.perf_counter() - t0) * 1000)
            print(f"raw docker run x{n_cold}...", file=sys.stderr, flush=True)
            raw = raw_docker_run(n_cold, seccomp_file)
            print(f"mediated ReadFile x{n_reads} from inside a container...", file=sys.stderr,
                  flush=True)
            out = bp.agent.invoke("bench", {"action": "read_loop", "n": n_reads,
                                            "path": "small.txt"}, token)
            assert out.ok, out.error_message
            reads = [ns / 1000 for ns in out.result["latencies_ns"]][n_reads // 10:]
        unix = raw_unix_roundtrip(n_reads)[n_reads // 10:]
        results = {
            "cold_invoke_ms": {"p50": statistics.median(cold), "p99": pct(cold, 0.99),
                               "n": len(cold)},
            "raw_docker_run_ms": {"p50": statistics.median(raw), "p99": pct(raw, 0.99),
                                  "n": len(raw)},
            "cold_invoke_ratio_p50": statistics.median(cold) / statistics.median(raw),
            "readfile_roundtrip_us": {"p50": statistics.median(reads), "p99": pct(reads, 0.99),
                                      "n": len(reads)},
            "raw_unix_roundtrip_us": {"p50": statistics.median(unix), "p99": pct(unix, 0.99),
                                      "n": len(unix)},
            "readfile_ratio_p50": statistics.median(reads) / statistics.median(unix),
            "machine": {"cpus": os.cpu_count(), "docker": client.version().get("Version")},
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def table(r: dict[str, Any]) -> str:
    rows = [
        ("cold invoke, trivial tool (ms)", r["cold_invoke_ms"],
         "raw docker run, same image + flags", r["raw_docker_run_ms"],
         r["cold_invoke_ratio_p50"]),
        ("mediated ReadFile round trip (µs)", r["readfile_roundtrip_us"],
         "raw Unix socket 100 B echo", r["raw_unix_roundtrip_us"], r["readfile_ratio_p50"]),
    ]
    header = (f"{'figure':<36} {'p50':>9} {'p99':>9}   {'floor (same run)':<32} {'p50':>9} "
              f"{'p99':>9} {'ratio':>7}")
    lines = [header, "-" * 120]
    for name, w, base, b, ratio in rows:
        lines.append(f"{name:<36} {w['p50']:>9.1f} {w['p99']:>9.1f}   {base:<32} "
                     f"{b['p50']:>9.1f} {b['p99']:>9.1f} {ratio:>6.2f}x")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(prog="writ-bench")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    p.add_argument("--cold", type=int, default=int(os.environ.get("WRIT_BENCH_COLD", "20")))
    p.add_argument("--reads", type=int, default=2000)
    p.add_argument("--out", default="bench-results.json")
    args = p.parse_args()
    r = run(args.cold, args.reads)
    Path(args.out).write_text(json.dumps(r, indent=2) + "\n")
    print(json.dumps(r, indent=2) if args.json else table(r))
    print(f"\n(written to {args.out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
