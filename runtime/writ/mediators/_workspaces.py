"""Operator-registered workspaces, and the check every file operation starts with.

``guard`` is the first half of every file mediator's shape: build the operation (a clean
path), refuse what the deny list names, decide, and record a denial before raising. The
mediator then acts and records the allowed outcome.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .._proto import audit_pb2
from ..core.paths import clean_relpath
from ..core.policy import Decision, FileAccess, decide
from ..errors import BrokerError, InvalidArgument, PermissionDenied
from ._context import CallContext
from ._denylist import DenyList
from ._fsops import Journal, Slot, open_slot, openat2_beneath

T = TypeVar("T")

log = logging.getLogger("writ.files")
# The most one WriteFile may store, whatever the grant's budget: a tool that streams
# forever meets this cap (or its budget) and is refused.
DEFAULT_MAX_WRITE_BYTES = 1 << 30


@dataclass(frozen=True)
class Workspace:
    name: str
    root: Path
    fd: int  # O_PATH descriptor of the root, held for the broker's life
    # Serializes the check-and-commit step of every mutation in this workspace, so a tool
    # cannot race its own checks with concurrent calls (only host processes can).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, compare=False)


class Workspaces:
    def __init__(self, roots: dict[str, Path], deny_globs: Iterable[str] = (),
                 max_write_bytes: int = DEFAULT_MAX_WRITE_BYTES,
                 journal: Path | None = None) -> None:
        """Open every root and remove what writes in flight at a crash left behind.

        Raises:
            InvalidArgument: a deny glob is not a clean relative pattern.
            RuntimeError: openat2 is unavailable (Linux < 5.6).
        """
        self.deny = DenyList(deny_globs)
        self.max_write_bytes = max_write_bytes
        self._by_name: dict[str, Workspace] = {}
        for name, root in roots.items():
            fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self._by_name[name] = Workspace(name, root.resolve(), fd)
        self._probe_openat2()
        self.journal = Journal(journal)
        for removed in self.journal.sweep({n: w.fd for n, w in self._by_name.items()}):
            log.warning("removed %s, left by a write in flight when the broker stopped",
                        removed)

    def _probe_openat2(self) -> None:
        # SECURITY LIMITATION: containment relies on openat2 (Linux 5.6+). Without it the
        # broker refuses to serve files rather than fall back to check-then-open.
        for ws in self._by_name.values():
            try:
                os.close(openat2_beneath(ws.fd, "", os.O_PATH | os.O_DIRECTORY))
            except OSError as exc:
                raise RuntimeError(f"openat2 unavailable ({exc}); Writ needs Linux 5.6+") from exc
            return

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> Workspace:
        ws = self._by_name.get(name)
        if ws is None:
            raise PermissionDenied(f"workspace {name!r} is not served by this broker")
        return ws

    def close(self) -> None:
        for ws in self._by_name.values():
            os.close(ws.fd)


class Held:
    """Parent directories an operation holds open, and the thread work that uses them. On
    the way out, cancelled or not, that work is awaited before they are closed: a
    descriptor closed under a running thread could have its number reused by the time
    the thread's next call uses it."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []
        self._busy: asyncio.Future[Any] | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        self._busy = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        result: T = await asyncio.shield(self._busy)
        return result

    async def slot(self, root_fd: int, path: str) -> Slot:
        held = await self.run(open_slot, root_fd, path)
        self.slots.append(held)
        return held

    async def settle(self) -> Any:
        """Wait for thread work still running (cancelled callers stopped waiting for it);
        return its result, which nobody else will see, or None."""
        if self._busy is None or self._busy.done():
            return None
        await asyncio.wait([self._busy])
        return None if self._busy.exception() else self._busy.result()

    async def close(self) -> None:
        late = await self.settle()
        if isinstance(late, Slot):
            late.close()  # opened after we stopped waiting for it
        for held in self.slots:
            held.close()
        self.slots.clear()


def pick_workspace(ctx: CallContext, requested: str) -> str:
    if requested:
        return requested
    granted = ctx.authority.workspaces()
    if len(granted) != 1:
        raise InvalidArgument("name the workspace: the token grants "
                              f"{len(granted)} workspaces ({', '.join(sorted(granted))})")
    return next(iter(granted))


def check_denylist(workspaces: Workspaces, path: str) -> None:
    """Raises PermissionDenied naming the pattern when the deny list covers ``path``."""
    pattern = workspaces.deny.match(path)
    if pattern is not None:
        raise PermissionDenied(workspaces.deny.reason(path, pattern))


async def resolve(ctx: CallContext, ev: audit_pb2.AuditEvent, workspaces: Workspaces,
                  ws_name: str, path: str) -> tuple[str, str]:
    """The workspace and the clean path, checked against the deny list; a refusal is
    recorded, then raised. ``ev.target`` shows the request as given until the path is
    clean, then "workspace:path"."""
    try:
        ws_name = pick_workspace(ctx, ws_name)
        path = clean_relpath(path)
        ev.target = f"{ws_name}:{path}"
        check_denylist(workspaces, path)  # before decide: it holds whatever a grant says
    except BrokerError as err:
        await ctx.record_error(ev, err)
        raise
    return ws_name, path


async def deny(ctx: CallContext, ev: audit_pb2.AuditEvent, decision: Decision) -> None:
    """Record a denied decision, then raise it."""
    await ctx.record_decision(ev, decision)
    decision.raise_if_denied()


async def guard(ctx: CallContext, ev: audit_pb2.AuditEvent, workspaces: Workspaces,
                ws_name: str, path: str, op: int) -> tuple[str, str, Decision]:
    """Build the operation and decide it; a denial is recorded, then raised.

    Returns:
        (workspace name, clean path, allowed decision).
    Raises:
        BrokerError: a malformed or deny-listed path, or a decision that denies; each was
            recorded in ``ev`` first (``ev.decision`` is set).
    """
    ws_name, path = await resolve(ctx, ev, workspaces, ws_name, path)
    decision = decide(ctx.authority, FileAccess(ws_name, path, op), ctx.now)
    if not decision.allowed:
        await deny(ctx, ev, decision)
    return ws_name, path, decision


async def recorded(ctx: CallContext, ev: audit_pb2.AuditEvent, err: BrokerError) -> BrokerError:
    """Record ``err`` as the outcome unless a record was already written; return it."""
    if not ev.decision:
        await ctx.record_error(ev, err)
    return err
