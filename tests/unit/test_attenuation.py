"""Attenuation only narrows: ``glob_within``, ``widening()`` for every kind with its exact
message, and properties tying ``widening()`` to the decision function and to token
verification.

``widening(parents, child)`` names the first way an attenuation block reaches past an
earlier grant layer; ``UnverifiedToken.verify`` refuses such a token whole with
``AttenuationWidens("token block <i> widens its parent: <that>")``.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from writ._proto import capabilities_pb2 as caps
from writ._proto import token_pb2
from writ.core.attenuation import glob_within, widening
from writ.core.policy import Authority, FileAccess, NetRequest, Payment, ToolCall, decide
from writ.core.tokens import Keyring, UnverifiedToken, attenuate, mint
from writ.errors import AttenuationWidens

NOW = 1_700_000_000
EXP = NOW + 3600
KEYRING = Keyring({"k1": b"\x07" * 32}, "k1")
R, L, S, W, C, D = caps.READ, caps.LIST, caps.STAT, caps.WRITE, caps.CREATE, caps.DELETE


# -- builders ------------------------------------------------------------------------------
def arg(name: str = "a", **check: Any) -> caps.ArgConstraint:
    return json_format.ParseDict({"arg": name, **check}, caps.ArgConstraint())


def tool(name: str = "t", *args: caps.ArgConstraint, only: bool = False,
         max_calls: int = 0) -> caps.ToolRule:
    return caps.ToolRule(name=name, args=list(args), only_listed_args=only, max_calls=max_calls)


def files(paths: tuple[str, ...] = ("reports/**",), ops: tuple[int, ...] = (R, L),
          ws: str = "demo", **caps_: int) -> caps.FileRule:
    return caps.FileRule(workspace=ws, paths=paths, ops=ops, **caps_)


def net(host: str = "api.example.com", schemes: tuple[str, ...] = ("https",),
        ports: tuple[int, ...] = (), methods: tuple[str, ...] = ("GET",),
        prefixes: tuple[str, ...] = ("/v1/",), **kw: Any) -> caps.NetRule:
    return caps.NetRule(host=host, schemes=schemes, ports=ports, methods=methods,
                        path_prefixes=prefixes, **kw)


def pay(payees: tuple[str, ...] = ("acme", "globex"), currency: str = "USD",
        max_per_payment: int = 5000, budget: int = 20000, **kw: Any) -> caps.PayRule:
    return caps.PayRule(payees=payees, currency=currency, max_per_payment=max_per_payment,
                        budget=budget, **kw)


def g(*, exp: int = EXP, limits: caps.Limits | None = None, **kw: Any) -> caps.Grant:
    out = caps.Grant(expires_at=exp, **kw)
    if limits is not None:
        out.limits.CopyFrom(limits)
    return out


def child(**kw: Any) -> caps.Grant:
    """An attenuation block's grant: no expiry of its own unless given."""
    return g(exp=kw.pop("exp", 0), **kw)


def token_with(*grants: caps.Grant) -> str:
    text, _ = mint(KEYRING, grants[0], NOW)
    for gr in grants[1:]:
        text = attenuate(UnverifiedToken.parse(text), gr, NOW)
    return text


# == glob_within ===========================================================================
# (child glob, parent glob, provably within). Conservative: False when it cannot be shown.
GLOB_WITHIN = [
    ("reports/**", "reports/**", True),
    ("a", "a", True),
    ("anything/at/all", "**", True),
    ("**", "**", True),
    ("*.csv", "**", True),
    ("reports/q3.csv", "reports/**", True),
    ("reports", "reports/**", True),
    ("reports/a/b/c", "reports/**", True),
    ("reports/*.csv", "reports/**", True),
    ("reports/a/**", "reports/**", True),
    ("reports/**/x", "reports/**", True),
    ("a/b/**", "a/b/**", True),
    ("a/b/c", "a/b/**", True),
    ("reports/q3.csv", "reports/*.csv", True),
    ("reports/q3.csv", "reports/*", True),
    ("q3.csv", "*", True),
    ("a/b", "*/b", True),
    ("a/b/c", "a/**/c", True),
    ("a/c", "a/**/c", True),
    ("q1.csv", "q?.csv", True),
    # not within
    ("reportsx/a", "reports/**", False),
    ("reportsx", "reports/**", False),
    ("report", "reports/**", False),
    ("Reports/q3.csv", "reports/**", False),
    ("private/reports/q3.csv", "reports/**", False),
    ("**", "reports/**", False),
    ("*", "reports/**", False),
    ("*/q3.csv", "reports/**", False),
    ("reports", "reports/*", False),
    ("reports/a/b", "reports/*", False),
    ("reports/q3.md", "reports/*.csv", False),
    ("a/b", "*", False),
    ("reports/**", "reports", False),
    ("a/x/d", "a/**/c", False),
    ("q10.csv", "q?.csv", False),
    ("**", "*", False),
    # within in fact, but not provably so by this check: refused (conservative)
    ("reports/*.csv", "reports/*", False),
    ("a?c", "a*c", False),
    ("x/*/y", "x/*/*", False),
    ("reports/**", "*/**", False),
]


