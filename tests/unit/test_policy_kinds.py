"""Table-driven tests of ``policy.decide`` for every capability kind beyond plain files:
tool argument constraints, network requests, payments, and the budget charges each kind
produces.

Every row names the exact reason. Rows are generated from compact case lists; each list
is one (rule, operation, expected outcome) per line, and a generator turns a case into a
row for the grant layer and another for an attenuation layer (layer names differ), so
the tables stay short to read while covering both.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from writ._proto import capabilities_pb2 as caps
from writ._proto import token_pb2
from writ.core.policy import (
    Authority,
    Charge,
    Decision,
    FileAccess,
    Layer,
    NetRequest,
    Payment,
    ToolCall,
    decide,
)

NOW = 1_700_000_000
EXP = NOW + 3600
B0, B1, B2 = ("00" * 16, "01" * 16, "02" * 16)  # hex block ids of auth()'s blocks
ABSENT = object()  # "the argument is not in the input at all"


# -- builders ------------------------------------------------------------------------------
def g(**kw: Any) -> caps.Grant:
    return caps.Grant(expires_at=EXP, **kw)


def arg(name: str = "a", **check: Any) -> caps.ArgConstraint:
    """An ArgConstraint from its JSON form, exactly as YAML would spell it."""
    return json_format.ParseDict({"arg": name, **check}, caps.ArgConstraint())


def tool(name: str = "t", *args: caps.ArgConstraint, only: bool = False, max_calls: int = 0,
         id: str = "") -> caps.ToolRule:
    return caps.ToolRule(name=name, args=list(args), only_listed_args=only, max_calls=max_calls,
                         id=id)


def net(host: str = "api.example.com", schemes: tuple[str, ...] = ("https",),
        ports: tuple[int, ...] = (), methods: tuple[str, ...] = ("GET",),
        prefixes: tuple[str, ...] = ("/v1/",), **kw: Any) -> caps.NetRule:
    return caps.NetRule(host=host, schemes=schemes, ports=ports, methods=methods,
                        path_prefixes=prefixes, **kw)


def pay(payees: tuple[str, ...] = ("acme", "globex"), currency: str = "USD",
        max_per_payment: int = 5000, budget: int = 20000, **kw: Any) -> caps.PayRule:
    return caps.PayRule(payees=payees, currency=currency, max_per_payment=max_per_payment,
                        budget=budget, **kw)


def manifest(name: str = "m", **kw: Any) -> caps.Manifest:
    return caps.Manifest(name=name, image=f"writ-tool/{name}:latest", **kw)


def auth(*grants: caps.Grant, m: caps.Manifest | None = None) -> Authority:
    """Authority of a token whose blocks are these grants (root first); block i has the
    id bytes([i]) * 16, so its budget keys start with B0, B1, ..."""
    blocks = [token_pb2.TokenBlock(id=bytes([i]) * 16, grant=gr) for i, gr in enumerate(grants)]
    return Authority.from_blocks(blocks, m)


def call(tool_name: str = "t", **args: Any) -> ToolCall:
    return ToolCall(tool_name, args)


def req(url_host: str = "api.example.com", path: str = "/v1/x", method: str = "GET",
        scheme: str = "https", port: int | None = None) -> NetRequest:
    return NetRequest(scheme, url_host, port if port is not None else
                      {"https": 443, "http": 80}.get(scheme, 0), method, path)


@dataclass(frozen=True)
class Row:
    id: str
    authority: Authority
    op: Any
    allowed: bool
    reason: str                              # the exact Decision.reason
    rule: str = ""                           # Decision.rule ("" on deny)
    needs_approval: bool = False
    charges: tuple[Charge, ...] | None = None  # checked when given


def rows_param(rows: list[Row]) -> pytest.MarkDecorator:
    ids = [r.id for r in rows]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"duplicate row ids: {dupes}"
    return pytest.mark.parametrize("row", rows, ids=ids)


def check(row: Row) -> Decision:
    d = decide(row.authority, row.op, NOW)
    assert (d.allowed, d.reason, d.rule, d.needs_approval) == (
        row.allowed, row.reason, row.rule, row.needs_approval), d
    if not d.allowed:
        assert (d.charges, d.max_bytes) == ((), 0), d
    if row.charges is not None:
        assert d.charges == row.charges
    return d


# == tool calls with argument constraints ==================================================
# (constraint on argument "a", value of "a" or ABSENT, refusal or "" when it passes)
ArgCase = tuple[dict[str, Any], Any, str]

LONG = "x" * 100
LONG_SHOWN = "'" + "x" * 76 + "..."  # repr() cut to 77 characters plus "..."

ARG_CASES: list[ArgCase] = [
    # exact: strict JSON equality (true is not 1; 1 equals 1.0; numbers come back as floats)
    ({"exact": "read"}, "read", ""),
    ({"exact": "read"}, "Read", "argument 'a'='Read' is not 'read'"),
    ({"exact": "read"}, "read ", "argument 'a'='read ' is not 'read'"),
    ({"exact": "read"}, 1, "argument 'a'=1 is not 'read'"),
    ({"exact": "read"}, None, "argument 'a'=None is not 'read'"),
    ({"exact": "read"}, ["read"], "argument 'a'=['read'] is not 'read'"),
    ({"exact": "read"}, ABSENT, "argument 'a' is required"),
    ({"exact": ""}, "", ""),
    ({"exact": ""}, None, "argument 'a'=None is not ''"),
    ({"exact": 1}, 1, ""),
    ({"exact": 1}, 1.0, ""),
    ({"exact": 1}, True, "argument 'a'=True is not 1.0"),
    ({"exact": 1}, "1", "argument 'a'='1' is not 1.0"),
    ({"exact": 1}, 2, "argument 'a'=2 is not 1.0"),
    ({"exact": 1}, 1.0000001, "argument 'a'=1.0000001 is not 1.0"),
    ({"exact": 0}, 0, ""),
    ({"exact": 0}, -0.0, ""),
    ({"exact": 0}, False, "argument 'a'=False is not 0.0"),
    ({"exact": 0}, None, "argument 'a'=None is not 0.0"),
    ({"exact": 2.5}, 2.5, ""),
    ({"exact": 2.5}, 2, "argument 'a'=2 is not 2.5"),
    ({"exact": True}, True, ""),
    ({"exact": True}, 1, "argument 'a'=1 is not True"),
    ({"exact": True}, 1.0, "argument 'a'=1.0 is not True"),
    ({"exact": True}, "true", "argument 'a'='true' is not True"),
    ({"exact": True}, False, "argument 'a'=False is not True"),
    ({"exact": False}, False, ""),
    ({"exact": False}, 0, "argument 'a'=0 is not False"),
    ({"exact": False}, None, "argument 'a'=None is not False"),
    ({"exact": None}, None, ""),
    ({"exact": None}, 0, "argument 'a'=0 is not None"),
    ({"exact": None}, "", "argument 'a'='' is not None"),
    ({"exact": None}, False, "argument 'a'=False is not None"),
    ({"exact": None}, ABSENT, "argument 'a' is required"),
    ({"exact": [1, "x"]}, [1, "x"], ""),
    ({"exact": [1, "x"]}, [1.0, "x"], ""),
    ({"exact": [1, "x"]}, ["x", 1], "argument 'a'=['x', 1] is not [1.0, 'x']"),
    ({"exact": [1, "x"]}, [True, "x"], "argument 'a'=[True, 'x'] is not [1.0, 'x']"),
    ({"exact": [1, "x"]}, [1], "argument 'a'=[1] is not [1.0, 'x']"),
    ({"exact": [1, "x"]}, [1, "x", None], "argument 'a'=[1, 'x', None] is not [1.0, 'x']"),
    ({"exact": [1, "x"]}, (1, "x"), "argument 'a'=(1, 'x') is not [1.0, 'x']"),
    ({"exact": {"k": 1}}, {"k": 1}, ""),
    ({"exact": {"k": 1}}, {"k": 1.0}, ""),
    ({"exact": {"k": 1}}, {"k": True}, "argument 'a'={'k': True} is not {'k': 1.0}"),
    ({"exact": {"k": 1}}, {"k": 1, "j": 2}, "argument 'a'={'k': 1, 'j': 2} is not {'k': 1.0}"),
    ({"exact": {"k": 1}}, {}, "argument 'a'={} is not {'k': 1.0}"),
    ({"exact": {"k": [True]}}, {"k": [True]}, ""),
    ({"exact": {"k": [True]}}, {"k": [1]}, "argument 'a'={'k': [1]} is not {'k': [True]}"),
    ({"exact": "x"}, LONG, f"argument 'a'={LONG_SHOWN} is not 'x'"),
    # one_of: the same strict equality against each option
    ({"one_of": ["read", "list"]}, "read", ""),
    ({"one_of": ["read", "list"]}, "list", ""),
    ({"one_of": ["read", "list"]}, "env",
     "argument 'a'='env' is not one of ['read', 'list']"),
    ({"one_of": ["read", "list"]}, "READ",
     "argument 'a'='READ' is not one of ['read', 'list']"),
    ({"one_of": ["read", "list"]}, ["read"],
     "argument 'a'=['read'] is not one of ['read', 'list']"),
    ({"one_of": ["read", "list"]}, ABSENT, "argument 'a' is required"),
    ({"one_of": [1, 2]}, 1, ""),
    ({"one_of": [1, 2]}, 2.0, ""),
    ({"one_of": [1, 2]}, True, "argument 'a'=True is not one of [1.0, 2.0]"),
    ({"one_of": [1, 2]}, "1", "argument 'a'='1' is not one of [1.0, 2.0]"),
    ({"one_of": [1, 2]}, 3, "argument 'a'=3 is not one of [1.0, 2.0]"),
    ({"one_of": [True, None]}, True, ""),
    ({"one_of": [True, None]}, None, ""),
    ({"one_of": [True, None]}, 1, "argument 'a'=1 is not one of [True, None]"),
    ({"one_of": [True, None]}, False, "argument 'a'=False is not one of [True, None]"),
    ({"one_of": [True, None]}, 0, "argument 'a'=0 is not one of [True, None]"),
    ({"one_of": [[1], {"k": "v"}]}, {"k": "v"}, ""),
    ({"one_of": [[1], {"k": "v"}]}, [1.0], ""),
    ({"one_of": [[1], {"k": "v"}]}, [True],
     "argument 'a'=[True] is not one of [[1.0], {'k': 'v'}]"),
    # prefix: strings only
    ({"prefix": "reports/"}, "reports/q3.csv", ""),
    ({"prefix": "reports/"}, "reports/", ""),
    ({"prefix": "reports/"}, "reports", "argument 'a'='reports' does not start with 'reports/'"),
    ({"prefix": "reports/"}, "Reports/q3.csv",
     "argument 'a'='Reports/q3.csv' does not start with 'reports/'"),
    ({"prefix": "reports/"}, "private/reports/x",
     "argument 'a'='private/reports/x' does not start with 'reports/'"),
    ({"prefix": "reports/"}, LONG, f"argument 'a'={LONG_SHOWN} does not start with 'reports/'"),
    ({"prefix": "reports/"}, 5, "argument 'a' must be a string"),
    ({"prefix": "reports/"}, None, "argument 'a' must be a string"),
    ({"prefix": "reports/"}, ["reports/x"], "argument 'a' must be a string"),
    ({"prefix": "reports/"}, ABSENT, "argument 'a' is required"),
    # glob: a clean workspace-relative path matching the pattern; `..` is refused outright
    ({"glob": "reports/**"}, "reports/q3.csv", ""),
    ({"glob": "reports/**"}, "reports", ""),
    ({"glob": "reports/**"}, "reports/a/b/c.csv", ""),
    ({"glob": "reports/**"}, "reportsx/q3.csv",
     "argument 'a'='reportsx/q3.csv' does not match 'reports/**'"),
    ({"glob": "reports/**"}, "private/x", "argument 'a'='private/x' does not match 'reports/**'"),
    ({"glob": "reports/**"}, "reports/../private/x",
     "argument 'a': path 'reports/../private/x' contains a '..' segment"),
    ({"glob": "reports/**"}, "..", "argument 'a': path '..' contains a '..' segment"),
    ({"glob": "reports/**"}, "reports/./q3.csv",
     "argument 'a': path 'reports/./q3.csv' contains a '.' segment"),
    ({"glob": "reports/**"}, "/etc/passwd",
     ("argument 'a': absolute path '/etc/passwd' refused: give a path relative to the "
      "workspace root")),
    ({"glob": "reports/**"}, "reports//q3.csv",
     "argument 'a': path 'reports//q3.csv' has an empty segment (doubled or trailing '/')"),
    ({"glob": "reports/**"}, "reports/",
     "argument 'a': path 'reports/' has an empty segment (doubled or trailing '/')"),
    ({"glob": "reports/**"}, "reports/q\x003", "argument 'a': path contains a NUL byte"),
    ({"glob": "reports/**"}, "reports/q\n3", "argument 'a': path contains a control character"),
    ({"glob": "reports/**"}, "", "argument 'a'='' does not match 'reports/**'"),
    ({"glob": "reports/**"}, ".", "argument 'a'='.' does not match 'reports/**'"),
    ({"glob": "reports/**"}, 3, "argument 'a' must be a string"),
    ({"glob": "*.csv"}, "q3.csv", ""),
    ({"glob": "*.csv"}, "reports/q3.csv", "argument 'a'='reports/q3.csv' does not match '*.csv'"),
    ({"glob": "*.csv"}, "../q3.csv", "argument 'a': path '../q3.csv' contains a '..' segment"),
    ({"glob": "**"}, "", ""),
    ({"glob": "**"}, "a/b/c", ""),
    ({"glob": "**"}, "a/../../etc", "argument 'a': path 'a/../../etc' contains a '..' segment"),
    # regex: full match, strings only, overlong input refused before the pattern runs
    ({"regex": "v[0-9]+"}, "v12", ""),
    ({"regex": "v[0-9]+"}, "xv12", "argument 'a'='xv12' does not match /v[0-9]+/"),
    ({"regex": "v[0-9]+"}, "v12x", "argument 'a'='v12x' does not match /v[0-9]+/"),
    ({"regex": "v[0-9]+"}, "v12\n", "argument 'a'='v12\\n' does not match /v[0-9]+/"),
    ({"regex": "v[0-9]+"}, "", "argument 'a'='' does not match /v[0-9]+/"),
    ({"regex": "v[0-9]+"}, 12, "argument 'a' must be a string"),
    ({"regex": "[a-z]*"}, "a" * 4096, ""),
    ({"regex": "[a-z]*"}, "a" * 4097, "argument 'a' is too long to check against a pattern"),
    ({"regex": "(a+)+$"}, "a" * 5000, "argument 'a' is too long to check against a pattern"),
    ({"regex": "(a|b)"}, "a|b", "argument 'a'='a|b' does not match /(a|b)/"),
    # range: finite numbers (not booleans) within inclusive bounds
    ({"range": {"min": 1, "max": 10}}, 1, ""),
    ({"range": {"min": 1, "max": 10}}, 10, ""),
    ({"range": {"min": 1, "max": 10}}, 5.5, ""),
    ({"range": {"min": 1, "max": 10}}, 10.0, ""),
    ({"range": {"min": 1, "max": 10}}, 0, "argument 'a'=0 is below 1"),
    ({"range": {"min": 1, "max": 10}}, 0.999, "argument 'a'=0.999 is below 1"),
    ({"range": {"min": 1, "max": 10}}, 11, "argument 'a'=11 is above 10"),
    ({"range": {"min": 1, "max": 10}}, 10.0001, "argument 'a'=10.0001 is above 10"),
    ({"range": {"min": 1, "max": 10}}, True, "argument 'a' must be a number"),
    ({"range": {"min": 1, "max": 10}}, "5", "argument 'a' must be a number"),
    ({"range": {"min": 1, "max": 10}}, None, "argument 'a' must be a number"),
    ({"range": {"min": 1, "max": 10}}, [5], "argument 'a' must be a number"),
    ({"range": {"min": 1, "max": 10}}, float("nan"), "argument 'a' must be a number"),
    ({"range": {"min": 1, "max": 10}}, float("inf"), "argument 'a' must be a number"),
    ({"range": {"min": 1, "max": 10}}, ABSENT, "argument 'a' is required"),
    ({"range": {"min": 0}}, 10**30, ""),
    ({"range": {"min": 0}}, -0.0, ""),
    ({"range": {"min": 0}}, -1, "argument 'a'=-1 is below 0"),
    ({"range": {"min": 0}}, float("-inf"), "argument 'a' must be a number"),
    ({"range": {"max": -1.5}}, -2, ""),
    ({"range": {"max": -1.5}}, -1.5, ""),
    ({"range": {"max": -1.5}}, -1, "argument 'a'=-1 is above -1.5"),
    ({"range": {}}, -(10**30), ""),
    ({"range": {}}, False, "argument 'a' must be a number"),
    # max_len: characters, not bytes; strings only
    ({"max_len": 3}, "abc", ""),
    ({"max_len": 3}, "", ""),
    ({"max_len": 3}, "ééé", ""),
    ({"max_len": 3}, "abcd", "argument 'a' is longer than 3 characters"),
    ({"max_len": 3}, 123, "argument 'a' must be a string"),
    ({"max_len": 3}, ["a"], "argument 'a' must be a string"),
    # optional: absent passes, present must still pass (null is present)
    ({"exact": "x", "optional": True}, ABSENT, ""),
    ({"exact": "x", "optional": True}, "x", ""),
    ({"exact": "x", "optional": True}, "y", "argument 'a'='y' is not 'x'"),
    ({"exact": "x", "optional": True}, None, "argument 'a'=None is not 'x'"),
    ({"max_len": 2, "optional": True}, ABSENT, ""),
    ({"max_len": 2, "optional": True}, "abc", "argument 'a' is longer than 2 characters"),
    ({"range": {"min": 0}, "optional": True}, -1, "argument 'a'=-1 is below 0"),
    # a constraint without a check is unclear: it refuses any value given
    ({}, "anything", "constraint on 'a' has no check"),
    ({}, None, "constraint on 'a' has no check"),
    ({}, ABSENT, "argument 'a' is required"),
]


def _case_id(check: dict[str, Any], value: Any) -> str:
    shown = "ABSENT" if value is ABSENT else repr(value)
    if len(shown) > 40:
        shown = f"{shown[:30]}...({len(shown)} chars)"
    return f"{json_format.MessageToJson(arg(**check), indent=None)}~{shown}"


def _arg_rows() -> list[Row]:
    """Each case as the root grant's constraint and as an attenuation's."""
    rows = []
    for check_, value, refusal in ARG_CASES:
        op = call() if value is ABSENT else call(a=value)
        layers = {"grant": auth(g(tools=[tool("t", arg(**check_))])),
                  "attenuation 1": auth(g(tools=[tool("t")]), g(tools=[tool("t", arg(**check_))]))}
        for where, a in layers.items():
            expect = ((True, "invoke tool 't' allowed by grant.tools[0]", "grant.tools[0]")
                      if not refusal else
                      (False, f"{where} does not allow invoke tool 't': {refusal}", ""))
            rows.append(Row(f"arg:{where}:{_case_id(check_, value)}", a, op, *expect))
    return rows


ONLY = tool("t", arg("path", glob="reports/**"), arg("n", range={"max": 10}, optional=True),
            only=True)
MULTI = tool("t", arg("action", one_of=["read", "list"]), arg("path", prefix="reports/"),
             arg("n", max_len=2))

TOOL_ARG_ROWS = [
    # only_listed_args: an input key without a constraint is refused (first in sorted order)
    Row("only-listed:all-listed", auth(g(tools=[ONLY])), call(path="reports/a", n=3), True,
        "invoke tool 't' allowed by grant.tools[0]", "grant.tools[0]"),
    Row("only-listed:optional-omitted", auth(g(tools=[ONLY])), call(path="reports/a"), True,
        "invoke tool 't' allowed by grant.tools[0]", "grant.tools[0]"),
    Row("only-listed:extra-arg", auth(g(tools=[ONLY])), call(path="reports/a", x=1), False,
        "grant does not allow invoke tool 't': argument 'x' is not allowed (only listed "
        "arguments)"),
    Row("only-listed:first-extra-in-sorted-order", auth(g(tools=[ONLY])),
        call(path="reports/a", zz=1, b=2, m=3), False,
        "grant does not allow invoke tool 't': argument 'b' is not allowed (only listed "
        "arguments)"),
    Row("only-listed:constraints-checked-before-extras", auth(g(tools=[ONLY])),
        call(path="private/a", x=1), False,
        "grant does not allow invoke tool 't': argument 'path'='private/a' does not match "
        "'reports/**'"),
    Row("only-listed:no-constraints-means-no-arguments", auth(g(tools=[tool(only=True)])),
        call(x=None), False,
        "grant does not allow invoke tool 't': argument 'x' is not allowed (only listed "
        "arguments)"),
    Row("only-listed:no-constraints-empty-input", auth(g(tools=[tool(only=True)])), call(),
        True, "invoke tool 't' allowed by grant.tools[0]", "grant.tools[0]"),
    Row("only-listed:off-extras-pass", auth(g(tools=[tool("t", arg("path", glob="**"))])),
        call(path="a", anything=[1, 2]), True, "invoke tool 't' allowed by grant.tools[0]",
        "grant.tools[0]"),
    Row("only-listed:in-attenuation", auth(g(tools=[tool()]), g(tools=[tool(only=True)])),
        call(x=1), False,
        "attenuation 1 does not allow invoke tool 't': argument 'x' is not allowed (only "
        "listed arguments)"),
    # several constraints: every one must hold; the first failing one (in order) is named
    Row("multi:all-hold", auth(g(tools=[MULTI])), call(action="read", path="reports/x", n="1"),
        True, "invoke tool 't' allowed by grant.tools[0]", "grant.tools[0]"),
    Row("multi:first-fails", auth(g(tools=[MULTI])), call(action="env", path="/etc", n="123"),
        False, "grant does not allow invoke tool 't': argument 'action'='env' is not one of "
        "['read', 'list']"),
    Row("multi:second-fails", auth(g(tools=[MULTI])), call(action="list", path="/etc", n="1"),
        False, "grant does not allow invoke tool 't': argument 'path'='/etc' does not start "
        "with 'reports/'"),
    Row("multi:third-fails", auth(g(tools=[MULTI])),
        call(action="list", path="reports/", n="123"), False,
        "grant does not allow invoke tool 't': argument 'n' is longer than 2 characters"),
    Row("multi:missing-one", auth(g(tools=[MULTI])), call(action="list", n="1"), False,
        "grant does not allow invoke tool 't': argument 'path' is required"),
    # several rules: the first whose name and arguments match decides; else the first
    # refusal about this tool is shown (a rule about another tool says nothing)
    Row("rules:second-rule-matches", auth(g(tools=[
        tool("t", arg(exact="x")), tool("t", arg(exact="y"))])), call(a="y"), True,
        "invoke tool 't' allowed by grant.tools[1]", "grant.tools[1]"),
    Row("rules:first-refusal-shown", auth(g(tools=[
        tool("t", arg(exact="x")), tool("t", arg(exact="y"))])), call(a="z"), False,
        "grant does not allow invoke tool 't': argument 'a'='z' is not 'x'"),
    Row("rules:other-tool-says-nothing", auth(g(tools=[
        tool("u", arg(exact="q")), tool("t", arg(exact="y"))])), call(a="z"), False,
        "grant does not allow invoke tool 't': argument 'a'='z' is not 'y'"),
    Row("rules:other-tool-only", auth(g(tools=[tool("u", arg(exact="q"))])), call(a="q"),
        False, "grant does not allow invoke tool 't'"),
    Row("rules:unconstrained-after-constrained", auth(g(tools=[
        tool("t", arg(exact="x"), id="strict"), tool("t", id="loose")])), call(a="z"), True,
        "invoke tool 't' allowed by loose", "loose"),
    Row("rules:named-rule-decides", auth(g(tools=[tool("t", arg(exact="x"), id="only-x")])),
        call(a="x"), True, "invoke tool 't' allowed by only-x", "only-x"),
    # layers: the grant's rule decides; every layer's constraints must hold
    Row("layers:grant-and-attenuation-both-hold", auth(
        g(tools=[tool("t", arg(prefix="re"))]), g(tools=[tool("t", arg(exact="read"))])),
        call(a="read"), True, "invoke tool 't' allowed by grant.tools[0]", "grant.tools[0]"),
    Row("layers:grant-refuses-first", auth(
        g(tools=[tool("t", arg(prefix="re"))]), g(tools=[tool("t", arg(exact="list"))])),
        call(a="list"), False,
        "grant does not allow invoke tool 't': argument 'a'='list' does not start with 're'"),
    Row("layers:second-attenuation-refuses", auth(
        g(tools=[tool()]), g(tools=[tool("t", arg(prefix="re"))]),
        g(tools=[tool("t", arg(exact="read"))])), call(a="ready"), False,
        "attenuation 2 does not allow invoke tool 't': argument 'a'='ready' is not 'read'"),
    Row("layers:manifest-says-nothing-about-arguments", auth(
        g(tools=[tool("t", arg(exact="x"))]), m=manifest("t")), call(a="x"), True,
        "invoke tool 't' allowed by grant.tools[0]", "grant.tools[0]"),
]


def _unchecked(**fields: Any) -> caps.ArgConstraint:
    """A constraint as an offline attenuation block may carry it: never schema-checked."""
    return caps.ArgConstraint(arg="a", **fields)


def _nan() -> struct_pb2.Value:
    return struct_pb2.Value(number_value=float("nan"))


# Attenuation blocks are appended offline and never pass the YAML checks: whatever they
# hold, the decision denies (it never raises).
UNCHECKED_ROWS = [
    Row(f"unchecked:{name}", auth(g(tools=[tool()]), g(tools=[tool("t", c)])), call(a=value),
        False, f"attenuation 1 does not allow invoke tool 't': {refusal}")
    for name, c, value, refusal in [
        ("exact-nan", _unchecked(exact=_nan()), 1.0,
         "constraint on 'a' holds a number that is not JSON"),
        ("exact-inf", _unchecked(exact={"number_value": float("inf")}), float("inf"),
         "constraint on 'a' holds a number that is not JSON"),
        ("one-of-nan", _unchecked(one_of={"values": [_nan()]}), 1.0,
         "constraint on 'a' holds a number that is not JSON"),
        ("invalid-regex", _unchecked(regex="("), "(", "constraint on 'a' has an invalid pattern"),
        ("overlong-regex", _unchecked(regex="a" * 257), "a" * 257,
         "constraint on 'a' has a pattern longer than 256 characters"),
    ]
]


@rows_param(_arg_rows() + TOOL_ARG_ROWS + UNCHECKED_ROWS)
def test_tool_argument_constraints(row: Row) -> None:
    check(row)


# == network requests ======================================================================
# (rule host, request host, matches)
HOSTS: list[tuple[str, str, bool]] = [
    ("api.example.com", "api.example.com", True),
    ("api.example.com", "example.com", False),
    ("api.example.com", "x.api.example.com", False),
    ("api.example.com", "evilapi.example.com", False),
    ("api.example.com", "api.example.com.evil.net", False),
    ("api.example.com", "api.example.co", False),
    ("api.example.com", "api.example.com.", False),
    ("api.example.com", "API.example.com", False),
    ("api.example.com", "", False),
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "a.b.example.com", True),
    ("*.example.com", "xn--caf-dma.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "evilexample.com", False),
    ("*.example.com", ".example.com", False),
    ("*.example.com", "example.com.evil.net", False),
    ("*.example.com", "a.example.com.evil.net", False),
    ("*.example.com", "a.example.org", False),
    ("*.example.com", "aexample.com", False),
    ("*.a.example.com", "b.a.example.com", True),
    ("*.a.example.com", "a.example.com", False),
    ("*.a.example.com", "b.example.com", False),
    ("127.0.0.1", "127.0.0.1", True),
    ("127.0.0.1", "127.0.0.2", False),
    ("127.0.0.1", "localhost", False),
    ("::1", "::1", True),
    ("::1", "0:0:0:0:0:0:0:1", False),
    ("10.0.0.1", "10.0.0.10", False),
]


def _host_rows() -> list[Row]:
    rows = []
    for pattern, host, matches in HOSTS:
        op = req(host)
        bracketed = f"[{host}]" if ":" in host else host
        desc = f"GET https://{bracketed}:443/v1/x"
        for where, a in {
            "grant": auth(g(net=[net(pattern, id="h")])),
            "attenuation 1": auth(g(net=[net(pattern, id="h")]), g(net=[net(pattern)])),
        }.items():
            expect = ((True, f"{desc} allowed by h", "h") if matches
                      else (False, f"grant has no rule allowing {desc}", ""))
            rows.append(Row(f"host:{where}:{pattern}~{host!r}", a, op, *expect))
    return rows


# (rule, request, refusal or "" when allowed); the rule's host is api.example.com
NetCase = tuple[str, caps.NetRule, NetRequest, str]
H = "api.example.com"

NET_CASES: list[NetCase] = [
    # schemes
    ("https-only:https", net(), req(), ""),
    ("https-only:http", net(), req(scheme="http"), f"scheme 'http' is not allowed for {H}"),
    ("https-only:http-on-443", net(), req(scheme="http", port=443),
     f"scheme 'http' is not allowed for {H}"),
    ("https-only:ws", net(), req(scheme="ws", port=443), f"scheme 'ws' is not allowed for {H}"),
    ("https-only:HTTPS-upper", net(), req(scheme="HTTPS", port=443),
     f"scheme 'HTTPS' is not allowed for {H}"),
    ("http-only:http", net(schemes=("http",)), req(scheme="http"), ""),
    ("http-only:https", net(schemes=("http",)), req(),
     f"scheme 'https' is not allowed for {H}"),
    ("no-schemes:grants-nothing", net(schemes=()), req(),
     f"scheme 'https' is not allowed for {H}"),
    # ports: empty means the scheme's default port only
    ("default-port:https-443", net(schemes=("http", "https")), req(port=443), ""),
    ("default-port:http-80", net(schemes=("http", "https")), req(scheme="http", port=80), ""),
    ("default-port:https-80", net(schemes=("http", "https")), req(port=80),
     f"port 80 is not allowed for {H}"),
    ("default-port:http-443", net(schemes=("http", "https")), req(scheme="http", port=443),
     f"port 443 is not allowed for {H}"),
    ("default-port:https-8443", net(), req(port=8443), f"port 8443 is not allowed for {H}"),
    ("default-port:https-0", net(), req(port=0), f"port 0 is not allowed for {H}"),
    ("explicit-port:8443", net(ports=(8443,)), req(port=8443), ""),
    ("explicit-port:replaces-default", net(ports=(8443,)), req(port=443),
     f"port 443 is not allowed for {H}"),
    ("explicit-port:neighbour", net(ports=(8443,)), req(port=8444),
     f"port 8444 is not allowed for {H}"),
    ("explicit-ports:any-listed-scheme", net(schemes=("http", "https"), ports=(80, 443)),
     req(scheme="http", port=443), ""),
    ("explicit-ports:second", net(ports=(443, 8443)), req(port=8443), ""),
    # methods: exact, upper case
    ("methods:get", net(methods=("GET", "HEAD")), req(), ""),
    ("methods:head", net(methods=("GET", "HEAD")), req(method="HEAD"), ""),
    ("methods:post", net(methods=("GET", "HEAD")), req(method="POST"),
     f"method POST is not allowed for {H}"),
    ("methods:delete", net(methods=("GET", "HEAD")), req(method="DELETE"),
     f"method DELETE is not allowed for {H}"),
    ("methods:lower-case", net(methods=("GET",)), req(method="get"),
     f"method get is not allowed for {H}"),
    ("methods:none-grants-nothing", net(methods=()), req(), f"method GET is not allowed for {H}"),
    # path prefixes: literal string prefixes; "/" is every path; dot segments are refused
    ("prefix:inside", net(), req(path="/v1/x"), ""),
    ("prefix:itself", net(), req(path="/v1/"), ""),
    ("prefix:deep", net(), req(path="/v1/a/b/c"), ""),
    ("prefix:without-slash", net(), req(path="/v1"),
     f"path '/v1' is outside the allowed prefixes for {H}"),
    ("prefix:other", net(), req(path="/v2/x"),
     f"path '/v2/x' is outside the allowed prefixes for {H}"),
    ("prefix:root", net(), req(path="/"), f"path '/' is outside the allowed prefixes for {H}"),
    ("prefix:case", net(), req(path="/V1/x"),
     f"path '/V1/x' is outside the allowed prefixes for {H}"),
    ("prefix:nested-elsewhere", net(), req(path="/x/v1/"),
     f"path '/x/v1/' is outside the allowed prefixes for {H}"),
    ("prefix:second-of-two", net(prefixes=("/v1/", "/health")), req(path="/health"), ""),
    ("prefix:literal-string-prefix", net(prefixes=("/v1/", "/health")), req(path="/healthz"),
     ""),
    ("prefix:slash-is-everything", net(prefixes=("/",)), req(path="/anything/at/all"), ""),
    ("prefix:slash-itself", net(prefixes=("/",)), req(path="/"), ""),
    ("prefix:none-grants-nothing", net(prefixes=()), req(),
     f"path '/v1/x' is outside the allowed prefixes for {H}"),
    ("prefix:dotdot-escape", net(), req(path="/v1/../admin"),
     f"path '/v1/../admin' has a '.' or '..' segment; refused for {H}"),
    ("prefix:dotdot-at-end", net(), req(path="/v1/.."),
     f"path '/v1/..' has a '.' or '..' segment; refused for {H}"),
    ("prefix:dot-segment", net(), req(path="/v1/./x"),
     f"path '/v1/./x' has a '.' or '..' segment; refused for {H}"),
    ("prefix:encoded-dotdot", net(), req(path="/v1/%2e%2E/admin"),
     f"path '/v1/%2e%2E/admin' has a '.' or '..' segment; refused for {H}"),
    ("prefix:encoded-slash-dotdot", net(), req(path="/v1/..%2fadmin"),
     f"path '/v1/..%2fadmin' has a '.' or '..' segment; refused for {H}"),
    ("prefix:backslash-dotdot", net(), req(path="/v1/..\\admin"),
     f"path '/v1/..\\\\admin' has a '.' or '..' segment; refused for {H}"),
    ("prefix:dots-in-a-name-are-fine", net(), req(path="/v1/a..b/.well"), ""),
    ("prefix:dotdot-even-under-slash", net(prefixes=("/",)), req(path="/../etc/passwd"),
     f"path '/../etc/passwd' has a '.' or '..' segment; refused for {H}"),
    # checks run in order: scheme, port, method, path
    ("order:scheme-before-port", net(), req(scheme="http", port=8080),
     f"scheme 'http' is not allowed for {H}"),
    ("order:port-before-method", net(), req(method="POST", port=8080),
     f"port 8080 is not allowed for {H}"),
    ("order:method-before-path", net(), req(method="POST", path="/v2/"),
     f"method POST is not allowed for {H}"),
]


def _net_rows() -> list[Row]:
    rows = []
    for name, rule, op, refusal in NET_CASES:
        for where, a in {"grant": auth(g(net=[rule])),
                         "attenuation 1": auth(g(net=[net(schemes=("http", "https", "ws",
                                                                     "HTTPS"),
                                                            ports=(0, 80, 443, 8080, 8443,
                                                                   8444),
                                                            methods=("GET", "HEAD", "POST",
                                                                     "DELETE", "get"),
                                                            prefixes=("/",))]),
                                               g(net=[rule]))}.items():
            if where == "attenuation 1" and "segment" in refusal:
                # the parent refuses a dot segment first; that row is the grant's
                a = auth(g(net=[rule]), g(net=[rule]))
                where = "grant"
                name = f"{name}:both-layers"
            expect = ((True, f"{op.describe()} allowed by grant.net[0]", "grant.net[0]")
                      if not refusal else
                      (False, f"{where} has no rule allowing {op.describe()}: {refusal}", ""))
            rows.append(Row(f"net:{where}:{name}", a, op, *expect))
    return rows


FETCH = manifest("fetch", net=[net("*.example.com", methods=("GET",), prefixes=("/",))])
GET = req()
GET_DESC = "GET https://api.example.com:443/v1/x"

NET_LAYER_ROWS = [
    Row("net-rules:second-rule-allows", auth(g(net=[net("other.example.com", id="o"),
                                                    net(id="a")])), GET, True,
        f"{GET_DESC} allowed by a", "a"),
    Row("net-rules:first-refusal-about-this-host-shown", auth(g(net=[
        net("other.example.com"), net(methods=("POST",)), net(ports=(8443,))])), GET, False,
        f"grant has no rule allowing {GET_DESC}: method GET is not allowed for {H}"),
    Row("net-rules:wildcard-rule-reported-by-pattern", auth(g(net=[net("*.example.com",
                                                                       methods=("POST",))])),
        GET, False,
        f"grant has no rule allowing {GET_DESC}: method GET is not allowed for *.example.com"),
    Row("net-rules:no-net-rules-grants-nothing", auth(g(tools=[tool()])), GET, False,
        f"grant has no rule allowing {GET_DESC}"),
    # manifests are ceilings: they can refuse, never widen, and never decide
    Row("net-manifest:inside-ceiling", auth(g(net=[net(id="api")]), m=FETCH), GET, True,
        f"{GET_DESC} allowed by api", "api"),
    Row("net-manifest:without-net-means-no-network", auth(g(net=[net()]), m=manifest("pure")),
        GET, False, f"manifest of 'pure' has no rule allowing {GET_DESC}"),
    Row("net-manifest:refuses-a-method-the-grant-allows", auth(
        g(net=[net(methods=("GET", "POST"))]), m=FETCH), req(method="POST"), False,
        "manifest of 'fetch' has no rule allowing POST https://api.example.com:443/v1/x: "
        "method POST is not allowed for *.example.com"),
    Row("net-manifest:refuses-a-host-outside", auth(g(net=[net("api.other.org")]), m=FETCH),
        req("api.other.org"), False,
        "manifest of 'fetch' has no rule allowing GET https://api.other.org:443/v1/x"),
    Row("net-manifest:does-not-widen-the-grant", auth(g(net=[net(prefixes=("/v1/",))]), m=FETCH),
        req(path="/admin"), False,
        "grant has no rule allowing GET https://api.example.com:443/admin: path '/admin' is "
        "outside the allowed prefixes for api.example.com"),
    Row("net-manifest:alone-grants-nothing", Authority((Layer.of_manifest(FETCH),), 0, EXP), GET,
        False, f"no grant allows {GET_DESC}"),
    Row("net-manifest:refusal-before-grant", Authority(
        (Layer.of_manifest(manifest("pure")),), 0, EXP), GET, False,
        f"manifest of 'pure' has no rule allowing {GET_DESC}"),
    # attenuation
    Row("net-attenuation:narrows-path", auth(g(net=[net(prefixes=("/",))]),
                                             g(net=[net(prefixes=("/v1/public/",))])),
        GET, False, f"attenuation 1 has no rule allowing {GET_DESC}: path '/v1/x' is outside "
        "the allowed prefixes for api.example.com"),
    Row("net-attenuation:tools-only-block-refuses-network", auth(g(net=[net()]),
                                                                 g(tools=[tool()])),
        GET, False, f"attenuation 1 has no rule allowing {GET_DESC}"),
    Row("net-attenuation:cannot-widen-host", auth(g(net=[net()]), g(net=[net("*.example.com")])),
        req("b.example.com"), False,
        "grant has no rule allowing GET https://b.example.com:443/v1/x"),
    Row("net-attenuation:exact-below-wildcard", auth(g(net=[net("*.example.com")]),
                                                     g(net=[net("b.example.com")])),
        req("b.example.com"), True,
        "GET https://b.example.com:443/v1/x allowed by grant.net[0]", "grant.net[0]"),
]


@rows_param(_host_rows() + _net_rows() + NET_LAYER_ROWS)
def test_net_requests(row: Row) -> None:
    check(row)


# == payments ==============================================================================
def pdesc(amount: Any, payee: str = "acme", currency: str = "USD") -> str:
    return f"pay {amount} {currency} (minor units) to {payee!r}"


PayCase = tuple[str, caps.PayRule, Payment, str, bool]  # (name, rule, op, refusal, approval)

PAY_CASES: list[PayCase] = [
    ("payee:listed", pay(), Payment("acme", 100, "USD"), "", False),
    ("payee:second", pay(), Payment("globex", 100, "USD"), "", False),
    ("payee:unlisted", pay(), Payment("evil", 100, "USD"), "payee 'evil' is not allowed",
     False),
    ("payee:case", pay(), Payment("Acme", 100, "USD"), "payee 'Acme' is not allowed", False),
    ("payee:empty", pay(), Payment("", 100, "USD"), "payee '' is not allowed", False),
    ("payee:prefix", pay(), Payment("acme-evil", 100, "USD"),
     "payee 'acme-evil' is not allowed", False),
    ("payee:none-listed", pay(payees=()), Payment("acme", 100, "USD"),
     "payee 'acme' is not allowed", False),
    ("currency:other", pay(), Payment("acme", 100, "EUR"), "currency must be USD", False),
    ("currency:lower-case", pay(), Payment("acme", 100, "usd"), "currency must be USD", False),
    ("currency:empty", pay(), Payment("acme", 100, ""), "currency must be USD", False),
    ("amount:one", pay(), Payment("acme", 1, "USD"), "", False),
    ("amount:at-max", pay(), Payment("acme", 5000, "USD"), "", False),
    ("amount:over-max", pay(), Payment("acme", 5001, "USD"),
     "amount exceeds the per-payment maximum of 5000", False),
    ("amount:over-budget-is-a-budget-matter", pay(max_per_payment=50000),
     Payment("acme", 30000, "USD"), "", False),
    ("order:payee-before-currency", pay(), Payment("evil", 9999, "EUR"),
     "payee 'evil' is not allowed", False),
    ("order:currency-before-amount", pay(), Payment("acme", 9999, "EUR"),
     "currency must be USD", False),
    # approval: above a threshold, or always; the payment is allowed but waits
    ("approval-above:at-threshold", pay(approval_above=1000), Payment("acme", 1000, "USD"), "",
     False),
    ("approval-above:over-threshold", pay(approval_above=1000), Payment("acme", 1001, "USD"),
     "", True),
    ("approval-above:zero-means-none", pay(approval_above=0), Payment("acme", 5000, "USD"), "",
     False),
    ("approval-always:small", pay(approval_always=True), Payment("acme", 1, "USD"), "", True),
    ("approval-always:over-max-still-refused", pay(approval_always=True),
     Payment("acme", 5001, "USD"), "amount exceeds the per-payment maximum of 5000", False),
]


def _pay_rows() -> list[Row]:
    rows = []
    wide = pay(payees=("acme", "globex", "evil", "Acme", "", "acme-evil"), max_per_payment=10**6,
               budget=10**7)
    for name, rule, op, refusal, approval in PAY_CASES:
        for where, a in {"grant": auth(g(pay=[rule])),
                         "attenuation 1": auth(g(pay=[wide]), g(pay=[rule]))}.items():
            if where == "attenuation 1" and op.currency != "USD":  # the wide parent refuses it
                a = auth(g(pay=[rule]), g(pay=[rule]))
                where, name = "grant", f"{name}:both-layers"
            if refusal:
                expect = (False, f"{where} has no rule allowing {op.describe()}: {refusal}", "",
                          False)
            else:
                suffix = " (needs a person's approval)" if approval else ""
                expect = (True, f"{op.describe()} allowed by grant.pay[0]{suffix}",
                          "grant.pay[0]", approval)
            rows.append(Row(f"pay:{where}:{name}", a, op, *expect))
    return rows


BAD_AMOUNTS: list[Any] = [0, -1, -5000, 1.5, 100.0, True, False, "100", None, [100], 10**6 + 0.5]


def _bad_amount_rows() -> list[Row]:
    a = auth(g(pay=[pay(max_per_payment=10**6)]))
    return [Row(f"pay:bad-amount:{amount!r}", a, Payment("acme", amount, "USD"), False,
                f"amount {amount!r} is not a positive integer of minor units")
            for amount in BAD_AMOUNTS]


PAYER = manifest("payer", pay=[pay(payees=("acme",), max_per_payment=1000, budget=5000)])

PAY_LAYER_ROWS = [
    Row("pay-manifest:inside-ceiling", auth(g(pay=[pay(id="p")]), m=PAYER),
        Payment("acme", 1000, "USD"), True, f"{pdesc(1000)} allowed by p", "p"),
    Row("pay-manifest:caps-the-amount", auth(g(pay=[pay()]), m=PAYER),
        Payment("acme", 2000, "USD"), False,
        f"manifest of 'payer' has no rule allowing {pdesc(2000)}: amount exceeds the "
        "per-payment maximum of 1000"),
    Row("pay-manifest:caps-the-payees", auth(g(pay=[pay()]), m=PAYER),
        Payment("globex", 10, "USD"), False,
        f"manifest of 'payer' has no rule allowing {pdesc(10, 'globex')}: payee 'globex' is "
        "not allowed"),
    Row("pay-manifest:without-pay-moves-no-money", auth(g(pay=[pay()]), m=manifest("pure")),
        Payment("acme", 10, "USD"), False,
        f"manifest of 'pure' has no rule allowing {pdesc(10)}"),
    Row("pay-manifest:does-not-widen", auth(g(pay=[pay(payees=("globex",))]), m=PAYER),
        Payment("acme", 10, "USD"), False,
        f"grant has no rule allowing {pdesc(10)}: payee 'acme' is not allowed"),
    Row("pay-manifest:approval-above-counts", auth(
        g(pay=[pay()]), m=manifest("payer", pay=[pay(approval_above=100)])),
        Payment("acme", 101, "USD"), True,
        f"{pdesc(101)} allowed by grant.pay[0] (needs a person's approval)", "grant.pay[0]",
        True),
    Row("pay-manifest:alone-grants-nothing", Authority((Layer.of_manifest(PAYER),), 0, EXP),
        Payment("acme", 10, "USD"), False, f"no grant allows {pdesc(10)}"),
    Row("pay-attenuation:adds-approval-always", auth(g(pay=[pay()]),
                                                     g(pay=[pay(approval_always=True)])),
        Payment("acme", 1, "USD"), True,
        f"{pdesc(1)} allowed by grant.pay[0] (needs a person's approval)", "grant.pay[0]",
        True),
    Row("pay-attenuation:lowers-approval-above", auth(g(pay=[pay(approval_above=3000)]),
                                                      g(pay=[pay(approval_above=10)])),
        Payment("acme", 11, "USD"), True,
        f"{pdesc(11)} allowed by grant.pay[0] (needs a person's approval)", "grant.pay[0]",
        True),
    Row("pay-attenuation:cannot-drop-approval", auth(g(pay=[pay(approval_always=True)]),
                                                     g(pay=[pay()])),
        Payment("acme", 1, "USD"), True,
        f"{pdesc(1)} allowed by grant.pay[0] (needs a person's approval)", "grant.pay[0]",
        True),
    Row("pay-attenuation:narrows-amount", auth(g(pay=[pay()]),
                                               g(pay=[pay(max_per_payment=10)])),
        Payment("acme", 11, "USD"), False,
        f"attenuation 1 has no rule allowing {pdesc(11)}: amount exceeds the per-payment "
        "maximum of 10"),
    Row("pay-attenuation:net-only-block-refuses-payments", auth(g(pay=[pay()]), g(net=[net()])),
        Payment("acme", 1, "USD"), False, f"attenuation 1 has no rule allowing {pdesc(1)}"),
    Row("pay-rules:second-rule-allows", auth(g(pay=[pay(currency="EUR"), pay(id="usd")])),
        Payment("acme", 1, "USD"), True, f"{pdesc(1)} allowed by usd", "usd"),
    Row("pay-rules:approval-of-the-matching-rule-only", auth(g(pay=[
        pay(payees=("globex",), approval_always=True), pay(payees=("acme",))])),
        Payment("acme", 1, "USD"), True, f"{pdesc(1)} allowed by grant.pay[1]",
        "grant.pay[1]"),
    Row("pay-rules:first-refusal-shown", auth(g(pay=[pay(currency="EUR"),
                                                     pay(max_per_payment=5)])),
        Payment("acme", 6, "USD"), False,
        f"grant has no rule allowing {pdesc(6)}: currency must be EUR"),
]


@rows_param(_pay_rows() + _bad_amount_rows() + PAY_LAYER_ROWS)
def test_payments(row: Row) -> None:
    check(row)


@settings(max_examples=200, deadline=None)
@given(amount=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.booleans(),
                        st.text(max_size=5), st.none(), st.binary(max_size=3),
                        st.lists(st.integers(), max_size=2)))
def test_any_amount_but_a_positive_int_is_denied(amount: Any) -> None:
    a = auth(g(pay=[pay(max_per_payment=10**15, budget=10**15)]))
    d = decide(a, Payment("acme", amount, "USD"), NOW)
    assert d == Decision(False, f"amount {amount!r} is not a positive integer of minor units")


# == charges ===============================================================================
def ch(block: str, rule: str, kind: str, cap: int) -> Charge:
    return Charge(f"{block}/{rule}/{kind}", kind, cap)


FILES = caps.FileRule(id="ws", workspace="demo", paths=["**"],
                      ops=[caps.READ, caps.LIST, caps.STAT, caps.WRITE, caps.CREATE,
                           caps.DELETE, caps.MKDIR, caps.RENAME],
                      read_budget_bytes=100, write_budget_bytes=200, create_budget_files=3)
FILES_NO_ID = caps.FileRule()
FILES_NO_ID.CopyFrom(FILES)
FILES_NO_ID.id = ""
FILES_SMALL = caps.FileRule()
FILES_SMALL.CopyFrom(FILES_NO_ID)
FILES_SMALL.read_budget_bytes, FILES_SMALL.write_budget_bytes = 10, 20
FILES_SMALL.create_budget_files = 1
FILE_BUDGETS_IN_MANIFEST = manifest("files", files=[caps.FileRule(
    paths=["**"], ops=FILES.ops, read_budget_bytes=1, write_budget_bytes=1,
    create_budget_files=1)])


def _file_charge_rows() -> list[Row]:
    """Which budgets each file operation draws on, from the grant and an attenuation; a
    manifest's budgets are never charged."""
    draws: dict[int, list[tuple[str, str]]] = {
        caps.READ: [("read_bytes", "read_budget_bytes")],
        caps.WRITE: [("write_bytes", "write_budget_bytes")],
        caps.CREATE: [("write_bytes", "write_budget_bytes"), ("files", "create_budget_files")],
        caps.MKDIR: [("files", "create_budget_files")],
        caps.LIST: [], caps.STAT: [], caps.DELETE: [], caps.RENAME: [],
    }
    rows = []
    for op, kinds in draws.items():
        name = caps.FileOp.Name(op)
        fa = FileAccess("demo", "a/b", op)
        a = auth(g(files=[FILES]), g(files=[FILES_SMALL]), m=FILE_BUDGETS_IN_MANIFEST)
        charges = tuple(
            [ch(B0, "ws", k, getattr(FILES, f)) for k, f in kinds]
            + [ch(B1, "attenuation 1.files[0]", k, getattr(FILES_SMALL, f)) for k, f in kinds])
        rows.append(Row(f"charges:file:{name}", a, fa, True,
                        f"{name} demo:a/b allowed by ws", "ws", charges=charges))
        zero = caps.FileRule(workspace="demo", paths=["**"], ops=FILES.ops)
        rows.append(Row(f"charges:file:{name}:no-budgets-no-charges", auth(g(files=[zero])),
                        fa, True, f"{name} demo:a/b allowed by grant.files[0]",
                        "grant.files[0]", charges=()))
    return rows


