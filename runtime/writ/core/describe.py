"""Effective authority in words: one line per rule, layer by layer (for `writ explain`,
`writ token show` and security reviews)."""

from __future__ import annotations

import time

from google.protobuf import json_format

from .._proto import capabilities_pb2 as caps
from .policy import Authority, Layer


def _args(rule: caps.ToolRule) -> str:
    parts = []
    for c in rule.args:
        kind = c.WhichOneof("check") or "?"
        value: object = getattr(c, kind) if kind != "?" else ""
        if kind == "exact":
            value = json_format.MessageToDict(c.exact)
        elif kind == "one_of":
            value = json_format.MessageToDict(c.one_of)
        elif kind == "range":
            lo = f"{c.range.min:g}" if c.range.HasField("min") else "-inf"
            hi = f"{c.range.max:g}" if c.range.HasField("max") else "inf"
            value = f"[{lo}, {hi}]"
        name = f"{c.arg}{'?' if c.optional else ''}"
        parts.append(f"{name} in {value}" if kind == "range" else f"{name} {kind} {value!r}")
    if rule.only_listed_args:
        parts.append("no other arguments")
    return f" ({'; '.join(parts)})" if parts else ""


def _cap(label: str, value: int) -> str:
    return f", {label} {value}" if value else ""


def layer_lines(layer: Layer) -> list[str]:
    head = layer.name + (f" [{layer.block_id[:8]}]" if layer.block_id else "")
    out = []
    for i, t in enumerate(layer.tools or ()):
        out.append(f"{head}: tool {t.name}{_args(t)}{_cap('max calls', t.max_calls)}"
                   f" [{t.id or f'tools[{i}]'}]")
    for i, f in enumerate(layer.files):
        ops = ",".join(caps.FileOp.Name(o) for o in f.ops)
        out.append(f"{head}: files {f.workspace or '*'}:{' '.join(f.paths)} {ops}"
                   f"{_cap('max bytes per read', f.max_bytes)}"
                   f"{_cap('read budget bytes', f.read_budget_bytes)}"
                   f"{_cap('write budget bytes', f.write_budget_bytes)}"
                   f"{_cap('create budget files', f.create_budget_files)} [{f.id or f'files[{i}]'}]")
    for i, n in enumerate(layer.net):
        ports = ",".join(str(p) for p in n.ports) or "default"
        out.append(f"{head}: net {','.join(n.methods)} {'/'.join(n.schemes)}://{n.host}:{ports}"
                   f" {' '.join(n.path_prefixes)}{_cap('max requests', n.max_requests)}"
                   f"{_cap('max bytes', n.max_bytes)}"
                   f"{_cap('at most seconds per request', n.timeout_seconds)}"
                   + "".join(f", adds secret {s.secret!r} as {s.header} on {s.path_prefix}"
                             for s in n.secrets)
                   + f" [{n.id or f'net[{i}]'}]")
    for i, p in enumerate(layer.pay):
        approval = (", approval always" if p.approval_always else
                    f", approval above {p.approval_above}" if p.approval_above else "")
        out.append(f"{head}: pay {','.join(p.payees)} in {p.currency}, at most "
                   f"{p.max_per_payment} each, budget {p.budget}"
                   f"{_cap('max payments', p.max_count)}{approval} [{p.id or f'pay[{i}]'}]")
    if not out:
        out.append(f"{head}: nothing")
        return out
    # Every layer must allow an operation: a kind a layer leaves empty is refused whole,
    # which a reader would otherwise take for "unchanged".
    empty = [word for word, rules in (("tools", layer.tools), ("files", layer.files),
                                      ("network", layer.net), ("payments", layer.pay))
             if rules is not None and not rules]
    if empty:
        out.append(f"{head}: nothing for {', '.join(empty)}")
    return out


def _when(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def describe(authority: Authority) -> list[str]:
    start = _when(authority.not_before) if authority.not_before else "minting"
    until = _when(authority.expires_at) if authority.expires_at else "never (refused)"
    lines = [f"valid from {start} until {until}"]
    if authority.bindings:
        lines.append(f"bound to invocation {', '.join(authority.bindings)}")
    for layer in authority.layers:
        lines += layer_lines(layer)
    return lines