@pytest.mark.parametrize(("child_glob", "parent_glob", "within"), GLOB_WITHIN,
                         ids=[f"{c}<={p}" for c, p, _ in GLOB_WITHIN])
def test_glob_within(child_glob: str, parent_glob: str, within: bool) -> None:
    assert glob_within(child_glob, parent_glob) is within


# == widening(): every kind, with its exact message ========================================
TOOLS = [tool("t", arg("a", exact=1), arg("b", max_len=5), only=True, max_calls=5),
         tool("u")]
FILES = [files(("reports/**", "shared/*.csv"), (R, L, S), max_bytes=100,
               read_budget_bytes=1000, write_budget_bytes=500, create_budget_files=3),
         files(("**",), (R,), ws="other")]
NETS = [net("*.example.com", ("http", "https"), (443, 8443), ("GET", "HEAD"), ("/v1/", "/v2/"),
            max_requests=10, max_bytes=10_000)]
PAYS = [pay(max_count=3, approval_above=1000)]
LIMITS = caps.Limits(memory_mb=256, cpus=0.5, pids=64, timeout_s=30, tmp_mb=16)
PARENT = g(tools=TOOLS, files=FILES, net=NETS, pay=PAYS, limits=LIMITS)


def within(kind: str, message: str) -> str:
    return f"{kind} is not within the grant" + (f": {message}" if message else "")


