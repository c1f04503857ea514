"""Action-authority reports from the audit log.

The delta, for any scope (grant, token, tool, time): what was **granted** (the grant each
``token.mint`` record carries in ``detail``), what was **exercised** (ALLOW records of file,
net and pay operations and tool invocations) and what was **attempted and denied** (DENY
records), side by side, with the grant rules nothing exercised.

Unused authority, per tool across the history: which capabilities its manifest declares
(rule by rule, operation by operation) that no allowed operation ever used, and the manifest
with only the used ones: a suggestion for a security review, not a verdict (a rare path may
simply not have happened yet).

Targets are read as the mediators write them: files ``WORKSPACE:PATH`` (operation
``file.<op>``); network ``METHOD URL`` or a bare URL (operation ``net.<something>``, the
method taken from the target, else from the operation's suffix); payments ``PAYEE ...``
(operation ``pay.<something>``). An allowed record no manifest rule explains is listed as
unexplained rather than dropped.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format

from .._proto import audit_pb2
from .._proto import capabilities_pb2 as caps
from ..core.describe import layer_lines
from ..core.matchers import DEFAULT_PORTS, host_matches, path_matches, port_allowed
from ..core.policy import Layer
from .query import Filter

EXERCISE_FAMILIES = ("file.", "net.", "pay.")
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT"}
# Records of what came back, not of authority exercised (its net.request/net.connect is).
OUTCOMES = {"net.response", "pay.complete"}
KINDS = ("tools", "files", "net", "pay")
FILE_OPS = set(caps.FileOp.keys())


def is_exercise(ev: audit_pb2.AuditEvent) -> bool:
    return ev.decision == audit_pb2.ALLOW and ev.operation not in OUTCOMES and (
        ev.operation.startswith(EXERCISE_FAMILIES) or ev.operation == "tool.invoke")


# -- the delta -----------------------------------------------------------------------------
@dataclass
class Row:
    operation: str
    target: str
    count: int = 0
    bytes: int = 0
    rule: str = ""        # the deciding grant rule (exercised)
    reason: str = ""      # why refused (denied)
    status: str = ""
    first: str = ""
    last: str = ""
    tools: list[str] = field(default_factory=list)

    def add(self, ev: audit_pb2.AuditEvent) -> None:
        self.count += 1
        self.bytes += ev.bytes
        self.first = self.first or ev.time
        self.last = ev.time
        if ev.tool and ev.tool not in self.tools:
            self.tools.append(ev.tool)


@dataclass
class GrantView:
    grant_id: str
    minted_at: str = ""
    expires_at: int = 0
    authority: list[str] = field(default_factory=list)   # one line per rule, in words
    rules: list[str] = field(default_factory=list)       # rule ids, as decisions name them
    unused_rules: list[str] = field(default_factory=list)
    grant: dict[str, Any] | None = None                  # None: its mint is not in the log


@dataclass
class Delta:
    scope: dict[str, Any]
    records: int
    granted: list[GrantView]
    exercised: list[Row]
    denied: list[Row]

    def as_json(self) -> dict[str, Any]:
        def rows(rs: list[Row]) -> list[dict[str, Any]]:
            return [{k: v for k, v in r.__dict__.items() if v not in ("", 0, [])} | {
                "operation": r.operation, "target": r.target, "count": r.count} for r in rs]

        return {"scope": self.scope, "records": self.records,
                "granted": [g.__dict__ for g in self.granted],
                "exercised": rows(self.exercised), "denied": rows(self.denied)}


def rule_ids(grant: caps.Grant) -> list[str]:
    """Rule ids as the decision function names a grant's rules (policy._decide_kind)."""
    return [rule.id or f"grant.{kind}[{i}]" for kind in KINDS
            for i, rule in enumerate(getattr(grant, kind))]


def grant_of(ev: audit_pb2.AuditEvent) -> caps.Grant | None:
    """The grant a token.mint record carries, or None (older record, or unreadable)."""
    if not ev.detail:
        return None
    try:
        return json_format.Parse(ev.detail, caps.Grant())
    except json_format.ParseError:
        return None


def action_authority(records: Iterable[audit_pb2.AuditEvent], scope: Filter) -> Delta:
    everything = list(records)
    selected = scope.select(everything)
    mints = {ev.grant_id: ev for ev in everything
             if ev.operation == "token.mint" and ev.decision == audit_pb2.ALLOW}
    grant_ids: list[str] = []
    for ev in selected:
        if ev.grant_id and ev.grant_id not in grant_ids:
            grant_ids.append(ev.grant_id)
    exercised: dict[tuple[str, str, str], Row] = {}
    denied: dict[tuple[str, str, str], Row] = {}
    used: dict[str, set[str]] = {}
    for ev in selected:
        if ev.decision == audit_pb2.DENY:
            key = (ev.operation, ev.target, ev.reason)
            denied.setdefault(key, Row(ev.operation, ev.target, reason=ev.reason,
                                       status=ev.status)).add(ev)
        elif is_exercise(ev):
            key = (ev.operation, ev.target, ev.rule)
            exercised.setdefault(key, Row(ev.operation, ev.target, rule=ev.rule)).add(ev)
            used.setdefault(ev.grant_id, set()).add(ev.rule)
    granted = []
    for gid in grant_ids:
        view = GrantView(gid)
        mint = mints.get(gid)
        grant = grant_of(mint) if mint is not None else None
        if mint is not None and grant is not None:
            view.minted_at, view.expires_at = mint.time, grant.expires_at
            view.grant = json_format.MessageToDict(grant, preserving_proto_field_name=True)
            view.authority = [line.removeprefix("grant: ")
                              for line in layer_lines(Layer.of_grant("grant", grant))]
            view.rules = rule_ids(grant)
            view.unused_rules = [r for r in view.rules if r not in used.get(gid, set())]
        granted.append(view)
    return Delta(scope.describe(), len(selected), granted, list(exercised.values()),
                 list(denied.values()))


