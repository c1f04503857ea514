"""Host spelling and address safety (net/hosts.py), without DNS or Docker.

``canonical_host`` turns a request's host into its one spelling or refuses it with an exact
message; ``host_problem`` says why a rule's host is not canonical; ``AddressPolicy.special``
names why an address is not public; ``Resolver.pin`` picks the address to dial: IP literals
as they are, operator-pinned names as the operator said, looked-up names only when every
answer is public.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable

import pytest
from writ.errors import InvalidArgument, PermissionDenied, UpstreamFailed
from writ.net import hosts
from writ.net.hosts import MAX_ANSWERS, AddressPolicy, ResolveFailed, Resolver, canonical_host

HINT = "use ASCII (IDNA) and an explicit '*.' prefix for wildcards"
ONLY_LITERAL = "only a rule naming the address as an IP literal reaches it"


# == canonical_host =========================================================================
# (row id, raw host as a URL or CONNECT carries it, its one spelling)
CANONICAL = [
    ("plain", "api.example.com", "api.example.com"),
    ("mixed-case", "Api.EXAMPLE.com", "api.example.com"),
    ("trailing-dot", "api.example.com.", "api.example.com"),
    ("single-label", "localhost", "localhost"),
    ("idna-umlaut", "bücher.example", "xn--bcher-kva.example"),
    ("idna-upper-umlaut", "BÜCHER.example", "xn--bcher-kva.example"),
    ("idna-already-encoded", "xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("idna-encoded-upper", "XN--BCHER-KVA.example", "xn--bcher-kva.example"),
    ("idna-japanese", "例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ("idna-sharp-s-kept", "ß.de", "xn--zca.de"),
    ("uts46-fullwidth-letters", "ＥＸＡＭＰＬＥ.com", "example.com"),
    ("uts46-fullwidth-digit", "０.example", "0.example"),
    ("uts46-roman-numeral", "Ⅸ.example", "ix.example"),
    ("uts46-ideographic-full-stop", "example。com", "example.com"),
    ("ipv4", "127.0.0.1", "127.0.0.1"),
    ("ipv4-trailing-dot", "127.0.0.1.", "127.0.0.1"),
    ("ipv6-bare", "::1", "::1"),
    ("ipv6-bracketed", "[::1]", "::1"),
    ("ipv6-long-form", "[0:0:0:0:0:0:0:1]", "::1"),
    ("ipv6-upper", "[2001:DB8::1]", "2001:db8::1"),
    ("ipv6-mapped-dotted", "[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    ("ipv6-mapped-hex-upper", "[::FFFF:7f00:0001]", "::ffff:7f00:1"),
    ("last-label-not-a-number", "a.0x1g", "a.0x1g"),
    ("exponent-is-a-name", "1e1", "1e1"),
    ("label-63", "a" * 63 + ".example", "a" * 63 + ".example"),
    ("name-253", ".".join(["a" * 63] * 3 + ["d" * 61]), ".".join(["a" * 63] * 3 + ["d" * 61])),
]


@pytest.mark.parametrize(("raw", "expected"), [r[1:] for r in CANONICAL],
                         ids=[r[0] for r in CANONICAL])
def test_canonical_host(raw: str, expected: str) -> None:
    assert canonical_host(raw) == expected
    # The canonical spelling is a fixed point and passes the rule check as it is.
    assert canonical_host(expected) == expected
    assert hosts.host_problem(expected) == ""


# (row id, raw host, exact InvalidArgument message)
REFUSED = [
    ("empty", "", "host '': empty host"),
    ("only-a-dot", ".", "host '.': empty host"),
    ("two-trailing-dots", "a.example..",
     f"host 'a.example..': 'a.example.' is not a host name (label ''); {HINT}"),
    ("leading-dot", ".example.com",
     f"host '.example.com': '.example.com' is not a host name (label ''); {HINT}"),
    ("empty-label", "a..b", f"host 'a..b': 'a..b' is not a host name (label ''); {HINT}"),
    ("underscore", "a_b.example",
     f"host 'a_b.example': 'a_b.example' is not a host name (label 'a_b'); {HINT}"),
    ("leading-dash", "-a.example",
     f"host '-a.example': '-a.example' is not a host name (label '-a'); {HINT}"),
    ("label-64", "a" * 64 + ".example",
     (f"host '{'a' * 64}.example': '{'a' * 64}.example' is not a host name "
     f"(label '{'a' * 64}'); {HINT}")),
    ("name-254", ".".join(["a" * 63] * 3 + ["d" * 62]),
     f"host '{'.'.join(['a' * 63] * 3 + ['d' * 62])}': host name is 254 characters; at most 253"),
    ("wildcard-in-a-request", "*.example.com",
     f"host '*.example.com': '*.example.com' is not a host name (label '*'); {HINT}"),
    ("bare-punycode-prefix", "xn--",
     f"host 'xn--': 'xn--' is not a host name (label 'xn--'); {HINT}"),
    # IP spellings inet_aton and URL parsers read as addresses
    ("decimal", "2130706433", ("host '2130706433': IP literal '2130706433' is not in canonical "
     "form (127.0.0.1)")),
    ("hex-whole", "0x7f000001", ("host '0x7f000001': IP literal '0x7f000001' is not in "
     "canonical form (127.0.0.1)")),
    ("hex-first", "0x7f.0.0.1", ("host '0x7f.0.0.1': IP literal '0x7f.0.0.1' is not in "
     "canonical form (127.0.0.1)")),
    ("octal", "0177.0.0.1", ("host '0177.0.0.1': IP literal '0177.0.0.1' is not in canonical "
     "form (127.0.0.1)")),
    ("short", "127.1", "host '127.1': IP literal '127.1' is not in canonical form (127.0.0.1)"),
    ("three-parts", "1.2.3", ("host '1.2.3': IP literal '1.2.3' is not in canonical form "
     "(1.2.0.3)")),
    ("zero", "0", "host '0': IP literal '0' is not in canonical form (0.0.0.0)"),
    ("short-trailing-dot", "127.1.", ("host '127.1.': IP literal '127.1' is not in canonical "
     "form (127.0.0.1)")),
    ("upper-hex", "0X7F.1", ("host '0X7F.1': IP literal '0x7f.1' is not in canonical form "
     "(127.0.0.1)")),
    ("bad-octal", "08.1.1.1", ("host '08.1.1.1': '08.1.1.1' ends in a number but is not an IP "
     "address")),
    ("five-parts", "1.2.3.4.5", ("host '1.2.3.4.5': '1.2.3.4.5' ends in a number but is not an "
     "IP address")),
    ("name-then-number", "a.09", ("host 'a.09': 'a.09' ends in a number but is not an IP "
     "address")),
    ("bare-0x", "a.0x", "host 'a.0x': 'a.0x' ends in a number but is not an IP address"),
    # brackets, zones, percent-encoding
    ("ipv6-dotted-ipv4-in-brackets", "[127.0.0.1]",
     "host '[127.0.0.1]': brackets hold only an IPv6 address"),
    ("name-in-brackets", "[api.example.com]",
     "host '[api.example.com]': brackets hold only an IPv6 address"),
    ("ipvfuture", "[v1.api.example.com]",
     "host '[v1.api.example.com]': brackets hold only an IPv6 address"),
    ("empty-brackets", "[]", "host '[]': brackets hold only an IPv6 address"),
    ("ipv6-open-bracket", "[::1", "host '[::1': IP literal '[::1' is not in canonical form (::1)"),
    ("ipv6-close-bracket", "::1]", ("host '::1]': IP literal '::1]' is not in canonical form "
     "(::1)")),
    ("ipv6-zone", "[fe80::1%eth0]", ("host '[fe80::1%eth0]': zone ids and percent-encoding are "
     "refused")),
    ("ipv6-zone-url-encoded", "[fe80::1%25eth0]",
     "host '[fe80::1%25eth0]': zone ids and percent-encoding are refused"),
    ("ipv6-zone-bare", "fe80::1%eth0", ("host 'fe80::1%eth0': zone ids and percent-encoding are "
     "refused")),
    ("percent-encoded-name", "%65xample.com",
     "host '%65xample.com': zone ids and percent-encoding are refused"),
    # IDNA refusals
    ("zero-width-space", "\u200b.example",
     "host '\\u200b.example' is not a valid name: Empty Label"),
    ("bad-punycode-upper", "XN--ABC.example",
     ("host 'XN--ABC.example' is not a valid name: Codepoint U+0082 at position 1 of "
     "'\\x82\\x81\\x80' not allowed")),
]


@pytest.mark.parametrize(("raw", "message"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
def test_canonical_host_refusals(raw: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        canonical_host(raw)
    assert info.value.details == message
    assert info.value.code == "INVALID_ARGUMENT"


# == host_problem (rule hosts: already canonical or refused) ===============================
HOST_PROBLEMS = [
    ("canonical-name", "api.example.com", False, ""),
    ("canonical-v4", "10.0.0.1", False, ""),
    ("canonical-v6", "fd00::1", False, ""),
    ("wildcard-allowed", "*.example.com", True, ""),
    ("wildcard-not-allowed", "*.example.com", False,
     f"'*.example.com' is not a host name (label '*'); {HINT}"),
    ("wildcard-numeric-tail", "*.0.0.1", True, ("'*.0.0.1' ends in a number but is not an IP "
     "address")),
    ("upper", "Api.example.com", False, "'Api.example.com' must be lower case"),
    ("bracketed-v6", "[::1]", False, "IP literal '[::1]' is not in canonical form (::1)"),
    ("v6-long", "0::1", False, "IP literal '0::1' is not in canonical form (::1)"),
    ("mapped-dotted", "::ffff:10.0.0.1", False,
     "IP literal '::ffff:10.0.0.1' is not in canonical form (::ffff:a00:1)"),
    ("trailing-dot", "api.example.com.", False,
     f"'api.example.com.' is not a host name (label ''); {HINT}"),
    ("unicode", "bücher.example", False,
     f"'bücher.example' is not a host name (label 'bücher'); {HINT}"),
    ("empty", "", False, "empty host"),
]


@pytest.mark.parametrize(("host", "wildcard_ok", "problem"), [r[1:] for r in HOST_PROBLEMS],
                         ids=[r[0] for r in HOST_PROBLEMS])
def test_host_problem(host: str, wildcard_ok: bool, problem: str) -> None:
    assert hosts.host_problem(host, wildcard_ok=wildcard_ok) == problem


# == AddressPolicy.special ==================================================================
OWN = ["203.0.113.7", "2001:4860::5%eth0", "not-an-address"]

SPECIAL = [
    # public
    ("public-v4", "8.8.8.8", ""),
    ("public-v6", "2606:4700::1111", ""),
    ("mapped-public", "::ffff:8.8.8.8", ""),
    ("nat64-public", "64:ff9b::808:808", ""),
    ("6to4-public", "2002:808:808::", ""),
    # IPv4
    ("loopback", "127.0.0.1", "127.0.0.1 is a loopback address"),
    ("loopback-other", "127.255.0.9", "127.255.0.9 is a loopback address"),
    ("unspecified", "0.0.0.0", "0.0.0.0 is an unspecified address"),
    ("private-10", "10.1.2.3", "10.1.2.3 is a private address"),
    ("private-172", "172.31.255.255", "172.31.255.255 is a private address"),
    ("private-192", "192.168.1.1", "192.168.1.1 is a private address"),
    ("cgnat", "100.64.0.1", "100.64.0.1 is not a globally routable address"),
    ("metadata-aws", "169.254.169.254", "169.254.169.254 is a cloud metadata address"),
    ("metadata-ecs", "169.254.170.2", "169.254.170.2 is a cloud metadata address"),
    ("metadata-alibaba", "100.100.100.200", "100.100.100.200 is a cloud metadata address"),
    ("link-local", "169.254.1.1", "169.254.1.1 is a link-local address"),
    ("multicast", "224.0.0.1", "224.0.0.1 is a multicast address"),
    ("documentation", "192.0.2.1", "192.0.2.1 is a private address"),
    ("benchmarking", "198.18.0.1", "198.18.0.1 is a private address"),
    ("broadcast", "255.255.255.255", "255.255.255.255 is a private address"),
    # IPv6
    ("v6-loopback", "::1", "::1 is a loopback address"),
    ("v6-unspecified", "::", ":: is an unspecified address"),
    ("v6-link-local", "fe80::1", "fe80::1 is a link-local address"),
    ("v6-unique-local", "fc00::1", "fc00::1 is a private address"),
    ("v6-metadata-aws", "fd00:ec2::254", "fd00:ec2::254 is a cloud metadata address"),
    ("v6-multicast", "ff02::1", "ff02::1 is a multicast address"),
    ("v6-documentation", "2001:db8::1", "2001:db8::1 is a private address"),
    ("v6-ipv4-compatible", "::7f00:1", "::7f00:1 is a reserved address"),
    # IPv6 forms that embed an IPv4 address: the inner address decides
    ("mapped-loopback", "::ffff:127.0.0.1",
     "::ffff:7f00:1 embeds 127.0.0.1: 127.0.0.1 is a loopback address"),
    ("mapped-metadata", "::ffff:169.254.169.254",
     "::ffff:a9fe:a9fe embeds 169.254.169.254: 169.254.169.254 is a cloud metadata address"),
    ("mapped-private", "::ffff:10.0.0.1",
     "::ffff:a00:1 embeds 10.0.0.1: 10.0.0.1 is a private address"),
    ("nat64-loopback", "64:ff9b::7f00:1",
     "64:ff9b::7f00:1 embeds 127.0.0.1: 127.0.0.1 is a loopback address"),
    ("nat64-metadata", "64:ff9b::a9fe:a9fe",
     "64:ff9b::a9fe:a9fe embeds 169.254.169.254: 169.254.169.254 is a cloud metadata address"),
    ("6to4-loopback", "2002:7f00:1::",
     "2002:7f00:1:: embeds 127.0.0.1: 127.0.0.1 is a loopback address"),
    ("teredo-client", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
     "2001:0:4136:e378:8000:63bf:3fff:fdd2 embeds 192.0.2.45: 192.0.2.45 is a private address"),
    ("mapped-own", "::ffff:203.0.113.7",
     "::ffff:cb00:7107 embeds 203.0.113.7: 203.0.113.7 is a private address"),
    # this host's own addresses (zone ids dropped, junk ignored)
    ("own-v6", "2001:4860::5", "2001:4860::5 is an address of the broker's own host"),
    ("not-own-v6", "2001:4860::6", ""),
]


@pytest.mark.parametrize(("address", "why"), [r[1:] for r in SPECIAL], ids=[r[0] for r in SPECIAL])
def test_special_addresses_are_named(address: str, why: str) -> None:
    policy = AddressPolicy(own=lambda: OWN)
    assert policy.special(ipaddress.ip_address(address)) == why


def test_own_addresses_are_reread_after_their_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    reads: list[int] = []
    current = ["9.9.9.9"]

    def source() -> list[str]:
        reads.append(1)
        return list(current)

    monkeypatch.setattr(hosts.time, "monotonic", lambda: clock[0])
    policy = AddressPolicy(own=source)
    nine = ipaddress.ip_address("9.9.9.9")
    assert policy.special(nine) == "9.9.9.9 is an address of the broker's own host"
    current[:] = ["1.1.1.1"]
    clock[0] += hosts.OWN_ADDRESSES_TTL_S  # not yet past the TTL: the cached set answers
    assert policy.special(nine) == "9.9.9.9 is an address of the broker's own host"
    assert len(reads) == 1
    clock[0] += 0.001
    assert policy.special(nine) == ""
    assert policy.special(ipaddress.ip_address("1.1.1.1")) == (
        "1.1.1.1 is an address of the broker's own host")
    assert len(reads) == 2


def test_the_default_own_addresses_include_loopback() -> None:
    # psutil's view of this host's interfaces: 127.0.0.1 is on lo everywhere.
    assert ipaddress.ip_address("127.0.0.1") in AddressPolicy().own_addresses()


# == Resolver.pin ===========================================================================
def pin(resolver: Resolver, host: str, port: int = 443) -> str:
    return str(asyncio.run(resolver.pin(host, port)))


def public_policy() -> AddressPolicy:
    return AddressPolicy(own=list)


def table(answers: dict[str, list[str] | None]) -> Callable[[str], list[str] | None]:
    asked: list[str] = []

    def lookup(host: str) -> list[str] | None:
        asked.append(host)
        return answers.get(host)

    lookup.asked = asked  # type: ignore[attr-defined]
    return lookup


@pytest.mark.parametrize("literal", ["127.0.0.1", "169.254.169.254", "::1", "10.0.0.1",
                                     "8.8.8.8", "::ffff:7f00:1"])
def test_literals_are_pinned_as_they_are_even_when_special(literal: str) -> None:
    lookup = table({literal: ["8.8.8.8"]})
    resolver = Resolver(public_policy(), static={literal: ["1.1.1.1"]}, lookup=lookup)
    assert pin(resolver, literal) == literal
    assert lookup.asked == []  # type: ignore[attr-defined]


def test_operator_pinned_names_may_be_special_and_win_over_lookup() -> None:
    lookup = table({"db.internal": ["8.8.8.8"]})
    resolver = Resolver(public_policy(), static={"DB.Internal.": ["10.0.0.5", "10.0.0.6"]},
                        lookup=lookup)
    assert pin(resolver, "db.internal") == "10.0.0.5"
    assert lookup.asked == []  # type: ignore[attr-defined]


def test_operator_pinned_name_keys_must_be_host_names() -> None:
    with pytest.raises(InvalidArgument) as info:
        Resolver(public_policy(), static={"127.1": ["10.0.0.5"]})
    assert info.value.details == ("host '127.1': IP literal '127.1' is not in canonical form "
                                  "(127.0.0.1)")


@pytest.mark.parametrize(("answers", "address"), [
    (["8.8.8.8"], "8.8.8.8"),
    (["2606:4700::1111", "8.8.8.8"], "2606:4700::1111"),
    (["8.8.8.8", "8.8.8.8", "1.1.1.1"], "8.8.8.8"),
    # only the first MAX_ANSWERS are read (and only the first is dialled)
    ([*(f"8.8.8.{i}" for i in range(1, MAX_ANSWERS + 1)), "127.0.0.1"], "8.8.8.1"),
], ids=["one", "v6-first", "duplicates", "beyond-max-answers-unread"])
def test_public_answers_pin_the_first(answers: list[str], address: str) -> None:
    assert pin(Resolver(public_policy(), lookup=table({"api.example.com": answers})),
               "api.example.com") == address


@pytest.mark.parametrize(("answers", "why"), [
    (["127.0.0.1"], "127.0.0.1 is a loopback address"),
    (["8.8.8.8", "10.0.0.1"], "10.0.0.1 is a private address"),
    (["8.8.8.8", "1.1.1.1", "169.254.169.254"], "169.254.169.254 is a cloud metadata address"),
    (["::ffff:127.0.0.1"], "::ffff:7f00:1 embeds 127.0.0.1: 127.0.0.1 is a loopback address"),
    (["fe80::1%eth0"], "fe80::1 is a link-local address"),
    (["2606:4700::1111", "::1"], "::1 is a loopback address"),
    (["203.0.113.9"], "203.0.113.9 is a private address"),
], ids=["loopback", "second-answer-private", "third-answer-metadata", "mapped",
        "zone-id-dropped", "v6-second", "documentation"])
def test_any_special_answer_refuses_the_name(answers: list[str], why: str) -> None:
    resolver = Resolver(public_policy(), lookup=table({"rebind.example": answers}))
    with pytest.raises(PermissionDenied) as info:
        pin(resolver, "rebind.example")
    assert info.value.details == f"rebind.example resolves to {why}; {ONLY_LITERAL}"


def test_an_answer_that_is_one_of_our_own_addresses_is_refused() -> None:
    resolver = Resolver(AddressPolicy(own=lambda: ["8.8.4.4"]),
                        lookup=table({"me.example": ["8.8.4.4"]}))
    with pytest.raises(PermissionDenied) as info:
        pin(resolver, "me.example")
    assert info.value.details == (f"me.example resolves to 8.8.4.4 is an address of the "
                                  f"broker's own host; {ONLY_LITERAL}")


def test_every_pin_asks_again_and_checks_the_new_answer() -> None:
    answers: dict[str, list[str] | None] = {"flip.example": ["8.8.8.8"]}
    lookup = table(answers)
    resolver = Resolver(public_policy(), lookup=lookup)
    assert pin(resolver, "flip.example") == "8.8.8.8"
    answers["flip.example"] = ["127.0.0.1"]
    with pytest.raises(PermissionDenied):
        pin(resolver, "flip.example")
    assert lookup.asked == ["flip.example", "flip.example"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("answers", "message"), [
    ([], "api.example.com has no address"),
    (["api.example.com"], ("resolver returned 'api.example.com' for api.example.com, not an "
     "address")),
    (["8.8.8.8", "junk"], "resolver returned 'junk' for api.example.com, not an address"),
    (["[::1]"], "resolver returned '[::1]' for api.example.com, not an address"),
], ids=["empty", "a-name", "junk-after-a-good-one", "bracketed"])
def test_unusable_answers_fail_to_resolve(answers: list[str], message: str) -> None:
    resolver = Resolver(public_policy(), lookup=table({"api.example.com": answers}))
    with pytest.raises(ResolveFailed) as info:
        pin(resolver, "api.example.com")
    assert info.value.details == message
    assert isinstance(info.value, UpstreamFailed)


def test_static_names_with_no_address_fail_to_resolve() -> None:
    resolver = Resolver(public_policy(), static={"db.internal": []})
    with pytest.raises(ResolveFailed) as info:
        pin(resolver, "db.internal")
    assert info.value.details == "db.internal has no address"


def test_a_lookup_answering_none_falls_back_to_the_system_resolver() -> None:
    # localhost comes from /etc/hosts (no DNS traffic) and is loopback: refused by name.
    resolver = Resolver(public_policy(), lookup=table({}))
    with pytest.raises(PermissionDenied) as info:
        pin(resolver, "localhost")
    assert info.value.details.startswith("localhost resolves to ")
    assert info.value.details.endswith(f" is a loopback address; {ONLY_LITERAL}")
