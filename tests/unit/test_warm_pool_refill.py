"""When the warm pool refills: never next to the call that claimed a container while others
are ready (a launch beside a running call slows it), at once when the claim took the last
one, and REFILL_AFTER_S later when the claiming call runs long. Launches are faked: this
tests the pool's bookkeeping; tests/integration/test_warm_pool.py runs real containers."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from writ.broker import pool as pool_module
from writ.broker.pool import WarmPool, pool_limits
from writ.launcher import Launched
from writ.manifests import parse_manifest
from writ.state import ToolRecord

LAUNCH_S = 0.02


class FakeLauncher:
    def __init__(self) -> None:
        self.launched = 0
        self.destroyed: list[str] = []
        self._ids = itertools.count()

    def launch(self, spec: Any) -> Launched:
        time.sleep(LAUNCH_S)
        self.launched += 1
        return Launched(f"c{next(self._ids)}", 1, LAUNCH_S * 1000)

    def destroy(self, container_id: str) -> None:
        self.destroyed.append(container_id)


def make_pool(tmp_path: Path, per_tool: int) -> tuple[WarmPool, FakeLauncher, ToolRecord]:
    launcher = FakeLauncher()
    broker = SimpleNamespace(
        launcher=launcher, broker_id="b1",
        config=SimpleNamespace(run_dir=tmp_path, extra_labels={}),
        spawn=lambda coro: asyncio.ensure_future(coro))
    manifest = parse_manifest({"name": "t", "image": "writ-tool/t:latest",
                               "limits": {"memory_mb": 128, "timeout_s": 10}})
    tool = ToolRecord("t", "writ-tool/t:latest", "sha256:aa", manifest, "now")
    return WarmPool(broker, per_tool), launcher, tool  # type: ignore[arg-type]


async def filled(pool: WarmPool, tool: ToolRecord) -> None:
    pool.refill(tool)
    for _ in range(200):
        if pool.sizes().get(tool.name) == pool.per_tool:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"pool never filled: {pool.sizes()}")


def test_a_claim_leaving_containers_ready_does_not_launch_beside_the_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "REFILL_AFTER_S", 0.3)

    async def scenario() -> None:
        pool, launcher, tool = make_pool(tmp_path, 3)
        await filled(pool, tool)
        assert launcher.launched == 3
        assert pool.claim(tool, pool_limits(tool)) is not None
        await asyncio.sleep(0.15)  # the call runs: no launch beside it
        assert (launcher.launched, pool.sizes()["t"]) == (3, 2)
        await asyncio.sleep(0.4)  # still running past REFILL_AFTER_S: refilled now
        assert (launcher.launched, pool.sizes()["t"]) == (4, 3)
        await pool.close()

    asyncio.run(scenario())


def test_the_reply_refills_without_waiting(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "REFILL_AFTER_S", 30.0)

    async def scenario() -> None:
        pool, launcher, tool = make_pool(tmp_path, 2)
        await filled(pool, tool)
        assert pool.claim(tool, pool_limits(tool)) is not None
        pool.refill(tool)  # what the broker does once the call has its reply
        await asyncio.sleep(LAUNCH_S * 10)
        assert (launcher.launched, pool.sizes()["t"]) == (3, 2)
        await pool.close()

    asyncio.run(scenario())


def test_claiming_the_last_container_refills_at_once(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "REFILL_AFTER_S", 30.0)

    async def scenario() -> None:
        pool, launcher, tool = make_pool(tmp_path, 1)
        await filled(pool, tool)
        assert pool.claim(tool, pool_limits(tool)) is not None
        await asyncio.sleep(LAUNCH_S * 10)
        assert (launcher.launched, pool.sizes()["t"]) == (2, 1)
        await pool.close()

    asyncio.run(scenario())


def test_other_limits_get_no_pool_container(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool, launcher, tool = make_pool(tmp_path, 1)
        await filled(pool, tool)
        lower = pool_limits(tool)
        lower.memory_mb = 64
        assert pool.claim(tool, lower) is None
        assert pool.sizes()["t"] == 1  # untouched
        await pool.close()
        assert launcher.destroyed == ["c0"]

    asyncio.run(scenario())
