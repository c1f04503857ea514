"""Warm pool: hardened containers started ahead of time, holding no authority.

A pool container is launched exactly like a cold one (same spec, same create -> verify ->
start -> verify steps) except that its socket directory is empty and it has no token: the
SDK loads the tool, then waits for a socket that does not exist yet. It can reach nothing:
no network, no host path, no broker. An invocation claims it by opening its server on
that socket and handing over the bound token in the Start reply; after the call the
container is destroyed, never reused, and the pool refills in the background, several
launches at a time: once the claiming call has its reply (or a second later), unless the
claim took the last ready container.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._proto import capabilities_pb2 as caps
from ..errors import BrokerError
from ..launcher import Launched, LaunchSpec, effective_limits
from ..launcher._seccomp import load_profile
from ..launcher._spec import SOCKET_MOUNT, SOCKET_NAME, TOOL_USER
from ..state import ToolRecord

if TYPE_CHECKING:
    from .server import Broker

log = logging.getLogger("writ.pool")
MAX_IDLE_S = 600.0  # recycle a pool container nobody claimed for this long
FILL_AT_ONCE = 4    # concurrent launches refilling one tool's pool
REFILL_AFTER_S = 1.0  # a claim leaving containers ready refills after this, or at the reply


@dataclass
class Warm:
    launched: Launched
    socket_dir: Path
    image_id: str
    limits: bytes        # serialized caps.Limits the container was created with
    created: float


def pool_limits(tool: ToolRecord) -> caps.Limits:
    """The limits a pool container of this tool runs with: the manifest's alone."""
    return effective_limits(tool.manifest.limits, caps.Limits())


def tool_env(socket: str = f"{SOCKET_MOUNT}/{SOCKET_NAME}", **extra: str) -> dict[str, str]:
    return {"WRIT_SOCKET": socket, **extra}


def make_spec(broker: Broker, tool: ToolRecord, label_id: str, socket_dir: Path,
              limits: caps.Limits, env: dict[str, str]) -> LaunchSpec:
    """The one LaunchSpec shape for cold and warm containers alike."""
    return LaunchSpec.create(
        image=tool.image, image_id=tool.image_id, invocation_id=label_id,
        broker_id=broker.broker_id, socket_dir=socket_dir, limits=limits,
        seccomp_json=load_profile(), env=env, extra_labels=broker.config.extra_labels)


def make_socket_dir(path: Path) -> None:
    uid, gid = (int(x) for x in TOOL_USER.split(":"))
    # 0700 and owned by the tool's uid: only that container's user (and root) may
    # connect. The dir is bind-mounted into one container alone.
    path.mkdir(mode=0o700, parents=False)
    os.chown(path, uid, gid)


class WarmPool:
    def __init__(self, broker: Broker, per_tool: int) -> None:
        self.b = broker
        self.per_tool = per_tool
        self._ready: dict[str, deque[Warm]] = {}
        self._filling: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def enabled_for(self, tool: ToolRecord) -> bool:
        return self.per_tool > 0 and not self._closed

    def claim(self, tool: ToolRecord, limits: caps.Limits) -> Warm | None:
        """A ready container of this tool whose limits equal ``limits`` (a grant that
        lowers memory or CPU cannot use a container made with the manifest's), or None.
        The caller re-verifies the container before giving it any authority."""
        if not self.enabled_for(tool):
            return None
        ready = self._ready.get(tool.name)
        wanted = pool_limits(tool)
        wanted.timeout_s = limits.timeout_s  # wall time is the broker's timer, not Docker's
        if limits.SerializeToString(deterministic=True) != wanted.SerializeToString(
                deterministic=True):
            return None
        while ready:
            warm = ready.popleft()
            if warm.image_id == tool.image_id and time.time() - warm.created < MAX_IDLE_S:
                if ready:
                    # Refilled when the claiming call has its reply (the caller calls
                    # refill), or after REFILL_AFTER_S for a long call: a launch next to
                    # a running call costs it ~8 ms on 2 cores.
                    asyncio.get_running_loop().call_later(REFILL_AFTER_S, self.refill, tool)
                else:
                    self.refill(tool)  # the last one: the next call must not go cold
                return warm
            self.discard(warm)
        self.refill(tool)
        return None

    def refill(self, tool: ToolRecord) -> None:
        """Top the tool's pool up in the background (one filler task per tool)."""
        if not self.enabled_for(tool):
            return
        task = self._filling.get(tool.name)
        if task is None or task.done():
            self._filling[tool.name] = asyncio.ensure_future(self._fill(tool))

    async def _fill(self, tool: ToolRecord) -> None:
        """Launch until the tool's pool is full, up to FILL_AT_ONCE launches at a time: a
        launch is mostly waiting on dockerd and runc, so a few overlap well, and a burst
        of claims is refilled in about one launch time instead of one after another."""
        ready = self._ready.setdefault(tool.name, deque())
        launching: set[asyncio.Future[Warm | None]] = set()
        failed = False
        while True:
            while (not (self._closed or failed) and len(launching) < FILL_AT_ONCE
                   and len(ready) + len(launching) < self.per_tool):
                launching.add(asyncio.ensure_future(self._launch_one(tool)))
            if not launching:
                return
            done, launching = await asyncio.wait(launching,
                                                 return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                warm = task.result()
                if warm is None:
                    failed = True  # try again on the next claim, not in a hot loop
                elif self._closed:
                    await self._destroy(warm)
                else:
                    ready.append(warm)

    async def _launch_one(self, tool: ToolRecord) -> Warm | None:
        pool_id = "w" + secrets.token_hex(8)
        socket_dir = self.b.config.run_dir / pool_id
        limits = pool_limits(tool)
        try:
            make_socket_dir(socket_dir)
            spec = make_spec(self.b, tool, pool_id, socket_dir, limits,
                             tool_env(WRIT_POOLED="1"))
            launched = await asyncio.to_thread(self.b.launcher.launch, spec)
        except Exception as exc:  # noqa: BLE001 - a background task: logged, retried later
            log.warning("warm pool for %s: %s", tool.name,
                        exc.details if isinstance(exc, BrokerError) else repr(exc))
            shutil.rmtree(socket_dir, ignore_errors=True)
            return None
        return Warm(launched, socket_dir, tool.image_id,
                    limits.SerializeToString(deterministic=True), time.time())

    def discard(self, warm: Warm) -> None:
        self.b.spawn(self._destroy(warm))

    async def _destroy(self, warm: Warm) -> None:
        await asyncio.to_thread(self.b.launcher.destroy, warm.launched.container_id)
        shutil.rmtree(warm.socket_dir, ignore_errors=True)

    async def close(self) -> None:
        # No cancel: a launch running in a thread cannot be stopped, and a cancelled
        # filler would leave its container behind. Fillers see _closed and clean up.
        self._closed = True
        await asyncio.gather(*self._filling.values(), return_exceptions=True)
        for ready in self._ready.values():
            while ready:
                await self._destroy(ready.popleft())

    def sizes(self) -> dict[str, int]:
        return {name: len(ready) for name, ready in self._ready.items()}
