"""Agent- and operator-facing handlers: RegisterTool, ListTools, MintToken, Invoke (and, via
AuthorityService, Explain, RevokeToken, RotateKey)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .._proto import audit_pb2, control_pb2
from .._proto import capabilities_pb2 as caps
from ..audit import detail_json
from ..core.policy import ToolCall, decide
from ..core.tokens import UnverifiedToken, bind, mint
from ..errors import (
    BrokerError,
    CaveatUnmet,
    FailedPrecondition,
    InvalidArgument,
    LaunchFailed,
    PermissionDenied,
    ResourceExhausted,
    ToolNotFound,
)
from ..launcher import Launched, effective_limits
from ..manifests import check_grant, check_manifest
from ..methods import Method
from ..net.control import SecretsControl
from ..payments.control import PaymentsControl
from ..schemas import schema_problem, struct_schema
from ..security.signing import registration_detail
from ..state import ToolRecord
from .authority import AuthorityService, narrowing_report, token_ids
from .invocation import Invocation, Outcome
from .pool import Warm, make_spec, tool_env

LOGS_WAIT_S = 2.0  # for a tool that sent Finish to exit before its logs are read
log = logging.getLogger("writ.broker")

if TYPE_CHECKING:
    from .server import Broker

MAX_INPUT_BYTES = 256 * 1024
DEFAULT_TTL_S = 3600
MAX_TTL_S = 86400


def tool_info(rec: ToolRecord) -> control_pb2.ToolInfo:
    return control_pb2.ToolInfo(name=rec.name, image=rec.image, image_id=rec.image_id,
                                manifest=rec.manifest, registered_at=rec.registered_at)


def _check_input(text: str) -> tuple[str, dict[str, Any]]:
    if len(text.encode()) > MAX_INPUT_BYTES:
        raise InvalidArgument(f"input_json is larger than {MAX_INPUT_BYTES} bytes")
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"input_json is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("input_json must be a JSON object")
    return text or "{}", value


def _grant_limits(blocks: Any) -> caps.Limits:
    """The lowest limits any grant block sets (a narrowing can lower, never raise)."""
    out = caps.Limits()
    for block in blocks:
        if not block.HasField("grant"):
            continue
        for name in ("memory_mb", "cpus", "pids", "timeout_s", "tmp_mb"):
            v = getattr(block.grant.limits, name)
            if v > 0 and (getattr(out, name) == 0 or v < getattr(out, name)):
                setattr(out, name, v)
    return out


async def _launched_anyway(launch: asyncio.Future[Launched]) -> str:
    """The container a launch made after its caller was cancelled ("" if none).

    A thread cannot be stopped: the launch runs on and would leave a running container
    nobody removes. Wait for it, through further cancellations, so the caller can.
    """
    while not launch.done():
        try:
            await asyncio.wait({launch})
        except asyncio.CancelledError:
            continue
    if launch.cancelled() or launch.exception() is not None:
        return ""
    return launch.result().container_id


# Control methods that read and decide nothing, so they write no audit record, not even
# for a request that does not parse.
READ_ONLY = {"ListTools", "Explain", "ListApprovals", "ListAccounts", "ListSecrets"}


class ControlService(AuthorityService, PaymentsControl, SecretsControl):
    def __init__(self, broker: Broker) -> None:
        self.b = broker

    async def refuse_malformed(self, row: Method, context: Any, err: BrokerError) -> None:
        """A request that did not parse: recorded as refused (when the method records its
        decisions at all), then raised as INVALID_ARGUMENT."""
        if row.name not in READ_ONLY:
            actor = "operator" if row.surface == "operator" else "agent"
            ev = self.b.event(actor, row.name, row.operation, "")
            async with self.b.audited(ev):
                raise err
        raise err

    async def RegisterTool(self, req: control_pb2.RegisterToolRequest,
                           context: Any) -> control_pb2.ToolInfo:
        ev = self.b.event("operator", "RegisterTool", "tool.register", req.manifest.name)
        async with self.b.audited(ev):
            check_manifest(req.manifest)
            image_id = await asyncio.to_thread(self.b.launcher.image_id, req.manifest.image)
            signer = self.b.pinning.check_register(req.manifest, image_id, req.signature_json)
            ev.reason = f"image {req.manifest.image} pinned as {image_id}" + (
                f", manifest signed by {signer}" if signer else "")
            ev.detail = registration_detail(req.manifest, image_id, signer)
            await self.b.allow(ev)
        record = self.b.state.put_tool(req.manifest, image_id)
        self.b.pool.refill(record)
        return tool_info(record)

    async def ListTools(self, req: control_pb2.ListToolsRequest,
                        context: Any) -> control_pb2.ListToolsResponse:
        return control_pb2.ListToolsResponse(tools=[tool_info(t) for t in self.b.state.list_tools()])

    async def MintToken(self, req: control_pb2.MintTokenRequest,
                        context: Any) -> control_pb2.MintTokenResponse:
        ev = self.b.event("operator", "MintToken", "token.mint", "")
        async with self.b.audited(ev):
            grant = caps.Grant()
            grant.CopyFrom(req.grant)
            check_grant(grant)
            missing = sorted({sec.secret for r in grant.net for sec in r.secrets
                              if self.b.state.secret(sec.secret) is None})
            if missing:
                raise FailedPrecondition(f"grant attaches secret(s) {missing} the broker does "
                                         "not hold; store them first (`writ secrets set`)")
            unknown = {r.workspace for r in grant.files} - set(self.b.workspaces.names())
            if unknown:
                raise InvalidArgument(f"grant names unknown workspace(s) {sorted(unknown)}; this "
                                      f"broker serves {self.b.workspaces.names()}")
            now = int(time.time())
            if req.ttl_s > MAX_TTL_S:
                raise InvalidArgument(f"ttl_s {req.ttl_s} exceeds the maximum of {MAX_TTL_S}")
            if not grant.expires_at:
                grant.expires_at = now + (req.ttl_s or DEFAULT_TTL_S)
            if grant.expires_at <= now:
                raise InvalidArgument("grant.expires_at is in the past")
            if grant.expires_at > now + MAX_TTL_S:
                raise InvalidArgument(f"grant.expires_at is more than {MAX_TTL_S}s away")
            token, token_id = mint(self.b.keyring, grant, now)
            ev.detail = detail_json(grant)  # what was granted, for action-authority reports
            narrowed = narrowing_report(grant, self.b.state.list_tools())
            ev.token_id = ev.grant_id = ev.target = token_id
            ev.reason = (f"{len(grant.tools)} tool, {len(grant.files)} file, {len(grant.net)} "
                         f"net, {len(grant.pay)} pay rule(s); expires {grant.expires_at}"
                         + (f"; narrowed by manifests: {'; '.join(narrowed)}" if narrowed else ""))
            await self.b.allow(ev)
        return control_pb2.MintTokenResponse(token=token, token_id=token_id,
                                             expires_at=grant.expires_at, narrowed=narrowed)

    async def Invoke(self, req: control_pb2.InvokeRequest,
                     context: Any) -> AsyncIterator[control_pb2.InvokeEvent]:
        b = self.b
        now = time.time()
        ev = b.event("agent", "Invoke", "tool.invoke", req.tool)
        ev.tool = req.tool
        async with b.audited(ev):
            ev.token_id, ev.grant_id = token_ids(req.token)
            unverified, token = b.verify_token(req.token)
            if any(block.invocation_id for block in token.blocks):
                raise CaveatUnmet("this token is bound to an invocation; only its tool may "
                                  "use it")
            tool = b.state.get_tool(req.tool)
            if tool is None:
                raise ToolNotFound(req.tool)
            if b.pinning.strict:  # asks dockerd what the tag names now: off the loop
                await asyncio.to_thread(b.pinning.check_invoke, tool, b.launcher.image_id)
            input_json, args = _check_input(req.input_json)
            problem = schema_problem(struct_schema(tool.manifest.input_schema), args)
            if problem is not None:
                raise InvalidArgument(f"input does not match the input schema of "
                                      f"{tool.name!r}: {problem}")
            decision = decide(token.authority(tool.manifest), ToolCall(tool.name, args), now)
            if not decision.allowed:
                raise PermissionDenied(decision.reason)
            reserved = b.budgets.charge(decision.charges, calls=1)  # PermissionDenied if spent
            inv_id = "i" + secrets.token_hex(8)
            ev.invocation_id, ev.reason, ev.rule = inv_id, decision.reason, decision.rule
            try:
                # In the state first: a restart after a crash closes what it finds there
                # (Broker.close_interrupted), so every ALLOW gets its end.
                b.state.start_invocation(inv_id, tool.name, ev.token_id, ev.grant_id)
                # Chained now, durable before the Started event leaves the broker (the
                # ordering rule): the disk write overlaps the claim or the launch.
                ev.decision, ev.status = audit_pb2.ALLOW, "OK"
                b.append(ev)
            except BrokerError as err:
                b.budgets.release(reserved)
                b.state.update_invocation(inv_id, "failed", error=f"not run: {err.details}")
                raise
        admitted = False
        try:
            async with b.invocation_slot():
                admitted = True
                async for item in self._run(tool, unverified, token.blocks, inv_id,
                                            input_json, req.capture_output, token.block_ids):
                    yield item
        except (ResourceExhausted, asyncio.CancelledError) as exc:
            if not admitted:
                # Refused at a full queue, or abandoned while queued: nothing ran. Give the
                # budget back and close the allowed record, so every ALLOW has its end.
                b.budgets.release(reserved)
                await self._record_unrun(ev, exc)
            raise

    async def _run(self, tool: ToolRecord, unverified: UnverifiedToken, blocks: Any,
                   inv_id: str, input_json: str, capture_output: bool,
                   block_ids: tuple[str, ...]) -> AsyncIterator[control_pb2.InvokeEvent]:
        b = self.b
        t0 = time.perf_counter()
        limits = effective_limits(tool.manifest.limits, _grant_limits(blocks))
        warm = self._claim_verified(tool, limits)
        bound = bind(unverified, inv_id, tool.name, int(time.time()))
        inv = Invocation(inv_id, tool, input_json, unverified.token_id, unverified.grant_id,
                         warm.socket_dir if warm else b.config.run_dir / inv_id,
                         bound_token=bound, pooled=warm is not None)
        container_id = ""
        outcome: Outcome | None = None
        deferred = False
        b.track(inv, block_ids)
        try:
            await inv.open(b)
            if warm is not None:
                container_id = warm.launched.container_id
            else:
                container_id = await self._launch_cold(tool, inv, limits, bound)
            b.state.update_invocation(inv_id, "running", container_id)
            inv.ready.set()  # verified: only now does the socket answer
            # The tool.invoke record is durable before Started leaves the broker (what
            # the tool does is chained after it, so no effect of it can pass it).
            await b.sync()
            yield control_pb2.InvokeEvent(started=control_pb2.InvokeStarted(
                invocation_id=inv_id, container_id=container_id, warm=warm is not None,
                launch_ms=(time.perf_counter() - t0) * 1000))
            outcome, exited = await self._wait(inv, container_id, float(limits.timeout_s))
            # The tool's output and logs leave the broker next: every record of what it
            # did, reads whose records nobody waited for included, is durable first.
            await b.sync()
            if capture_output or not outcome.ok:
                if inv.outcome.done():
                    # It sent Finish and is exiting: once it has, dockerd has copied all
                    # it wrote (a Finish on the ops socket can beat the log copier).
                    await asyncio.wait({exited}, timeout=LOGS_WAIT_S)
                logs = await asyncio.to_thread(b.launcher.logs, container_id)
                if logs:
                    yield control_pb2.InvokeEvent(output=control_pb2.ToolOutput(data=logs))
            # A warm call's reply must not wait for container removal (~80 ms): the agent
            # has its result; removal and the closing audit record follow at once.
            deferred = warm is not None
            yield control_pb2.InvokeEvent(result=control_pb2.InvokeResult(
                ok=outcome.ok, output_json=outcome.output_json,
                error=control_pb2.ToolError(code=outcome.code, message=outcome.message)
                if not outcome.ok else None,
                duration_ms=(time.perf_counter() - t0) * 1000))
        except BrokerError as err:
            outcome = Outcome(False, code=err.code, message=err.details)
            deferred = False
            raise
        finally:
            b.untrack(inv)
            if warm is not None:
                # Refilled once the reply is out (see WarmPool.claim).
                b.pool.refill(tool)
            ending = self._end(inv, container_id, outcome)
            if deferred:
                b.spawn(ending)
            else:
                await ending

    def _claim_verified(self, tool: ToolRecord, limits: caps.Limits) -> Warm | None:
        """A warm container verified again just now (at launch it passed every check; it
        must still be running, unchanged, before it gets any authority), or None."""
        while (warm := self.b.pool.claim(tool, limits)) is not None:
            try:
                self.b.launcher.reverify(warm.launched)
                return warm
            except BrokerError as err:
                log.warning("discarding warm container %s: %s", warm.launched.container_id[:12],
                            err.details)
                self.b.pool.discard(warm)
        return None

    async def _launch_cold(self, tool: ToolRecord, inv: Invocation, limits: caps.Limits,
                           bound: str) -> str:
        b = self.b
        spec = make_spec(b, tool, inv.id, inv.socket_dir, limits,
                         tool_env(WRIT_TOKEN=bound, WRIT_INVOCATION=inv.id))
        launch = asyncio.ensure_future(asyncio.to_thread(b.launcher.launch, spec))
        try:
            launched = await asyncio.shield(launch)
        except asyncio.CancelledError:
            # The agent went away mid-launch: remove what the launch makes anyway.
            container_id = await _launched_anyway(launch)
            if container_id:
                await asyncio.to_thread(b.launcher.destroy, container_id)
            raise
        return launched.container_id

    async def _end(self, inv: Invocation, container_id: str, outcome: Outcome | None) -> None:
        if container_id:
            await asyncio.to_thread(self.b.launcher.destroy, container_id)
        await inv.close(self.b)
        await self._record_end(inv, outcome)

    async def _wait(self, inv: Invocation, container_id: str,
                    timeout: float) -> tuple[Outcome, asyncio.Future[int]]:
        """The tool's Finish, or its exit without one, or its wall time running out; and
        the future of the container's exit."""
        exited: asyncio.Future[int] = asyncio.ensure_future(
            asyncio.to_thread(self.b.launcher.wait, container_id, timeout + 5))
        return await self._outcome(inv, exited, timeout), exited

    async def _outcome(self, inv: Invocation, exited: asyncio.Future[int],
                       timeout: float) -> Outcome:
        waiting: set[asyncio.Future[Any]] = {inv.outcome, exited}
        done, _ = await asyncio.wait(waiting, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if inv.outcome in done:
            outcome = inv.outcome.result()
            if outcome.ok:
                try:
                    json.loads(outcome.output_json)
                except json.JSONDecodeError:
                    return Outcome(False, code="TOOL_ERROR", message="tool returned invalid JSON")
            return outcome
        if exited in done:
            try:
                code = exited.result()
            except Exception as exc:  # noqa: BLE001 - dockerd lost the container
                raise LaunchFailed("wait", str(exc)) from None
            return Outcome(False, code="TOOL_EXITED",
                           message=f"tool exited with code {code} without a result")
        return Outcome(False, code="DEADLINE_EXCEEDED",
                       message=f"tool exceeded its wall time of {timeout:g}s and was killed")

    async def _record_unrun(self, invoke: audit_pb2.AuditEvent, exc: BaseException) -> None:
        ev = self.b.event("agent", "Invoke", "tool.exit", invoke.tool)
        ev.tool, ev.invocation_id = invoke.tool, invoke.invocation_id
        ev.token_id, ev.grant_id = invoke.token_id, invoke.grant_id
        ev.decision = audit_pb2.ALLOW
        if isinstance(exc, ResourceExhausted):
            ev.status, ev.reason = exc.code, f"not run: {exc.details}"
        else:
            ev.status, ev.reason = "CANCELLED", "not run: the agent went away while queued"
        try:
            await self.b.record(ev)
        except BrokerError as err:
            log.error("could not record the end of %s: %s", invoke.invocation_id, err.details)
        # After the record: a crash between them leaves the row for close_interrupted.
        self.b.state.update_invocation(invoke.invocation_id, "failed", error=ev.reason)

    async def _record_end(self, inv: Invocation, outcome: Outcome | None) -> None:
        ev = self.b.event("agent", "Invoke", "tool.exit", inv.tool.name)
        ev.tool, ev.invocation_id = inv.tool.name, inv.id
        ev.token_id, ev.grant_id = inv.token_id, inv.grant_id
        ev.decision = audit_pb2.ALLOW
        if outcome is None:
            ev.reason, ev.status = "cancelled: the agent went away", "CANCELLED"
        elif outcome.ok:
            ev.reason, ev.status = "finished with a result", "OK"
        else:
            ev.reason, ev.status = f"{outcome.code}: {outcome.message}", outcome.code
        try:
            await self.b.record(ev)
        except BrokerError as err:
            # The invocation is over and its container gone; nothing is left to refuse.
            log.error("could not record the end of %s: %s", inv.id, err.details)
        # After the record: a crash between them leaves the row for close_interrupted.
        self.b.state.update_invocation(inv.id, "done" if outcome and outcome.ok else "failed",
                                       error=None if outcome and outcome.ok else ev.reason)