def _column(lines: list[str], width: int) -> list[str]:
    out: list[str] = []
    for line in lines:
        out += textwrap.wrap(line, width, subsequent_indent="  ") or [""]
    return out


def render_delta(delta: Delta, width: int = 0) -> str:
    """Three columns, granted | exercised | denied, for a terminal."""
    width = width or max(96, shutil.get_terminal_size((120, 24)).columns)
    col = (width - 6) // 3
    granted: list[str] = []
    for g in delta.granted:
        if g.grant is None:
            granted += [f"grant {g.grant_id[:12]}: mint not in this log", ""]
            continue
        granted.append(f"grant {g.grant_id[:12]} (minted {g.minted_at[:19]}Z)")
        granted += [f"- {a}" for a in g.authority]
        if g.unused_rules:
            granted.append(f"never exercised: {', '.join(g.unused_rules)}")
        granted.append("")
    exercised = [f"{r.count}x {r.operation} {r.target}" + (f" ({r.bytes} B)" if r.bytes else "")
                 + (f" by {r.rule}" if r.rule else "") for r in delta.exercised]
    denied = [f"{r.count}x {r.operation} {r.target}: {r.reason}" for r in delta.denied]
    cols = [_column(c or ["(none)"], col) for c in (granted, exercised, denied)]
    head = (f"{'GRANTED':<{col}} | {'EXERCISED':<{col}} | DENIED (attempted)",
            f"{'-' * col}-+-{'-' * col}-+-{'-' * col}")
    rows = [f"{a:<{col}} | {b:<{col}} | {c}".rstrip()
            for a, b, c in zip(*(c + [""] * (max(map(len, cols)) - len(c)) for c in cols))]
    scope = ", ".join(f"{k}={v}" for k, v in delta.scope.items()) or "the whole log"
    unused = sum(len(g.unused_rules) for g in delta.granted)
    total = sum(len(g.rules) for g in delta.granted)
    summary = (f"{delta.records} record(s) in scope ({scope}): "
               f"{sum(r.count for r in delta.exercised)} exercised, "
               f"{sum(r.count for r in delta.denied)} denied; "
               f"{unused} of {total} granted rule(s) never exercised")
    return "\n".join([*head, *rows, "", summary])


# -- unused authority per tool -------------------------------------------------------------
@dataclass
class ManifestSeen:
    manifest: caps.Manifest
    source: str             # "audit log seq 12" or a file path
    image_id: str = ""
    signed_by: str = ""


def manifests_from_log(records: Iterable[audit_pb2.AuditEvent]) -> dict[str, ManifestSeen]:
    """The latest manifest each tool was registered with (tool.register records' detail)."""
    out: dict[str, ManifestSeen] = {}
    for ev in records:
        if ev.operation != "tool.register" or ev.decision != audit_pb2.ALLOW or not ev.detail:
            continue
        try:
            data = json.loads(ev.detail)
            manifest = json_format.ParseDict(data["manifest"], caps.Manifest())
        except (ValueError, KeyError, TypeError, json_format.ParseError):
            continue
        out[manifest.name] = ManifestSeen(manifest, f"audit log seq {ev.seq}",
                                          str(data.get("image_id", "")),
                                          str(data.get("signed_by", "")))
    return out


@dataclass
class ToolUsage:
    tool: str
    source: str
    invocations: int = 0
    denied: int = 0
    exercised: int = 0
    used: dict[str, dict[str, int]] = field(default_factory=dict)  # "files[0]" -> op -> n
    unused: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)
    suggested: caps.Manifest = field(default_factory=caps.Manifest)
    declared: caps.Manifest = field(default_factory=caps.Manifest)

    def as_json(self) -> dict[str, Any]:
        return {"tool": self.tool, "manifest_source": self.source,
                "invocations": self.invocations, "exercised": self.exercised,
                "denied": self.denied, "used": self.used, "unused": self.unused,
                "unexplained": self.unexplained,
                "suggested_manifest": json_format.MessageToDict(
                    self.suggested, preserving_proto_field_name=True)}