# (row id, child block, exact widening message)
WIDENING: list[tuple[str, caps.Grant, str]] = [
    # tools
    ("tools:adds-a-tool", child(tools=[tool("u"), tool("v")]), within("tools[1]", "")),
    ("tools:drops-an-arg-constraint", child(tools=[tool("t", arg("b", max_len=5), only=True,
                                                         max_calls=5)]),
     within("tools[0]", "drops the constraint on argument 'a'")),
    ("tools:changes-an-arg-constraint", child(tools=[tool("t", arg("a", exact=2),
                                                          arg("b", max_len=5), only=True)]),
     within("tools[0]", "drops the constraint on argument 'a'")),
    ("tools:makes-an-arg-optional", child(tools=[tool("t", arg("a", exact=1, optional=True),
                                                      arg("b", max_len=5), only=True)]),
     within("tools[0]", "drops the constraint on argument 'a'")),
    ("tools:loosens-max-len", child(tools=[tool("t", arg("a", exact=1), arg("b", max_len=6),
                                                only=True)]),
     within("tools[0]", "drops the constraint on argument 'b'")),
    ("tools:drops-only-listed-args", child(tools=[tool("t", arg("a", exact=1),
                                                       arg("b", max_len=5), max_calls=5)]),
     within("tools[0]", "drops only_listed_args")),
    ("tools:admits-an-argument-the-parent-does-not-list", child(tools=[tool(
        "t", arg("a", exact=1), arg("b", max_len=5), arg("c", exact=0), only=True)]),
     within("tools[0]", "admits argument 'c', which the parent's only_listed_args refuses")),
    ("tools:raises-max-calls", child(tools=[tool("t", arg("a", exact=1), arg("b", max_len=5),
                                                 only=True, max_calls=6)]),
     within("tools[0]", "max_calls 6 exceeds 5")),
    ("tools:removes-max-calls", child(tools=[tool("t", arg("a", exact=1), arg("b", max_len=5),
                                                  only=True)]),
     within("tools[0]", "max_calls unlimited exceeds 5")),
    ("tools:second-rule-widens", child(tools=[tool("u"), tool("t")]),
     within("tools[1]", "drops the constraint on argument 'a'")),
    # files
    ("files:other-workspace", child(files=[files(ws="elsewhere")]), within("files[0]", "")),
    ("files:adds-an-operation", child(files=[files(ops=(R, W))]),
     within("files[0]", "adds operation WRITE")),
    ("files:adds-two-operations-names-the-first", child(files=[files(ops=(D, C))]),
     within("files[0]", "adds operation CREATE")),
    ("files:wider-path", child(files=[files(("**",))]),
     within("files[0]", "path '**' is not within ['reports/**', 'shared/*.csv']")),
    ("files:sibling-path", child(files=[files(("reports/**", "private/**"))]),
     within("files[0]", "path 'private/**' is not within ['reports/**', 'shared/*.csv']")),
    ("files:bigger-max-bytes", child(files=[files(max_bytes=101)]),
     within("files[0]", "max_bytes 101 exceeds 100")),
    ("files:drops-max-bytes", child(files=[files()]),
     within("files[0]", "max_bytes unlimited exceeds 100")),
    ("files:bigger-read-budget", child(files=[files(max_bytes=100, read_budget_bytes=1001)]),
     within("files[0]", "read_budget_bytes exceeds the parent's")),
    ("files:drops-read-budget", child(files=[files(max_bytes=100)]),
     within("files[0]", "read_budget_bytes exceeds the parent's")),
    ("files:bigger-write-budget", child(files=[files(max_bytes=1, read_budget_bytes=1,
                                                     write_budget_bytes=501)]),
     within("files[0]", "write_budget_bytes exceeds the parent's")),
    ("files:bigger-create-budget", child(files=[files(max_bytes=1, read_budget_bytes=1,
                                                      write_budget_bytes=1,
                                                      create_budget_files=4)]),
     within("files[0]", "create_budget_files exceeds the parent's")),
    # net
    ("net:other-host", child(net=[net("api.other.org")]), within("net[0]", "")),
    ("net:parent-suffix-itself", child(net=[net("example.com")]), within("net[0]", "")),
    ("net:wider-wildcard", child(net=[net("*.com")]), within("net[0]", "")),
    ("net:look-alike-wildcard", child(net=[net("*.evilexample.com")]), within("net[0]", "")),
    ("net:adds-a-scheme", child(net=[net(schemes=("https", "ws"))]),
     within("net[0]", "adds a scheme or port")),
    ("net:adds-a-port", child(net=[net(ports=(443, 9443))]),
     within("net[0]", "adds a scheme or port")),
    ("net:default-port-of-added-scheme", child(net=[net(schemes=("http",))]),
     within("net[0]", "adds a scheme or port")),
    ("net:adds-a-method", child(net=[net(methods=("GET", "POST", "DELETE"))]),
     within("net[0]", "adds method DELETE")),
    ("net:wider-path-prefix", child(net=[net(prefixes=("/",))]),
     within("net[0]", "path prefix '/' is not within ['/v1/', '/v2/']")),
    ("net:prefix-without-the-slash", child(net=[net(prefixes=("/v1",))]),
     within("net[0]", "path prefix '/v1' is not within ['/v1/', '/v2/']")),
    ("net:more-requests", child(net=[net(max_requests=11, max_bytes=1)]),
     within("net[0]", "max_requests exceeds the parent's")),
    ("net:drops-max-requests", child(net=[net(max_bytes=1)]),
     within("net[0]", "max_requests exceeds the parent's")),
    ("net:more-bytes", child(net=[net(max_requests=1, max_bytes=10_001)]),
     within("net[0]", "max_bytes exceeds the parent's")),
    # pay
    ("pay:adds-a-payee", child(pay=[pay(("acme", "evil", "zed"))]),
     within("pay[0]", "adds payee 'evil'")),
    ("pay:other-currency", child(pay=[pay(currency="EUR")]),
     within("pay[0]", "other currency")),
    ("pay:bigger-per-payment", child(pay=[pay(max_per_payment=5001)]),
     within("pay[0]", "max_per_payment 5001 exceeds 5000")),
    ("pay:bigger-budget", child(pay=[pay(budget=20001)]),
     within("pay[0]", "budget 20001 exceeds 20000")),
    ("pay:more-payments", child(pay=[pay(max_count=4)]),
     within("pay[0]", "max_count exceeds the parent's")),
    ("pay:drops-max-count", child(pay=[pay()]),
     within("pay[0]", "max_count exceeds the parent's")),
    ("pay:raises-approval-above", child(pay=[pay(max_count=3, approval_above=1001)]),
     within("pay[0]", "raises approval_above")),
    ("pay:drops-approval-above", child(pay=[pay(max_count=3)]),
     within("pay[0]", "raises approval_above")),
    # expiry and limits
    ("expiry:later", child(exp=EXP + 1), f"expires_at {EXP + 1} is after its parent's {EXP}"),
    *[(f"limits:{name}-higher", child(limits=caps.Limits(**{name: higher})),
       f"limits.{name} {higher:g} exceeds its parent's {getattr(LIMITS, name):g}")
      for name, higher in (("memory_mb", 257), ("cpus", 0.75), ("pids", 65), ("timeout_s", 31),
                           ("tmp_mb", 17))],
]

