"""Bench section "audit": durable audit appends per second (FileSink.record: chain, write,
on disk before it returns) with 1 and 16 concurrent writers, each beside its floor from the
same run: a raw ``write`` + ``fdatasync`` loop of a line of the same size, in 1 and in 16
threads on one file (no hashing, no JSON: only the I/O every durable append must pay).

The sixteen-thread floor is the kernel's own group commit: ext4 lets concurrent fdatasync
calls share one journal commit. FileSink does the same in user space (one write for every
record queued meanwhile) and pays Python's per-record work under one lock besides.
Repetitions interleave Writ and floor so disk noise hits both alike.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .._proto import audit_pb2
from ..audit import FileSink, record_line
from ._common import Figure, p50, pct


def _event() -> audit_pb2.AuditEvent:
    """A typical mediated-read record."""
    return audit_pb2.AuditEvent(
        actor="tool:read-file", method="/writ.v1.ToolBroker/ReadFile", token_id="3f" * 16,
        grant_id="a7" * 16, tool="read-file", invocation_id="i0123456789abcdef",
        operation="file.read", target="demo:reports/q3.csv", decision=audit_pb2.ALLOW,
        reason="READ demo:reports/q3.csv allowed by reports", rule="reports", bytes=4096,
        status="OK")


def _line_size() -> int:
    ev = _event()
    ev.seq, ev.time, ev.prev_hash, ev.hash = 123456, "2026-11-22T10:00:00.000000Z", \
        "0" * 64, "0" * 64
    return len(record_line(ev).encode())


def _threads(n: int, seconds: float, step: Callable[[], None]) -> tuple[float, list[float]]:
    """Run ``step`` in ``n`` threads for ``seconds``: (operations per second, latencies µs)."""
    lat: list[list[float]] = [[] for _ in range(n)]
    start = threading.Barrier(n + 1)
    stop = [0.0]

    def worker(out: list[float]) -> None:
        start.wait()
        while time.perf_counter() < stop[0]:
            t0 = time.perf_counter_ns()
            step()
            out.append((time.perf_counter_ns() - t0) / 1000)

    threads = [threading.Thread(target=worker, args=(lat[i],)) for i in range(n)]
    for t in threads:
        t.start()
    stop[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    flat = [x for per in lat for x in per]
    return len(flat) / elapsed, flat


def _raw(path: Path, writers: int, seconds: float, size: int) -> tuple[float, list[float]]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    line = b"x" * (size - 1) + b"\n"

    def step() -> None:
        os.write(fd, line)
        os.fdatasync(fd)

    try:
        return _threads(writers, seconds, step)
    finally:
        os.close(fd)


def _writ(path: Path, writers: int, seconds: float) -> tuple[float, list[float]]:
    sink = FileSink(path)

    def step() -> None:
        sink.record(_event())

    try:
        return _threads(writers, seconds, step)
    finally:
        sink.close()


def run(quick: bool) -> list[Figure]:
    reps, seconds = (3, 0.5) if quick else (7, 1.5)
    size = _line_size()
    tmp = Path(tempfile.mkdtemp(prefix="writ-bench-audit-"))
    rates: dict[str, list[float]] = {k: [] for k in ("raw1", "writ1", "raw16", "writ16")}
    lat16: dict[str, list[float]] = {"raw16": [], "writ16": []}
    try:
        for rep in range(reps):
            for name, writers in (("raw1", 1), ("writ1", 1), ("raw16", 16), ("writ16", 16)):
                path = tmp / f"{name}-{rep}.jsonl"
                rate, lat = (_raw(path, writers, seconds, size) if name.startswith("raw")
                             else _writ(path, writers, seconds))
                rates[name].append(rate)
                if writers == 16:
                    lat16[name] += lat
                path.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: p50(v) for k, v in rates.items()}  # the median repetition
    one = med["writ1"] / med["raw1"]
    sixteen = med["writ16"] / med["raw16"]
    return [
        Figure("audit appends/s, durable, 1 writer", "ops/s", med["writ1"], None,
               f"write+fdatasync {size} B, 1 thread", med["raw1"], None,
               higher_is_better=True, target="ratio >= 0.7", met=one >= 0.7),
        Figure("audit appends/s, durable, 16 writers", "ops/s", med["writ16"], None,
               f"write+fdatasync {size} B, 16 threads", med["raw16"], None,
               higher_is_better=True, target="ratio >= 0.5, >= 2x 1 writer",
               met=sixteen >= 0.5 and med["writ16"] >= 2 * med["writ1"]),
        Figure("  append latency, 16 writers", "µs", p50(lat16["writ16"]),
               pct(lat16["writ16"], 0.99), "write+fdatasync, 16 threads",
               p50(lat16["raw16"]), pct(lat16["raw16"], 0.99)),
    ]
