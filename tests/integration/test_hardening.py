"""Escape attempts from inside a real tool container launched by the real broker.

Each test runs the probe tool (tests/integration/probe/tool.py) in a container the broker
launched for an invocation, asks it to try one way out of its box, and asserts the exact
errno it got. Invariant 1 of DESIGN.md: no network but loopback, no host mount but the
invocation's socket dir, no capabilities, no privilege gain, non-root, seccomp, bounded pids
and time, and the container gone when the invocation is.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from writ._proto import audit_pb2
from writ.client import InvokeOutcome
from writ.core.tokens import UnverifiedToken
from writ.launcher._spec import LABEL_INVOCATION

from .conftest import PROBE_MANIFEST, RunningBroker

SLOW_TOOL = "probe-slow"  # the probe image under a manifest with a 2 s wall time
SLOW_TIMEOUT_S = 2
GRANT: dict[str, Any] = {
    "tools": [{"id": "probe-rule", "name": "probe"}, {"id": "slow-rule", "name": SLOW_TOOL}],
    "files": [{"id": "reports", "workspace": "demo", "paths": ["reports/**"],
               "ops": ["READ", "LIST"]}],
}


@pytest.fixture(scope="module")
def slow_tool(broker: RunningBroker) -> str:
    broker.register({**PROBE_MANIFEST, "name": SLOW_TOOL,
                     "limits": {**PROBE_MANIFEST["limits"], "timeout_s": SLOW_TIMEOUT_S}})
    return SLOW_TOOL


@pytest.fixture
def token(broker: RunningBroker, slow_tool: str) -> str:
    return broker.mint(GRANT)


def run(broker: RunningBroker, token: str, action: str, tool: str = "probe",
        **args: Any) -> InvokeOutcome:
    """One invocation of the probe; asserts it finished with a result."""
    out = broker.agent.invoke(tool, {"action": action, **args}, token)
    assert out.ok, f"probe failed: {out.error_code}: {out.error_message}\n{out.output!r}"
    assert out.result["action"] == action
    return out


def containers_of(docker_client: Any, invocation_id: str) -> list[Any]:
    return docker_client.containers.list(
        all=True, filters={"label": f"{LABEL_INVOCATION}={invocation_id}"})


def exit_record(broker: RunningBroker, seq: int, invocation_id: str) -> tuple[str, ...]:
    ends = [e for e in broker.audit_since(seq)
            if e.operation == "tool.exit" and e.invocation_id == invocation_id]
    assert len(ends) == 1, ends
    e = ends[0]
    return (e.operation, audit_pb2.Decision.Name(e.decision), e.target, e.status, e.reason)


def bridge_gateway(docker_client: Any) -> str:
    """The default bridge's gateway: the host as seen from a container on that network."""
    config = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    return config.get("Gateway") or str(ipaddress.ip_network(config["Subnet"])[1])


# -- network ---------------------------------------------------------------------------------
def test_network_beyond_loopback_is_unreachable(broker: RunningBroker, token: str,
                                                docker_client: Any) -> None:
    gateway = bridge_gateway(docker_client)
    result = run(broker, token, "net_connect", targets=[
        ["1.1.1.1", 80], [gateway, 2375], [gateway, 22], ["127.0.0.1", 1]]).result["result"]
    unreachable = {"error": "ENETUNREACH", "message": "[Errno 101] Network is unreachable"}
    assert result == {
        "1.1.1.1:80": unreachable,
        f"{gateway}:2375": unreachable,   # the Docker API, if exposed on the bridge
        f"{gateway}:22": unreachable,
        # Control: loopback exists and answers (nothing listens), so the failures above
        # are the missing route, not a broken socket layer.
        "127.0.0.1:1": {"error": "ECONNREFUSED", "message": "[Errno 111] Connection refused"},
    }


def test_raw_socket_is_refused(broker: RunningBroker, token: str) -> None:
    result = run(broker, token, "raw_socket").result["result"]
    assert result == {"error": "EPERM", "message": "[Errno 1] Operation not permitted"}


# -- filesystem ------------------------------------------------------------------------------
def test_root_filesystem_is_read_only_and_only_tmp_is_writable(broker: RunningBroker,
                                                               token: str) -> None:
    result = run(broker, token, "write_rootfs").result["result"]
    assert result == {
        path: {"error": "EROFS", "message": f"[Errno 30] Read-only file system: '{path}'"}
        for path in ("/etc/writ-probe", "/opt/tool/x", "/usr/bin/x")
    } | {"/tmp/ok": {"written": True}}