ALWAYS = g(pay=[pay(approval_always=True)])
WIDENING_OTHER_PARENTS: list[tuple[str, list[caps.Grant], caps.Grant, str]] = [
    ("pay:drops-approval-always", [ALWAYS], child(pay=[pay()]),
     within("pay[0]", "drops approval_always")),
    ("pay:approval-above-instead-of-always", [ALWAYS], child(pay=[pay(approval_above=1)]),
     within("pay[0]", "drops approval_always")),
    ("none:parent-has-no-tools", [g(files=FILES)], child(tools=[tool("u")]),
     within("tools[0]", "")),
    ("none:parent-has-no-net", [g(tools=TOOLS)], child(net=[net()]), within("net[0]", "")),
    ("none:parent-has-no-pay", [g(tools=TOOLS)], child(pay=[pay()]), within("pay[0]", "")),
    ("depth:second-layer-refuses", [g(files=[files(("reports/**",), (R, L, S))]),
                                    child(files=[files(("reports/**",), (R,))])],
     child(files=[files(("reports/**",), (R, L))]),
     "files[0] is not within attenuation 1: adds operation LIST"),
    ("depth:earliest-expiry-counts", [g(exp=EXP), child(exp=EXP - 10)], child(exp=EXP - 5),
     f"expires_at {EXP - 5} is after its parent's {EXP - 10}"),
    ("depth:lowest-limit-counts", [g(limits=caps.Limits(memory_mb=512)),
                                   child(limits=caps.Limits(memory_mb=256))],
     child(limits=caps.Limits(memory_mb=300)), "limits.memory_mb 300 exceeds its parent's 256"),
    ("order:kinds-checked-tools-first", [PARENT],
     child(tools=[tool("v")], files=[files(ws="x")]), within("tools[0]", "")),
    ("order:expiry-after-rules", [PARENT], child(exp=EXP + 1, pay=[pay(currency="EUR")]),
     within("pay[0]", "other currency")),
]


def _widening_rows() -> list[tuple[str, list[caps.Grant], caps.Grant, str]]:
    return [(i, [PARENT], c, m) for i, c, m in WIDENING] + WIDENING_OTHER_PARENTS


@pytest.mark.parametrize(("parents", "block", "message"),
                         [r[1:] for r in _widening_rows()], ids=[r[0] for r in _widening_rows()])
def test_widening_is_named_and_refused_at_verification(parents: list[caps.Grant],
                                                       block: caps.Grant, message: str) -> None:
    assert widening(parents, block) == message
    with pytest.raises(AttenuationWidens) as info:
        UnverifiedToken.parse(token_with(*parents, block)).verify(KEYRING)
    assert info.value.details == f"token block {len(parents)} widens its parent: {message}"
    assert info.value.code == "PERMISSION_DENIED"


