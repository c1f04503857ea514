"""Network rules beyond host, method and path: secrets and time limits.

- rulecheck ``_check_secrets`` through the real parse path (YAML -> parse_grant /
  parse_manifest): manifests carry no secrets, secrets only over https, names and headers
  checked, connection headers reserved; each refusal names its field.
- attenuation ``_net_within``: a narrowed token may keep or drop a secret or narrow its
  path prefix, never add one, move it to another header or widen its prefix; a time limit
  only shrinks. Checked by ``widening()`` and by token verification.
- ``decide`` on a NetRequest: ``timeout_s`` is the smallest nonzero limit of the deciding
  rule of every layer; ``secrets`` come from the innermost grant layer's rule, filtered by
  path prefix.
"""

from __future__ import annotations

from typing import Any

import pytest
from writ._proto import capabilities_pb2 as caps
from writ._proto import token_pb2
from writ.core.attenuation import widening
from writ.core.policy import Authority, FileAccess, NetRequest, decide
from writ.core.tokens import UnverifiedToken
from writ.errors import AttenuationWidens, ManifestInvalid
from writ.manifests import load_yaml, parse_grant, parse_manifest

from .test_attenuation import KEYRING, token_with

NOW = 1_700_000_000
EXP = NOW + 3600


# == rulecheck: secrets in grants and manifests =============================================
RULE = ("- schemes: {schemes}\n  host: api.example.com\n  methods: [GET]\n"
        "  path_prefixes: [/v1/]\n  secrets: {secrets}\n")
SECRET = "{secret: api-key, header: Authorization, path_prefix: /v1/}"


def grant_yaml(secrets: str = f"[{SECRET}]", schemes: str = "[https]") -> str:
    return "net:\n" + RULE.format(schemes=schemes, secrets=secrets)


def secret_yaml(**change: str) -> str:
    fields = {"secret": "api-key", "header": "Authorization", "path_prefix": "/v1/", **change}
    return grant_yaml("[{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}]")


def refusal(kind: str, text: str) -> str:
    with pytest.raises(ManifestInvalid) as info:
        if kind == "grant":
            parse_grant(load_yaml(text, "grant"))
        else:
            parse_manifest(load_yaml("name: probe\nimage: writ-tool/probe:latest\n" + text,
                                     "manifest"))
    assert info.value.code == "INVALID_ARGUMENT"
    return info.value.details


def test_a_grant_may_attach_secrets() -> None:
    g = parse_grant(load_yaml(grant_yaml(f"[{SECRET}, {{secret: org.id_2, header: X-Org, "
                                         "path_prefix: /}]"), "grant"))
    assert [(s.secret, s.header, s.path_prefix) for s in g.net[0].secrets] == [
        ("api-key", "Authorization", "/v1/"), ("org.id_2", "X-Org", "/")]


@pytest.mark.parametrize("secrets", [f"[{SECRET}]", "[]"], ids=["one", "empty-list"])
def test_a_manifest_cannot_attach_secrets(secrets: str) -> None:
    text = grant_yaml(secrets)
    if secrets == "[]":
        assert len(parse_manifest(load_yaml("name: probe\nimage: writ-tool/probe:latest\n" +
                                            text, "m")).net) == 1
        return
    assert refusal("manifest", text) == (
        "manifest.net[0].secrets: a manifest cannot attach secrets; a grant does")


HTTPS_ONLY = "secrets travel only over https; set schemes to [https]"
NAME = "is not a secret name (1..64 of a-z 0-9 _ . -)"
HEADER = "is not a header a secret may fill"

