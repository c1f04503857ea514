"""Manifest review for security teams: lint (schema plus risk rules), diff (every widening
and narrowing), explain (the ceiling in plain language).

Loading is manifests.py's strict parse, so a schema error is the same ManifestInvalid the
broker would raise; the YAML text is kept so findings can name their line. Comparisons reuse
core.attenuation.widening, the check that refuses widening token blocks: a rule is within
the old manifest when it is provably within one old rule, so a diff errs toward reporting a
widening, never toward missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .._proto import capabilities_pb2 as caps
from ..core.attenuation import widening
from ..core.describe import layer_lines
from ..core.policy import Layer
from ..errors import ManifestInvalid
from ..launcher import DEFAULT_LIMITS
from ..manifests import load_yaml, parse_grant, parse_manifest

WRITE_OPS = {caps.WRITE, caps.CREATE, caps.DELETE, caps.MKDIR, caps.RENAME}
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# A net rule field that carries a credential the broker adds (invariant 7). None exists in
# the schema yet; the rule applies as soon as one does.
SEVERITIES = ("low", "medium", "high")
LIMIT_NAMES = ("memory_mb", "cpus", "pids", "timeout_s", "tmp_mb")


@dataclass(frozen=True)
class Loaded:
    path: str
    kind: str                 # "manifest" or "grant"
    message: caps.Manifest | caps.Grant
    tree: Any                 # the composed YAML node tree, for line numbers

    @property
    def manifest(self) -> caps.Manifest:
        if not isinstance(self.message, caps.Manifest):
            raise ManifestInvalid(f"{self.path}: a grant, not a tool manifest")
        return self.message

    def line(self, path: tuple[str | int, ...]) -> int:
        """1-based line of the YAML node at ``path`` (the nearest existing parent)."""
        node = self.tree
        line = node.start_mark.line + 1 if node is not None else 0
        for step in path:
            child = None
            if isinstance(node, yaml.MappingNode):
                child = next((v for k, v in node.value if k.value == step), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and \
                    step < len(node.value):
                child = node.value[step]
            if child is None:
                break
            node, line = child, child.start_mark.line + 1
        return line


def load(path: Path) -> Loaded:
    """A manifest or a grant (told apart by its keys), strictly parsed.

    Raises:
        ManifestInvalid: unreadable, not YAML, or fails the schema or a semantic check; the
            message names the file and the field (and the line, for YAML errors).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestInvalid(f"{path}: cannot read: {exc}") from None
    data = load_yaml(text, str(path))
    is_manifest = isinstance(data, dict) and ("name" in data or "image" in data)
    message = (parse_manifest(data, str(path)) if is_manifest
               else parse_grant(data, str(path)))
    return Loaded(str(path), "manifest" if is_manifest else "grant", message,
                  yaml.compose(text, Loader=yaml.SafeLoader))


# -- lint ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    field: str
    message: str
    line: int = 0

    def render(self, path: str) -> str:
        return f"{path}:{self.line}: {self.severity}: {self.field}: {self.message} [{self.rule}]"


def lint(doc: Loaded) -> list[Finding]:
    """Risk rules over a parsed manifest or grant, each naming its field and line."""
    m = doc.message
    out: list[Finding] = []

    def add(rule: str, severity: str, path: tuple[str | int, ...], message: str) -> None:
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        out.append(Finding(rule, severity, field, message, doc.line(path)))

    for i, f in enumerate(m.files):
        writes = sorted(caps.FileOp.Name(op) for op in set(f.ops) & WRITE_OPS)
        whole = [g for g in f.paths if g.split("/")[0] == "**"]
        if writes and whole:
            add("workspace-write", "high", ("files", i, "paths"),
                f"{'/'.join(writes)} on {whole[0]!r}: writes anywhere in the whole workspace; "
                "name the folders it writes to")
    for i, n in enumerate(m.net):
        if n.host.startswith("*."):
            add("wildcard-host", "medium", ("net", i, "host"),
                f"wildcard host {n.host!r}: every name under {n.host[2:]} is reachable, "
                "including ones created later; list the hosts")
        writes = sorted(set(n.methods) & WRITE_METHODS)
        if writes and "/" in n.path_prefixes:
            add("net-write-everywhere", "medium", ("net", i, "path_prefixes"),
                f"{'/'.join(writes)} on every path of {n.host}; name the path prefixes")
        for j, sec in enumerate(n.secrets):
            broad = [why for cond, why in (
                (sec.path_prefix == "/" and "/" in n.path_prefixes, "every path"),
                (n.host.startswith("*."), "every matching host")) if cond]
            if broad:
                add("secret-broad-prefix", "high", ("net", i, "secrets", j),
                    f"credential {sec.secret!r} is added to requests to {n.host} on "
                    f"{' of '.join(broad)}; scope it to the exact host and path prefix "
                    "that needs it")
    for i, p in enumerate(m.pay):
        if not p.max_count and not p.approval_always and not p.approval_above:
            add("payment-uncapped", "high", ("pay", i),
                f"payments to {', '.join(p.payees)} without a count cap or an approval "
                f"threshold: only the budget of {p.budget} {p.currency} minor units bounds "
                "them; set max_count or approval_above")
    if isinstance(m, caps.Grant):
        if not m.expires_at:
            add("no-expiry", "medium", ("expires_at",),
                "no expiry: the token lives as long as the mint TTL allows; set expires_at")
    else:
        unset = [n for n in LIMIT_NAMES if not getattr(m.limits, n)]
        if unset:
            add("default-limits", "low", ("limits",),
                f"{', '.join(unset)} not set: the broker defaults apply "
                f"({', '.join(f'{n} {getattr(DEFAULT_LIMITS, n):g}' for n in unset)})")
    return sorted(out, key=lambda f: (f.line, f.field))


