"""Host names and the addresses they may reach.

Requests and rules spell a host one way only: a lower-case IDNA (UTS 46) name, or an IP
literal in its canonical form. Spellings that URL parsers and ``inet_aton`` read as an
address ("2130706433", "0x7f.1", "0177.0.0.1", "127.1") are refused rather than resolved,
so no rule can be reached through a spelling its reviewer did not see.

An address is *special* when it is not a globally routable unicast address: loopback,
private, shared (CGNAT), link-local (cloud metadata lives there), multicast, unspecified,
reserved, documentation, an IPv6 form that embeds one of those (IPv4-mapped, NAT64, 6to4,
Teredo), or one of this host's own addresses. A request reaches a special address only
when it names that address as an IP literal, so the rule that allowed it names it too; a
host name that resolves to one is refused (that is what DNS rebinding tries).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping

import idna
import psutil

from ..errors import InvalidArgument, PermissionDenied, UpstreamFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")  # a last label URL parsers read as IPv4
MAX_HOST = 253
RESOLVE_TIMEOUT_S = 5.0
MAX_ANSWERS = 16
OWN_ADDRESSES_TTL_S = 30.0

# Addresses that answer as a cloud's instance metadata service. Most are link-local and so
# refused anyway; naming them makes the reason precise.
METADATA = {ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")}
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class ResolveFailed(UpstreamFailed):
    pass


def literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def host_problem(host: str, wildcard_ok: bool = False) -> str:
    """Why ``host`` is not in canonical form, or "" when it is."""
    if not host:
        return "empty host"
    if host != host.lower():
        return f"{host!r} must be lower case"
    ip = literal(host.strip("[]"))
    if ip is not None:
        # Requests carry the bare address ("::1", never "[::1]"): only that form can match.
        return "" if str(ip) == host else f"IP literal {host!r} is not in canonical form ({ip})"
    wildcard = wildcard_ok and host.startswith("*.")
    labels = (host[2:] if wildcard else host).split(".")
    if NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return f"{host!r} ends in a number but is not an IP address"
        return f"IP literal {host!r} is not in canonical form ({ip})"
    if len(host) > MAX_HOST:
        return f"host name is {len(host)} characters; at most {MAX_HOST}"
    for label in labels:
        if not HOST_LABEL.fullmatch(label):
            return (f"{host!r} is not a host name (label {label!r}); use ASCII (IDNA) and "
                    "an explicit '*.' prefix for wildcards")
    return ""


def canonical_host(raw: str) -> str:
    """The one spelling of a request's host: IDNA-encoded lower case, one trailing dot
    dropped, IPv6 literals compressed.

    Raises:
        InvalidArgument: not a host name, an IP literal in a non-canonical notation, a
            zone id, or a name IDNA refuses.
    """
    host = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    if "%" in host:
        raise InvalidArgument(f"host {raw!r}: zone ids and percent-encoding are refused")
    ip = literal(host)
    if host != raw and not isinstance(ip, ipaddress.IPv6Address):
        # Brackets hold an IPv6 address only; urlsplit also passes "[v1.api.example.com]"
        # (an RFC 3986 IPvFuture), which must not reach the name inside.
        raise InvalidArgument(f"host {raw!r}: brackets hold only an IPv6 address")
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ip)
    if ip is None:
        host = host.removesuffix(".")
        if host and not host.isascii() or any(c.isupper() for c in host):
            try:
                host = idna.encode(host, uts46=True).decode("ascii")
            except (idna.IDNAError, UnicodeError) as exc:
                raise InvalidArgument(f"host {raw!r} is not a valid name: {exc}") from None
    problem = host_problem(host)
    if problem:
        raise InvalidArgument(f"host {raw!r}: {problem}")
    return host


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


class AddressPolicy:
    """Which addresses are special; this host's own addresses are re-read now and then."""

    def __init__(self, own: Callable[[], Iterable[str]] | None = None) -> None:
        self._own_source = own or _interface_addresses
        self._own: set[IPAddress] = set()
        self._own_at = 0.0

    def own_addresses(self) -> set[IPAddress]:
        now = time.monotonic()
        if now - self._own_at > OWN_ADDRESSES_TTL_S:
            found = set()
            for a in self._own_source():
                ip = literal(a.split("%")[0])
                if ip is not None:
                    found.add(ip)
            self._own, self._own_at = found, now
        return self._own

    def special(self, ip: IPAddress) -> str:
        """Why ``ip`` is special ("... is a loopback address"), or "" for a public one."""
        if isinstance(ip, ipaddress.IPv6Address):
            inner = _embedded_v4(ip)
            if inner is not None:
                why = self.special(inner)
                return f"{ip} embeds {inner}: {why}" if why else ""
        if ip in METADATA:
            return f"{ip} is a cloud metadata address"
        for attr, what in (("is_loopback", "a loopback"), ("is_unspecified", "an unspecified"),
                           ("is_link_local", "a link-local"), ("is_multicast", "a multicast"),
                           ("is_private", "a private"), ("is_reserved", "a reserved")):
            if getattr(ip, attr):
                return f"{ip} is {what} address"
        if ip in self.own_addresses():
            return f"{ip} is an address of the broker's own host"
        if not ip.is_global:
            return f"{ip} is not a globally routable address"
        return ""


def _interface_addresses() -> list[str]:
    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family in (socket.AF_INET, socket.AF_INET6)]


# name -> addresses, consulted before DNS and checked like a DNS answer (tests stand in a
# changing resolver with it); None: ask DNS.
Lookup = Callable[[str], list[str] | None]


class Resolver:
    """Resolves a host once per connection and says which address to dial.

    The answer is pinned: the caller connects to the returned address and never resolves
    again for that connection, so an answer that changes after the check changes nothing.
    """

    def __init__(self, policy: AddressPolicy | None = None,
                 static: Mapping[str, list[str]] | None = None,
                 lookup: Lookup | None = None) -> None:
        self.policy = policy or AddressPolicy()
        self._static = {canonical_host(k): v for k, v in (static or {}).items()}
        self._lookup = lookup

    async def pin(self, host: str, port: int) -> IPAddress:
        """The address to dial for ``host``.

        Raises:
            PermissionDenied: a name answered with a special address (every answer is
                checked, not only the first).
            ResolveFailed: no answer.
        """
        ip = literal(host)
        if ip is not None:
            return ip  # a literal was matched by a rule naming it; special or not
        if host in self._static:
            # The operator pinned this name to an address (`--net-host`): as explicit as
            # a rule naming the address, so it may be special (an internal service).
            return self._checked(host, self._static[host])[0]
        answers = await self._resolve(host, port)
        for a in answers:
            why = self.policy.special(a)
            if why:
                raise PermissionDenied(f"{host} resolves to {why}; only a rule naming the "
                                       "address as an IP literal reaches it")
        return answers[0]

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        found: list[str] | None = self._lookup(host) if self._lookup else None
        if found is None:
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, TimeoutError) as exc:
                raise ResolveFailed(f"could not resolve {host}: "
                                    f"{getattr(exc, 'strerror', None) or 'timed out'}") from None
            found = [str(info[4][0]) for info in infos]
        return self._checked(host, found)

    @staticmethod
    def _checked(host: str, found: list[str]) -> list[IPAddress]:
        answers: list[IPAddress] = []
        for a in found[:MAX_ANSWERS]:
            ip = literal(a.split("%")[0])
            if ip is None:
                raise ResolveFailed(f"resolver returned {a!r} for {host}, not an address")
            if ip not in answers:
                answers.append(ip)
        if not answers:
            raise ResolveFailed(f"{host} has no address")
        return answers