SECRET_ROWS: list[tuple[str, str, str]] = [
    ("scheme-http", grant_yaml(schemes="[http]"), f"secrets: {HTTPS_ONLY}"),
    ("scheme-both", grant_yaml(schemes="[https, http]"), f"secrets: {HTTPS_ONLY}"),
    ("scheme-none", grant_yaml(schemes="[]"), f"secrets: {HTTPS_ONLY}"),
    ("name-upper", secret_yaml(secret="API-KEY"), f"secrets[0].secret: 'API-KEY' {NAME}"),
    ("name-empty", secret_yaml(secret="''"), f"secrets[0].secret: '' {NAME}"),
    ("name-missing", grant_yaml("[{header: Authorization, path_prefix: /}]"),
     f"secrets[0].secret: '' {NAME}"),
    ("name-leading-dash", secret_yaml(secret="-key"), f"secrets[0].secret: '-key' {NAME}"),
    ("name-leading-dot", secret_yaml(secret=".key"), f"secrets[0].secret: '.key' {NAME}"),
    ("name-slash", secret_yaml(secret="a/b"), f"secrets[0].secret: 'a/b' {NAME}"),
    ("name-space", secret_yaml(secret="'a b'"), f"secrets[0].secret: 'a b' {NAME}"),
    ("name-65", secret_yaml(secret="a" * 65), f"secrets[0].secret: '{'a' * 65}' {NAME}"),
    ("header-empty", secret_yaml(header="''"), f"secrets[0].header: '' {HEADER}"),
    ("header-space", secret_yaml(header="'X Api'"), f"secrets[0].header: 'X Api' {HEADER}"),
    ("header-colon", secret_yaml(header="'X:Api'"), f"secrets[0].header: 'X:Api' {HEADER}"),
    ("header-crlf", secret_yaml(header='"X\\r\\nY"'), f"secrets[0].header: 'X\\r\\nY' {HEADER}"),
    ("header-65", secret_yaml(header="X" * 65), f"secrets[0].header: '{'X' * 65}' {HEADER}"),
    *[(f"header-reserved-{h.lower()}", secret_yaml(header=h), f"secrets[0].header: '{h}' {HEADER}")
      for h in ("Host", "HOST", "Connection", "Content-Length", "Transfer-Encoding", "TE",
                "Upgrade", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection",
                "Trailer")],
    ("prefix-missing", grant_yaml("[{secret: api-key, header: Authorization}]"),
     "secrets[0].path_prefix: '' must start with '/'"),
    ("prefix-relative", secret_yaml(path_prefix="v1/"),
     "secrets[0].path_prefix: 'v1/' must start with '/'"),
    ("second-secret-named", grant_yaml(f"[{SECRET}, {{secret: Bad, header: X, "
                                       "path_prefix: /}]"),
     f"secrets[1].secret: 'Bad' {NAME}"),
]


@pytest.mark.parametrize(("text", "message"), [r[1:] for r in SECRET_ROWS],
                         ids=[r[0] for r in SECRET_ROWS])
def test_secret_refusals(text: str, message: str) -> None:
    assert refusal("grant", text) == f"grant.net[0].{message}"


@pytest.mark.parametrize(("field", "value"), [
    ("secret", "a"), ("secret", "'0'"), ("secret", "a.b_c-9"), ("secret", "a" * 64),
    ("header", "X-Api-Key"), ("header", "authorization"), ("header", "X" * 64),
    ("header", "Cookie"), ("path_prefix", "/"), ("path_prefix", "/v1/deep/er"),
])
def test_valid_secret_fields_parse(field: str, value: str) -> None:
    g = parse_grant(load_yaml(secret_yaml(**{field: value}), "grant"))
    assert getattr(g.net[0].secrets[0], field) == value.strip("'")


# == attenuation ============================================================================
def sec(secret: str = "api-key", header: str = "Authorization",
        prefix: str = "/v1/") -> caps.SecretHeader:
    return caps.SecretHeader(secret=secret, header=header, path_prefix=prefix)


def net(secrets: tuple[caps.SecretHeader, ...] = (), timeout: int = 0,
        prefixes: tuple[str, ...] = ("/v1/",), **kw: Any) -> caps.NetRule:
    return caps.NetRule(host="api.example.com", schemes=["https"], methods=["GET", "POST"],
                        path_prefixes=prefixes, secrets=secrets, timeout_seconds=timeout, **kw)


