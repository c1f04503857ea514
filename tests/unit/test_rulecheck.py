"""Semantic checks of tool-argument, network and payment rules (rulecheck.py), through the
real path: YAML text -> ``load_yaml`` -> ``parse_grant`` / ``parse_manifest``. Every refusal
is a ManifestInvalid (INVALID_ARGUMENT) whose exact message names the field path.

Also: ``describe()`` of an authority holding every kind, line by line.
"""

from __future__ import annotations

import pytest
from writ._proto import capabilities_pb2 as caps
from writ._proto import token_pb2
from writ.core.describe import describe
from writ.core.policy import Authority
from writ.errors import ManifestInvalid
from writ.manifests import load_yaml, parse_grant, parse_manifest
from writ.rulecheck import MAX_AMOUNT, MAX_REGEX

METHODS = "['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT']"
HOSTNAME_HINT = "use ASCII (IDNA) and an explicit '*.' prefix for wildcards"
SUFFIX_HINT = "name a registrable domain, e.g. '*.example.com'"
UNBOUNDED = f"must be between 1 and {MAX_AMOUNT} minor units (unbounded amounts are refused)"

# One valid rule of each kind as YAML; each row replaces one field with YAML text.
NET = {"schemes": "[https]", "host": "api.example.com", "ports": "[]", "methods": "[GET]",
       "path_prefixes": "[/v1/]"}
PAY = {"payees": "[acme]", "currency": "USD", "max_per_payment": "500", "budget": "2000",
       "approval_above": "0"}


def _block(kind: str, fields: dict[str, str]) -> str:
    lines = [f"{kind}:", "- " + "\n  ".join(f"{k}: {v}" for k, v in fields.items())]
    return "\n".join(lines) + "\n"


def net_yaml(**change: str) -> str:
    return _block("net", {**NET, **change})


def pay_yaml(**change: str) -> str:
    return _block("pay", {**PAY, **change})


def arg_yaml(constraint: str) -> str:
    return f"tools:\n- name: probe\n  args:\n  - {{arg: path, glob: '**'}}\n  - {constraint}\n"


def refusal(kind: str, text: str) -> str:
    """Parse YAML text as a grant or (with a name and image) a manifest; return the exact
    message of the ManifestInvalid it must raise."""
    with pytest.raises(ManifestInvalid) as info:
        if kind == "grant":
            parse_grant(load_yaml(text, "grant"))
        else:
            head = "name: probe\nimage: writ-tool/probe:latest\n"
            parse_manifest(load_yaml(head + text, "manifest"))
    assert info.value.code == "INVALID_ARGUMENT"
    return info.value.details