# (row id, child block) that only narrow PARENT
NARROWING: list[tuple[str, caps.Grant]] = [
    ("empty-block-allows-nothing", child()),
    ("same-as-parent", child(tools=TOOLS, files=FILES, net=NETS, pay=PAYS, limits=LIMITS,
                             exp=EXP)),
    # tools
    ("tools:fewer-tools", child(tools=[tool("u")])),
    ("tools:adds-a-constraint", child(tools=[tool("u", arg("x", prefix="a"))])),
    ("tools:adds-only-listed", child(tools=[tool("u", only=True)])),
    ("tools:adds-max-calls", child(tools=[tool("u", max_calls=1)])),
    ("tools:lowers-max-calls", child(tools=[tool("t", arg("a", exact=1), arg("b", max_len=5),
                                                 only=True, max_calls=1)])),
    ("tools:only-listed-keeps-a-subset", child(tools=[tool("t", arg("a", exact=1),
                                                           arg("b", max_len=5), only=True,
                                                           max_calls=5)])),
    ("tools:constraint-on-a-listed-arg-again", child(tools=[tool(
        "t", arg("a", exact=1), arg("b", max_len=5), arg("b", prefix="x"), only=True,
        max_calls=5)])),
    ("tools:two-rules-for-one-parent-rule", child(tools=[tool("u", arg("k", exact=1)),
                                                         tool("u", arg("k", exact=2))])),
    # files
    ("files:one-file", child(files=[files(("reports/q3.csv",), (R,), max_bytes=10,
                                          read_budget_bytes=10, write_budget_bytes=1,
                                          create_budget_files=1)])),
    ("files:subfolder", child(files=[files(("reports/2024/**",), (L,), max_bytes=100,
                                           read_budget_bytes=1000, write_budget_bytes=500,
                                           create_budget_files=3)])),
    ("files:literal-under-pattern", child(files=[files(("shared/a.csv",), (S,), max_bytes=5,
                                                       read_budget_bytes=5,
                                                       write_budget_bytes=5,
                                                       create_budget_files=1)])),
    ("files:second-parent-rule", child(files=[files(("x/y",), (R,), ws="other")])),
    ("files:cap-where-parent-has-none", child(files=[files(("a",), (R,), ws="other",
                                                           max_bytes=1)])),
    # net
    ("net:exact-host-under-wildcard", child(net=[net("api.example.com", max_requests=1,
                                                     max_bytes=1)])),
    ("net:narrower-wildcard", child(net=[net("*.a.example.com", max_requests=1,
                                             max_bytes=1)])),
    ("net:explicit-default-port", child(net=[net(ports=(443,), max_requests=1,
                                                 max_bytes=1)])),
    ("net:other-listed-port", child(net=[net(schemes=("http",), ports=(8443,),
                                             max_requests=1, max_bytes=1)])),
    ("net:fewer-methods-narrower-prefix", child(net=[net(methods=("HEAD",),
                                                         prefixes=("/v1/public/",),
                                                         max_requests=10,
                                                         max_bytes=10_000)])),
    # pay
    ("pay:fewer-payees-lower-amounts", child(pay=[pay(("acme",), max_per_payment=1, budget=1,
                                                      max_count=1, approval_above=10)])),
    ("pay:approval-always-replaces-above", child(pay=[pay(max_count=3,
                                                          approval_always=True)])),
    ("pay:same-approval", child(pay=[pay(max_count=3, approval_above=1000)])),
    # expiry and limits
    ("expiry:earlier", child(exp=EXP - 1)),
    ("expiry:none-keeps-the-parent's", child(exp=0)),
    ("limits:lower", child(limits=caps.Limits(memory_mb=128, cpus=0.25, pids=8, timeout_s=5,
                                              tmp_mb=1))),
    ("limits:unset-fields-keep-the-parent's", child(limits=caps.Limits(pids=1))),
]


@pytest.mark.parametrize("block", [b for _, b in NARROWING], ids=[i for i, _ in NARROWING])
def test_narrowing_passes_and_verifies(block: caps.Grant) -> None:
    assert widening([PARENT], block) == ""
    verified = UnverifiedToken.parse(token_with(PARENT, block)).verify(KEYRING)
    assert [b.grant for b in verified.blocks] == [PARENT, block]


def test_limits_may_be_set_where_the_parent_sets_none() -> None:
    # 0 means "the manifest's value or the broker default": the launcher keeps that as the
    # ceiling whatever a grant block asks for (launcher/_spec.py effective_limits).
    assert widening([g()], child(limits=caps.Limits(memory_mb=4096))) == ""


def test_no_kind_goes_unchecked() -> None:
    """Every repeated rule field of Grant has widening rows (a new kind needs its own)."""
    kinds = {f.name for f in caps.Grant.DESCRIPTOR.fields
             if f.message_type is not None and f.message_type.name.endswith("Rule")}
    assert kinds == {"tools", "files", "net", "pay"}
    covered = {i.split(":")[0] for i, _, _ in WIDENING}
    assert kinds <= covered