# -- diff ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    kind: str        # "widening", "narrowing" or "changed" (no authority effect)
    field: str
    message: str

    def render(self) -> str:
        sign = {"widening": "+ WIDENS ", "narrowing": "- narrows", "changed": "~ changed"}
        return f"{sign[self.kind]} {self.field}: {self.message}"


def _within(kind: str, rule: Any, parents: list[Any]) -> str:
    """"" when ``rule`` lies within one of ``parents``; else the reason it does not."""
    parent, child = caps.Grant(), caps.Grant()
    getattr(parent, kind).extend(parents)
    getattr(child, kind).append(rule)
    why = widening([parent], child)
    if not why:
        return ""
    # widening() leaves out "other host" / "other workspace"; say it here.
    return why.split(": ", 1)[1] if ": " in why else {
        "files": "another workspace", "net": "another host"}.get(kind, "not within")


def _label(kind: str, i: int, rule: Any) -> str:
    return f"{kind}[{i}]" + (f" ({rule.id})" if rule.id else "")


def _counterpart(rule: Any, i: int, others: Any) -> Any:
    same = [o for o in others if rule.id and o.id == rule.id]
    if same:
        return same[0]
    return others[i] if i < len(others) and not others[i].id else None


def _words(kind: str, rule: Any) -> str:
    """One rule in describe.py's words, without the layer name and rule id."""
    def only(k: str) -> list[Any]:
        return [rule] if k == kind else []

    layer = Layer("rule", files=only("files"), tools=None, net=only("net"), pay=only("pay"))
    return layer_lines(layer)[0].split(": ", 1)[1].rsplit(" [", 1)[0]


def _rule_changes(kind: str, old: Any, new: Any) -> list[Change]:
    out = []
    for i, rule in enumerate(new):
        if _within(kind, rule, list(old)) == "":
            continue
        before = _counterpart(rule, i, old)
        if before is None:
            message = f"new rule, within no old one: {_words(kind, rule)}"
        else:
            message = (f"{_within(kind, rule, [before])}: was {_words(kind, before)}; "
                       f"now {_words(kind, rule)}")
        out.append(Change("widening", _label(kind, i, rule), message))
    for i, rule in enumerate(old):
        if _within(kind, rule, list(new)) == "":
            continue
        # The old rule is not within the new manifest: something it allowed is gone.
        after = _counterpart(rule, i, new)
        message = (f"rule removed: {_words(kind, rule)}" if after is None else
                   f"was {_words(kind, rule)}; now {_words(kind, after)}")
        out.append(Change("narrowing", _label(kind, i, rule), message))
    return out


def _limit(m: caps.Manifest, name: str) -> float:
    return float(getattr(m.limits, name) or getattr(DEFAULT_LIMITS, name))