# == tool argument constraints (grants only: manifests have no tool rules) =================
A = "grant.tools[0].args[1]"
ARG_ROWS: list[tuple[str, str, str]] = [
    ("no-arg-name", "{glob: '*'}", f"{A}.arg: name the input argument"),
    ("empty-arg-name", "{arg: '', glob: '*'}", f"{A}.arg: name the input argument"),
    ("constraint-without-check", "{arg: x}",
     f"{A}: no check given (exact, one_of, prefix, glob, regex, range or max_len)"),
    ("optional-without-check", "{arg: x, optional: true}",
     f"{A}: no check given (exact, one_of, prefix, glob, regex, range or max_len)"),
    ("empty-one-of", "{arg: x, one_of: []}", f"{A}.one_of: empty; it would allow nothing"),
    ("exact-nan", "{arg: x, exact: .nan}", f"{A}.exact: NaN and infinity are not JSON values"),
    ("exact-infinity", "{arg: x, exact: .inf}",
     f"{A}.exact: NaN and infinity are not JSON values"),
    ("exact-nan-inside-a-list", "{arg: x, exact: [1, .nan]}",
     f"{A}.exact: NaN and infinity are not JSON values"),
    ("exact-nan-inside-an-object", "{arg: x, exact: {k: [-.inf]}}",
     f"{A}.exact: NaN and infinity are not JSON values"),
    ("one-of-nan", "{arg: x, one_of: [1, .nan]}",
     f"{A}.one_of: NaN and infinity are not JSON values"),
    ("regex-too-long", f"{{arg: x, regex: '{'a' * (MAX_REGEX + 1)}'}}",
     f"{A}.regex: longer than {MAX_REGEX} characters"),
    ("regex-invalid-group", "{arg: x, regex: '('}",
     f"{A}.regex: missing ), unterminated subpattern at position 0"),
    ("regex-invalid-range", "{arg: x, regex: '[z-a]'}",
     f"{A}.regex: bad character range z-a at position 1"),
    ("regex-nothing-to-repeat", "{arg: x, regex: '*a'}",
     f"{A}.regex: nothing to repeat at position 0"),
    ("range-min-above-max", "{arg: x, range: {min: 5, max: 1}}",
     f"{A}.range: min 5 is above max 1"),
    ("range-min-above-max-fractions", "{arg: x, range: {min: 0.5, max: 0.25}}",
     f"{A}.range: min 0.5 is above max 0.25"),
        # YAML's .nan is refused by the schema parser; its quoted JSON spelling reaches the check
    ("range-nan-min", "{arg: x, range: {min: 'NaN'}}", f"{A}.range: NaN is not a bound"),
    ("range-nan-max", "{arg: x, range: {min: 0, max: 'NaN'}}", f"{A}.range: NaN is not a bound"),
    ("max-len-zero", "{arg: x, max_len: 0}",
     f"{A}.max_len: 0 allows only the empty string; use exact"),
    ("glob-empty", "{arg: x, glob: ''}", f"{A}.glob: empty path pattern"),
    ("glob-absolute", "{arg: x, glob: /etc/**}",
     f"{A}.glob: '/etc/**' is absolute; patterns are relative to the workspace root"),
    ("glob-dotdot", "{arg: x, glob: 'reports/../**'}",
     f"{A}.glob: 'reports/../**' contains an empty, '.' or '..' segment"),
    ("glob-dot", "{arg: x, glob: './**'}",
     f"{A}.glob: './**' contains an empty, '.' or '..' segment"),
    ("glob-empty-segment", "{arg: x, glob: 'a//b'}",
     f"{A}.glob: 'a//b' contains an empty, '.' or '..' segment"),
    ("glob-partial-doublestar", "{arg: x, glob: 'a**'}",
     f"{A}.glob: '**' must be a whole segment in 'a**'"),
]


@pytest.mark.parametrize(("constraint", "message"), [r[1:] for r in ARG_ROWS],
                         ids=[r[0] for r in ARG_ROWS])
def test_argument_constraint_refusals(constraint: str, message: str) -> None:
    assert refusal("grant", arg_yaml(constraint)) == message


def test_the_constraint_index_is_named() -> None:
    text = ("tools:\n- name: probe\n- name: fetch\n  args:\n  - {arg: a, exact: 1}\n"
            "  - {arg: b, exact: 2}\n  - {arg: c, range: {min: 2, max: 1}}\n")
    assert refusal("grant", text) == "grant.tools[1].args[2].range: min 2 is above max 1"


@pytest.mark.parametrize("constraint", [
    "{arg: x, exact: 1}", "{arg: x, exact: null}", "{arg: x, exact: {k: [1, true]}}",
    "{arg: x, one_of: [a, 1, false, null]}", "{arg: x, prefix: ''}", "{arg: x, glob: '**'}",
    f"{{arg: x, regex: '{'a' * MAX_REGEX}'}}", "{arg: x, range: {min: 1, max: 1}}",
    "{arg: x, range: {}}", "{arg: x, range: {min: '-Infinity'}}", "{arg: x, max_len: 1}",
    "{arg: x, exact: 1, optional: true}",
], ids=["exact-number", "exact-null", "exact-object", "one-of-mixed", "prefix-empty",
        "glob-everything", "regex-at-the-limit", "range-single-point", "range-open",
        "range-infinite-bound", "max-len-one", "optional"])
def test_valid_argument_constraints_parse(constraint: str) -> None:
    g = parse_grant(load_yaml(arg_yaml(constraint), "grant"))
    assert len(g.tools[0].args) == 2