# Kernel filesystems Docker sets up under /proc, /sys and /dev: no host data behind them.
KERNEL_FS = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"}
DOCKER_FILES = ("/etc/resolv.conf", "/etc/hostname", "/etc/hosts")


def test_no_host_directory_is_mounted_but_the_invocation_socket_dir(
        broker: RunningBroker, token: str, docker_client: Any) -> None:
    out = run(broker, token, "mounts")
    mounts = out.result["result"]
    by_target: dict[str, dict[str, str]] = {}
    for m in mounts:
        assert m["target"] not in by_target, f"{m['target']} is mounted twice: {mounts}"
        by_target[m["target"]] = m

    def mode(target: str) -> str:
        return by_target[target]["options"].split(",")[0]

    # The image, read-only.
    assert (by_target["/"]["fstype"], mode("/")) == ("overlay", "ro")
    # The one host directory: this invocation's own socket dir, read-only.
    assert (by_target["/run/writ"]["source_root"], mode("/run/writ")) == (
        str(broker.config.run_dir / out.invocation_id), "ro")
    # Docker's generated per-container files, from this container's own directory, read-only.
    container_dir = f"{docker_client.info()['DockerRootDir']}/containers/{out.container_id}"
    for target in DOCKER_FILES:
        assert (by_target[target]["source_root"], mode(target)) == (
            f"{container_dir}/{target.rsplit('/', 1)[1]}", "ro")
    # /tmp: a fresh tmpfs where nothing can be executed.
    tmp = by_target["/tmp"]
    assert (tmp["fstype"], tmp["source_root"]) == ("tmpfs", "/")
    assert {"rw", "nosuid", "nodev", "noexec"} <= set(tmp["options"].split(","))
    # Everything else: kernel filesystems and Docker's masks (/dev/null over /proc/keys...).
    for target in sorted(set(by_target) - {"/", "/run/writ", "/tmp", *DOCKER_FILES}):
        m = by_target[target]
        assert target.startswith(("/proc", "/sys", "/dev")), m
        assert m["fstype"] in KERNEL_FS, m
        if m["fstype"] == "tmpfs":
            assert m["source_root"] in ("/", "/null"), m


def test_host_paths_are_not_visible(broker: RunningBroker, token: str) -> None:
    host = ["/work", "/work/main", "/root/.local", "/var/run/docker.sock", "/run/docker.sock",
            "/var/lib/docker", str(broker.state_dir), str(broker.config.audit_path),
            str(broker.workspace), str(broker.workspace / "private/secret.txt")]
    result = run(broker, token, "host_paths", paths=[*host, "/run/writ/broker.sock"])
    assert result.result["result"] == {p: False for p in host} | {
        "/run/writ/broker.sock": True}  # control: the probe does see what is there


# -- privileges ------------------------------------------------------------------------------
def test_tool_holds_no_capabilities_and_cannot_become_root(broker: RunningBroker,
                                                           token: str) -> None:
    result = run(broker, token, "caps").result["result"]
    assert result == {
        "CapEff": "0" * 16, "CapPrm": "0" * 16, "CapBnd": "0" * 16, "CapAmb": "0" * 16,
        "NoNewPrivs": "1", "Seccomp": "2", "Uid": "10001\t10001\t10001\t10001",
        "setuid0": {"error": "EPERM", "message": "[Errno 1] Operation not permitted"},
        "chown": {"error": "EPERM", "message": "[Errno 1] Operation not permitted: '/tmp'"},
        "chroot": {"error": "EPERM", "message": "[Errno 1] Operation not permitted: '/tmp'"},
    }


