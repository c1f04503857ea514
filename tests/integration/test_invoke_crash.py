"""A real `writ serve` with a warm pool, SIGKILLed while agents keep calling a tool: every
call whose Started event reached its agent has its tool.invoke ALLOW on disk (the record
is chained at the decision and made durable before Started leaves the broker), and the
restarted broker removes the containers the dead one left and closes each call it had
allowed with a tool.exit, so the log holds an end for every allowed call."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from writ._proto import audit_pb2
from writ.audit import read_records, verify_log
from writ.client import Client, Started, WritError
from writ.manifests import parse_grant, parse_manifest

from .conftest import PROBE_MANIFEST
from .test_audit_crash import Serve, state_dir  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("probe_image")
GRANT = parse_grant({"tools": [{"name": "probe"}]})


def agents(serve: Serve, token: str, count: int,
           stop: threading.Event) -> tuple[list[str], list[threading.Thread]]:
    """``count`` agents calling the probe back to back until ``stop`` or the broker dies.
    Returns (invocation ids whose Started event arrived, the threads)."""
    started: list[str] = []
    lock = threading.Lock()

    def agent() -> None:
        with Client(serve.state_dir / "agent.sock", timeout=60) as client:
            while not stop.is_set():
                try:
                    for event in client.stream("probe", {"action": "env"}, token):
                        if isinstance(event, Started):
                            with lock:
                                started.append(event.invocation_id)
                except WritError:
                    return

    threads = [threading.Thread(target=agent) for _ in range(count)]
    for t in threads:
        t.start()
    return started, threads


def long_call(serve: Serve, token: str) -> Iterator[Started]:
    """A call that sleeps past the kill; yields its Started event."""
    with Client(serve.state_dir / "agent.sock", timeout=60) as client:
        try:
            for event in client.stream("probe", {"action": "sleep", "seconds": 60}, token):
                if isinstance(event, Started):
                    yield event
        except WritError:
            return


def test_sigkill_mid_calls_keeps_every_started_record_and_restart_closes_them(
        state_dir: Path, docker_client: Any) -> None:  # noqa: F811 - the fixture
    serve = Serve(state_dir, "--warm-per-tool", "2")
    with serve.operator() as operator:
        operator.register_tool(parse_manifest(PROBE_MANIFEST))
        token = operator.mint_token(GRANT, 600).token
    sleeper = long_call(serve, token)
    sleeping = next(sleeper)  # in its container, asleep
    running = sleeping.invocation_id
    stop = threading.Event()
    started, threads = agents(serve, token, 4, stop)
    deadline = time.monotonic() + 120
    while len(started) < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(started) >= 12, f"only {len(started)} calls started: {''.join(serve.output)}"
    serve.kill()  # at whatever point the agents' calls are: claim, launch, run, reply
    stop.set()
    for t in threads:
        t.join(30)
    sleeper.close()

    log = state_dir / "audit.jsonl"
    v = verify_log(log)
    assert v.ok or v.torn_tail, v.problem
    good = log.read_bytes()[: v.good_bytes].decode().splitlines()
    records = [line for line in good if '"tool.invoke"' in line and '"ALLOW"' in line]
    invoked = {inv for inv in [running, *started] for line in records if inv in line}
    missing = {running, *started} - invoked
    assert not missing, f"Started reached the agent before its tool.invoke was durable: " \
                        f"{sorted(missing)}"

    # The dead broker's containers are still there, the sleeper's among them.
    assert docker_client.containers.list(all=True, filters={"id": sleeping.container_id})

    # Two rows the crash could leave besides: a call whose end was recorded just before
    # the kill (its row not yet updated), and one whose ALLOW never reached the disk.
    finished = next(e.invocation_id for e in read_records(log) if e.operation == "tool.exit")
    with sqlite3.connect(state_dir / "state.db") as db:
        db.execute("UPDATE invocations SET status='running' WHERE id=?", (finished,))
        db.execute("INSERT INTO invocations (id, tool, token_id, grant_id, status, "
                   "started_at) VALUES ('ilost', 'probe', 't', 'g', 'starting', 'now')")

    serve = Serve(state_dir)
    try:
        assert any("an earlier run left running" in line for line in serve.output)
    finally:
        serve.stop()
    assert docker_client.containers.list(all=True, filters={"id": sleeping.container_id}) == []
    events = list(read_records(log))
    allowed = {e.invocation_id for e in events
               if e.operation == "tool.invoke" and e.decision == audit_pb2.ALLOW}
    ended = {e.invocation_id: e for e in events if e.operation == "tool.exit"}
    assert allowed - set(ended) == set(), "an allowed call without an end after restart"
    closed = ended[running]
    assert (closed.actor, closed.status) == ("broker", "ABORTED")
    assert closed.reason.startswith("interrupted: the broker stopped while the invocation ran")
    assert [e.invocation_id for e in events if e.operation == "tool.exit"].count(finished) == 1
    assert "ilost" not in ended  # never allowed durably: nothing ran, nothing to close
    with sqlite3.connect(state_dir / "state.db") as db:
        assert db.execute("SELECT id FROM invocations WHERE status NOT IN ('done', 'failed')"
                          ).fetchall() == []
    assert verify_log(log).ok