# == network rules (grants and manifests alike) ============================================
NET_ROWS: list[tuple[str, dict[str, str], str]] = [
    # schemes
    ("schemes-empty", {"schemes": "[]"}, "schemes: empty; an empty list grants nothing"),
    ("scheme-ftp", {"schemes": "[https, ftp]"}, "schemes: 'ftp' is not http or https"),
    ("scheme-upper", {"schemes": "[HTTPS]"}, "schemes: 'HTTPS' is not http or https"),
    ("scheme-ws", {"schemes": "[ws]"}, "schemes: 'ws' is not http or https"),
    # hosts: wildcards
    ("host-star", {"host": "'*'"},
     f"host: '*' is not a host name (label '*'); {HOSTNAME_HINT}"),
    ("host-star-dot", {"host": "'*.'"},
     f"host: '*.' is not a host name (label ''); {HOSTNAME_HINT}"),
    ("host-star-com", {"host": "'*.com'"},
     f"host: wildcard '*.com' covers a public suffix; {SUFFIX_HINT}"),
    ("host-star-co-uk", {"host": "'*.co.uk'"},
     f"host: wildcard '*.co.uk' covers a public suffix; {SUFFIX_HINT}"),
    ("host-star-github-io", {"host": "'*.github.io'"},
     f"host: wildcard '*.github.io' covers a public suffix; {SUFFIX_HINT}"),
    ("host-star-amazonaws", {"host": "'*.amazonaws.com'"},
     f"host: wildcard '*.amazonaws.com' covers a public suffix; {SUFFIX_HINT}"),
    ("host-double-star", {"host": "'*.*.example.com'"},
     f"host: '*.*.example.com' is not a host name (label '*'); {HOSTNAME_HINT}"),
    ("host-star-inside", {"host": "'api*.example.com'"},
     f"host: 'api*.example.com' is not a host name (label 'api*'); {HOSTNAME_HINT}"),
    ("host-star-no-dot", {"host": "'*example.com'"},
     f"host: '*example.com' is not a host name (label '*example'); {HOSTNAME_HINT}"),
    # hosts: names
    ("host-empty", {"host": "''"}, "host: empty host"),
    ("host-upper", {"host": "API.example.com"}, "host: 'API.example.com' must be lower case"),
    ("host-underscore", {"host": "api_v1.example.com"},
     f"host: 'api_v1.example.com' is not a host name (label 'api_v1'); {HOSTNAME_HINT}"),
    ("host-leading-dash", {"host": "-api.example.com"},
     f"host: '-api.example.com' is not a host name (label '-api'); {HOSTNAME_HINT}"),
    ("host-trailing-dash", {"host": "api-.example.com"},
     f"host: 'api-.example.com' is not a host name (label 'api-'); {HOSTNAME_HINT}"),
    ("host-empty-label", {"host": "api..example.com"},
     f"host: 'api..example.com' is not a host name (label ''); {HOSTNAME_HINT}"),
    ("host-trailing-dot", {"host": "api.example.com."},
     f"host: 'api.example.com.' is not a host name (label ''); {HOSTNAME_HINT}"),
    ("host-label-too-long", {"host": "a" * 64 + ".example.com"},
     (f"host: '{'a' * 64}.example.com' is not a host name (label '{'a' * 64}'); "
      f"{HOSTNAME_HINT}")),
    ("host-unicode", {"host": "café.example.com"},
     f"host: 'café.example.com' is not a host name (label 'café'); {HOSTNAME_HINT}"),
    ("host-with-port", {"host": "'api.example.com:443'"},
     f"host: 'api.example.com:443' is not a host name (label 'com:443'); {HOSTNAME_HINT}"),
    ("host-url", {"host": "'https://api.example.com'"},
     (f"host: 'https://api.example.com' is not a host name (label 'https://api'); "
      f"{HOSTNAME_HINT}")),
    # hosts: IP literals must be canonical (and bare)
    ("ip-short-form", {"host": "'127.1'"},
     "host: IP literal '127.1' is not in canonical form (127.0.0.1)"),
    ("ip-hex", {"host": "'0x7f.0.0.1'"},
     "host: IP literal '0x7f.0.0.1' is not in canonical form (127.0.0.1)"),
    ("ip-octal", {"host": "'0177.0.0.1'"},
     "host: IP literal '0177.0.0.1' is not in canonical form (127.0.0.1)"),
    ("ip-decimal", {"host": "'2130706433'"},
     "host: IP literal '2130706433' is not in canonical form (127.0.0.1)"),
    ("ip-five-parts", {"host": "'1.2.3.4.5'"},
     "host: '1.2.3.4.5' ends in a number but is not an IP address"),
    ("ip-wildcard", {"host": "'*.0.0.1'"},
     "host: '*.0.0.1' ends in a number but is not an IP address"),
    ("ipv6-long-form", {"host": "'0:0:0:0:0:0:0:1'"},
     "host: IP literal '0:0:0:0:0:0:0:1' is not in canonical form (::1)"),
    ("ipv6-brackets", {"host": "'[::1]'"},
     "host: IP literal '[::1]' is not in canonical form (::1)"),
    ("ipv6-mapped-v4", {"host": "'::ffff:127.0.0.1'"},
     "host: IP literal '::ffff:127.0.0.1' is not in canonical form (::ffff:7f00:1)"),
    # ports
    ("port-zero", {"ports": "[443, 0]"}, "ports: 0 is not a port"),
    ("port-65536", {"ports": "[65536]"}, "ports: 65536 is not a port"),
    # methods
    ("methods-empty", {"methods": "[]"}, "methods: empty; an empty list grants nothing"),
    ("method-lower", {"methods": "[get]"}, f"methods: 'get' is not one of {METHODS}"),
    ("method-unknown", {"methods": "[GET, TRACE]"},
     f"methods: 'TRACE' is not one of {METHODS}"),
    ("method-star", {"methods": "['*']"}, f"methods: '*' is not one of {METHODS}"),
    # path prefixes
    ("prefixes-empty", {"path_prefixes": "[]"}, "path_prefixes: empty; use '/' for every path"),
    ("prefix-without-slash", {"path_prefixes": "[v1/]"},
     "path_prefixes: 'v1/' must start with '/' and contain no '..' segment"),
    ("prefix-empty-string", {"path_prefixes": "['']"},
     "path_prefixes: '' must start with '/' and contain no '..' segment"),
    ("prefix-dotdot", {"path_prefixes": "[/v1/../admin]"},
     "path_prefixes: '/v1/../admin' must start with '/' and contain no '..' segment"),
    ("prefix-trailing-dotdot", {"path_prefixes": "[/v1/..]"},
     "path_prefixes: '/v1/..' must start with '/' and contain no '..' segment"),
    ("prefix-nul", {"path_prefixes": '["/v1/\\0"]'},
     "path_prefixes: '/v1/\\x00' must start with '/' and contain no '..' segment"),
]


