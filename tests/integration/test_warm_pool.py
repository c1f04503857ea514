"""The warm pool: containers started ahead of time hold no authority until claimed, are
exactly as hardened as cold ones, serve one call each, and are never reused."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from writ._proto import audit_pb2

from .conftest import PROBE_GRANT, PROBE_MANIFEST, RunningBroker, make_workspace, wait_for

POOL_SIZE = 2


@pytest.fixture(scope="module")
def warm_broker(tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
                probe_image: str) -> Iterator[RunningBroker]:
    root = Path(os.path.realpath(tmp_path_factory.mktemp("w")))
    rb = RunningBroker(root / "state", make_workspace(root), docker_client,
                       warm_per_tool=POOL_SIZE)
    rb.register(PROBE_MANIFEST)
    yield rb
    rb.stop()


def pool_containers(docker_client: Any, rb: RunningBroker) -> list[Any]:
    """Running containers of this broker that no invocation has claimed yet."""
    found = docker_client.containers.list(filters={"label": f"writ.broker={rb.broker.broker_id}"})
    return [c for c in found if c.labels.get("writ.invocation", "").startswith("w")]


def full_pool(docker_client: Any, rb: RunningBroker) -> list[Any]:
    assert wait_for(lambda: rb.broker.pool.sizes().get("probe") == POOL_SIZE, 60)
    return pool_containers(docker_client, rb)


def test_warm_invocation_is_served_from_the_pool_and_audited(
        warm_broker: RunningBroker, docker_client: Any) -> None:
    token = warm_broker.mint(PROBE_GRANT)
    ready = {c.id for c in full_pool(docker_client, warm_broker)}
    seq = warm_broker.last_seq()
    out = warm_broker.agent.invoke("probe", {"action": "read", "path": "reports/q3.csv"}, token)
    assert out.ok and out.result["result"] == {"text": "region,revenue\nnorth,1\n"}
    assert out.events[0].started.warm is True
    assert out.container_id in ready
    # Never reused: the container is destroyed after its one call, and the pool refills.
    assert wait_for(lambda: docker_client.containers.list(
        all=True, filters={"id": out.container_id}) == [], 30)
    assert wait_for(lambda: warm_broker.broker.pool.sizes().get("probe") == POOL_SIZE, 60)
    ops = [(e.operation, audit_pb2.Decision.Name(e.decision), e.status)
           for e in warm_broker.audit_since(seq) if e.invocation_id == out.invocation_id]
    assert wait_for(lambda: ("tool.exit", "ALLOW", "OK") in [
        (e.operation, audit_pb2.Decision.Name(e.decision), e.status)
        for e in warm_broker.audit_since(seq) if e.invocation_id == out.invocation_id], 30)
    assert ops[:2] == [("tool.invoke", "ALLOW", "OK"), ("file.read", "ALLOW", "OK")]


def test_a_long_call_does_not_hold_its_pool_slot_empty(warm_broker: RunningBroker,
                                                       docker_client: Any) -> None:
    # A claim that leaves containers ready refills after the call's reply, so a launch
    # does not slow the call down; a call still running REFILL_AFTER_S later refills then.
    token = warm_broker.mint(PROBE_GRANT)
    full_pool(docker_client, warm_broker)
    done = threading.Event()
    call = threading.Thread(target=lambda: (warm_broker.agent.invoke(
        "probe", {"action": "sleep", "seconds": 15}, token), done.set()))
    call.start()
    try:
        assert wait_for(lambda: warm_broker.broker.pool.sizes().get("probe") == POOL_SIZE - 1,
                        10)
        assert wait_for(lambda: warm_broker.broker.pool.sizes().get("probe") == POOL_SIZE, 12)
        assert not done.is_set()  # refilled while the call still ran
    finally:
        call.join(30)


def test_pool_container_holds_no_authority_before_it_is_claimed(
        warm_broker: RunningBroker, docker_client: Any) -> None:
    container = full_pool(docker_client, warm_broker)[0]
    probe = (
        "import json, os, socket\n"
        "out = {'env': sorted(k for k in os.environ if k.startswith('WRIT')),\n"
        "       'socket_dir': os.listdir('/run/writ')}\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect('/run/writ/broker.sock'); out['broker'] = 'connected'\n"
        "except OSError as e:\n"
        "    out['broker'] = e.strerror\n"
        "n = socket.socket(); n.settimeout(2)\n"
        "try:\n"
        "    n.connect(('1.1.1.1', 80)); out['net'] = 'connected'\n"
        "except OSError as e:\n"
        "    out['net'] = e.strerror\n"
        "print(json.dumps(out))\n")
    code, output = container.exec_run(["python3", "-c", probe], user="10001:10001")
    assert code == 0, output
    seen = json.loads(output)
    # No token, no socket to talk to, no network: nothing to act with, and nothing to
    # act on, until an invocation claims it.
    assert seen == {"env": ["WRIT_POOLED", "WRIT_SOCKET"], "socket_dir": [],
                    "broker": "No such file or directory", "net": "Network is unreachable"}


def test_pool_container_is_as_hardened_as_a_cold_one(warm_broker: RunningBroker,
                                                     docker_client: Any) -> None:
    container = full_pool(docker_client, warm_broker)[0]
    host = container.attrs["HostConfig"]
    assert (host["NetworkMode"], host["ReadonlyRootfs"], host["CapDrop"], host["Privileged"],
            host["CgroupnsMode"]) == ("none", True, ["ALL"], False, "private")
    assert "no-new-privileges" in host["SecurityOpt"]
    with open(f"/proc/{container.attrs['State']['Pid']}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    assert (status["Seccomp"].strip(), status["NoNewPrivs"].strip(),
            status["CapEff"].strip()) == ("2", "1", "0" * 16)


def test_a_dead_pool_container_is_skipped_not_used(warm_broker: RunningBroker,
                                                   docker_client: Any) -> None:
    token = warm_broker.mint(PROBE_GRANT)
    pool = full_pool(docker_client, warm_broker)
    for c in pool:
        c.kill()  # both warm containers die behind the broker's back
    out = warm_broker.agent.invoke("probe", {"action": "read", "path": "reports/q3.csv"}, token)
    assert out.ok
    assert out.events[0].started.warm is False  # fell back to a cold, freshly verified one
    assert out.container_id not in {c.id for c in pool}


def test_grant_lowering_memory_gets_a_cold_container(warm_broker: RunningBroker,
                                                     docker_client: Any) -> None:
    full_pool(docker_client, warm_broker)
    token = warm_broker.mint({**PROBE_GRANT, "limits": {"memory_mb": 64}})
    out = warm_broker.agent.invoke("probe", {"action": "read", "path": "reports/q3.csv"}, token)
    # A pool container runs with the manifest's limits; this call needs less memory.
    assert out.ok and out.events[0].started.warm is False


def test_stopping_the_broker_removes_its_pool(tmp_path: Path, docker_client: Any,
                                              probe_image: str) -> None:
    root = Path(os.path.realpath(tmp_path))
    rb = RunningBroker(root / "s", make_workspace(root), docker_client, warm_per_tool=1)
    try:
        rb.register(PROBE_MANIFEST)
        assert wait_for(lambda: rb.broker.pool.sizes().get("probe") == 1, 60)
        broker_id = rb.broker.broker_id
    finally:
        rb.stop()
    assert docker_client.containers.list(all=True,
                                         filters={"label": f"writ.broker={broker_id}"}) == []
    shutil.rmtree(root, ignore_errors=True)