def diff(old: caps.Manifest, new: caps.Manifest) -> list[Change]:
    """Every widening and narrowing from ``old`` to ``new``."""
    out: list[Change] = []
    if old.name != new.name:
        out.append(Change("widening", "name", f"{old.name!r} -> {new.name!r}: another tool "
                          "would get this authority"))
    if old.image != new.image:
        out.append(Change("widening", "image", f"{old.image} -> {new.image}: other code runs "
                          "with this authority (re-review and re-sign)"))
    for kind in ("files", "net", "pay"):
        out += _rule_changes(kind, getattr(old, kind), getattr(new, kind))
    for name in LIMIT_NAMES:
        a, b = _limit(old, name), _limit(new, name)
        if b != a:
            out.append(Change("widening" if b > a else "narrowing", f"limits.{name}",
                              f"{a:g} -> {b:g}"))
    if old.description != new.description:
        out.append(Change("changed", "description", "text changed"))
    if old.input_schema != new.input_schema:
        out.append(Change("changed", "input_schema", "the input schema agents see changed"))
    order = ("widening", "narrowing", "changed")
    return sorted(out, key=lambda c: order.index(c.kind))


# -- explain -------------------------------------------------------------------------------
OP_WORDS = {caps.READ: "read files", caps.LIST: "list folders", caps.STAT: "see file details",
            caps.WRITE: "overwrite files", caps.CREATE: "create files",
            caps.DELETE: "delete files", caps.MKDIR: "create folders",
            caps.RENAME: "move or rename entries"}


def _where(glob: str) -> str:
    if glob == "**":
        return "anywhere"
    if glob.endswith("/**") and not set("*?") & set(glob[:-3]):
        return f"under {glob[:-3]}/"
    if not set("*?") & set(glob):
        return f"the file {glob}"
    return f"paths matching {glob}"


def _list(words: list[str], conj: str = "and") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conj} {words[-1]}"


def explain(m: caps.Manifest) -> list[str]:
    """The ceiling in plain language, then rule by rule."""
    out = [f"{m.name}: {m.description or '(no description)'}",
           f"Runs the image {m.image}, pinned to its image id when registered."]
    if not m.files:
        out.append("Files: it cannot touch any file.")
    for f in m.files:
        ws = f"workspace {f.workspace!r}" if f.workspace else \
            "whichever workspace the user's grant names"
        caps_ = [f"at most {f.max_bytes} bytes per read"] if f.max_bytes else []
        caps_ += [f"{label} {v} in total" for label, v in (
            ("read budget of bytes", f.read_budget_bytes),
            ("write budget of bytes", f.write_budget_bytes),
            ("files created", f.create_budget_files)) if v]
        out.append(f"Files: it may {_list([OP_WORDS[o] for o in f.ops])} "
                   f"{_list([_where(g) for g in f.paths])} in {ws}"
                   + (f" ({'; '.join(caps_)})" if caps_ else "") + ".")
    granted = {op for f in m.files for op in f.ops}
    never = [OP_WORDS[o] for o in sorted(OP_WORDS) if o not in granted]
    if m.files and never:
        out.append(f"It may never {_list(never, 'or')}.")
    if not m.net:
        out.append("Network: none; it cannot reach any host.")
    for n in m.net:
        ports = ", ".join(str(p) for p in n.ports) or "the default port"
        out.append(f"Network: {_list(list(n.methods))} requests to "
                   f"{'/'.join(n.schemes)}://{n.host} ({ports}) under "
                   f"{_list(list(n.path_prefixes))}"
                   + (f", at most {n.max_requests} requests" if n.max_requests else "")
                   + (f", {n.max_bytes} bytes in total" if n.max_bytes else "") + ".")
    if not m.pay:
        out.append("Money: it cannot make payments.")
    for p in m.pay:
        approval = ("every payment waits for a person's approval" if p.approval_always else
                    f"payments above {p.approval_above} wait for approval"
                    if p.approval_above else "no payment waits for approval")
        out.append(f"Money: it may pay {_list(list(p.payees))} in {p.currency}: at most "
                   f"{p.max_per_payment} minor units each, {p.budget} in total"
                   + (f", {p.max_count} payments" if p.max_count else "") + f"; {approval}.")
    out.append("Each run is limited to " + ", ".join(
        f"{_limit(m, n):g} {unit}" for n, unit in (
            ("memory_mb", "MB of memory"), ("cpus", "CPU"), ("pids", "processes"),
            ("timeout_s", "s of wall time"), ("tmp_mb", "MB of /tmp"))) + ".")
    out.append("This is a ceiling: a user's grant narrows it, and every call gets only "
               "grant ∩ manifest ∩ attenuations.")
    out.append("Rule by rule:")
    out += [f"  {line.split(': ', 1)[1]}" for line in layer_lines(Layer.of_manifest(m))]
    return out


def severity_at_least(finding: Finding, floor: str) -> bool:
    return SEVERITIES.index(finding.severity) >= SEVERITIES.index(floor)