PARENT = caps.Grant(expires_at=EXP, net=[net((sec(), sec("org", "X-Org", "/")), timeout=30)])


def child(*rules: caps.NetRule) -> caps.Grant:
    return caps.Grant(net=rules)


NARROWING = [
    ("keeps-both-secrets", child(net((sec(), sec("org", "X-Org", "/")), timeout=30))),
    ("keeps-one-secret", child(net((sec("org", "X-Org", "/"),), timeout=30))),
    ("drops-every-secret", child(net(timeout=30))),
    ("narrows-a-secret-prefix", child(net((sec(prefix="/v1/admin/"),), timeout=30))),
    ("narrows-the-other-secret-prefix", child(net((sec("org", "X-Org", "/v1/"),), timeout=30))),
    ("header-case-differs", child(net((sec(header="AUTHORIZATION"),), timeout=30))),
    ("secrets-reordered", child(net((sec("org", "X-Org", "/"), sec()), timeout=30))),
    ("shorter-timeout", child(net(timeout=1))),
    ("narrower-rule-keeps-the-secret", child(net((sec(),), timeout=5,
                                                 prefixes=("/v1/items/",)))),
]


@pytest.mark.parametrize("block", [b for _, b in NARROWING], ids=[i for i, _ in NARROWING])
def test_narrowing_secrets_and_timeouts_passes_and_verifies(block: caps.Grant) -> None:
    assert widening([PARENT], block) == ""
    verified = UnverifiedToken.parse(token_with(PARENT, block)).verify(KEYRING)
    assert [b.grant for b in verified.blocks] == [PARENT, block]


def within(message: str) -> str:
    return f"net[0] is not within the grant: {message}"


WIDENING = [
    ("adds-a-secret", child(net((sec(), sec("other", "X-Other", "/v1/")), timeout=30)),
     within("adds or widens secret 'other'")),
    ("moves-a-secret-to-another-header", child(net((sec(header="X-Leak"),), timeout=30)),
     within("adds or widens secret 'api-key'")),
    ("puts-one-secret-in-the-other's-header", child(net((sec(header="X-Org"),), timeout=30)),
     within("adds or widens secret 'api-key'")),
    ("widens-a-secret-prefix", child(net((sec(prefix="/"),), timeout=30)),
     within("adds or widens secret 'api-key'")),
    ("moves-a-secret-prefix-aside", child(net((sec(prefix="/v2/"),), timeout=30)),
     within("adds or widens secret 'api-key'")),
    ("secret-prefix-without-the-slash", child(net((sec(prefix="/v1"),), timeout=30)),
     within("adds or widens secret 'api-key'")),
    ("empty-secret-prefix", child(net((sec(prefix=""),), timeout=30)),
     within("adds or widens secret 'api-key'")),
    ("renames-a-secret", child(net((sec("api-key-2"),), timeout=30)),
     within("adds or widens secret 'api-key-2'")),
    ("longer-timeout", child(net(timeout=31)), within("timeout_seconds exceeds the parent's")),
    ("drops-the-timeout", child(net()), within("timeout_seconds exceeds the parent's")),
]


@pytest.mark.parametrize(("block", "message"), [r[1:] for r in WIDENING],
                         ids=[r[0] for r in WIDENING])
def test_widening_secrets_or_timeouts_is_refused(block: caps.Grant, message: str) -> None:
    assert widening([PARENT], block) == message
    with pytest.raises(AttenuationWidens) as info:
        UnverifiedToken.parse(token_with(PARENT, block)).verify(KEYRING)
    assert info.value.details == f"token block 1 widens its parent: {message}"


def test_a_parent_without_secrets_admits_none() -> None:
    parent = caps.Grant(expires_at=EXP, net=[net()])
    assert widening([parent], child(net((sec(),)))) == within("adds or widens secret 'api-key'")
    assert widening([parent], child(net(timeout=600))) == ""  # no limit above: any may be set


