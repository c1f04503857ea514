"""The launcher against a real Docker engine: it refuses what it did not ask for, and leaves
no container behind, whether the invocation ends, is cancelled, or the broker died earlier."""

from __future__ import annotations

import ast
import io
import re
import time
from collections.abc import Iterator
from typing import Any

import docker.errors
import grpc
import pytest
from writ import images
from writ._proto import audit_pb2, control_pb2
from writ.client import WritError
from writ.launcher._spec import LABEL_BROKER, LABEL_INVOCATION, LABEL_MANAGED, SOCKET_MOUNT

from tests.conftest import TEST_LABEL, TEST_RUN_ID

from .conftest import PROBE_GRANT, RunningBroker, wait_for

VOLUME_TOOL = "volume-tool"


def containers_of(docker_client: Any, invocation_id: str) -> list[Any]:
    return docker_client.containers.list(
        all=True, filters={"label": f"{LABEL_INVOCATION}={invocation_id}"})


def row(e: audit_pb2.AuditEvent) -> tuple[str, str, str, str, str]:
    return (e.operation, audit_pb2.Decision.Name(e.decision), e.target, e.status, e.reason)


def records(broker: RunningBroker, seq: int, operation: str) -> list[audit_pb2.AuditEvent]:
    return [e for e in broker.audit_since(seq) if e.operation == operation]


# -- an image that declares a volume ---------------------------------------------------------
@pytest.fixture(scope="module")
def volume_image(docker_client: Any, base_image: str) -> Iterator[str]:
    """A throwaway tool image FROM the base that declares ``VOLUME /data``: Docker would
    mount an anonymous host volume there that the launcher never asked for."""
    tag = f"writ-tool/volume-{TEST_RUN_ID}:latest"
    dockerfile = (f"FROM {images.BASE_IMAGE}\nVOLUME /data\n"
                  'CMD ["python3", "-c", "pass"]\n').encode()
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, forcerm=True,
                               pull=False, labels={TEST_LABEL: TEST_RUN_ID})
    yield tag
    docker_client.images.remove(tag, force=True)


def test_image_declaring_a_volume_is_refused_and_leaves_nothing(
        broker: RunningBroker, docker_client: Any, volume_image: str) -> None:
    broker.register({"name": VOLUME_TOOL, "image": volume_image})
    token = broker.mint({"tools": [{"name": VOLUME_TOOL}]})
    volumes_before = {v.name for v in docker_client.volumes.list()}
    seq = broker.last_seq()
    with pytest.raises(WritError) as info:
        broker.agent.invoke(VOLUME_TOOL, {}, token)

    (invoke,) = records(broker, seq, "tool.invoke")
    inv = invoke.invocation_id
    assert row(invoke) == ("tool.invoke", "ALLOW", VOLUME_TOOL, "OK",
                           f"invoke tool '{VOLUME_TOOL}' allowed by grant.tools[0]")
    socket_dir = str(broker.config.run_dir / inv)
    match = re.fullmatch(
        r"container launch failed at step 'verify': Mounts: asked for (\[.*?\]), "
        r"Docker applied (\[.*\])", info.value.details)
    assert info.value.code == "INTERNAL" and match, info.value.details
    assert ast.literal_eval(match[1]) == [(socket_dir, SOCKET_MOUNT, False)]
    applied = ast.literal_eval(match[2])
    # Docker added a writable anonymous volume beside our socket dir.
    volume_root = f"{docker_client.info()['DockerRootDir']}/volumes/"
    anonymous = [m for m in applied if m[1] == "/data"]
    assert len(anonymous) == 1 and anonymous[0][0].startswith(volume_root), applied
    assert anonymous[0][2] is True
    assert sorted(applied) == sorted([(socket_dir, SOCKET_MOUNT, False), anonymous[0]])

    # The container is gone, and its anonymous volume with it.
    assert containers_of(docker_client, inv) == []
    assert {v.name for v in docker_client.volumes.list()} == volumes_before
    # The end of the invocation is recorded with the launcher's status.
    (end,) = records(broker, seq, "tool.exit")
    assert row(end) == ("tool.exit", "ALLOW", VOLUME_TOOL, "INTERNAL",
                        f"INTERNAL: {info.value.details}")
    assert end.invocation_id == inv


# -- orphans of an earlier run ---------------------------------------------------------------
def _sleeper(docker_client: Any, broker_id: str) -> Any:
    return docker_client.containers.run(
        images.BASE_IMAGE, ["sleep", "300"], detach=True, network_mode="none",
        labels={LABEL_MANAGED: "true", LABEL_BROKER: broker_id, TEST_LABEL: TEST_RUN_ID})