NET_BUDGETED = net(max_requests=10, max_bytes=1000)
PAY_BUDGETED = pay(max_count=3)

CHARGE_ROWS = [
    Row("charges:tool:max-calls", auth(g(tools=[tool(max_calls=5)])), call(), True,
        "invoke tool 't' allowed by grant.tools[0]", "grant.tools[0]",
        charges=(ch(B0, "grant.tools[0]", "calls", 5),)),
    Row("charges:tool:named-rule", auth(g(tools=[tool(max_calls=5, id="probe")])), call(), True,
        "invoke tool 't' allowed by probe", "probe", charges=(ch(B0, "probe", "calls", 5),)),
    Row("charges:tool:unlimited", auth(g(tools=[tool()])), call(), True,
        "invoke tool 't' allowed by grant.tools[0]", "grant.tools[0]", charges=()),
    Row("charges:tool:grant-and-attenuation", auth(g(tools=[tool(max_calls=5)]),
                                                   g(tools=[tool(max_calls=2)])), call(), True,
        "invoke tool 't' allowed by grant.tools[0]", "grant.tools[0]",
        charges=(ch(B0, "grant.tools[0]", "calls", 5),
                 ch(B1, "attenuation 1.tools[0]", "calls", 2))),
    Row("charges:tool:attenuation-only", auth(g(tools=[tool()]), g(tools=[tool(max_calls=1)])),
        call(), True, "invoke tool 't' allowed by grant.tools[0]", "grant.tools[0]",
        charges=(ch(B1, "attenuation 1.tools[0]", "calls", 1),)),
    Row("charges:tool:matching-rule-only", auth(g(tools=[
        tool("t", arg(exact=1), max_calls=1), tool("t", max_calls=9)])), call(a=2), True,
        "invoke tool 't' allowed by grant.tools[1]", "grant.tools[1]",
        charges=(ch(B0, "grant.tools[1]", "calls", 9),)),
    Row("charges:tool:three-layers", auth(g(tools=[tool(max_calls=5)]), g(tools=[tool()]),
                                          g(tools=[tool(max_calls=1, id="last")])), call(),
        True, "invoke tool 't' allowed by grant.tools[0]", "grant.tools[0]",
        charges=(ch(B0, "grant.tools[0]", "calls", 5), ch(B2, "last", "calls", 1))),
    Row("charges:net:requests-and-bytes", auth(g(net=[NET_BUDGETED])), GET, True,
        f"{GET_DESC} allowed by grant.net[0]", "grant.net[0]",
        charges=(ch(B0, "grant.net[0]", "requests", 10),
                 ch(B0, "grant.net[0]", "net_bytes", 1000))),
    Row("charges:net:requests-only", auth(g(net=[net(max_requests=2, id="api")])), GET, True,
        f"{GET_DESC} allowed by api", "api", charges=(ch(B0, "api", "requests", 2),)),
    Row("charges:net:bytes-only", auth(g(net=[net(max_bytes=7)])), GET, True,
        f"{GET_DESC} allowed by grant.net[0]", "grant.net[0]",
        charges=(ch(B0, "grant.net[0]", "net_bytes", 7),)),
    Row("charges:net:attenuation-too", auth(g(net=[NET_BUDGETED]),
                                            g(net=[net(max_requests=1)])), GET, True,
        f"{GET_DESC} allowed by grant.net[0]", "grant.net[0]",
        charges=(ch(B0, "grant.net[0]", "requests", 10),
                 ch(B0, "grant.net[0]", "net_bytes", 1000),
                 ch(B1, "attenuation 1.net[0]", "requests", 1))),
    Row("charges:net:manifest-never-charges", auth(
        g(net=[net()]), m=manifest("f", net=[net(max_requests=1, max_bytes=1)])), GET, True,
        f"{GET_DESC} allowed by grant.net[0]", "grant.net[0]", charges=()),
    Row("charges:pay:spend-and-count", auth(g(pay=[PAY_BUDGETED])), Payment("acme", 5, "USD"),
        True, f"{pdesc(5)} allowed by grant.pay[0]", "grant.pay[0]",
        charges=(ch(B0, "grant.pay[0]", "spend", 20000), ch(B0, "grant.pay[0]", "payments", 3))),
    Row("charges:pay:spend-only", auth(g(pay=[pay(id="vendor")])), Payment("acme", 5, "USD"),
        True, f"{pdesc(5)} allowed by vendor", "vendor",
        charges=(ch(B0, "vendor", "spend", 20000),)),
    Row("charges:pay:attenuation-too", auth(g(pay=[PAY_BUDGETED]),
                                            g(pay=[pay(budget=100, max_count=1)])),
        Payment("acme", 5, "USD"), True, f"{pdesc(5)} allowed by grant.pay[0]", "grant.pay[0]",
        charges=(ch(B0, "grant.pay[0]", "spend", 20000), ch(B0, "grant.pay[0]", "payments", 3),
                 ch(B1, "attenuation 1.pay[0]", "spend", 100),
                 ch(B1, "attenuation 1.pay[0]", "payments", 1))),
    Row("charges:pay:manifest-never-charges", auth(g(pay=[pay()]), m=manifest(
        "p", pay=[pay(budget=1, max_count=1)])), Payment("acme", 5, "USD"), True,
        f"{pdesc(5)} allowed by grant.pay[0]", "grant.pay[0]",
        charges=(ch(B0, "grant.pay[0]", "spend", 20000),)),
    Row("charges:pay:approval-still-charges", auth(g(pay=[pay(approval_always=True)])),
        Payment("acme", 5, "USD"), True,
        f"{pdesc(5)} allowed by grant.pay[0] (needs a person's approval)", "grant.pay[0]", True,
        charges=(ch(B0, "grant.pay[0]", "spend", 20000),)),
    Row("charges:denied-has-none", auth(g(tools=[tool(max_calls=5)]),
                                        g(tools=[tool("u", max_calls=1)])), call(), False,
        "attenuation 1 does not allow invoke tool 't'"),
]