def test_a_second_attenuation_is_held_to_the_first() -> None:
    first = child(net((sec(prefix="/v1/admin/"),), timeout=10))
    assert widening([PARENT], first) == ""
    assert widening([PARENT, first], child(net((sec(),), timeout=10))) == (
        "net[0] is not within attenuation 1: adds or widens secret 'api-key'")
    assert widening([PARENT, first], child(net(timeout=20))) == (
        "net[0] is not within attenuation 1: timeout_seconds exceeds the parent's")
    assert widening([PARENT, first], child(net((sec(prefix="/v1/admin/x"),), timeout=10))) == ""


# == decide: timeout_s and secrets ==========================================================
def authority(*grants: caps.Grant, m: caps.Manifest | None = None) -> Authority:
    blocks = [token_pb2.TokenBlock(id=bytes([i]) * 16, grant=g) for i, g in enumerate(grants)]
    return Authority.from_blocks(blocks, m)


def manifest(*rules: caps.NetRule) -> caps.Manifest:
    return caps.Manifest(name="m", image="writ-tool/m:latest", net=rules)


def g(*rules: caps.NetRule) -> caps.Grant:
    return caps.Grant(expires_at=EXP, net=rules)


def req(path: str = "/v1/items", method: str = "GET") -> NetRequest:
    return NetRequest("https", "api.example.com", 443, method, path)


OTHER_HOST = caps.NetRule(host="other.example.com", schemes=["https"], methods=["GET"],
                          path_prefixes=["/"], timeout_seconds=1,
                          secrets=[sec("other", "X-Other", "/")])
TWO = (sec(), sec("org", "X-Org", "/"))

# (row id, authority, request, timeout_s, secrets)
DECIDE = [
    ("no-limits-no-secrets", authority(g(net())), req(), 0, ()),
    ("grant-limit", authority(g(net(timeout=30))), req(), 30, ()),
    ("manifest-limit-tighter", authority(g(net(timeout=30)), m=manifest(net(timeout=20))), req(),
     20, ()),
    ("manifest-limit-only", authority(g(net()), m=manifest(net(timeout=20))), req(), 20, ()),
    ("grant-limit-tighter-than-manifest", authority(g(net(timeout=5)),
                                                    m=manifest(net(timeout=20))), req(), 5, ()),
    ("attenuation-tighter", authority(g(net(timeout=30)), child(net(timeout=10))), req(), 10,
     ()),
    ("attenuation-without-a-limit", authority(g(net(timeout=30)), child(net())), req(), 30, ()),
    ("other-host-rules-do-not-count", authority(g(OTHER_HOST, net(timeout=30))), req(), 30, ()),
    # only the first matching rule of a layer decides (and charges), so only its limit counts
    ("first-matching-rule-of-a-layer", authority(g(net(timeout=30), net(timeout=5))), req(), 30,
     ()),
    # secrets
    ("both-secrets-on-their-prefix", authority(g(net(TWO))), req(),
     0, (("Authorization", "api-key"), ("X-Org", "org"))),
    ("prefix-filters", authority(g(net(TWO, prefixes=("/",)))), req("/v2/items"), 0,
     (("X-Org", "org"),)),
    ("prefix-is-a-string-prefix", authority(g(net(TWO, prefixes=("/",)))), req("/v1"), 0,
     (("X-Org", "org"),)),
    ("any-method", authority(g(net(TWO))), req(method="POST"), 0,
     (("Authorization", "api-key"), ("X-Org", "org"))),
    ("other-host-secrets-not-attached", authority(g(OTHER_HOST, net((sec("org", "X-Org", "/"),)))),
     req(), 0, (("X-Org", "org"),)),
    ("attenuation-drops-them", authority(g(net(TWO)), child(net())), req(), 0, ()),
    ("attenuation-keeps-one", authority(g(net(TWO)), child(net((sec(),)))), req(), 0,
     (("Authorization", "api-key"),)),
    ("attenuation-narrows-a-prefix", authority(g(net(TWO)), child(net((sec(prefix="/v1/x/"),)))),
     req("/v1/items"), 0, ()),
    ("innermost-of-two-attenuations", authority(g(net(TWO)), child(net(TWO)),
                                                child(net((sec("org", "X-Org", "/"),)))),
     req(), 0, (("X-Org", "org"),)),
    ("manifest-secrets-ignored", authority(g(net()), m=manifest(net(TWO))), req(), 0, ()),
]