# == properties ============================================================================
ARG_POOL = [arg("a", exact=1), arg("a", one_of=[1, 2]), arg("a", range={"min": 0, "max": 5}),
            arg("b", max_len=2), arg("b", exact="x", optional=True),
            arg("c", prefix="r", optional=True)]
ARGS = [{}, {"a": 1}, {"a": 2}, {"a": 1, "b": "x"}, {"a": 1, "b": "xyz"}, {"a": 1, "c": "r"},
        {"a": 1, "c": "q"}, {"b": "x"}, {"a": 1, "d": 0}, {"a": True}, {"a": 4.5}]
WORKSPACES = ("demo", "other")
PATTERNS = ("**", "*", "*.csv", "reports/**", "reports/*", "reports/q3.csv", "**/*.csv",
            "private/**", "reports")
PATHS = ("", "reports", "reports/q3.csv", "reports/2024/q4.csv", "private/x.csv", "q3.csv")
FILE_OPS = (R, L, W, caps.MKDIR)
HOSTS = ("api.example.com", "*.example.com", "b.example.com", "*.a.example.com", "other.org")
REQ_HOSTS = ("api.example.com", "b.example.com", "x.a.example.com", "example.com",
             "other.org")
PORTS = ((), (443,), (8443,), (80, 443))
PREFIXES = ("/", "/v1/", "/v1/a/", "/v2/")
REQ_PATHS = ("/", "/v1/x", "/v1/a/b", "/v2/")

UNIVERSE: list[Any] = (
    [ToolCall(t, a) for t in ("t", "u") for a in ARGS]
    + [FileAccess(ws, p, op) for ws in WORKSPACES for p in PATHS for op in FILE_OPS]
    + [NetRequest(s, h, port, m, p) for h in REQ_HOSTS
       for s, port in (("https", 443), ("http", 80), ("https", 8443))
       for m in ("GET", "POST") for p in REQ_PATHS]
    + [Payment(p, amount, cur) for p in ("acme", "globex", "evil") for cur in ("USD", "EUR")
       for amount in (5, 50, 500)])


def subset(pool: tuple[Any, ...] | list[Any], min_size: int = 0) -> st.SearchStrategy[Any]:
    return st.lists(st.sampled_from(pool), min_size=min_size, max_size=3, unique=True)


tool_rules = st.builds(
    lambda name, args, only, calls: tool(name, *args, only=only, max_calls=calls),
    st.sampled_from(("t", "u")), st.lists(st.sampled_from(ARG_POOL), max_size=3), st.booleans(),
    st.sampled_from((0, 1, 5)))
file_rules = st.builds(
    lambda ws, paths, ops, mb: files(tuple(paths), tuple(ops), ws, max_bytes=mb),
    st.sampled_from(WORKSPACES), subset(PATTERNS, 1), subset(FILE_OPS, 1),
    st.sampled_from((0, 10)))
net_rules = st.builds(
    lambda host, schemes, ports, methods, prefixes, reqs: net(
        host, tuple(schemes), ports, tuple(methods), tuple(prefixes), max_requests=reqs),
    st.sampled_from(HOSTS), subset(("http", "https"), 1), st.sampled_from(PORTS),
    subset(("GET", "POST"), 1), subset(PREFIXES, 1), st.sampled_from((0, 3)))
pay_rules = st.builds(
    lambda payees, cur, most, always, above: pay(tuple(payees), cur, most, 1000,
                                                 approval_always=always, approval_above=above),
    subset(("acme", "globex", "evil"), 1), st.sampled_from(("USD", "EUR")),
    st.sampled_from((10, 100, 1000)), st.booleans(), st.sampled_from((0, 20, 200)))
RULES = {"tools": tool_rules, "files": file_rules, "net": net_rules, "pay": pay_rules}
limits = st.builds(caps.Limits, memory_mb=st.sampled_from((0, 128, 256, 512)),
                   pids=st.sampled_from((0, 8, 64)))


@st.composite
def parents(draw: st.DrawFn) -> caps.Grant:
    gr = g(limits=draw(limits))
    for kind, rules in RULES.items():
        getattr(gr, kind).extend(draw(st.lists(rules, max_size=2)))
    return gr


