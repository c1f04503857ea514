"""Does an attenuation block only narrow? A pure, conservative check: a block whose rules
cannot be shown to lie within every earlier grant layer is refused, naming the field.

Intersection already makes widening ineffective (every block is one more layer every
operation must pass); refusing it as well turns a silent no-op into a precise error for
whoever built the token.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._proto import capabilities_pb2 as caps
from .matchers import DEFAULT_PORTS, glob_regex, host_matches

_WILDCARDS = set("*?")


def glob_within(child: str, parent: str) -> bool:
    """Every path ``child`` matches is matched by ``parent`` (provably; else False)."""
    if child == parent or parent == "**":
        return True
    if parent.endswith("/**") and not _WILDCARDS & set(parent[:-3]):
        # A literal folder: anything written beneath it stays beneath it.
        folder = parent[:-3]
        if child == folder or child.startswith(folder + "/"):
            return True
    # A literal child path is within a pattern that matches it.
    return not _WILDCARDS & set(child) and glob_regex(parent).fullmatch(child) is not None


def _cap_within(child: int, parent: int) -> bool:
    """0 means "no cap": a capped parent needs a capped child no larger."""
    return parent == 0 or 0 < child <= parent


def _tool_within(c: caps.ToolRule, p: caps.ToolRule) -> str:
    if c.name != p.name:
        return "other tool"
    missing = [a.arg for a in p.args if a not in c.args]
    if missing:
        return f"drops the constraint on argument {missing[0]!r}"
    if p.only_listed_args:
        if not c.only_listed_args:
            return "drops only_listed_args"
        # Under only_listed_args a constraint also admits its argument: naming one the
        # parent does not list lets through inputs the parent refuses.
        added = sorted({a.arg for a in c.args} - {a.arg for a in p.args})
        if added:
            return f"admits argument {added[0]!r}, which the parent's only_listed_args refuses"
    if not _cap_within(c.max_calls, p.max_calls):
        return f"max_calls {c.max_calls or 'unlimited'} exceeds {p.max_calls}"
    return ""


def _file_within(c: caps.FileRule, p: caps.FileRule) -> str:
    if c.workspace != p.workspace:
        return "other workspace"
    extra = set(c.ops) - set(p.ops)
    if extra:
        return f"adds operation {caps.FileOp.Name(min(extra))}"
    for glob in c.paths:
        if not any(glob_within(glob, pg) for pg in p.paths):
            return f"path {glob!r} is not within {list(p.paths)}"
    if not _cap_within(c.max_bytes, p.max_bytes):
        return f"max_bytes {c.max_bytes or 'unlimited'} exceeds {p.max_bytes}"
    for budget in ("read_budget_bytes", "write_budget_bytes", "create_budget_files"):
        if not _cap_within(getattr(c, budget), getattr(p, budget)):
            return f"{budget} exceeds the parent's"
    return ""


def _ports(rule: caps.NetRule) -> set[tuple[str, int]]:
    return {(s, port) for s in rule.schemes
            for port in (rule.ports or [DEFAULT_PORTS.get(s, 0)])}


def _net_within(c: caps.NetRule, p: caps.NetRule) -> str:
    if c.host.startswith("*."):
        if not (p.host.startswith("*.") and (c.host == p.host or c.host.endswith(p.host[1:]))):
            return "other host"
    elif not host_matches(p.host, c.host):
        return "other host"
    if not _ports(c) <= _ports(p):
        return "adds a scheme or port"
    if set(c.methods) - set(p.methods):
        return f"adds method {min(set(c.methods) - set(p.methods))}"
    for prefix in c.path_prefixes:
        if not any(prefix.startswith(pp) for pp in p.path_prefixes):
            return f"path prefix {prefix!r} is not within {list(p.path_prefixes)}"
    if not _cap_within(c.max_requests, p.max_requests):
        return "max_requests exceeds the parent's"
    if not _cap_within(c.max_bytes, p.max_bytes):
        return "max_bytes exceeds the parent's"
    if not _cap_within(c.timeout_seconds, p.timeout_seconds):
        return "timeout_seconds exceeds the parent's"
    for sec in c.secrets:
        if not any(sec.secret == ps.secret and sec.header.lower() == ps.header.lower() and
                   sec.path_prefix.startswith(ps.path_prefix) for ps in p.secrets):
            return f"adds or widens secret {sec.secret!r}"
    return ""


def _pay_within(c: caps.PayRule, p: caps.PayRule) -> str:
    if set(c.payees) - set(p.payees):
        return f"adds payee {min(set(c.payees) - set(p.payees))!r}"
    if c.currency != p.currency:
        return "other currency"
    if c.max_per_payment > p.max_per_payment:
        return f"max_per_payment {c.max_per_payment} exceeds {p.max_per_payment}"
    if c.budget > p.budget:
        return f"budget {c.budget} exceeds {p.budget}"
    if not _cap_within(c.max_count, p.max_count):
        return "max_count exceeds the parent's"
    if p.approval_always and not c.approval_always:
        return "drops approval_always"
    if p.approval_above and not (c.approval_always or 0 < c.approval_above <= p.approval_above):
        return "raises approval_above"
    return ""


_KINDS = (("tools", _tool_within), ("files", _file_within), ("net", _net_within),
          ("pay", _pay_within))


def widening(parents: Sequence[caps.Grant], child: caps.Grant) -> str:
    """The first way ``child`` is wider than some earlier grant layer, or ""."""
    for kind, within in _KINDS:
        rules = getattr(child, kind)
        if not rules:
            continue
        for i, rule in enumerate(rules):
            for depth, parent in enumerate(parents):
                reasons = [within(rule, pr) for pr in getattr(parent, kind)]
                if "" not in reasons:
                    detail = next((r for r in reasons if r not in ("other tool", "other host",
                                                                    "other workspace")), "")
                    where = "the grant" if depth == 0 else f"attenuation {depth}"
                    return (f"{kind}[{i}] is not within {where}"
                            + (f": {detail}" if detail else ""))
    if child.expires_at:
        expiry = min((p.expires_at for p in parents if p.expires_at), default=0)
        if expiry and child.expires_at > expiry:
            return f"expires_at {child.expires_at} is after its parent's {expiry}"
    if not child.HasField("limits"):
        return ""
    for name in ("memory_mb", "cpus", "pids", "timeout_s", "tmp_mb"):
        mine = getattr(child.limits, name)
        theirs = [getattr(p.limits, name) for p in parents if getattr(p.limits, name)]
        if mine and theirs and mine > min(theirs):
            return f"limits.{name} {mine:g} exceeds its parent's {min(theirs):g}"
    return ""
