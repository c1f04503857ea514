"""Integration fixtures, by lifecycle stage: probe image -> running broker -> token."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from writ import images
from writ._proto import audit_pb2
from writ._proto import capabilities_pb2 as caps
from writ.audit import read_records
from writ.broker.server import Broker, BrokerConfig
from writ.client import Client
from writ.manifests import parse_grant, parse_manifest

from tests.conftest import TEST_LABEL, TEST_RUN_ID

HERE = Path(__file__).resolve().parent
PROBE_IMAGE = "writ-tool/probe:latest"


@pytest.fixture(scope="session")
def probe_image(docker_client: Any, base_image: str) -> str:
    images.build_tool(docker_client, HERE / "probe", say=lambda _m: None)
    return PROBE_IMAGE


class RunningBroker:
    """A real broker on its own event loop thread, with its state in a temp dir."""

    def __init__(self, state_dir: Path, workspace: Path, docker_client: Any,
                 **config: Any) -> None:
        self.state_dir = state_dir
        self.workspace = workspace
        self.config = BrokerConfig(state_dir=state_dir, workspaces={"demo": workspace},
                                   extra_labels={TEST_LABEL: TEST_RUN_ID}, **config)
        self.broker = Broker(self.config, docker_client)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("broker did not start")
        self.operator = Client(self.config.control_socket)
        self.agent = Client(self.config.agent_socket)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.broker.start())
        self._ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        self.operator.close()
        self.agent.close()
        asyncio.run_coroutine_threadsafe(self.broker.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    # -- helpers for tests -----------------------------------------------------------------
    def audit(self) -> list[audit_pb2.AuditEvent]:
        return list(read_records(self.config.audit_path))

    def audit_since(self, seq: int) -> list[audit_pb2.AuditEvent]:
        return [e for e in self.audit() if e.seq > seq]

    def last_seq(self) -> int:
        events = self.audit()
        return events[-1].seq if events else 0

    def register(self, manifest: dict[str, Any]) -> None:
        self.operator.register_tool(parse_manifest(manifest))

    def mint(self, grant: dict[str, Any], ttl_s: int = 600) -> str:
        return self.operator.mint_token(parse_grant(grant), ttl_s).token


PROBE_MANIFEST: dict[str, Any] = {
    "name": "probe", "image": PROBE_IMAGE, "description": "attack probe (tests only)",
    "files": [{"paths": ["**"], "ops": ["READ", "LIST", "STAT"]}],
    "limits": {"memory_mb": 128, "cpus": 0.5, "pids": 64, "timeout_s": 20, "tmp_mb": 8},
}
PROBE_GRANT: dict[str, Any] = {
    "tools": [{"name": "probe"}],
    "files": [{"id": "reports", "workspace": "demo", "paths": ["reports/**"],
               "ops": ["READ", "LIST"]}],
}


def make_workspace(root: Path) -> Path:
    ws = root / "workspace"
    (ws / "reports").mkdir(parents=True)
    (ws / "private").mkdir()
    (ws / "reports" / "q3.csv").write_text("region,revenue\nnorth,1\n")
    (ws / "private" / "secret.txt").write_text("TOP-SECRET-CONTENT\n")
    return ws


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
           probe_image: str) -> Iterator[RunningBroker]:
    # Short path: Unix socket paths are limited to 108 bytes.
    root = Path(shutil.os.path.realpath(tmp_path_factory.mktemp("b")))  # type: ignore[attr-defined]
    rb = RunningBroker(root / "state", make_workspace(root), docker_client)
    rb.register(PROBE_MANIFEST)
    yield rb
    rb.stop()


@pytest.fixture
def probe_token(broker: RunningBroker) -> str:
    return broker.mint(PROBE_GRANT)


def probe(broker: RunningBroker, token: str, action: str, **args: Any) -> Any:
    """Run the probe tool; return its result (asserting the invocation itself succeeded)."""
    out = broker.agent.invoke("probe", {"action": action, **args}, token)
    assert out.ok, f"probe failed: {out.error_code}: {out.error_message}\n{out.output!r}"
    return out.result["result"]


def wait_for(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


__all__ = ["PROBE_GRANT", "PROBE_MANIFEST", "RunningBroker", "caps", "make_workspace", "probe",
           "wait_for"]
