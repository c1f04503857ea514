"""Semantic checks of tool-argument, network and payment rules (manifests.py runs them
after strict schema parsing). Each error names the offending field."""

from __future__ import annotations

import math
import re
from typing import Any

from google.protobuf import struct_pb2

from ._proto import capabilities_pb2 as caps
from .core.matchers import MAX_PATTERN
from .errors import ManifestInvalid
from .net.hosts import host_problem

MAX_REGEX = MAX_PATTERN
MAX_AMOUNT = 10**15  # minor units; far above any real payment, far below int64 overflow
# CONNECT grants an opaque TLS tunnel to the host (every method and path inside it).
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT"}
SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
# Headers the broker itself sets for the connection; a secret may not take their place.
RESERVED_HEADERS = {"host", "connection", "content-length", "transfer-encoding", "te",
                    "upgrade", "keep-alive", "proxy-authorization", "proxy-connection",
                    "trailer"}
SCHEMES = {"http", "https"}
CURRENCY = re.compile(r"[A-Z]{3}")
# Wildcards must sit below a registrable domain. Without the full public-suffix list we
# refuse one-label suffixes ("*.com") and these common two-label public suffixes.
# SECURITY LIMITATION: a rarer multi-label public suffix ("*.pvt.k12.ma.us") is not caught.
TWO_LABEL_SUFFIXES = {
    "co.uk", "org.uk", "ac.uk", "gov.uk", "com.au", "net.au", "org.au", "co.nz", "co.jp",
    "ne.jp", "or.jp", "com.br", "com.cn", "com.mx", "co.in", "co.za", "com.tr", "github.io",
    "herokuapp.com", "appspot.com", "cloudfront.net", "amazonaws.com", "azurewebsites.net",
    "blogspot.com", "pages.dev", "workers.dev", "vercel.app", "netlify.app",
}


def check_glob(glob: str, field: str) -> None:
    if not glob:
        raise ManifestInvalid(f"{field}: empty path pattern")
    if glob.startswith("/"):
        raise ManifestInvalid(f"{field}: {glob!r} is absolute; patterns are relative to the "
                              "workspace root")
    if "\x00" in glob or any(seg in (".", "..", "") for seg in glob.split("/")):
        raise ManifestInvalid(f"{field}: {glob!r} contains an empty, '.' or '..' segment")
    for seg in glob.split("/"):
        if "**" in seg and seg != "**":
            raise ManifestInvalid(f"{field}: '**' must be a whole segment in {glob!r}")


def _finite(value: struct_pb2.Value | struct_pb2.ListValue) -> bool:
    """No NaN or infinite number anywhere inside (they have no JSON form)."""
    if isinstance(value, struct_pb2.ListValue):
        return all(_finite(v) for v in value.values)
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return math.isfinite(value.number_value)
    if kind == "list_value":
        return _finite(value.list_value)
    if kind == "struct_value":
        return all(_finite(v) for v in value.struct_value.fields.values())
    return True


def check_args(rule: caps.ToolRule, field: str) -> None:
    for i, c in enumerate(rule.args):
        where = f"{field}.args[{i}]"
        if not c.arg:
            raise ManifestInvalid(f"{where}.arg: name the input argument")
        kind = c.WhichOneof("check")
        if kind is None:
            raise ManifestInvalid(f"{where}: no check given (exact, one_of, prefix, glob, "
                                  "regex, range or max_len)")
        if kind == "one_of" and not c.one_of.values:
            raise ManifestInvalid(f"{where}.one_of: empty; it would allow nothing")
        if kind in ("exact", "one_of") and not _finite(getattr(c, kind)):
            raise ManifestInvalid(f"{where}.{kind}: NaN and infinity are not JSON values")
        if kind == "regex":
            if len(c.regex) > MAX_REGEX:
                raise ManifestInvalid(f"{where}.regex: longer than {MAX_REGEX} characters")
            try:
                re.compile(c.regex)
            except re.error as exc:
                raise ManifestInvalid(f"{where}.regex: {exc}") from None
        if kind == "glob":
            check_glob(c.glob, f"{where}.glob")
        if kind == "range":
            lo = c.range.min if c.range.HasField("min") else -math.inf
            hi = c.range.max if c.range.HasField("max") else math.inf
            if math.isnan(lo) or math.isnan(hi):
                raise ManifestInvalid(f"{where}.range: NaN is not a bound")
            if lo > hi:
                raise ManifestInvalid(f"{where}.range: min {lo:g} is above max {hi:g}")
        if kind == "max_len" and c.max_len == 0:
            raise ManifestInvalid(f"{where}.max_len: 0 allows only the empty string; use exact")