@pytest.mark.parametrize("kind", ["grant", "manifest"])
@pytest.mark.parametrize(("change", "message"), [r[1:] for r in NET_ROWS],
                         ids=[r[0] for r in NET_ROWS])
def test_net_rule_refusals(kind: str, change: dict[str, str], message: str) -> None:
    assert refusal(kind, net_yaml(**change)) == f"{kind}.net[0].{message}"


def test_the_net_rule_index_is_named() -> None:
    text = net_yaml() + "- {schemes: [https], host: '*.com', methods: [GET], path_prefixes: [/]}\n"
    assert refusal("grant", text) == (
        f"grant.net[1].host: wildcard '*.com' covers a public suffix; {SUFFIX_HINT}")


@pytest.mark.parametrize("host", [
    "api.example.com", "*.example.com", "*.api.example.com", "*.example.co.uk", "localhost",
    "127.0.0.1", "::1", "2001:db8::1", "xn--caf-dma.example.com", "a.b0", "a-b.example.com",
    "a" * 63 + ".example.com",
])
def test_valid_hosts_parse(host: str) -> None:
    for kind in ("grant", "manifest"):
        text = net_yaml(host=f"'{host}'")
        m = (parse_grant(load_yaml(text, "g")) if kind == "grant" else
             parse_manifest(load_yaml("name: p\nimage: writ-tool/p:latest\n" + text, "m")))
        assert m.net[0].host == host


