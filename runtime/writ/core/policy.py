"""The one decision function.

``decide(authority, op, now)`` answers whether an operation is allowed. Authority is a
stack of layers (the tool's manifest, the user's grant, every attenuation); an operation
is allowed only when every layer that speaks to its kind has a rule allowing it. Anything
unclear denies: an unknown operation type, a layer with no matching rule, a grant that is
not yet valid or has expired. The function does no I/O and reads no clock.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._proto import capabilities_pb2 as caps
from .._proto import token_pb2
from ..errors import PermissionDenied


# -- operations ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolCall:
    """Invoking a registered tool."""

    tool: str

    def describe(self) -> str:
        return f"invoke tool {self.tool!r}"


@dataclass(frozen=True)
class FileAccess:
    """One file operation on a clean workspace-relative path ("" is the root)."""

    workspace: str
    path: str
    op: int  # caps.FileOp value

    def describe(self) -> str:
        return f"{caps.FileOp.Name(self.op)} {self.workspace}:{self.path or '.'}"


Operation = ToolCall | FileAccess


# -- decisions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    rule: str = ""            # id of the grant rule that allowed it, "" on deny
    max_bytes: int = 0        # for reads: the tightest byte cap of the matching rules (0: none)

    def raise_if_denied(self) -> None:
        if not self.allowed:
            raise PermissionDenied(self.reason)


def _deny(reason: str) -> Decision:
    return Decision(False, reason)


# -- authority -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    """One source of authority. ``tools`` is None for a manifest (it is one tool's ceiling
    and does not speak to which tools may run)."""

    name: str
    files: tuple[caps.FileRule, ...]
    tools: tuple[caps.ToolRule, ...] | None

    @classmethod
    def of_grant(cls, name: str, grant: caps.Grant) -> Layer:
        return cls(name, tuple(grant.files), tuple(grant.tools))

    @classmethod
    def of_manifest(cls, manifest: caps.Manifest) -> Layer:
        return cls(f"manifest of {manifest.name!r}", tuple(manifest.files), None)


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
                    manifest: caps.Manifest | None = None) -> Authority:
        layers = [Layer.of_manifest(manifest)] if manifest is not None else []
        not_before, expires = 0, 0
        bindings = []
        for i, block in enumerate(blocks):
            if block.HasField("grant"):
                g = block.grant
                layers.append(Layer.of_grant("grant" if i == 0 else f"attenuation {i}", g))
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
            if layer.tools is None:
                continue
            ws = {r.workspace for r in layer.files}
            named = ws if named is None else named & ws
        return named or set()


# -- matching ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """`*` and `?` stay within a segment; a `**` segment spans zero or more segments."""
    parts = []
    segments = pattern.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        rx = "".join("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
                     for ch in seg)
        parts.append(rx if last else rx + "/")
    body = "".join(parts)
    # "a/**" also matches "a" itself: the folder and everything beneath it.
    if len(segments) > 1 and segments[-1] == "**":
        body = body[: -len("/.*")] + "(?:/.*)?" if body.endswith("/.*") else body
    return re.compile(body)


def _file_rule_matches(rule: caps.FileRule, op: FileAccess, in_manifest: bool) -> bool:
    if op.op not in rule.ops:
        return False
    if rule.workspace != op.workspace and not (in_manifest and rule.workspace == ""):
        return False
    if op.path == "":
        # The workspace root itself is only covered by "**": "*" means "any entry at the
        # top level", not the folder that holds them.
        return "**" in rule.paths
    return any(glob_regex(p).fullmatch(op.path) for p in rule.paths)


def _rule_id(kind: str, index: int, rule_id: str) -> str:
    return rule_id or f"{kind}[{index}]"


def decide(authority: Authority, op: Operation, now: float) -> Decision:
    """Decide one operation.

    Args:
        authority: layers from manifest, grant and attenuations.
        op: a ToolCall or FileAccess; any other type is denied.
        now: the caller's clock, unix seconds.

    Returns:
        Decision: allowed with the deciding grant rule, or denied naming the layer that
        refused and why.
    """
    if authority.not_before and now < authority.not_before:
        return _deny(f"grant is not valid before {authority.not_before}")
    if not authority.expires_at:
        return _deny("grant has no expiry; refusing an unbounded grant")
    if now >= authority.expires_at:
        return _deny(f"grant expired at {authority.expires_at}")
    if isinstance(op, ToolCall):
        return _decide_tool(authority, op)
    if isinstance(op, FileAccess):
        return _decide_file(authority, op)
    return _deny(f"unknown operation type {type(op).__name__}")


def _decide_tool(authority: Authority, op: ToolCall) -> Decision:
    deciding = ""
    spoke = False
    for layer in authority.layers:
        if layer.tools is None:
            continue
        spoke = True
        hit = next((i for i, r in enumerate(layer.tools) if r.name == op.tool), None)
        if hit is None:
            return _deny(f"{layer.name} does not allow {op.describe()}")
        deciding = deciding or _rule_id(f"{layer.name}.tools", hit, layer.tools[hit].id)
    if not spoke:
        return _deny("no grant speaks to tool invocation")
    return Decision(True, f"{op.describe()} allowed by {deciding}", deciding)


def _decide_file(authority: Authority, op: FileAccess) -> Decision:
    # An op outside the enum is unclear: deny it (and never let FileOp.Name raise on it).
    if op.op == caps.FILE_OP_UNSPECIFIED or op.op not in caps.FileOp.values():
        return _deny(f"unknown file operation {op.op!r}")
    deciding = ""
    caps_seen: list[int] = []
    spoke = {"manifest": False, "grant": False}
    for layer in authority.layers:
        in_manifest = layer.tools is None
        spoke["manifest" if in_manifest else "grant"] = True
        hits = [i for i, r in enumerate(layer.files) if _file_rule_matches(r, op, in_manifest)]
        if not hits:
            return _deny(f"{layer.name} has no rule allowing {op.describe()}")
        caps_seen += [layer.files[i].max_bytes for i in hits if layer.files[i].max_bytes]
        if not in_manifest and not deciding:
            deciding = _rule_id(f"{layer.name}.files", hits[0], layer.files[hits[0]].id)
    if not spoke["grant"]:
        return _deny(f"no grant allows {op.describe()}")
    limit = min(caps_seen) if caps_seen else 0
    return Decision(True, f"{op.describe()} allowed by {deciding}", deciding, limit)