@rows_param(_file_charge_rows() + CHARGE_ROWS)
def test_charges(row: Row) -> None:
    check(row)


def test_every_kind_has_hundreds_of_rows() -> None:
    counts = {
        "tools": len(_arg_rows()) + len(TOOL_ARG_ROWS),
        "net": len(_host_rows()) + len(_net_rows()) + len(NET_LAYER_ROWS),
        "pay": len(_pay_rows()) + len(_bad_amount_rows()) + len(PAY_LAYER_ROWS),
        "charges": len(_file_charge_rows()) + len(CHARGE_ROWS),
    }
    assert counts["tools"] >= 300 and counts["net"] >= 150 and counts["pay"] >= 50, counts
    assert sum(counts.values()) >= 550, counts


# == an unknown operation is denied, whatever the authority grants =========================
EVERYTHING = auth(g(tools=[tool()], files=[FILES], net=[net(prefixes=("/",))], pay=[pay()]))


@settings(max_examples=100, deadline=None)
@given(op=st.one_of(st.none(), st.integers(), st.text(max_size=8),
                    st.tuples(st.text(max_size=4), st.integers()),
                    st.builds(dict, a=st.integers()),
                    st.sampled_from([ToolCall, NetRequest, Payment, FileAccess, object()])))
def test_unknown_operation_is_denied_by_an_authority_granting_every_kind(op: Any) -> None:
    assert decide(EVERYTHING, op, NOW) == Decision(
        False, f"unknown operation type {type(op).__name__}")