# == payment rules ==========================================================================
PAY_ROWS: list[tuple[str, dict[str, str], str]] = [
    ("payees-empty", {"payees": "[]"}, "payees: list the payees; empty grants nothing"),
    ("payee-empty-string", {"payees": "[acme, '']"},
     "payees: list the payees; empty grants nothing"),
    ("currency-lower", {"currency": "eur"}, "currency: 'eur' is not an ISO 4217 code"),
    ("currency-missing", {"currency": "''"}, "currency: '' is not an ISO 4217 code"),
    ("currency-long", {"currency": "EURO"}, "currency: 'EURO' is not an ISO 4217 code"),
    ("currency-symbol", {"currency": "'$'"}, "currency: '$' is not an ISO 4217 code"),
    ("currency-digits", {"currency": "'978'"}, "currency: '978' is not an ISO 4217 code"),
    ("max-per-payment-zero", {"max_per_payment": "0"}, f"max_per_payment: 0 {UNBOUNDED}"),
    ("max-per-payment-negative", {"max_per_payment": "-1"}, f"max_per_payment: -1 {UNBOUNDED}"),
    ("max-per-payment-over", {"max_per_payment": str(MAX_AMOUNT + 1)},
     f"max_per_payment: {MAX_AMOUNT + 1} {UNBOUNDED}"),
    ("budget-zero", {"budget": "0"}, f"budget: 0 {UNBOUNDED}"),
    ("budget-negative", {"budget": "-100"}, f"budget: -100 {UNBOUNDED}"),
    ("budget-over", {"budget": str(2**62)}, f"budget: {2**62} {UNBOUNDED}"),
    ("approval-above-negative", {"approval_above": "-1"}, "approval_above: -1 is out of range"),
    ("approval-above-over", {"approval_above": str(MAX_AMOUNT + 1)},
     f"approval_above: {MAX_AMOUNT + 1} is out of range"),
]


@pytest.mark.parametrize("kind", ["grant", "manifest"])
@pytest.mark.parametrize(("change", "message"), [r[1:] for r in PAY_ROWS],
                         ids=[r[0] for r in PAY_ROWS])
def test_pay_rule_refusals(kind: str, change: dict[str, str], message: str) -> None:
    assert refusal(kind, pay_yaml(**change)) == f"{kind}.pay[0].{message}"


def test_missing_amounts_are_refused_as_unbounded() -> None:
    text = "pay:\n- {payees: [acme], currency: USD}\n"
    assert refusal("grant", text) == f"grant.pay[0].max_per_payment: 0 {UNBOUNDED}"
    text = "pay:\n- {payees: [acme], currency: USD, max_per_payment: 5}\n"
    assert refusal("grant", text) == f"grant.pay[0].budget: 0 {UNBOUNDED}"


def test_amounts_at_the_limits_parse() -> None:
    g = parse_grant(load_yaml(pay_yaml(max_per_payment="1", budget=str(MAX_AMOUNT),
                                       approval_above=str(MAX_AMOUNT)), "grant"))
    assert (g.pay[0].max_per_payment, g.pay[0].budget, g.pay[0].approval_above) == (
        1, MAX_AMOUNT, MAX_AMOUNT)


def test_rules_are_checked_kind_by_kind_in_a_fixed_order() -> None:
    """A grant wrong in several kinds names the first: tools, files, net, pay, limits."""
    bad = {"tools": "tools:\n- {name: probe, args: [{arg: x}]}\n",
           "files": "files:\n- {workspace: demo, paths: [/x], ops: [READ]}\n",
           "net": net_yaml(host="'*.com'"),
           "pay": pay_yaml(currency="eur")}
    order = ["tools", "files", "net", "pay"]
    firsts = {"tools": "grant.tools[0].args[0]: no check given",
              "files": "grant.files[0].paths[0]: '/x' is absolute",
              "net": "grant.net[0].host: wildcard '*.com'",
              "pay": "grant.pay[0].currency: 'eur'"}
    for i, kind in enumerate(order):
        text = "".join(bad[k] for k in order[i:])
        assert refusal("grant", text).startswith(firsts[kind])


