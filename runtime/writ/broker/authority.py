"""Control handlers about authority itself: Explain (a dry run), RevokeToken, RotateKey;
and the report of where a grant asks for more than a tool's manifest allows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._proto import capabilities_pb2 as caps
from .._proto import control_pb2
from ..budgets import amounts, exhausted_reason
from ..core.describe import describe
from ..core.paths import clean_relpath
from ..core.policy import FileAccess, Operation, Payment, ToolCall, decide
from ..core.tokens import UnverifiedToken
from ..errors import BrokerError, InvalidArgument, ToolNotFound
from ..mediators.net import net_request
from ..state import ToolRecord

if TYPE_CHECKING:
    from .server import Broker

def token_ids(text: str) -> tuple[str, str]:
    """(token id, grant id) of a token for audit records, ("", "") if it does not parse."""
    try:
        u = UnverifiedToken.parse(text)
    except BrokerError:
        return "", ""
    return u.token_id, u.grant_id


def _operation(req: control_pb2.ExplainRequest, tool: ToolRecord | None) -> Operation:
    kind = req.WhichOneof("operation")
    if kind == "invoke":
        if tool is None:
            raise InvalidArgument("name the tool to explain an invocation")
        try:
            args = json.loads(req.invoke.input_json or "{}")
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"input_json is not valid JSON: {exc}") from None
        if not isinstance(args, dict):
            raise InvalidArgument("input_json must be a JSON object")
        return ToolCall(tool.name, args)
    if kind == "file":
        return FileAccess(req.file.workspace, clean_relpath(req.file.path), req.file.op)
    if kind == "net":
        return net_request(req.net.method, req.net.url)
    if kind == "pay":
        return Payment(req.pay.payee, req.pay.amount, req.pay.currency)
    raise InvalidArgument("give an operation: invoke, file, net or pay")


def _amounts_for(op: Operation) -> dict[str, int]:
    one = {"calls": 1, "requests": 1, "payments": 1, "files": 1}
    return {**one, "spend": op.amount} if isinstance(op, Payment) else one


class AuthorityService:
    b: Broker

    async def Explain(self, req: control_pb2.ExplainRequest,
                      context: Any) -> control_pb2.ExplainResponse:
        _, token = self.b.verify_token(req.token)
        tool = None
        if req.tool:
            tool = self.b.state.get_tool(req.tool)
            if tool is None:
                raise ToolNotFound(req.tool)
        authority = token.authority(tool.manifest if tool else None)
        op = _operation(req, tool)
        d = decide(authority, op, time.time())
        states = []
        allowed, reason = d.allowed, d.reason
        if d.allowed:
            used = self.b.budgets.used(c.key for c in d.charges)
            states = [control_pb2.BudgetState(key=c.key, kind=c.kind, used=used[c.key], cap=c.cap)
                      for c in d.charges]
            for r in amounts(d.charges, **_amounts_for(op)):
                if used[r.key] + r.amount > r.cap:
                    allowed, reason = False, exhausted_reason(r, used[r.key])
                    break
        return control_pb2.ExplainResponse(
            allowed=allowed, reason=reason, rule=d.rule if allowed else "",
            needs_approval=d.needs_approval and allowed, budgets=states,
            authority=describe(authority), token_id=token.token_id,
            secrets=[f"{header}: {name}" for header, name in d.secrets] if allowed else [])

    async def RevokeToken(self, req: control_pb2.RevokeTokenRequest,
                          context: Any) -> control_pb2.RevokeTokenResponse:
        ev = self.b.event("operator", "RevokeToken", "token.revoke", req.token_id)
        async with self.b.audited(ev):
            try:
                if len(bytes.fromhex(req.token_id)) != 16:
                    raise ValueError
            except ValueError:
                raise InvalidArgument(f"token_id {req.token_id!r} is not 32 hex digits") from None
            self.b.revoke(req.token_id.lower(), req.reason or "revoked by the operator")
            ev.token_id = req.token_id.lower()
            ev.reason = req.reason or "revoked by the operator"
            await self.b.allow(ev)
        return control_pb2.RevokeTokenResponse()

    async def RotateKey(self, req: control_pb2.RotateKeyRequest,
                        context: Any) -> control_pb2.RotateKeyResponse:
        ev = self.b.event("operator", "RotateKey", "key.rotate", "")
        async with self.b.audited(ev):
            self.b.rotate_key()
            ev.target = self.b.keyring.current
            ev.reason = f"new tokens are sealed with {self.b.keyring.current}"
            await self.b.allow(ev)
        return control_pb2.RotateKeyResponse(key_id=self.b.keyring.current,
                                             verifying_key_ids=self.b.keyring.key_ids())


def narrowing_report(grant: caps.Grant, tools: Iterable[ToolRecord]) -> list[str]:
    """Where the grant asks more of a named tool than its manifest allows."""
    by_name = {t.name: t for t in tools}
    out = []
    for rule in grant.tools:
        tool = by_name.get(rule.name)
        if tool is None:
            continue
        m = tool.manifest
        for i, f in enumerate(grant.files):
            ceiling = {op for mf in m.files if mf.workspace in ("", f.workspace) for op in mf.ops}
            extra = sorted(caps.FileOp.Name(op) for op in set(f.ops) - ceiling)
            if extra:
                out.append(f"{tool.name}: files[{i}] {'/'.join(extra)} exceeds its manifest; "
                           "narrowed")
        if grant.net and not m.net:
            out.append(f"{tool.name}: its manifest allows no network; net rules narrowed away")
        if grant.pay and not m.pay:
            out.append(f"{tool.name}: its manifest allows no payments; pay rules narrowed away")
    return out


