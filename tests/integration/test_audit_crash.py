"""A real `writ serve` process, SIGKILLed while eight clients keep it writing audit records:
no acknowledged record is lost, the chain verifies, and the restarted broker continues it
(cutting off, with evidence, a line a write left half done)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from writ.audit import read_checkpoint_file, read_records, sidecar_path, verify_log
from writ.client import Client, WritError
from writ.manifests import parse_grant
from writ.security import keys

GRANT = parse_grant({"tools": [{"name": "probe"}]})


class Serve:
    """`python -m writ.cli serve` as a child process; stdout drained in a thread."""

    def __init__(self, state_dir: Path, *flags: str) -> None:
        self.state_dir = state_dir
        cmd = [sys.executable, "-m", "writ.cli", "--state-dir", str(state_dir), "serve",
               "--checkpoint-every", "40", *flags]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.output: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if "writ broker ready" in line:
                break
        else:
            raise RuntimeError(f"broker exited with {self.proc.wait()}: {''.join(self.output)}")
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def operator(self) -> Client:
        return Client(self.state_dir / "control.sock", timeout=10)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


@pytest.fixture
def state_dir(docker_client: Any) -> Iterator[Path]:
    # Short path: Unix socket paths are limited to 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="wcrash"))
    yield path / "state"
    shutil.rmtree(path, ignore_errors=True)


def hammer(serve: Serve, writers: int,
           seconds: float) -> tuple[list[str], list[str], list[threading.Thread]]:
    """Mint tokens from ``writers`` threads until the broker dies or time runs out.
    Returns (token ids the broker acknowledged, errors seen, the threads)."""
    acked: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def writer() -> None:
        with serve.operator() as client:
            while time.monotonic() < deadline:
                try:
                    token_id = client.mint_token(GRANT, 60).token_id
                except WritError as err:
                    with lock:
                        errors.append(err.code)
                    return
                with lock:
                    acked.append(token_id)

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    for t in threads:
        t.start()
    return acked, errors, threads


def test_sigkill_mid_write_loses_no_acknowledged_record(state_dir: Path) -> None:
    serve = Serve(state_dir)
    acked, errors, threads = hammer(serve, writers=8, seconds=30)
    # Let the writers get going, then kill the broker in the middle of its writes.
    deadline = time.monotonic() + 20
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(acked) >= 300, f"only {len(acked)} mints acknowledged: {''.join(serve.output)}"
    serve.kill()
    for t in threads:
        t.join(15)
    assert errors and set(errors) <= {"UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED"}
    acknowledged = set(acked)

    log = state_dir / "audit.jsonl"
    v = verify_log(log)
    # Either the chain is intact, or the only damage is a last line the kill cut short.
    assert v.ok or v.torn_tail, v.problem
    good = log.read_bytes()[: v.good_bytes]
    minted = {json.loads(line)["token_id"] for line in good.decode().splitlines()
              if json.loads(line).get("operation") == "token.mint"}
    lost = acknowledged - minted
    assert not lost, f"{len(lost)} acknowledged mint(s) missing from the log"
    in_flight = len(minted) - len(acknowledged)
    assert in_flight >= 0  # written, maybe durable, never acknowledged: allowed

    # Make the worst case certain: a write the kill cut in half.
    if not v.torn_tail:
        with open(log, "ab") as f:
            f.write(b'{"actor":"operator","decision":"ALLOW","grant_id":"ab')
    torn_at = verify_log(log).good_bytes

    # The restarted broker cuts the torn line off (kept beside the log), says so in the
    # chain, and continues it.
    serve = Serve(state_dir)
    try:
        with serve.operator() as client:
            after = client.mint_token(GRANT, 60).token_id
    finally:
        serve.stop()
    assert (state_dir / f"audit.jsonl.torn-{torn_at}").exists()
    records = list(read_records(log))
    recover = [r for r in records if r.operation == "audit.recover"]
    assert len(recover) == 1 and f"at byte {torn_at}" in recover[0].reason
    assert {r.token_id for r in records if r.operation == "token.mint"} >= acknowledged | {after}

    # Verified as an outsider would: the public checkpoint key, the sidecar checkpoint.
    public = keys.load_public(state_dir / "audit-checkpoint.key")
    anchor = read_checkpoint_file(sidecar_path(log))
    final = verify_log(log, keys={keys.key_id(public): public}, anchor=anchor)
    assert final.ok, final.problem
    assert final.signed_through == final.last_seq  # the shutdown checkpoint is last
    assert len(final.checkpoints) >= len(acknowledged) // 40
    cli = subprocess.run([sys.executable, "-m", "writ.cli", "--state-dir", str(state_dir),
                          "audit", "verify"], capture_output=True, text=True, check=False)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "chain intact" in cli.stdout


def test_broker_refuses_to_start_on_a_truncated_log(state_dir: Path) -> None:
    """Deleting the tail after a checkpoint is caught: the sidecar checkpoint lies past the
    end of the log."""
    serve = Serve(state_dir)
    try:
        with serve.operator() as client:
            for _ in range(5):
                client.mint_token(GRANT, 60)
    finally:
        serve.stop()  # signs a last checkpoint
    log = state_dir / "audit.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-3]))
    proc = subprocess.run([sys.executable, "-m", "writ.cli", "--state-dir", str(state_dir),
                           "serve"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "truncated: a checkpoint signed at" in proc.stdout + proc.stderr
    assert f"but the log ends at seq {len(lines) - 3}" in proc.stdout + proc.stderr