@pytest.mark.parametrize(("auth", "op", "timeout_s", "secrets"), [r[1:] for r in DECIDE],
                         ids=[r[0] for r in DECIDE])
def test_decide_names_the_time_limit_and_the_secrets(
        auth: Authority, op: NetRequest, timeout_s: int,
        secrets: tuple[tuple[str, str], ...]) -> None:
    d = decide(auth, op, NOW)
    assert d.allowed, d.reason
    assert (d.timeout_s, d.secrets) == (timeout_s, secrets)


@pytest.mark.parametrize(("auth", "op", "reason"), [
    (authority(g(net(TWO, timeout=5))), req("/v2/x"),
     ("grant has no rule allowing GET https://api.example.com:443/v2/x: path '/v2/x' is outside "
     "the allowed prefixes for api.example.com")),
    (authority(g(net(TWO, timeout=5)), child(net(timeout=1, prefixes=("/v1/a/",)))), req(),
     ("attenuation 1 has no rule allowing GET https://api.example.com:443/v1/items: path "
     "'/v1/items' is outside the allowed prefixes for api.example.com")),
    (authority(g(net(TWO, timeout=5)), m=manifest(net(timeout=1, prefixes=("/v2/",)))), req(),
     ("manifest of 'm' has no rule allowing GET https://api.example.com:443/v1/items: path "
     "'/v1/items' is outside the allowed prefixes for api.example.com")),
], ids=["grant-refuses", "attenuation-refuses", "manifest-refuses"])
def test_a_refusal_carries_no_time_limit_and_no_secrets(auth: Authority, op: NetRequest,
                                                        reason: str) -> None:
    d = decide(auth, op, NOW)
    assert (d.allowed, d.reason, d.timeout_s, d.secrets) == (False, reason, 0, ())


def test_other_kinds_carry_no_time_limit_or_secrets() -> None:
    rule = caps.FileRule(workspace="w", paths=["**"], ops=[caps.READ])
    d = decide(authority(caps.Grant(expires_at=EXP, files=[rule])),
               FileAccess("w", "a.txt", caps.READ), NOW)
    assert d.allowed and (d.timeout_s, d.secrets) == (0, ())


# == decide: paths a server resolves elsewhere =============================================
@pytest.mark.parametrize("path", [
    "/v1/../admin", "/v1/./x", "/v1/%2e%2e/admin", "/v1/%2E%2E/admin", "/v1/%252e%252e/admin",
    "/v1/..%2fadmin", "/v1/..\\admin", "/v1/%2e%2e%5cadmin",
    # ";parameters" and a NUL end the segment for some servers (Tomcat: "/v1/..;/admin")
    "/v1/..;/admin", "/v1/.;/x", "/v1/..;jsessionid=1/admin", "/v1/%2e%2e;/admin",
    "/v1/..%3b/admin", "/v1/..%00/admin", "/v1/..%2500/admin",
])
def test_dot_segments_in_any_disguise_are_refused(path: str) -> None:
    d = decide(authority(g(net())), req(path), NOW)
    assert (d.allowed, d.reason) == (False, (
        f"grant has no rule allowing GET https://api.example.com:443{path}: path {path!r} has "
        "a '.' or '..' segment; refused for api.example.com"))


@pytest.mark.parametrize("path", [
    "/v1/a;b/c", "/v1/;/x", "/v1/...;/x", "/v1/a..;/x", "/v1/..a", "/v1/a.b", "/v1/%2e%2ea",
])
def test_segments_that_only_contain_dots_are_paths(path: str) -> None:
    assert decide(authority(g(net())), req(path), NOW).allowed