def test_reap_removes_this_brokers_orphans_and_nothing_else(broker: RunningBroker,
                                                            docker_client: Any) -> None:
    broker_id = broker.broker.broker_id
    orphan = _sleeper(docker_client, broker_id)
    stopped = docker_client.containers.create(
        images.BASE_IMAGE, ["true"], network_mode="none",
        labels={LABEL_MANAGED: "true", LABEL_BROKER: broker_id, TEST_LABEL: TEST_RUN_ID})
    neighbour = _sleeper(docker_client, "another-broker")
    try:
        reaped = broker.broker.launcher.reap(broker_id)
        assert sorted(reaped) == sorted([orphan.id, stopped.id])
        for gone in (orphan, stopped):
            with pytest.raises(docker.errors.NotFound):
                docker_client.containers.get(gone.id)
        # Another broker's container (same engine) is not this broker's to remove.
        neighbour.reload()
        assert neighbour.status == "running"
        assert broker.broker.launcher.reap(broker_id) == []
    finally:
        neighbour.remove(force=True)


# -- the agent goes away mid-run -------------------------------------------------------------
def _invoke_request(token: str, seconds: int = 60) -> control_pb2.InvokeRequest:
    return control_pb2.InvokeRequest(tool="probe", token=token,
                                     input_json=f'{{"action": "sleep", "seconds": {seconds}}}')


def _assert_cancelled_and_cleaned(broker: RunningBroker, docker_client: Any, seq: int,
                                  inv: str) -> None:
    assert wait_for(lambda: containers_of(docker_client, inv) == [], timeout=15), \
        containers_of(docker_client, inv)
    def ends() -> list[audit_pb2.AuditEvent]:
        return [e for e in records(broker, seq, "tool.exit") if e.invocation_id == inv]

    assert wait_for(lambda: ends() != [], timeout=5)
    assert [row(e) for e in ends()] == [
        ("tool.exit", "ALLOW", "probe", "CANCELLED", "cancelled: the agent went away")]
    assert not (broker.config.run_dir / inv).exists()


def test_agent_cancelling_invoke_removes_the_container(broker: RunningBroker,
                                                       docker_client: Any) -> None:
    token = broker.mint(PROBE_GRANT)
    seq = broker.last_seq()
    call = broker.agent.stub.Invoke(_invoke_request(token))
    first = next(call)
    assert first.WhichOneof("event") == "started"
    inv = first.started.invocation_id
    assert [c.id for c in containers_of(docker_client, inv)] == [first.started.container_id]
    call.cancel()
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    assert (info.value.code(), info.value.details()) == (  # type: ignore[attr-defined]
        grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
    _assert_cancelled_and_cleaned(broker, docker_client, seq, inv)


def test_agent_deadline_mid_run_removes_the_container(broker: RunningBroker,
                                                      docker_client: Any) -> None:
    token = broker.mint(PROBE_GRANT)
    seq = broker.last_seq()
    events = broker.agent.invoke_stream("probe", {"action": "sleep", "seconds": 60}, token,
                                        timeout=4)
    first = next(events)
    assert first.WhichOneof("event") == "started"
    inv = first.started.invocation_id
    with pytest.raises(WritError) as info:
        next(events)
    # grpc's own wording for a deadline that passes mid-stream.
    assert (info.value.code, info.value.details) == ("DEADLINE_EXCEEDED",
                                                     "Stream removed (Deadline Exceeded)")
    _assert_cancelled_and_cleaned(broker, docker_client, seq, inv)


def test_agent_deadline_during_launch_leaves_no_container(broker: RunningBroker,
                                                          docker_client: Any) -> None:
    # The agent gives up while the launcher is still creating and verifying the container:
    # whatever the launcher makes after that must still be removed.
    token = broker.mint(PROBE_GRANT)
    seq = broker.last_seq()
    with pytest.raises(WritError) as info:
        broker.agent.invoke("probe", {"action": "sleep", "seconds": 60}, token, timeout=0.15)
    assert (info.value.code, info.value.details) == ("DEADLINE_EXCEEDED", "Deadline Exceeded")
    assert wait_for(lambda: records(broker, seq, "tool.invoke") != [], timeout=5)
    (invoke,) = records(broker, seq, "tool.invoke")
    inv = invoke.invocation_id
    # Give a launch that outlived the call time to finish, then look.
    time.sleep(3)
    _assert_cancelled_and_cleaned(broker, docker_client, seq, inv)


def test_process_check_refuses_a_host_bind_mount(docker_client: Any, base_image: str,
                                                 tmp_path: Any) -> None:
    """The post-start check reads what the process really sees (/proc/<pid>/mountinfo): a
    host directory mounted by any means, here a bind Docker was asked for directly, is
    refused even though the config check was bypassed."""
    from writ.errors import HardeningMismatch
    from writ.launcher import Launcher

    c = docker_client.containers.run(
        base_image, ["sleep", "30"], detach=True, network_mode="none",
        volumes={str(tmp_path): {"bind": "/data", "mode": "ro"}},
        labels={TEST_LABEL: TEST_RUN_ID})
    try:
        c.reload()
        with pytest.raises(HardeningMismatch) as info:
            Launcher._verify_mounts(int(c.attrs["State"]["Pid"]), c.id)
        assert info.value.field == "mount /data"
        assert "no host mount" in info.value.details
    finally:
        c.remove(force=True)