def _mutated(draw: st.DrawFn, kind: str, rule: Any) -> Any:
    """A copy of ``rule`` with one field taken from a freshly drawn rule: sometimes a
    narrowing, sometimes a widening, always close enough to the parent to be interesting."""
    out = type(rule)()
    out.CopyFrom(rule)
    fresh = draw(RULES[kind])
    name = draw(st.sampled_from([f.name for f in rule.DESCRIPTOR.fields if f.name != "id"]))
    out.ClearField(name)
    value = getattr(fresh, name)
    if hasattr(value, "extend"):
        getattr(out, name).extend(value)
    else:
        setattr(out, name, value)
    return out


@st.composite
def children(draw: st.DrawFn, parent: caps.Grant) -> caps.Grant:
    gr = child(exp=draw(st.sampled_from((0, EXP - 10, EXP, EXP + 10))), limits=draw(limits))
    for kind, rules in RULES.items():
        for rule in getattr(parent, kind):
            how = draw(st.sampled_from(("keep", "mutate", "drop")))
            if how == "keep":
                getattr(gr, kind).append(rule)
            elif how == "mutate":
                getattr(gr, kind).append(_mutated(draw, kind, rule))
        if draw(st.integers(0, 5)) == 0:
            getattr(gr, kind).append(draw(rules))
    return gr


@st.composite
def pairs(draw: st.DrawFn) -> tuple[caps.Grant, caps.Grant]:
    parent = draw(parents())
    return parent, draw(children(parent))


def auth(*grants: caps.Grant) -> Authority:
    return Authority.from_blocks([token_pb2.TokenBlock(id=bytes([i]) * 16, grant=gr)
                                  for i, gr in enumerate(grants)])


def as_root(block: caps.Grant, parent: caps.Grant) -> caps.Grant:
    """The block on its own, valid as long as its parent."""
    out = caps.Grant()
    out.CopyFrom(block)
    out.expires_at = min(e for e in (block.expires_at, parent.expires_at) if e)
    return out


@settings(max_examples=300, deadline=None)
@given(pair=pairs())
def test_a_block_that_does_not_widen_allows_nothing_its_parent_refuses(
        pair: tuple[caps.Grant, caps.Grant]) -> None:
    parent, block = pair
    problem = widening([parent], block)
    text = token_with(parent, block)
    if problem:
        with pytest.raises(AttenuationWidens) as info:
            UnverifiedToken.parse(text).verify(KEYRING)
        assert info.value.details == f"token block 1 widens its parent: {problem}"
        return
    UnverifiedToken.parse(text).verify(KEYRING)  # accepted
    alone, parent_only, both = auth(as_root(block, parent)), auth(parent), auth(parent, block)
    for op in UNIVERSE:
        by_parent = decide(parent_only, op, NOW).allowed
        # What the token allows (child ∩ parent) the parent allows ...
        assert not decide(both, op, NOW).allowed or by_parent, op
        # ... and so does what the block alone allows: it lies within the parent.
        assert not decide(alone, op, NOW).allowed or by_parent, (op, block)


@settings(max_examples=200, deadline=None)
@given(pair=pairs())
def test_adding_any_block_never_turns_a_denial_into_an_allow(
        pair: tuple[caps.Grant, caps.Grant]) -> None:
    """Whether or not verification would accept it, one more layer only narrows: fewer
    operations, the parent's charges kept, approval never dropped."""
    parent, block = pair
    before_auth, after_auth = auth(parent), auth(parent, block)
    for op in UNIVERSE:
        before, after = decide(before_auth, op, NOW), decide(after_auth, op, NOW)
        if after.allowed:
            assert before.allowed, op
            assert set(before.charges) <= set(after.charges), op
            assert after.needs_approval >= before.needs_approval, op
            assert after.rule == before.rule, op


def test_the_property_universe_reaches_every_kind() -> None:
    kinds = {type(op).__name__ for op in UNIVERSE}
    assert kinds == {"ToolCall", "FileAccess", "NetRequest", "Payment"}
    allowed = {type(op).__name__ for op in UNIVERSE if decide(auth(g(
        tools=[tool("t")], files=[files(("**",), FILE_OPS)],
        net=[net("*.example.com", ("https",), (), ("GET",), ("/",))],
        pay=[pay()])), op, NOW).allowed}
    assert allowed == kinds
