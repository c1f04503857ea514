"""The one decision function.

``decide(authority, op, now)`` answers whether an operation is allowed. Authority is a
stack of layers (the tool's manifest, the user's grant, every attenuation); an operation
is allowed only when every layer that speaks to its kind has a rule allowing it. Anything
unclear denies: an unknown operation type, a layer with no matching rule, a grant that is
not yet valid or has expired. The function does no I/O and reads no clock.

Stateful limits (call counts, byte and spend budgets) cannot be judged without state, so
an allowed decision lists the ``charges`` the caller must reserve atomically (budgets.py)
before acting; one exhausted charge turns the decision into a denial there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import unquote

from .._proto import capabilities_pb2 as caps
from .._proto import token_pb2
from ..errors import PermissionDenied
from .matchers import check_args, glob_regex, host_matches, path_matches, port_allowed

__all__ = ["Authority", "Charge", "Decision", "FileAccess", "Layer", "NetRequest", "Operation",
           "Payment", "ToolCall", "decide", "glob_regex"]


_OP_NAMES = {v: caps.FileOp.Name(v) for v in caps.FileOp.values()}
_FILE_OPS = frozenset(v for v in _OP_NAMES if v != caps.FILE_OP_UNSPECIFIED)


# -- operations ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolCall:
    """Invoking a registered tool with a JSON object as input."""

    tool: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"invoke tool {self.tool!r}"


@dataclass(frozen=True)
class FileAccess:
    """One file operation on a clean workspace-relative path ("" is the root)."""

    workspace: str
    path: str
    op: int  # caps.FileOp value

    def describe(self) -> str:
        return f"{_OP_NAMES.get(self.op, self.op)} {self.workspace}:{self.path or '.'}"


@dataclass(frozen=True)
class NetRequest:
    """One HTTP request; host lower-case and IDNA-encoded, path starting with "/"."""

    scheme: str
    host: str
    port: int
    method: str
    path: str

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.method} {self.scheme}://{host}:{self.port}{self.path}"


@dataclass(frozen=True)
class Payment:
    """Moving ``amount`` minor units of ``currency`` to ``payee``."""

    payee: str
    amount: int
    currency: str

    def describe(self) -> str:
        return f"pay {self.amount} {self.currency} (minor units) to {self.payee!r}"


Operation = ToolCall | FileAccess | NetRequest | Payment


# -- decisions -----------------------------------------------------------------------------
class Charge(NamedTuple):
    """A budget the caller must reserve before acting. ``key`` names the counter (the
    layer's block id, the rule and the kind); ``kind`` says what amount to reserve:
    calls, requests, payments, files (1 each), read_bytes, write_bytes, net_bytes, spend
    (the operation's)."""

    key: str
    kind: str
    cap: int


class Decision(NamedTuple):
    allowed: bool
    reason: str
    rule: str = ""            # id of the grant rule that allowed it, "" on deny
    max_bytes: int = 0        # for reads: the tightest byte cap of the matching rules (0: none)
    charges: tuple[Charge, ...] = ()
    needs_approval: bool = False
    # Network only: the smallest per-request time limit of the matching rules (0: the
    # broker default) and the secrets the innermost grant layer's rule attaches to this
    # request, as (header, secret name) pairs.
    timeout_s: int = 0
    secrets: tuple[tuple[str, str], ...] = ()

    def raise_if_denied(self) -> None:
        if not self.allowed:
            raise PermissionDenied(self.reason)


def _deny(reason: str) -> Decision:
    return Decision(False, reason)


# -- authority -----------------------------------------------------------------------------
class Layer(NamedTuple):
    """One source of authority. ``tools`` is None for a manifest (it is one tool's ceiling
    and does not speak to which tools may run); ``block_id`` is the grant block's id, for
    people; ``budget_key`` names its budget counters (the chain-MAC key once verified; ""
    for a manifest, which keeps no budgets). Rule lists are the protobuf
    repeated fields themselves (read-only here): copying them is measurable on the hot
    path."""

    name: str
    files: Sequence[caps.FileRule]
    tools: Sequence[caps.ToolRule] | None
    net: Sequence[caps.NetRule] = ()
    pay: Sequence[caps.PayRule] = ()
    block_id: str = ""
    budget_key: str = ""

    @classmethod
    def of_grant(cls, name: str, grant: caps.Grant, block_id: str = "",
                 budget_key: str = "") -> Layer:
        return cls(name, grant.files, grant.tools, grant.net, grant.pay, block_id,
                   budget_key or block_id)

    @classmethod
    def of_manifest(cls, manifest: caps.Manifest) -> Layer:
        return cls(f"manifest of {manifest.name!r}", manifest.files, None, manifest.net,
                   manifest.pay)

    @property
    def is_manifest(self) -> bool:
        return self.tools is None


@dataclass(frozen=True)
class Authority:
    """Effective authority of a token, optionally capped by one tool's manifest."""

    layers: tuple[Layer, ...]
    not_before: int = 0
    expires_at: int = 0
    # Invocation ids the token is bound to (every binding must match the socket's).
    bindings: tuple[str, ...] = field(default=())

    @classmethod
    def from_blocks(cls, blocks: Sequence[token_pb2.TokenBlock],
                    manifest: caps.Manifest | None = None,
                    layer_keys: Sequence[str] = ()) -> Authority:
        """Layers of a token's blocks. ``layer_keys`` (from verification) name each grant
        layer's budget counters; without them (unverified use: display, tests) the block
        ids do."""
        layers = [Layer.of_manifest(manifest)] if manifest is not None else []
        not_before, expires = 0, 0
        bindings = []
        for i, block in enumerate(blocks):
            if block.HasField("grant"):
                g = block.grant
                name = "grant" if i == 0 else f"attenuation {i}"
                key = layer_keys[i] if i < len(layer_keys) else ""
                layers.append(Layer.of_grant(name, g, block.id.hex(), key))
                not_before = max(not_before, g.not_before)
                if g.expires_at:
                    expires = g.expires_at if not expires else min(expires, g.expires_at)
            if block.invocation_id:
                bindings.append(block.invocation_id)
        return cls(tuple(layers), not_before, expires, tuple(bindings))

    def with_manifest(self, manifest: caps.Manifest) -> Authority:
        return Authority((Layer.of_manifest(manifest), *self.layers), self.not_before,
                         self.expires_at, self.bindings)

    def workspaces(self) -> set[str]:
        """Workspaces every grant-type layer names (where the agent's files live)."""
        named: set[str] | None = None
        for layer in self.layers:
            if layer.is_manifest:
                continue
            ws = {r.workspace for r in layer.files}
            named = ws if named is None else named & ws
        return named or set()




# -- the decision --------------------------------------------------------------------------
def decide(authority: Authority, op: Operation, now: float) -> Decision:
    """Decide one operation.

    Args:
        authority: layers from manifest, grant and attenuations.
        op: a ToolCall, FileAccess, NetRequest or Payment; any other type is denied.
        now: the caller's clock, unix seconds.

    Returns:
        Decision: allowed with the deciding grant rule and the budgets to reserve, or
        denied naming the layer that refused and why.
    """
    if authority.not_before and now < authority.not_before:
        return _deny(f"grant is not valid before {authority.not_before}")
    if not authority.expires_at:
        return _deny("grant has no expiry; refusing an unbounded grant")
    if now >= authority.expires_at:
        return _deny(f"grant expired at {authority.expires_at}")
    handler = _HANDLERS.get(type(op))
    if handler is None:
        return _deny(f"unknown operation type {type(op).__name__}")
    return handler(authority, op)


# Each kind: does a rule allow the operation? None: yes. Otherwise a refusal detail worth
# showing (a rule about this tool whose arguments fail), or "" when the rule is simply
# about something else (another tool, host or path).
Matcher = Callable[[Any, Any, bool], str | None]


def _decide_kind(authority: Authority, op: Any, kind: str, match: Matcher,
                 budget: Callable[[Any], list[tuple[str, int]]]) -> Decision:
    """The common walk: every speaking layer needs a matching rule; manifests speak to
    files, net and pay but not tools; collect the grant layers' budgets. (Hot path: kept
    free of per-call allocations it does not need.)"""
    deciding = ""
    charges: list[Charge] = []
    spoke_grant = False
    tightest = 0
    approval = False
    secrets: tuple[tuple[str, str], ...] = ()
    for layer in authority.layers:
        rules = getattr(layer, kind)
        if rules is None:
            continue  # a manifest does not speak to which tools may run
        in_manifest = layer.tools is None
        hit, detail = -1, ""
        for i, rule in enumerate(rules):
            refusal = match(rule, op, in_manifest)
            if refusal is None:
                hit = i
                break
            detail = detail or refusal
        if hit < 0:
            verb = "does not allow" if kind == "tools" else "has no rule allowing"
            why = f": {detail}" if detail else ""
            return _deny(f"{layer.name} {verb} {op.describe()}{why}")
        rule = rules[hit]
        if kind == "files":
            # Conservative: the tightest per-read cap of every rule that matches.
            for r in rules[hit:]:
                if r.max_bytes and (tightest == 0 or r.max_bytes < tightest) and \
                        match(r, op, in_manifest) is None:
                    tightest = r.max_bytes
        elif kind == "pay":
            approval = approval or rule.approval_always or (
                0 < rule.approval_above < op.amount)
        elif kind == "net":
            if rule.timeout_seconds and (tightest == 0 or rule.timeout_seconds < tightest):
                tightest = rule.timeout_seconds
            if not in_manifest:
                # Innermost grant layer wins: attenuation never adds or widens a secret.
                secrets = tuple((s.header, s.secret) for s in rule.secrets
                                if op.path.startswith(s.path_prefix))
        if not in_manifest:
            spoke_grant = True
            rid = rule.id or f"{layer.name}.{kind}[{hit}]"
            deciding = deciding or rid
            for k, cap in budget(rule):
                if cap > 0:
                    charges.append(Charge(f"{layer.budget_key}/{rid}/{k}", k, cap))
    if not spoke_grant:
        return _deny("no grant speaks to tool invocation" if kind == "tools"
                     else f"no grant allows {op.describe()}")
    reason = f"{op.describe()} allowed by {deciding}"
    if approval:
        reason += " (needs a person's approval)"
    if kind == "net":
        return Decision(True, reason, deciding, 0, tuple(charges), False, tightest, secrets)
    return Decision(True, reason, deciding, tightest, tuple(charges), approval)


def _match_tool(rule: caps.ToolRule, op: ToolCall, _manifest: bool) -> str | None:
    if rule.name != op.tool:
        return ""
    return check_args(rule, dict(op.args)) or None


def _match_file(rule: caps.FileRule, op: FileAccess, in_manifest: bool) -> str | None:
    if op.op not in rule.ops:
        return ""
    if rule.workspace != op.workspace and not (in_manifest and rule.workspace == ""):
        return ""
    return None if path_matches(rule.paths, op.path) else ""


def _match_net(rule: caps.NetRule, op: NetRequest, _manifest: bool) -> str | None:
    if not host_matches(rule.host, op.host):
        return ""
    if op.scheme not in rule.schemes:
        return f"scheme {op.scheme!r} is not allowed for {rule.host}"
    if not port_allowed(rule, op.scheme, op.port):
        return f"port {op.port} is not allowed for {rule.host}"
    if op.method not in rule.methods:
        return f"method {op.method} is not allowed for {rule.host}"
    if _has_dot_segment(op.path):
        # "/v1/../admin" starts with "/v1/" but a server resolves it elsewhere.
        return f"path {op.path!r} has a '.' or '..' segment; refused for {rule.host}"
    if not any(op.path.startswith(p) for p in rule.path_prefixes):
        return f"path {op.path!r} is outside the allowed prefixes for {rule.host}"
    return None


def _has_dot_segment(path: str) -> bool:
    """A "." or ".." segment, also percent-encoded (even twice), behind a backslash, which
    some servers treat as "/", or followed by ";parameters" or a NUL, which some servers
    (Tomcat: "/v1/..;/admin") drop before resolving it."""
    for _ in range(3):
        if any(seg.split(";")[0].split("\x00")[0] in (".", "..")
               for seg in path.replace("\\", "/").split("/")):
            return True
        decoded = unquote(path)
        if decoded == path:
            return False
        path = decoded
    return True  # still encoded after three rounds: unclear, refuse


def _match_pay(rule: caps.PayRule, op: Payment, _manifest: bool) -> str | None:
    if op.payee not in rule.payees:
        return f"payee {op.payee!r} is not allowed"
    if op.currency != rule.currency:
        return f"currency must be {rule.currency}"
    if op.amount > rule.max_per_payment:
        return f"amount exceeds the per-payment maximum of {rule.max_per_payment}"
    return None


def _decide_tool(a: Authority, op: Any) -> Decision:
    return _decide_kind(a, op, "tools", _match_tool, lambda r: [("calls", r.max_calls)])


def _decide_file(a: Authority, op: Any) -> Decision:
    # An op outside the enum is unclear: deny it (and never let FileOp.Name raise on it).
    if op.op not in _FILE_OPS:
        return _deny(f"unknown file operation {op.op!r}")
    return _decide_kind(a, op, "files", _match_file, _FILE_BUDGETS.get(op.op, _no_budget))


def _no_budget(_rule: Any) -> list[tuple[str, int]]:
    return []


# Which cumulative budgets a file operation draws on (amounts come from the mediator).
_FILE_BUDGETS: dict[int, Callable[[Any], list[tuple[str, int]]]] = {
    caps.READ: lambda r: [("read_bytes", r.read_budget_bytes)],
    caps.WRITE: lambda r: [("write_bytes", r.write_budget_bytes)],
    caps.CREATE: lambda r: [("write_bytes", r.write_budget_bytes),
                            ("files", r.create_budget_files)],
    caps.MKDIR: lambda r: [("files", r.create_budget_files)],
}


def _decide_net(a: Authority, op: Any) -> Decision:
    return _decide_kind(a, op, "net", _match_net,
                        lambda r: [("requests", r.max_requests), ("net_bytes", r.max_bytes)])


def _decide_pay(a: Authority, op: Any) -> Decision:
    # Money is integers in minor units: anything else is unclear and denied.
    if isinstance(op.amount, bool) or not isinstance(op.amount, int) or op.amount <= 0:
        return _deny(f"amount {op.amount!r} is not a positive integer of minor units")
    return _decide_kind(a, op, "pay", _match_pay,
                        lambda r: [("spend", r.budget), ("payments", r.max_count)])


_HANDLERS: dict[type, Callable[[Authority, Any], Decision]] = {
    ToolCall: _decide_tool, FileAccess: _decide_file, NetRequest: _decide_net,
    Payment: _decide_pay,
}