# == describe(): every kind, exact lines ===================================================
GRANT_YAML = """
not_before: 1700000000
expires_at: 1700003600
tools:
- name: probe
  id: probe-read
  args:
  - {arg: action, one_of: [read, list]}
  - {arg: path, glob: 'reports/**'}
  - {arg: n, range: {min: 1, max: 10}, optional: true}
  - {arg: q, range: {max: 2.5}}
  - {arg: mode, exact: {deep: true}}
  - {arg: tag, prefix: v, optional: true}
  - {arg: v, regex: 'v[0-9]+'}
  - {arg: note, max_len: 40}
  only_listed_args: true
  max_calls: 5
- name: word-count
files:
- {id: reports, workspace: demo, paths: ['reports/**', '*.md'], ops: [READ, LIST],
   max_bytes: 4096, read_budget_bytes: 100000}
- {workspace: demo, paths: [out/**], ops: [WRITE, CREATE, MKDIR], write_budget_bytes: 5000,
   create_budget_files: 10}
net:
- {id: api, schemes: [https], host: api.example.com, methods: [GET, HEAD],
   path_prefixes: [/v1/, /v2/], max_requests: 100, max_bytes: 1000000}
- {schemes: [http, https], host: '*.example.org', ports: [8080, 8443], methods: [POST],
   path_prefixes: [/]}
pay:
- {id: vendors, payees: [acme, globex], currency: USD, max_per_payment: 5000, budget: 20000,
   max_count: 3, approval_above: 1000}
- {payees: [charity], currency: EUR, max_per_payment: 100, budget: 100, approval_always: true}
"""
MANIFEST_YAML = """
name: probe
image: writ-tool/probe:latest
files: [{paths: ['**'], ops: [READ, LIST, STAT]}]
"""
G = "grant [01234567]"
EXPECTED_LINES = [
    "valid from 2023-11-14 22:13:20 UTC until 2023-11-14 23:13:20 UTC",
    "bound to invocation i0123",
    "manifest of 'probe': files *:** READ,LIST,STAT [files[0]]",
    "manifest of 'probe': nothing for network, payments",
    (f"{G}: tool probe (action one_of ['read', 'list']; path glob 'reports/**'; n? in [1, 10]; "
     "q in [-inf, 2.5]; mode exact {'deep': True}; tag? prefix 'v'; v regex 'v[0-9]+'; "
     "note max_len 40; no other arguments), max calls 5 [probe-read]"),
    f"{G}: tool word-count [tools[1]]",
    (f"{G}: files demo:reports/** *.md READ,LIST, max bytes per read 4096, read budget bytes "
     "100000 [reports]"),
    (f"{G}: files demo:out/** WRITE,CREATE,MKDIR, write budget bytes 5000, create budget files "
     "10 [files[1]]"),
    (f"{G}: net GET,HEAD https://api.example.com:default /v1/ /v2/, max requests 100, max bytes "
     "1000000 [api]"),
    f"{G}: net POST http/https://*.example.org:8080,8443 / [net[1]]",
    (f"{G}: pay acme,globex in USD, at most 5000 each, budget 20000, max payments 3, approval "
     "above 1000 [vendors]"),
    f"{G}: pay charity in EUR, at most 100 each, budget 100, approval always [pay[1]]",
    "attenuation 1 [fedcba98]: tool probe [tools[0]]",
    "attenuation 1 [fedcba98]: nothing for files, network, payments",
    "attenuation 3 [77777777]: nothing",
]


def test_describe_names_every_rule_of_every_layer() -> None:
    grant = parse_grant(load_yaml(GRANT_YAML, "grant"))
    manifest = parse_manifest(load_yaml(MANIFEST_YAML, "manifest"))
    blocks = [
        token_pb2.TokenBlock(id=bytes.fromhex("0123456789abcdef" * 2), grant=grant),
        token_pb2.TokenBlock(id=bytes.fromhex("fedcba9876543210" * 2),
                             grant=caps.Grant(tools=[caps.ToolRule(name="probe")])),
        token_pb2.TokenBlock(id=b"\x00" * 16, invocation_id="i0123", tool="probe"),
        token_pb2.TokenBlock(id=b"\x77" * 16, grant=caps.Grant()),
    ]
    assert describe(Authority.from_blocks(blocks, manifest)) == EXPECTED_LINES


def test_describe_of_an_unbounded_authority_says_so() -> None:
    block = token_pb2.TokenBlock(id=b"\x01" * 16, grant=caps.Grant(
        tools=[caps.ToolRule(name="t")]))
    assert describe(Authority.from_blocks([block])) == [
        "valid from minting until never (refused)",
        "grant [01010101]: tool t [tools[0]]",
        "grant [01010101]: nothing for files, network, payments",
    ]