@pytest.mark.parametrize("op", [call(), FileAccess("demo", "a", caps.READ), req(path="/x"),
                                Payment("acme", 1, "USD")], ids=lambda o: type(o).__name__)
def test_every_kind_is_allowed_by_everything_and_denied_after_expiry(op: Any) -> None:
    assert decide(EVERYTHING, op, NOW).allowed
    assert decide(EVERYTHING, op, EXP) == Decision(False, f"grant expired at {EXP}")


def test_tables_cover_every_argument_check_kind() -> None:
    kinds = {arg(**c).WhichOneof("check") for c, _, _ in ARG_CASES}
    assert kinds == {"exact", "one_of", "prefix", "glob", "regex", "range", "max_len", None}
    # and each kind has rows that pass and rows that fail
    for kind in kinds - {None}:
        outcomes = {bool(r) for c, _, r in ARG_CASES if arg(**c).WhichOneof("check") == kind}
        assert outcomes == {True, False}, kind


def test_exact_matches_json_number_semantics_in_both_directions() -> None:
    """1 == 1.0 whichever side holds the float; no bool ever equals a number."""
    for want, given_ in itertools.product((1, 1.0), (1, 1.0)):
        assert decide(auth(g(tools=[tool("t", arg(exact=want))])), call(a=given_), NOW).allowed
    for want, given_ in itertools.product((1, 0), (True, False)):
        assert not decide(auth(g(tools=[tool("t", arg(exact=want))])), call(a=given_),
                          NOW).allowed