def test_tool_env_holds_only_its_bound_token_and_no_host_secrets(
        broker: RunningBroker, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Secrets of the broker's own process (where the Docker client and keys live).
    monkeypatch.setenv("WRIT_TEST_HOST_SECRET", "host-secret-7f3a")
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    out = run(broker, token, "env_values")
    env = out.result["result"]
    proxies = ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "all_proxy", "http_proxy",
               "https_proxy"]
    assert sorted(env) == sorted(["HOME", "HOSTNAME", "LC_CTYPE", "PATH",
                                  "PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "PYTHONUNBUFFERED",
                                  "WRIT_INVOCATION", "WRIT_SOCKET", "WRIT_TOKEN", *proxies])
    # The proxy variables name the in-box forwarder on loopback, nothing else.
    assert {env[p].rsplit(":", 1)[0] for p in proxies} == {"http://127.0.0.1"}
    assert (env["WRIT_SOCKET"], env["WRIT_INVOCATION"]) == ("/run/writ/broker.sock",
                                                            out.invocation_id)
    assert not any(secret in value for value in env.values()
                   for secret in ("host-secret-7f3a", "docker.sock"))
    # The agent's token never enters the box: the tool holds a narrowing of it, bound to
    # this invocation and tool, useless anywhere else.
    assert not any(token in value for value in env.values())
    inside = UnverifiedToken.parse(env["WRIT_TOKEN"]).verify(broker.broker.keyring)
    inside.check_binding(out.invocation_id)
    assert inside.grant_id == UnverifiedToken.parse(token).grant_id
    assert [(b.invocation_id, b.tool) for b in inside.blocks] == [
        ("", ""), (out.invocation_id, "probe")]


# -- limits ----------------------------------------------------------------------------------
def test_pids_limit_stops_a_thread_bomb(broker: RunningBroker, token: str) -> None:
    result = run(broker, token, "threads", max=1000).result["result"]
    assert result["error"] == "can't start new thread"
    # The manifest's pids limit (64) counts every thread in the container, tini and
    # grpc's included, so the bomb stops below it.
    assert 0 < result["started"] < PROBE_MANIFEST["limits"]["pids"], result


def test_tool_past_its_wall_time_is_killed_with_deadline_exceeded(
        broker: RunningBroker, token: str, docker_client: Any) -> None:
    seq = broker.last_seq()
    out = broker.agent.invoke(SLOW_TOOL, {"action": "sleep", "seconds": 60}, token)
    message = f"tool exceeded its wall time of {SLOW_TIMEOUT_S}s and was killed"
    assert (out.ok, out.error_code, out.error_message) == (False, "DEADLINE_EXCEEDED", message)
    assert SLOW_TIMEOUT_S <= out.duration_ms / 1000 < SLOW_TIMEOUT_S + 5
    assert containers_of(docker_client, out.invocation_id) == []
    assert exit_record(broker, seq, out.invocation_id) == (
        "tool.exit", "ALLOW", SLOW_TOOL, "DEADLINE_EXCEEDED", f"DEADLINE_EXCEEDED: {message}")


def test_grant_limit_narrows_the_manifest_wall_time(broker: RunningBroker,
                                                    docker_client: Any) -> None:
    # The probe's manifest allows 20 s; a grant can lower that, never raise it.
    narrow = broker.mint({**GRANT, "limits": {"timeout_s": SLOW_TIMEOUT_S}})
    out = broker.agent.invoke("probe", {"action": "sleep", "seconds": 60}, narrow)
    assert (out.ok, out.error_code, out.error_message) == (
        False, "DEADLINE_EXCEEDED",
        f"tool exceeded its wall time of {SLOW_TIMEOUT_S}s and was killed")
    assert containers_of(docker_client, out.invocation_id) == []


def test_tool_exiting_without_finish_yields_tool_exited(broker: RunningBroker, token: str,
                                                        docker_client: Any) -> None:
    seq = broker.last_seq()
    out = broker.agent.invoke("probe", {"action": "exit_silently", "code": 3}, token)
    message = "tool exited with code 3 without a result"
    assert (out.ok, out.error_code, out.error_message) == (False, "TOOL_EXITED", message)
    assert containers_of(docker_client, out.invocation_id) == []
    assert exit_record(broker, seq, out.invocation_id) == (
        "tool.exit", "ALLOW", "probe", "TOOL_EXITED", f"TOOL_EXITED: {message}")


def test_container_is_removed_after_a_successful_invocation(broker: RunningBroker, token: str,
                                                            docker_client: Any) -> None:
    seq = broker.last_seq()
    out = run(broker, token, "env")
    assert out.container_id
    assert containers_of(docker_client, out.invocation_id) == []
    assert docker_client.containers.list(all=True, filters={"id": out.container_id}) == []
    assert exit_record(broker, seq, out.invocation_id) == (
        "tool.exit", "ALLOW", "probe", "OK", "finished with a result")
    assert not (broker.config.run_dir / out.invocation_id).exists()  # socket dir gone too
