"""Helpers for demos, benchmarks and tests that need a real broker process."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .client import Client


class BrokerProcess:
    def __init__(self, proc: subprocess.Popen[str], state_dir: Path) -> None:
        self.proc = proc
        self.state_dir = state_dir
        self.operator = Client(state_dir / "control.sock")
        self.agent = Client(state_dir / "agent.sock")


def _drain(stream: IO[str], echo: bool) -> None:
    for line in stream:
        if echo:
            print(f"  broker: {line.rstrip()}", flush=True)


@contextmanager
def broker_process(state_dir: Path, workspaces: dict[str, Path], echo: bool = True,
                   warm_per_tool: int = 0,
                   extra_args: Sequence[str] = ()) -> Iterator[BrokerProcess]:
    """Run `writ serve` as a child process until the block ends (then SIGTERM)."""
    cmd = [sys.executable, "-m", "writ.cli", "--state-dir", str(state_dir), "serve",
           *extra_args]
    if warm_per_tool:
        cmd += ["--warm-per-tool", str(warm_per_tool)]
    for name, path in workspaces.items():
        cmd += ["--workspace", f"{name}={path}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if echo:
            print(f"  broker: {line.rstrip()}", flush=True)
        if "writ broker ready" in line:
            break
    else:
        raise RuntimeError(f"broker exited with {proc.wait()} before it was ready")
    # Keep reading: a full pipe would block the broker at its next log line.
    threading.Thread(target=_drain, args=(proc.stdout, echo), daemon=True).start()
    bp = BrokerProcess(proc, state_dir)
    try:
        yield bp
    finally:
        bp.operator.close()
        bp.agent.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