def check_host(host: str, field: str) -> None:
    problem = host_problem(host, wildcard_ok=True)
    if problem:
        raise ManifestInvalid(f"{field}: {problem}")
    if host.startswith("*."):
        labels = host[2:].split(".")
        if len(labels) < 2 or host[2:] in TWO_LABEL_SUFFIXES:
            raise ManifestInvalid(f"{field}: wildcard {host!r} covers a public suffix; name "
                                  "a registrable domain, e.g. '*.example.com'")


def check_net(rules: Any, where: str, grant: bool = False) -> None:
    for i, rule in enumerate(rules):
        field = f"{where}.net[{i}]"
        _check_secrets(rule, field, grant)
        if not rule.schemes:
            raise ManifestInvalid(f"{field}.schemes: empty; an empty list grants nothing")
        for s in rule.schemes:
            if s not in SCHEMES:
                raise ManifestInvalid(f"{field}.schemes: {s!r} is not http or https")
        check_host(rule.host, f"{field}.host")
        for p in rule.ports:
            if not 1 <= p <= 65535:
                raise ManifestInvalid(f"{field}.ports: {p} is not a port")
        if not rule.methods:
            raise ManifestInvalid(f"{field}.methods: empty; an empty list grants nothing")
        for m in rule.methods:
            if m not in HTTP_METHODS:
                raise ManifestInvalid(f"{field}.methods: {m!r} is not one of "
                                      f"{sorted(HTTP_METHODS)}")
        if not rule.path_prefixes:
            raise ManifestInvalid(f"{field}.path_prefixes: empty; use '/' for every path")
        for p in rule.path_prefixes:
            if not p.startswith("/") or "/../" in p + "/" or "\x00" in p:
                raise ManifestInvalid(f"{field}.path_prefixes: {p!r} must start with '/' and "
                                      "contain no '..' segment")


def _check_secrets(rule: Any, field: str, grant: bool) -> None:
    if rule.secrets and not grant:
        raise ManifestInvalid(f"{field}.secrets: a manifest cannot attach secrets; a grant "
                              "does")
    if rule.secrets and set(rule.schemes) != {"https"}:
        raise ManifestInvalid(f"{field}.secrets: secrets travel only over https; set "
                              "schemes to [https]")
    for j, sec in enumerate(rule.secrets):
        sf = f"{field}.secrets[{j}]"
        if not SECRET_NAME.fullmatch(sec.secret):
            raise ManifestInvalid(f"{sf}.secret: {sec.secret!r} is not a secret name "
                                  "(1..64 of a-z 0-9 _ . -)")
        if not HEADER_NAME.fullmatch(sec.header) or sec.header.lower() in RESERVED_HEADERS:
            raise ManifestInvalid(f"{sf}.header: {sec.header!r} is not a header a secret "
                                  "may fill")
        if not sec.path_prefix.startswith("/"):
            raise ManifestInvalid(f"{sf}.path_prefix: {sec.path_prefix!r} must start with "
                                  "'/'")


def check_pay(rules: Any, where: str) -> None:
    for i, rule in enumerate(rules):
        field = f"{where}.pay[{i}]"
        if not rule.payees or any(not p for p in rule.payees):
            raise ManifestInvalid(f"{field}.payees: list the payees; empty grants nothing")
        if not CURRENCY.fullmatch(rule.currency):
            raise ManifestInvalid(f"{field}.currency: {rule.currency!r} is not an ISO 4217 "
                                  "code")
        for name in ("max_per_payment", "budget"):
            value = getattr(rule, name)
            if not 0 < value <= MAX_AMOUNT:
                raise ManifestInvalid(f"{field}.{name}: {value} must be between 1 and "
                                      f"{MAX_AMOUNT} minor units (unbounded amounts are "
                                      "refused)")
        if not 0 <= rule.approval_above <= MAX_AMOUNT:
            raise ManifestInvalid(f"{field}.approval_above: {rule.approval_above} is out of "
                                  "range")
