"""The broker process: state, keys, audit sink, launcher, and the gRPC servers.

    control.sock  (0600)  operator surface: every Control method
    agent.sock    (0600)  agent surface: ListTools, Invoke
    TCP (opt-in)          agent surface only
    run/<inv>/broker.sock one per invocation: the tool surface, for that container alone
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import ssl
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from .._proto import audit_pb2
from ..audit import AuditSink, checkpoint_timer, open_broker_sink, read_records
from ..budgets import Budgets
from ..core.tokens import UnverifiedToken, VerifiedToken
from ..errors import BrokerError, InvalidArgument, ResourceExhausted, TokenRevoked
from ..launcher import Launcher
from ..mediators._denylist import check_glob
from ..mediators._workspaces import DEFAULT_MAX_WRITE_BYTES, Workspaces
from ..mediators.net import DEFAULT_TIMEOUT_S, NetDeps
from ..mediators.payments import recover as recover_payments
from ..net.hosts import AddressPolicy, Lookup, Resolver
from ..payments import Ledger
from ..security.signing import Pinning
from ..state import State
from .control import ControlService
from .invocation import Invocation, Outcome
from .pool import WarmPool
from .rpc import generic_handler

log = logging.getLogger("writ.broker")
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; keep room for "broker.sock"


def default_state_dir() -> Path:
    env = os.environ.get("WRIT_STATE_DIR")
    return Path(env) if env else Path.home() / ".local/state/writ"


INTERRUPTED = "interrupted: the broker stopped while the invocation ran"


def _invocations_logged(path: Path, ids: set[str]) -> tuple[set[str], set[str]]:
    """Which of the invocation ``ids`` have a tool.invoke ALLOW, and which a tool.exit."""
    invoked: set[str] = set()
    exited: set[str] = set()
    if not path.exists():
        return invoked, exited
    for ev in read_records(path, live=True):
        if ev.invocation_id in ids:
            if ev.operation == "tool.invoke" and ev.decision == audit_pb2.ALLOW:
                invoked.add(ev.invocation_id)
            elif ev.operation == "tool.exit":
                exited.add(ev.invocation_id)
    return invoked, exited


@dataclass
class BrokerConfig:
    state_dir: Path = field(default_factory=default_state_dir)
    workspaces: dict[str, Path] = field(default_factory=dict)
    tcp: str | None = None              # "127.0.0.1:7411" serves the agent surface on TCP
    max_invocations: int = 8            # running at once
    max_queued: int = 64                # waiting for a slot; past that RESOURCE_EXHAUSTED
    extra_labels: dict[str, str] = field(default_factory=dict)  # on every container (tests)
    warm_per_tool: int = 0              # containers kept started ahead of time, per tool
    # Globs no tool may touch in any workspace, added to the built-in deny list
    # (writ.mediators._denylist.DEFAULT_DENY_GLOBS), which cannot be removed.
    deny_globs: list[str] = field(default_factory=list)
    max_write_bytes: int = DEFAULT_MAX_WRITE_BYTES  # largest single WriteFile
    # Strict mode: register and run only tools whose manifest a trusted key signed for the
    # image id the tag names (writ.security.signing).
    strict: bool = False
    trusted_keys: list[Path] = field(default_factory=list)   # Ed25519 public key files
    checkpoint_every: int = 1000        # sign the audit head after this many records ...
    checkpoint_interval_s: float = 60.0  # ... or after this long, if any came
    # Embedded ledger: the account payments are made from, and accounts opened at start
    # (name, minor units, currency) when absent; an existing account is left as it is.
    payer: str = "user"
    accounts: list[tuple[str, int, str]] = field(default_factory=list)
    # Mediated network: extra CA certificates the broker trusts for https (PEM); names the
    # operator pins to addresses (like /etc/hosts, and explicit enough to reach a private
    # address); the default time limit of one request; (tests) a stand-in for DNS whose
    # answers are checked like DNS answers.
    net_ca_file: Path | None = None
    net_hosts: dict[str, list[str]] = field(default_factory=dict)
    net_timeout_s: float = DEFAULT_TIMEOUT_S
    net_lookup: Lookup | None = None

    @property
    def control_socket(self) -> Path:
        return self.state_dir / "control.sock"

    @property
    def agent_socket(self) -> Path:
        return self.state_dir / "agent.sock"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def audit_path(self) -> Path:
        return self.state_dir / "audit.jsonl"

    def validate(self) -> None:
        if len(str(self.run_dir / "i0123456789abcdef" / "broker.sock")) > MAX_SOCKET_PATH:
            raise InvalidArgument(f"state dir {self.state_dir} is too long for Unix socket "
                                  "paths; choose a shorter --state-dir")
        for pattern in self.deny_globs:
            check_glob(pattern)
        if self.max_write_bytes <= 0:
            raise InvalidArgument("max_write_bytes must be positive")
        for name, path in self.workspaces.items():
            if not path.is_dir():
                raise InvalidArgument(f"workspace {name!r}: {path} is not a directory")


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class Broker:
    def __init__(self, config: BrokerConfig, docker_client: Any = None,
                 sink: AuditSink | None = None) -> None:
        config.validate()
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state = State(config.state_dir / "state.db")
        self.keyring = self.state.keyring()
        self.broker_id = self.state.broker_id()
        self.budgets = Budgets(config.state_dir / "state.db")
        self.ledger = Ledger(config.state_dir / "state.db")
        for name, amount, currency in config.accounts:
            self.ledger.open_account(name, amount, currency)
        self.revoked: set[str] = self.state.revoked()
        # Invocations in progress, with the block ids of their token (revocation stops them).
        self.running: dict[str, tuple[Invocation, frozenset[str]]] = {}
        # Verified tokens by their text: a token is immutable and its MAC binds its content,
        # so a second verification of the same text would give the same answer. Revocation
        # and expiry are still checked on every use.
        self._verified: dict[str, VerifiedToken] = {}
        self.pinning = Pinning.from_files(config.strict, config.trusted_keys,
                                          config.state_dir / "signatures")
        self.sink: AuditSink = sink or open_broker_sink(config.audit_path,
                                                        config.checkpoint_every)
        self._checkpoints: asyncio.Future[None] | None = None
        self.launcher = Launcher(docker_client)
        self.workspaces = Workspaces(config.workspaces, config.deny_globs,
                                     config.max_write_bytes,
                                     journal=config.state_dir / "pending-writes")
        self.net = NetDeps(Resolver(AddressPolicy(), config.net_hosts, config.net_lookup),
                           self.state.secret, _tls_context(config.net_ca_file),
                           config.net_timeout_s)
        self._servers: list[grpc.aio.Server] = []
        self._background: set[asyncio.Task[None]] = set()
        self.pool = WarmPool(self, config.warm_per_tool)
        self._slots = asyncio.Semaphore(config.max_invocations)
        self._queued = 0

    # -- tokens --------------------------------------------------------------------------
    def verify_token(self, text: str) -> tuple[UnverifiedToken, VerifiedToken]:
        """Parse, verify (cached) and check revocation.

        Raises:
            TokenInvalid: malformed or forged. AttenuationWidens: a block widens.
            TokenRevoked: the token or one it was narrowed from was revoked.
        """
        unverified = UnverifiedToken.parse(text)
        token = self._verified.get(text)
        if token is None:
            token = unverified.verify(self.keyring)
            if len(self._verified) >= 4096:
                self._verified.clear()
            self._verified[text] = token
        if self.revoked:
            hit = next((b for b in token.block_ids if b in self.revoked), None)
            if hit is not None:
                raise TokenRevoked(f"token revoked (block {hit})")
        return unverified, token

    def forget_token(self, text: str) -> None:
        """Drop a token that can never be presented again (bound to an ended invocation)
        from the verification cache, so it does not grow with every call."""
        self._verified.pop(text, None)

    def revoke(self, block_id: str, reason: str) -> None:
        self.state.revoke(block_id, reason)
        self.revoked.add(block_id)
        # A tool running under the revoked token (or one narrowed from it) is stopped now,
        # not when it next calls: its invocation ends PERMISSION_DENIED and its container
        # is removed like any other end.
        for inv, blocks in list(self.running.values()):
            if block_id in blocks and not inv.outcome.done():
                inv.outcome.set_result(Outcome(
                    False, code="PERMISSION_DENIED",
                    message=f"the token was revoked while the tool ran: {reason}"))

    def track(self, inv: Invocation, block_ids: tuple[str, ...]) -> None:
        """Note a running invocation and the block ids of the token it runs under."""
        self.running[inv.id] = (inv, frozenset(block_ids))

    def untrack(self, inv: Invocation) -> None:
        self.running.pop(inv.id, None)

    def rotate_key(self) -> None:
        self.keyring = self.state.rotate_key()

    # -- audit helpers -------------------------------------------------------------------
    def event(self, actor: str, rpc: str, operation: str, target: str) -> audit_pb2.AuditEvent:
        return audit_pb2.AuditEvent(actor=actor, method=f"/writ.v1.Control/{rpc}",
                                    operation=operation, target=target)

    async def record(self, ev: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        """Durably record (fsync) off the event loop. Raises AuditUnavailable."""
        return await asyncio.to_thread(self.sink.record, ev)

    def append(self, ev: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        """Chain a record of an operation with no effect outside the broker, on the event
        loop and without waiting for its write (the ordering rule in DESIGN.md, "Audit":
        it is durable before any later effect). Raises AuditUnavailable."""
        return self.sink.append(ev)

    async def sync(self) -> None:
        """Return once every record chained so far is durable: before anything a tool
        produced leaves the broker. Free when nothing waits. Raises AuditUnavailable."""
        if not self.sink.all_durable():
            await asyncio.to_thread(self.sink.sync)

    async def allow(self, ev: audit_pb2.AuditEvent) -> None:
        ev.decision, ev.status = audit_pb2.ALLOW, "OK"
        await self.record(ev)

    @contextlib.asynccontextmanager
    async def audited(self, ev: audit_pb2.AuditEvent) -> AsyncIterator[audit_pb2.AuditEvent]:
        """Record a denial for any BrokerError raised inside, unless one was recorded."""
        try:
            yield ev
        except BrokerError as err:
            if not ev.decision:
                ev.decision, ev.reason, ev.status = audit_pb2.DENY, err.details, err.code
                await self.record(ev)
            raise

    @contextlib.asynccontextmanager
    async def invocation_slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self._queued >= self.config.max_queued:
            raise ResourceExhausted(f"{self.config.max_invocations} invocations running and "
                                    f"{self._queued} queued; retry later")
        self._queued += 1
        try:
            await self._slots.acquire()
        finally:
            self._queued -= 1
        try:
            yield
        finally:
            self._slots.release()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run clean-up work after a reply; stop() waits for it."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- life ----------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Docker and fsync calls run in threads; one invocation holds one for its wait.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=32 + 4 *
                                                     self.config.max_invocations))
        reaped = await asyncio.to_thread(self.launcher.reap, self.broker_id)
        if reaped:
            log.warning("removed %d container(s) left by an earlier run", len(reaped))
        recovered = await recover_payments(self.record, self.ledger, self.config.audit_path)
        if recovered:
            log.warning("recorded the outcome of %d payment(s) left by an earlier run",
                        recovered)
        interrupted = await self.close_interrupted()
        if interrupted:
            log.warning("recorded the end of %d invocation(s) an earlier run left running",
                        interrupted)
        shutil.rmtree(self.config.run_dir, ignore_errors=True)
        self.config.run_dir.mkdir(mode=0o711, parents=True)
        control = ControlService(self)
        await self._serve(f"unix:{self.config.control_socket}", control, ("operator", "agent"))
        await self._serve(f"unix:{self.config.agent_socket}", control, ("agent",))
        for sock in (self.config.control_socket, self.config.agent_socket):
            os.chmod(sock, 0o600)
        if self.config.tcp:
            await self._serve(self.config.tcp, control, ("agent",))
        for tool in self.state.list_tools():
            self.pool.refill(tool)
        self._checkpoints = asyncio.ensure_future(
            checkpoint_timer(self.sink, self.config.checkpoint_interval_s))

    async def close_interrupted(self) -> int:
        """At start: invocations an earlier run left unfinished (it was killed or crashed
        mid-call). Their containers are gone (reaped just before); each tool.invoke ALLOW
        in the log without a tool.exit gets one, so every allowed call has its end.
        Returns how many were recorded."""
        rows = await asyncio.to_thread(self.state.unfinished_invocations)
        if not rows:
            return 0
        ids = {str(row["id"]) for row in rows}
        invoked, exited = await asyncio.to_thread(_invocations_logged,
                                                  self.config.audit_path, ids)
        count = 0
        for row in rows:
            inv_id = str(row["id"])
            if inv_id in invoked and inv_id not in exited:
                ev = audit_pb2.AuditEvent(
                    actor="broker", operation="tool.exit", target=str(row["tool"]),
                    tool=str(row["tool"]), invocation_id=inv_id,
                    token_id=str(row["token_id"]), grant_id=str(row["grant_id"]),
                    decision=audit_pb2.ALLOW, status="ABORTED",
                    reason=INTERRUPTED + (f"; container {str(row['container_id'])[:12]} "
                                          "removed at restart" if row["container_id"] else ""))
                await self.record(ev)
                count += 1
            # Without a durable tool.invoke the call never started: nothing to close.
            self.state.update_invocation(inv_id, "failed", error=INTERRUPTED)
        return count

    async def _serve(self, address: str, servicer: object, surfaces: tuple[str, ...]) -> None:
        if address.startswith("unix:"):
            Path(address[5:]).unlink(missing_ok=True)
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4 << 20)])
        server.add_generic_rpc_handlers([generic_handler("Control", servicer, surfaces)])
        server.add_insecure_port(address)
        await server.start()
        self._servers.append(server)

    async def stop(self) -> None:
        for server in self._servers:
            await server.stop(grace=2)
        self._servers.clear()
        await self.pool.close()
        await asyncio.gather(*list(self._background), return_exceptions=True)
        if self._checkpoints is not None:
            self._checkpoints.cancel()
        self.sink.close()  # a FileSink signs a last checkpoint
        self.workspaces.close()
        self.budgets.close()
        self.ledger.close()
        self.state.close()

    async def run_forever(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("broker %s serving %s", self.broker_id, self.config.control_socket)
        print(f"writ broker ready: operator {self.config.control_socket}, agent "
              f"{self.config.agent_socket}", flush=True)
        await stop.wait()
        await self.stop()
