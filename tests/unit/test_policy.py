"""Table-driven tests of ``policy.decide``: (authority, operation) -> expected decision.

Each row reads: authority (manifest ceiling, user grant, attenuations), the operation, whether
it is allowed, a substring the reason must contain, and the deciding rule id ("" on deny).
Authorities are built from token blocks exactly as a verified token builds them
(``Authority.from_blocks``), so the layer names ("grant", "attenuation 1") are the real ones.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from writ._proto import capabilities_pb2 as caps
from writ._proto import token_pb2
from writ.core.policy import Authority, Decision, FileAccess, Layer, ToolCall, decide, glob_regex
from writ.errors import PermissionDenied

NOW = 1_700_000_000
EXP = NOW + 3600
READ, LIST, STAT, WRITE, CREATE, DELETE = (caps.READ, caps.LIST, caps.STAT, caps.WRITE,
                                           caps.CREATE, caps.DELETE)
ALL_OPS = tuple(v for v in caps.FileOp.values() if v != caps.FILE_OP_UNSPECIFIED)
OP_NAME = {op: caps.FileOp.Name(op) for op in ALL_OPS}


# -- builders ------------------------------------------------------------------------------
def frule(ws: str, paths: list[str] | str, ops: tuple[int, ...] | int, *, id: str = "",
          max_bytes: int = 0) -> caps.FileRule:
    paths = [paths] if isinstance(paths, str) else paths
    op_list: list[Any] = [ops] if isinstance(ops, int) else list(ops)
    return caps.FileRule(id=id, workspace=ws, paths=paths, ops=op_list, max_bytes=max_bytes)


def trule(name: str, id: str = "") -> caps.ToolRule:
    return caps.ToolRule(name=name, id=id)


def grant(tools: tuple[str | caps.ToolRule, ...] = (), files: tuple[caps.FileRule, ...] = (),
          *, nb: int = 0, exp: int = EXP) -> caps.Grant:
    return caps.Grant(tools=[t if isinstance(t, caps.ToolRule) else trule(t) for t in tools],
                      files=list(files), not_before=nb, expires_at=exp)


def manifest(*files: caps.FileRule, name: str = "t") -> caps.Manifest:
    return caps.Manifest(name=name, image=f"writ-tool/{name}:latest", files=list(files))


BIND = "bind"  # a binding block in a block list (no grant: adds no layer)


def auth(*blocks: caps.Grant | str, m: caps.Manifest | None = None) -> Authority:
    """Authority of a token whose blocks are these grants (root first); BIND adds a
    binding block, as the broker does at Invoke."""
    msgs = []
    for i, b in enumerate(blocks):
        if isinstance(b, str):
            msgs.append(token_pb2.TokenBlock(id=bytes([i]) * 16, invocation_id=f"inv-{i}",
                                             tool="t"))
        else:
            msgs.append(token_pb2.TokenBlock(id=bytes([i]) * 16, grant=b))
    return Authority.from_blocks(msgs, m)


def fa(ws: str, path: str, op: int) -> FileAccess:
    return FileAccess(ws, path, op)


@dataclass(frozen=True)
class Row:
    id: str
    authority: Authority
    op: Any
    allowed: bool
    reason: str          # substring of Decision.reason
    rule: str = ""       # Decision.rule ("" on deny)
    max_bytes: int = 0   # Decision.max_bytes
    now: int = NOW


def rows_param(rows: list[Row]) -> pytest.MarkDecorator:
    ids = [r.id for r in rows]
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, f"duplicate row ids: {sorted(dupes)}"
    return pytest.mark.parametrize("row", rows, ids=ids)


def check(row: Row) -> Decision:
    d = decide(row.authority, row.op, row.now)
    assert (d.allowed, d.rule, d.max_bytes) == (row.allowed, row.rule, row.max_bytes), d
    assert row.reason in d.reason, f"{row.reason!r} not in {d.reason!r}"
    return d


# -- tool calls ----------------------------------------------------------------------------
TOOLS = ("read-file", "word-count", "fetch")


def _tool_matrix() -> list[Row]:
    """Every subset of TOOLS as the grant, with no attenuation or an attenuation naming
    every subset, against every tool: allowed iff every layer names the tool."""
    subsets = [s for n in range(len(TOOLS) + 1) for s in itertools.combinations(TOOLS, n)]
    rows = []
    for g, att, tool in itertools.product(subsets, [None, *subsets], TOOLS):
        blocks = [grant(g)] + ([] if att is None else [grant(att)])
        gid = "+".join(g) or "none"
        aid = "noatt" if att is None else "att=" + ("+".join(att) or "none")
        if tool not in g:
            expect = (False, f"grant does not allow invoke tool {tool!r}", "")
        elif att is not None and tool not in att:
            expect = (False, f"attenuation 1 does not allow invoke tool {tool!r}", "")
        else:
            rule = f"grant.tools[{g.index(tool)}]"
            expect = (True, f"invoke tool {tool!r} allowed by {rule}", rule)
        rows.append(Row(f"tool-matrix:grant={gid}:{aid}:call={tool}", auth(*blocks), ToolCall(tool),
                        *expect))
    return rows


TOOL_ROWS = [
    Row("tool-allowed-default-id", auth(grant(("read-file",))), ToolCall("read-file"),
        True, "invoke tool 'read-file' allowed by grant.tools[0]", "grant.tools[0]"),
    Row("tool-allowed-named-rule", auth(grant((trule("read-file", "rf"),))),
        ToolCall("read-file"), True, "allowed by rf", "rf"),
    Row("tool-second-rule-default-id", auth(grant(("fetch", "read-file"))),
        ToolCall("read-file"), True, "allowed by grant.tools[1]", "grant.tools[1]"),
    Row("tool-unlisted-denied", auth(grant(("read-file",))), ToolCall("shell"),
        False, "grant does not allow invoke tool 'shell'"),
    Row("tool-empty-grant-denies", auth(grant()), ToolCall("read-file"),
        False, "grant does not allow invoke tool 'read-file'"),
    Row("tool-name-case-sensitive", auth(grant(("read-file",))), ToolCall("Read-File"),
        False, "grant does not allow"),
    Row("tool-name-prefix-no-match", auth(grant(("read-file",))), ToolCall("read"),
        False, "grant does not allow"),
    Row("tool-name-extension-no-match", auth(grant(("read",))), ToolCall("read-file"),
        False, "grant does not allow"),
    Row("tool-name-empty", auth(grant(("read-file",))), ToolCall(""), False,
        "grant does not allow invoke tool ''"),
    Row("tool-name-no-wildcards", auth(grant(("*",))), ToolCall("read-file"),
        False, "grant does not allow"),
    Row("tool-grant-files-only-grants-no-tool",
        auth(grant(files=(frule("demo", "**", READ),))), ToolCall("read-file"),
        False, "grant does not allow invoke tool 'read-file'"),
    Row("tool-attenuation-files-only-refuses-every-tool",
        auth(grant(("read-file",)), grant(files=(frule("demo", "**", READ),))),
        ToolCall("read-file"), False, "attenuation 1 does not allow invoke tool 'read-file'"),
    Row("tool-rule-decided-by-root-grant-not-attenuation",
        auth(grant(("a", "read-file")), grant((trule("read-file", "att-rf"),))),
        ToolCall("read-file"), True, "allowed by grant.tools[1]", "grant.tools[1]"),
    Row("tool-binding-block-adds-no-layer", auth(grant(("read-file",)), BIND),
        ToolCall("read-file"), True, "allowed by grant.tools[0]", "grant.tools[0]"),
    Row("tool-layer-named-by-block-index",
        auth(grant(("read-file", "fetch")), BIND, grant(("fetch",))),
        ToolCall("read-file"), False, "attenuation 2 does not allow invoke tool 'read-file'"),
    Row("tool-second-attenuation-refuses",
        auth(grant(("read-file",)), grant(("read-file",)), grant(("fetch",))),
        ToolCall("read-file"), False, "attenuation 2 does not allow"),
    Row("tool-manifest-does-not-speak-to-tools",
        auth(grant(("read-file",)), m=manifest(name="read-file")), ToolCall("read-file"),
        True, "allowed by grant.tools[0]", "grant.tools[0]"),
    Row("tool-manifest-only-no-grant",
        Authority((Layer.of_manifest(manifest()),), 0, EXP), ToolCall("t"),
        False, "no grant speaks to tool invocation"),
    Row("tool-no-layers-at-all", Authority((), 0, EXP), ToolCall("t"),
        False, "no grant speaks to tool invocation"),
]


@rows_param(TOOL_ROWS + _tool_matrix())
def test_tool_calls(row: Row) -> None:
    check(row)


# -- globs ---------------------------------------------------------------------------------
# (pattern, path, matches). `*` and `?` stay within a segment; a `**` segment spans zero or
# more segments; "x/**" is the folder x itself and everything beneath it.
GLOBS = [
    ("*", "q3.csv", True),
    ("*", ".env", True),                       # no dotfile exception
    ("*", "reports/q3.csv", False),
    ("*.csv", "q3.csv", True),
    ("*.csv", ".csv", True),
    ("*.csv", "q3.csvx", False),
    ("*.csv", "q3.csv.bak", False),
    ("*.csv", "reports/q3.csv", False),
    ("q*", "q", True),
    ("q*3.csv", "q3.csv", True),
    ("q*3.csv", "q/3.csv", False),
    ("?", "a", True),
    ("?", "ab", False),
    ("?", "", False),
    ("q?.csv", "q3.csv", True),
    ("q?.csv", "q.csv", False),
    ("q?.csv", "q10.csv", False),
    ("q?.csv", "q/.csv", False),
    ("??", "ab", True),
    ("??", "a", False),
    ("reports/*", "reports/q3.csv", True),
    ("reports/*", "reports/sub/q3.csv", False),
    ("reports/*", "reports", False),
    ("reports/*.csv", "reports/q3.csv", True),
    ("reports/*.csv", "reports/summary.md", False),
    ("*/q3.csv", "reports/q3.csv", True),
    ("*/q3.csv", "q3.csv", False),
    ("*/q3.csv", "a/b/q3.csv", False),
    # ** alone
    ("**", "", True),
    ("**", "q3.csv", True),
    ("**", "a/b/c/d", True),
    ("**", ".git/config", True),
    # ** at the end
    ("reports/**", "reports", True),
    ("reports/**", "reports/q3.csv", True),
    ("reports/**", "reports/a/b/c.csv", True),
    ("reports/**", "reportsx", False),
    ("reports/**", "reportsx/q3.csv", False),
    ("reports/**", "report", False),
    ("reports/**", "private/reports", False),
    ("reports/**", "private/reports/q3.csv", False),
    ("reports/**", "", False),
    ("a/b/**", "a/b", True),
    ("a/b/**", "a/b/c", True),
    ("a/b/**", "a", False),
    ("a/b/**", "a/bc", False),
    # ** at the start
    ("**/q3.csv", "q3.csv", True),
    ("**/q3.csv", "reports/q3.csv", True),
    ("**/q3.csv", "a/b/c/q3.csv", True),
    ("**/q3.csv", "xq3.csv", False),
    ("**/q3.csv", "reports/xq3.csv", False),
    ("**/q3.csv", "reports/q3.csv/x", False),
    ("**/*.csv", "a/b.csv", True),
    ("**/*.csv", "b.csv", True),
    ("**/*.csv", "a/b.md", False),
    # ** in the middle
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/b", True),
    ("a/**/b", "a/x/y/z/b", True),
    ("a/**/b", "a/xb", False),
    ("a/**/b", "ab", False),
    ("a/**/b", "a/b/c", False),
    ("a/**/b", "x/a/b", False),
    ("reports/**/*.csv", "reports/q3.csv", True),
    ("reports/**/*.csv", "reports/2024/q3.csv", True),
    ("reports/**/*.csv", "reports/2024/q3.md", False),
    ("reports/**/*.csv", "private/q3.csv", False),
    # regex metacharacters are literal
    ("a.b", "a.b", True),
    ("a.b", "axb", False),
    ("a+b", "a+b", True),
    ("a+b", "aab", False),
    ("[ab]", "[ab]", True),
    ("[ab]", "a", False),
    ("(x|y)", "(x|y)", True),
    ("(x|y)", "x", False),
    ("^a$", "^a$", True),
    ("a{2}", "aa", False),
    ("a\\d", "a\\d", True),
    ("a\\d", "a5", False),
    # exact names, case, Unicode
    ("reports", "reports", True),
    ("reports", "reports/q3.csv", False),
    ("Reports/**", "reports/q3.csv", False),
    ("café/*", "café/menu.txt", True),
    ("caf?/*", "café/menu.txt", True),
]


def _glob_rows() -> list[Row]:
    rows = []
    for (pattern, path, matches), op in itertools.product(GLOBS, (READ, LIST)):
        a = auth(grant(files=(frule("demo", pattern, (READ, LIST), id="g"),)))
        desc = f"{OP_NAME[op]} demo:{path or '.'}"
        expect = ((True, f"{desc} allowed by g", "g") if matches
                  else (False, f"grant has no rule allowing {desc}", ""))
        rows.append(Row(f"glob:{pattern!r}~{path!r}:{OP_NAME[op]}", a, fa("demo", path, op),
                        *expect))
    return rows


@rows_param(_glob_rows())
def test_globs(row: Row) -> None:
    check(row)


@pytest.mark.parametrize(("pattern", "path", "matches"), GLOBS)
def test_glob_regex(pattern: str, path: str, matches: bool) -> None:
    assert bool(glob_regex(pattern).fullmatch(path)) is matches


# -- file operations -----------------------------------------------------------------------
OP_SETS = [(op,) for op in ALL_OPS] + [(READ, STAT), (READ, LIST, STAT),
                                       (WRITE, CREATE, DELETE), ALL_OPS]


def _op_matrix() -> list[Row]:
    """Every granted op set against every requested op, in the grant and as the manifest
    ceiling: allowed iff the requested op is in the set."""
    rows = []
    for granted, op in itertools.product(OP_SETS, ALL_OPS):
        names = "+".join(OP_NAME[o] for o in granted)
        target = f"{OP_NAME[op]} demo:reports/q3.csv"
        # the grant speaks
        a = auth(grant(files=(frule("demo", "reports/**", granted, id="r"),)))
        expect = ((True, f"{target} allowed by r", "r") if op in granted
                  else (False, f"grant has no rule allowing {target}", ""))
        rows.append(Row(f"op-matrix:grant={names}:req={OP_NAME[op]}", a,
                        fa("demo", "reports/q3.csv", op), *expect))
        # the manifest caps an all-ops grant
        a = auth(grant(files=(frule("demo", "**", ALL_OPS, id="all"),)),
                 m=manifest(frule("", "**", granted), name="tool"))
        expect = ((True, f"{target} allowed by all", "all") if op in granted
                  else (False, f"manifest of 'tool' has no rule allowing {target}", ""))
        rows.append(Row(f"op-matrix:manifest={names}:req={OP_NAME[op]}", a,
                        fa("demo", "reports/q3.csv", op), *expect))
        # an attenuation narrows an all-ops grant
        a = auth(grant(files=(frule("demo", "**", ALL_OPS, id="all"),)),
                 grant(files=(frule("demo", "**", granted),)))
        expect = ((True, f"{target} allowed by all", "all") if op in granted
                  else (False, f"attenuation 1 has no rule allowing {target}", ""))
        rows.append(Row(f"op-matrix:attenuation={names}:req={OP_NAME[op]}", a,
                        fa("demo", "reports/q3.csv", op), *expect))
    return rows


@rows_param(_op_matrix())
def test_file_ops(row: Row) -> None:
    check(row)


# -- manifest ceiling vs grant, workspaces, attenuation ------------------------------------
READ_FILE = manifest(frule("", "**", (READ, STAT), id="read-any"), name="read-file")
WORD_COUNT = manifest(frule("", "**", (READ, LIST), id="read-and-list"), name="word-count")
DEMO = grant(("read-file", "word-count"),
             (frule("demo", "reports/**", (READ, LIST, STAT), id="reports-read"),))

CEILING_ROWS = [
    Row("demo-read-report", auth(DEMO, m=READ_FILE), fa("demo", "reports/q3.csv", READ),
        True, "READ demo:reports/q3.csv allowed by reports-read", "reports-read"),
    Row("demo-read-private-refused-by-grant", auth(DEMO, m=READ_FILE),
        fa("demo", "private/salaries.csv", READ),
        False, "grant has no rule allowing READ demo:private/salaries.csv"),
    Row("demo-list-refused-by-read-file-manifest", auth(DEMO, m=READ_FILE),
        fa("demo", "reports", LIST),
        False, "manifest of 'read-file' has no rule allowing LIST demo:reports"),
    Row("demo-list-allowed-for-word-count", auth(DEMO, m=WORD_COUNT),
        fa("demo", "reports", LIST), True, "allowed by reports-read", "reports-read"),
    Row("demo-stat-refused-by-word-count-manifest", auth(DEMO, m=WORD_COUNT),
        fa("demo", "reports/q3.csv", STAT),
        False, "manifest of 'word-count' has no rule allowing STAT demo:reports/q3.csv"),
    Row("demo-write-refused-by-manifest-first", auth(DEMO, m=READ_FILE),
        fa("demo", "reports/q3.csv", WRITE),
        False, "manifest of 'read-file' has no rule allowing WRITE"),
    Row("demo-root-listing-not-granted", auth(DEMO, m=WORD_COUNT), fa("demo", "", LIST),
        False, "grant has no rule allowing LIST demo:."),
    Row("manifest-empty-workspace-means-any", auth(
        grant(files=(frule("other", "**", READ, id="o"),)), m=READ_FILE),
        fa("other", "x", READ), True, "allowed by o", "o"),
    Row("manifest-named-workspace-refuses-another", auth(
        grant(files=(frule("other", "**", READ, id="o"),)),
        m=manifest(frule("demo", "**", READ), name="pinned")),
        fa("other", "x", READ), False, "manifest of 'pinned' has no rule allowing READ other:x"),
    Row("manifest-named-workspace-allows-it", auth(
        grant(files=(frule("demo", "**", READ, id="d"),)),
        m=manifest(frule("demo", "**", READ), name="pinned")),
        fa("demo", "x", READ), True, "allowed by d", "d"),
    Row("manifest-without-files-touches-no-file", auth(DEMO, m=manifest(name="pure")),
        fa("demo", "reports/q3.csv", READ),
        False, "manifest of 'pure' has no rule allowing READ demo:reports/q3.csv"),
    Row("manifest-narrower-paths-cap-grant", auth(
        grant(files=(frule("demo", "**", READ, id="all"),)),
        m=manifest(frule("", "reports/*.csv", READ), name="csv")),
        fa("demo", "reports/summary.md", READ),
        False, "manifest of 'csv' has no rule allowing READ demo:reports/summary.md"),
    Row("manifest-narrower-paths-pass-inside", auth(
        grant(files=(frule("demo", "**", READ, id="all"),)),
        m=manifest(frule("", "reports/*.csv", READ), name="csv")),
        fa("demo", "reports/q3.csv", READ), True, "allowed by all", "all"),
    Row("manifest-wider-than-grant-does-not-widen", auth(DEMO, m=manifest(
        frule("", "**", ALL_OPS), name="wide")),
        fa("demo", "private/salaries.csv", READ), False, "grant has no rule allowing"),
    Row("manifest-alone-grants-no-file",
        Authority((Layer.of_manifest(READ_FILE),), 0, EXP), fa("demo", "x", READ),
        False, "no grant allows READ demo:x"),
    Row("no-layers-grants-no-file", Authority((), 0, EXP), fa("demo", "x", READ),
        False, "no grant allows READ demo:x"),
    Row("manifest-any-rule-may-match", auth(
        grant(files=(frule("demo", "**", (READ, LIST), id="g"),)),
        m=manifest(frule("", "a/**", READ), frule("", "b/**", LIST), name="two")),
        fa("demo", "b/x", LIST), True, "allowed by g", "g"),
    # workspaces
    Row("workspace-mismatch", auth(DEMO), fa("private", "reports/q3.csv", READ),
        False, "grant has no rule allowing READ private:reports/q3.csv"),
    Row("workspace-case-sensitive", auth(DEMO), fa("Demo", "reports/q3.csv", READ),
        False, "grant has no rule allowing READ Demo:reports/q3.csv"),
    Row("workspace-prefix-no-match", auth(DEMO), fa("demo2", "reports/q3.csv", READ),
        False, "grant has no rule"),
    Row("workspace-empty-op-no-match", auth(DEMO), fa("", "reports/q3.csv", READ),
        False, "grant has no rule allowing READ :reports/q3.csv"),
    Row("grant-empty-workspace-is-not-any", auth(grant(files=(frule("", "**", READ),))),
        fa("demo", "x", READ), False, "grant has no rule allowing READ demo:x"),
    Row("grant-second-workspace-rule", auth(grant(files=(
        frule("demo", "**", READ), frule("other", "**", READ)))),
        fa("other", "x", READ), True, "allowed by grant.files[1]", "grant.files[1]"),
    # rule ids and ordering
    Row("first-matching-rule-decides", auth(grant(files=(
        frule("demo", "private/**", READ, id="p"), frule("demo", "**", READ, id="any"),
        frule("demo", "reports/**", READ, id="r")))),
        fa("demo", "reports/q3.csv", READ), True, "allowed by any", "any"),
    Row("default-rule-id-is-index", auth(grant(files=(
        frule("demo", "private/**", READ), frule("demo", "reports/**", READ)))),
        fa("demo", "reports/q3.csv", READ), True, "allowed by grant.files[1]",
        "grant.files[1]"),
    Row("rule-needs-path-and-op-in-same-rule", auth(grant(files=(
        frule("demo", "reports/**", LIST), frule("demo", "private/**", READ)))),
        fa("demo", "reports/q3.csv", READ), False, "grant has no rule allowing READ"),
    Row("rule-with-several-paths", auth(grant(files=(
        frule("demo", ["a/*", "reports/**"], READ, id="multi"),))),
        fa("demo", "reports/q3.csv", READ), True, "allowed by multi", "multi"),
    Row("rule-with-no-paths-grants-nothing", auth(grant(files=(frule("demo", [], READ),))),
        fa("demo", "x", READ), False, "grant has no rule"),
    Row("rule-with-no-ops-grants-nothing", auth(grant(files=(frule("demo", "**", ()),))),
        fa("demo", "x", READ), False, "grant has no rule"),
    # attenuation
    Row("attenuation-narrows-paths", auth(DEMO, grant(files=(
        frule("demo", "reports/q3.csv", READ),))),
        fa("demo", "reports/summary.md", READ),
        False, "attenuation 1 has no rule allowing READ demo:reports/summary.md"),
    Row("attenuation-inside-passes", auth(DEMO, grant(files=(
        frule("demo", "reports/q3.csv", READ),))),
        fa("demo", "reports/q3.csv", READ), True, "allowed by reports-read", "reports-read"),
    Row("attenuation-cannot-widen-paths", auth(DEMO, grant(files=(
        frule("demo", "**", ALL_OPS, id="wide"),))),
        fa("demo", "private/salaries.csv", READ), False, "grant has no rule allowing"),
    Row("attenuation-cannot-widen-ops", auth(DEMO, grant(files=(
        frule("demo", "**", ALL_OPS, id="wide"),))),
        fa("demo", "reports/q3.csv", DELETE), False, "grant has no rule allowing DELETE"),
    Row("attenuation-cannot-add-workspace", auth(DEMO, grant(files=(
        frule("other", "**", READ, id="o"),))),
        fa("other", "x", READ), False, "grant has no rule allowing READ other:x"),
    Row("attenuation-tools-only-refuses-files", auth(DEMO, grant(("read-file",))),
        fa("demo", "reports/q3.csv", READ),
        False, "attenuation 1 has no rule allowing READ demo:reports/q3.csv"),
    Row("attenuation-switch-workspace-refused", auth(DEMO, grant(files=(
        frule("other", "reports/**", READ),))),
        fa("demo", "reports/q3.csv", READ), False, "attenuation 1 has no rule allowing"),
    Row("binding-block-adds-no-file-layer", auth(DEMO, BIND),
        fa("demo", "reports/q3.csv", READ), True, "allowed by reports-read", "reports-read"),
    Row("attenuation-after-binding-named-by-index", auth(DEMO, BIND, grant(files=(
        frule("demo", "reports/a", READ),))),
        fa("demo", "reports/q3.csv", READ), False, "attenuation 2 has no rule allowing"),
    Row("manifest-then-grant-then-attenuation-all-pass", auth(DEMO, grant(files=(
        frule("demo", "reports/*.csv", (READ, STAT)),)), m=READ_FILE),
        fa("demo", "reports/q3.csv", STAT), True, "allowed by reports-read", "reports-read"),
    Row("manifest-refusal-reported-before-attenuation", auth(DEMO, grant(files=(
        frule("demo", "reports/x", READ),)), m=READ_FILE),
        fa("demo", "reports/q3.csv", LIST), False, "manifest of 'read-file'"),
]


@rows_param(CEILING_ROWS)
def test_manifest_grant_attenuation(row: Row) -> None:
    check(row)


# -- time: not_before, expires_at ----------------------------------------------------------
def _time_rows() -> list[Row]:
    specs: list[tuple[str, list[Any], bool, str]] = [
        # (id, blocks, allowed, reason)
        ("valid", [grant(nb=NOW - 10, exp=NOW + 10)], True, "allowed"),
        ("not-before-equal-now-is-valid", [grant(nb=NOW, exp=EXP)], True, "allowed"),
        ("no-not-before", [grant(nb=0, exp=EXP)], True, "allowed"),
        ("expires-next-second", [grant(exp=NOW + 1)], True, "allowed"),
        ("expires-now", [grant(exp=NOW)], False, f"grant expired at {NOW}"),
        ("expired", [grant(exp=NOW - 1)], False, f"grant expired at {NOW - 1}"),
        ("expired-long-ago", [grant(exp=1)], False, "grant expired at 1"),
        ("not-yet-valid", [grant(nb=NOW + 1, exp=EXP)], False,
         f"grant is not valid before {NOW + 1}"),
        ("no-expiry", [grant(exp=0)], False, "grant has no expiry; refusing an unbounded grant"),
        ("attenuation-shortens-expiry", [grant(), grant(exp=NOW - 5)], False,
         f"grant expired at {NOW - 5}"),
        ("attenuation-cannot-extend-expiry", [grant(exp=NOW - 1), grant(exp=EXP + 999)], False,
         f"grant expired at {NOW - 1}"),
        ("attenuation-without-expiry-keeps-root", [grant(exp=NOW - 1), grant(exp=0)], False,
         f"grant expired at {NOW - 1}"),
        ("attenuation-without-expiry-valid", [grant(), grant(exp=0)], True, "allowed"),
        ("attenuation-cannot-bound-unbounded-root", [grant(exp=0), grant(exp=0)], False,
         "grant has no expiry"),
        ("attenuation-delays-not-before", [grant(), grant(nb=NOW + 60)], False,
         f"grant is not valid before {NOW + 60}"),
        ("attenuation-cannot-advance-not-before", [grant(nb=NOW + 60), grant(nb=NOW - 60)],
         False, f"grant is not valid before {NOW + 60}"),
        ("binding-does-not-change-time", [grant(exp=NOW - 1), BIND], False,
         f"grant expired at {NOW - 1}"),
    ]
    everything = ("read-file",), (frule("demo", "**", ALL_OPS, id="all"),)
    rows = []
    ops: list[ToolCall | FileAccess] = [ToolCall("read-file"), fa("demo", "x", READ),
                                        fa("demo", "", LIST)]
    for (name, blocks, allowed, reason), op in itertools.product(specs, ops):
        full = [grant(*everything, nb=b.not_before, exp=b.expires_at)
                if isinstance(b, caps.Grant) else b for b in blocks]
        rule = ("grant.tools[0]" if isinstance(op, ToolCall) else "all") if allowed else ""
        rows.append(Row(f"time:{name}:{op.describe()}", auth(*full), op, allowed, reason, rule))
    return rows


@rows_param(_time_rows())
def test_time_caveats(row: Row) -> None:
    check(row)


# -- byte caps -----------------------------------------------------------------------------
def _cap_rows() -> list[Row]:
    op = fa("demo", "reports/q3.csv", READ)

    def g(*rules: caps.FileRule) -> caps.Grant:
        return grant(files=rules)

    specs: list[tuple[str, Authority, int]] = [
        ("no-cap", auth(g(frule("demo", "**", READ))), 0),
        ("grant-cap", auth(g(frule("demo", "**", READ, max_bytes=100))), 100),
        ("manifest-tighter", auth(g(frule("demo", "**", READ, max_bytes=100)),
                                  m=manifest(frule("", "**", READ, max_bytes=50))), 50),
        ("grant-tighter", auth(g(frule("demo", "**", READ, max_bytes=100)),
                               m=manifest(frule("", "**", READ, max_bytes=500))), 100),
        ("manifest-only-cap", auth(g(frule("demo", "**", READ)),
                                   m=manifest(frule("", "**", READ, max_bytes=70))), 70),
        ("two-matching-grant-rules-tightest", auth(g(
            frule("demo", "**", READ, max_bytes=100),
            frule("demo", "reports/**", READ, max_bytes=30))), 30),
        ("uncapped-and-capped-match-tightest", auth(g(
            frule("demo", "**", READ), frule("demo", "reports/**", READ, max_bytes=30))), 30),
        ("non-matching-path-cap-ignored", auth(g(
            frule("demo", "private/**", READ, max_bytes=1),
            frule("demo", "reports/**", READ, max_bytes=100))), 100),
        ("non-matching-op-cap-ignored", auth(g(
            frule("demo", "reports/**", LIST, max_bytes=1),
            frule("demo", "reports/**", READ, max_bytes=100))), 100),
        ("non-matching-workspace-cap-ignored", auth(g(
            frule("other", "**", READ, max_bytes=1),
            frule("demo", "**", READ, max_bytes=100))), 100),
        ("attenuation-tightens", auth(g(frule("demo", "**", READ, max_bytes=100)),
                                      g(frule("demo", "**", READ, max_bytes=40))), 40),
        ("attenuation-cannot-loosen", auth(g(frule("demo", "**", READ, max_bytes=100)),
                                           g(frule("demo", "**", READ, max_bytes=400))), 100),
        ("attenuation-uncapped-keeps-cap", auth(g(frule("demo", "**", READ, max_bytes=100)),
                                                g(frule("demo", "**", READ))), 100),
        ("attenuation-caps-uncapped", auth(g(frule("demo", "**", READ)),
                                           g(frule("demo", "**", READ, max_bytes=9))), 9),
        ("three-layers-tightest-wins", auth(g(frule("demo", "**", READ, max_bytes=100)),
                                            g(frule("demo", "**", READ, max_bytes=60)),
                                            m=manifest(frule("", "**", READ, max_bytes=80))),
         60),
    ]
    # The deciding rule is the first matching rule of the root grant.
    rule = {"non-matching-path-cap-ignored": "grant.files[1]",
            "non-matching-op-cap-ignored": "grant.files[1]",
            "non-matching-workspace-cap-ignored": "grant.files[1]"}
    rows = [Row(f"cap:{name}", a, op, True, f"allowed by {rule.get(name, 'grant.files[0]')}",
                rule.get(name, "grant.files[0]"), cap) for name, a, cap in specs]
    rows.append(Row("cap:denied-decision-has-no-cap",
                    auth(g(frule("demo", "private/**", READ, max_bytes=5))), op, False,
                    "grant has no rule allowing READ demo:reports/q3.csv", "", 0))
    return rows


@rows_param(_cap_rows())
def test_max_bytes(row: Row) -> None:
    check(row)


# -- unknown operations --------------------------------------------------------------------
@dataclass(frozen=True)
class NetConnect:
    host: str
    port: int


PERMISSIVE = auth(grant(("read-file",), (frule("demo", "**", ALL_OPS, id="all"),)),
                  m=manifest(frule("", "**", ALL_OPS)))

UNKNOWN_ROWS = [
    Row("unknown-op-dataclass", PERMISSIVE, NetConnect("example.com", 443), False,
        "unknown operation type NetConnect"),
    Row("unknown-op-none", PERMISSIVE, None, False, "unknown operation type NoneType"),
    Row("unknown-op-str", PERMISSIVE, "READ demo:x", False, "unknown operation type str"),
    Row("unknown-op-tuple", PERMISSIVE, ("demo", "x", READ), False,
        "unknown operation type tuple"),
    Row("unknown-op-dict", PERMISSIVE, {"tool": "read-file"}, False,
        "unknown operation type dict"),
    Row("unknown-op-class-not-instance", PERMISSIVE, ToolCall, False,
        "unknown operation type type"),
    Row("unknown-op-expired-still-denies", auth(grant(exp=NOW - 1)), NetConnect("h", 1),
        False, "grant expired"),
    Row("file-op-unspecified", PERMISSIVE, fa("demo", "x", caps.FILE_OP_UNSPECIFIED), False,
        "unknown file operation 0"),
    Row("file-op-out-of-enum", PERMISSIVE, fa("demo", "x", 99), False,
        "unknown file operation 99"),
    Row("file-op-negative", PERMISSIVE, fa("demo", "x", -1), False,
        "unknown file operation -1"),
    Row("file-op-name-not-value", PERMISSIVE,
        FileAccess("demo", "x", "READ"),  # type: ignore[arg-type]
        False, "unknown file operation 'READ'"),
    Row("file-op-out-of-enum-even-if-a-rule-lists-it",
        auth(grant(files=(frule("demo", "**", 99),))), fa("demo", "x", 99), False,
        "unknown file operation 99"),
]


@rows_param(UNKNOWN_ROWS)
def test_unknown_operations_deny(row: Row) -> None:
    check(row)


def test_raise_if_denied() -> None:
    denied = decide(auth(grant()), ToolCall("x"), NOW)
    with pytest.raises(PermissionDenied) as info:
        denied.raise_if_denied()
    assert info.value.details == denied.reason == "grant does not allow invoke tool 'x'"
    decide(auth(grant(("x",))), ToolCall("x"), NOW).raise_if_denied()


def test_decide_reads_no_clock() -> None:
    """Same inputs, same answer: `now` is the only clock."""
    a = auth(grant(("read-file",), exp=NOW + 1))
    assert decide(a, ToolCall("read-file"), NOW).allowed
    assert not decide(a, ToolCall("read-file"), NOW + 1).allowed
    assert decide(a, ToolCall("read-file"), NOW).allowed


def test_table_has_hundreds_of_rows() -> None:
    n = (len(TOOL_ROWS) + len(_tool_matrix()) + len(_glob_rows()) + len(_op_matrix())
         + len(CEILING_ROWS) + len(_time_rows()) + len(_cap_rows()) + len(UNKNOWN_ROWS))
    assert n >= 500


# -- properties ----------------------------------------------------------------------------
WORKSPACES = ("demo", "other")
PATHS = ("", "reports", "reports/q3.csv", "reports/2024/q4.csv", "reports/summary.md",
         "private/salaries.csv", "q3.csv", ".env", "reportsx/a")
PATTERNS = ("**", "*", "*.csv", "reports/**", "reports/*", "reports/*.csv", "**/*.csv",
            "private/**", "reports/**/q?.csv", "q3.csv", "reports")
UNIVERSE = ([ToolCall(t) for t in TOOLS]
            + [fa(ws, p, op) for ws in WORKSPACES for p in PATHS for op in ALL_OPS])

file_rules = st.builds(
    frule,
    st.sampled_from(WORKSPACES),
    st.lists(st.sampled_from(PATTERNS), min_size=0, max_size=3),
    st.lists(st.sampled_from(ALL_OPS), min_size=0, max_size=3).map(tuple),
    max_bytes=st.sampled_from((0, 10, 100, 1000)),
)
times = st.sampled_from((0, NOW - 100, NOW, NOW + 100))


@st.composite
def grants(draw: st.DrawFn, root: bool) -> caps.Grant:
    tools = draw(st.lists(st.sampled_from(TOOLS), max_size=3, unique=True))
    files = draw(st.lists(file_rules, max_size=3))
    exp = draw(st.sampled_from((NOW - 1, NOW + 1, EXP) if root else (0, NOW - 1, NOW + 1, EXP)))
    return grant(tuple(tools), tuple(files), nb=draw(times), exp=exp)


manifest_rules = st.builds(
    frule,
    st.sampled_from(("", *WORKSPACES)),  # "" in a manifest: whichever workspace
    st.lists(st.sampled_from(PATTERNS), min_size=0, max_size=3),
    st.lists(st.sampled_from(ALL_OPS), min_size=0, max_size=3).map(tuple),
    max_bytes=st.sampled_from((0, 10, 100, 1000)),
)
manifests = st.none() | st.lists(manifest_rules, max_size=2).map(lambda rs: manifest(*rs))


def _cap(d: Decision) -> float:
    return d.max_bytes or float("inf")


@settings(max_examples=150, deadline=None)
@given(root=grants(root=True), extra=st.lists(grants(root=False) | st.just(BIND), min_size=1,
                                              max_size=3), m=manifests)
def test_attenuation_never_turns_deny_into_allow(root: caps.Grant, extra: list[Any],
                                                 m: caps.Manifest | None) -> None:
    # A root grant always has an expiry: mint refuses one without (test_tokens checks).
    base, narrowed = auth(root, m=m), auth(root, *extra, m=m)
    for op in UNIVERSE:
        before, after = decide(base, op, NOW), decide(narrowed, op, NOW)
        if after.allowed:
            assert before.allowed, (op, before.reason)
            assert _cap(after) <= _cap(before)
            assert after.rule == before.rule


class Opaque:
    pass


unknown_ops = st.one_of(
    st.none(), st.integers(), st.text(max_size=8), st.binary(max_size=8), st.floats(),
    st.tuples(st.sampled_from(WORKSPACES), st.sampled_from(PATHS), st.sampled_from(ALL_OPS)),
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    st.builds(NetConnect, st.text(max_size=8), st.integers(0, 65535)),
    st.builds(Opaque), st.sampled_from([ToolCall, FileAccess, decide]),
)


@settings(max_examples=200, deadline=None)
@given(op=unknown_ops, root=grants(root=True), m=manifests)
def test_unknown_operation_type_always_denies(op: object, root: caps.Grant,
                                              m: caps.Manifest | None) -> None:
    for a in (auth(root, m=m), PERMISSIVE):
        d = decide(a, op, NOW)  # type: ignore[arg-type]
        assert not d.allowed and d.rule == "" and d.max_bytes == 0
    assert decide(PERMISSIVE, op, NOW).reason == (  # type: ignore[arg-type]
        f"unknown operation type {type(op).__name__}")


@settings(max_examples=200, deadline=None)
@given(op_value=st.integers(-(2**31), 2**31 - 1).filter(lambda v: v not in ALL_OPS),
       ws=st.sampled_from(WORKSPACES), path=st.sampled_from(PATHS))
def test_unknown_file_op_value_always_denies(op_value: int, ws: str, path: str) -> None:
    a = auth(grant(files=(frule(ws, "**", op_value),)), m=manifest(frule("", "**", op_value)))
    d = decide(a, fa(ws, path, op_value), NOW)
    assert not d.allowed
    assert d.reason == f"unknown file operation {op_value}"


# -- the workspace root --------------------------------------------------------------------
ROOT_ROWS = [
    Row("root-listed-by-doublestar", auth(grant(files=(frule("w", "**", caps.LIST, id="all"),))),
        fa("w", "", caps.LIST), True, "LIST w:. allowed by all", "all"),
    Row("root-not-covered-by-star", auth(grant(files=(frule("w", "*", caps.LIST),))),
        fa("w", "", caps.LIST), False, "grant has no rule allowing LIST w:."),
    Row("root-not-covered-by-folder-glob",
        auth(grant(files=(frule("w", "reports/**", caps.LIST),))),
        fa("w", "", caps.LIST), False, "grant has no rule allowing LIST w:."),
    Row("top-level-entry-covered-by-star", auth(grant(files=(frule("w", "*", caps.READ, id="s"),))),
        fa("w", "a.txt", caps.READ), True, "allowed by s", "s"),
]


@rows_param(ROOT_ROWS)
def test_workspace_root(row: Row) -> None:
    check(row)