def _file_use(m: caps.Manifest, ev: audit_pb2.AuditEvent) -> tuple[str, str] | None:
    op = ev.operation.removeprefix("file.").upper()
    if op not in FILE_OPS:
        return None
    workspace, _, path = ev.target.partition(":")
    for i, rule in enumerate(m.files):
        if caps.FileOp.Value(op) in rule.ops and rule.workspace in ("", workspace) and \
                path_matches(rule.paths, path):
            return f"files[{i}]", op
    return None


_URL = re.compile(r"\bhttps?://\S+")


def _net_use(m: caps.Manifest, ev: audit_pb2.AuditEvent) -> tuple[str, str] | None:
    found = _URL.search(ev.target)
    if found is None:
        return None
    words = ev.target.split()
    suffix = ev.operation.removeprefix("net.").upper()
    method = words[0] if words and words[0] in HTTP_METHODS else suffix
    try:
        parts = urlsplit(found.group(0))
        host, scheme = (parts.hostname or "").lower(), parts.scheme
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None
    for i, rule in enumerate(m.net):
        if host_matches(rule.host, host) and scheme in rule.schemes and \
                port_allowed(rule, scheme, port) and method in rule.methods and \
                any((parts.path or "/").startswith(p) for p in rule.path_prefixes):
            return f"net[{i}]", method
    return None


def _pay_use(m: caps.Manifest, ev: audit_pb2.AuditEvent) -> tuple[str, str] | None:
    payee = (ev.target.split() or [""])[0]
    for i, rule in enumerate(m.pay):
        if payee in rule.payees:
            return f"pay[{i}]", payee
    return None


def _declared(m: caps.Manifest) -> dict[str, list[str]]:
    out = {f"files[{i}]": [caps.FileOp.Name(op) for op in r.ops] for i, r in enumerate(m.files)}
    out |= {f"net[{i}]": list(r.methods) for i, r in enumerate(m.net)}
    out |= {f"pay[{i}]": list(r.payees) for i, r in enumerate(m.pay)}
    return out


def _rule_name(m: caps.Manifest, key: str) -> str:
    kind, _, rest = key.partition("[")
    rule = getattr(m, kind)[int(rest[:-1])]
    if kind == "files":
        return f"{key} ({rule.id + ': ' if rule.id else ''}{' '.join(rule.paths)})"
    if kind == "net":
        return f"{key} ({rule.id + ': ' if rule.id else ''}{rule.host})"
    return f"{key}{' (' + rule.id + ')' if rule.id else ''}"


def _tighten(m: caps.Manifest, used: dict[str, dict[str, int]]) -> caps.Manifest:
    out = caps.Manifest()
    out.CopyFrom(m)
    del out.files[:], out.net[:], out.pay[:]
    for i, r in enumerate(m.files):
        ops = [op for op in r.ops if caps.FileOp.Name(op) in used.get(f"files[{i}]", {})]
        if ops:
            rule = out.files.add()
            rule.CopyFrom(r)
            rule.ClearField("ops")
            rule.ops.extend(ops)
    for i, n in enumerate(m.net):
        methods = [x for x in n.methods if x in used.get(f"net[{i}]", {})]
        if methods:
            rule_n = out.net.add()
            rule_n.CopyFrom(n)
            rule_n.ClearField("methods")
            rule_n.methods.extend(methods)
    for i, p in enumerate(m.pay):
        payees = [x for x in p.payees if x in used.get(f"pay[{i}]", {})]
        if payees:
            rule_p = out.pay.add()
            rule_p.CopyFrom(p)
            rule_p.ClearField("payees")
            rule_p.payees.extend(payees)
    return out


def unused_authority(records: Iterable[audit_pb2.AuditEvent],
                     manifests: dict[str, ManifestSeen]) -> list[ToolUsage]:
    usages = {name: ToolUsage(name, seen.source, declared=seen.manifest)
              for name, seen in manifests.items()}
    for ev in records:
        usage = usages.get(ev.tool)
        if usage is None or ev.actor == "broker":
            continue
        if ev.decision == audit_pb2.DENY:
            usage.denied += 1
            continue
        if ev.operation == "tool.invoke" and ev.decision == audit_pb2.ALLOW:
            usage.invocations += 1
            continue
        if not is_exercise(ev):
            continue
        usage.exercised += 1
        m = usage.declared
        kind = ev.operation.split(".", 1)[0]
        hit = {"file": _file_use, "net": _net_use, "pay": _pay_use}[kind](m, ev)
        if hit is None:
            usage.unexplained.append(f"seq {ev.seq}: {ev.operation} {ev.target}")
            continue
        key, what = hit
        counts = usage.used.setdefault(key, {})
        counts[what] = counts.get(what, 0) + 1
    for usage in usages.values():
        m = usage.declared
        for key, declared in _declared(m).items():
            counts = usage.used.get(key, {})
            name = _rule_name(m, key)
            if not counts:
                usage.unused.append(f"{name}: never exercised")
                continue
            idle = [d for d in declared if d not in counts]
            if idle:
                done = ", ".join(f"{k} {v}x" for k, v in sorted(counts.items()))
                usage.unused.append(f"{name}: {', '.join(idle)} never exercised ({done})")
        usage.suggested = _tighten(m, usage.used)
    return sorted(usages.values(), key=lambda u: u.tool)
