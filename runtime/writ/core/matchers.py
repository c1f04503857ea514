"""Pure matchers used by the decision function: path globs, tool-argument constraints,
network hosts. Each returns a refusal reason, or "" when the value passes."""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from google.protobuf import json_format

from .._proto import capabilities_pb2 as caps
from ..errors import PathInvalid
from .paths import clean_relpath

MAX_REGEX_INPUT = 4096  # longer strings are refused rather than fed to a regex
MAX_PATTERN = 256  # longest regex a constraint may hold


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


def path_matches(globs: Any, path: str) -> bool:
    if path == "":
        # The workspace root itself is only covered by "**": "*" means "any entry at the
        # top level", not the folder that holds them.
        return "**" in globs
    for pattern in globs:
        if glob_regex(pattern).fullmatch(path):
            return True
    return False


# -- tool arguments ------------------------------------------------------------------------
def _strict_equal(a: Any, b: Any) -> bool:
    """JSON equality where true is not 1 and 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_strict_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_arg(c: caps.ArgConstraint, args: dict[str, Any]) -> str:
    """Reason the constraint fails on ``args``, or "" if it holds."""
    if c.arg not in args:
        return "" if c.optional else f"argument {c.arg!r} is required"
    v = args[c.arg]
    kind = c.WhichOneof("check")
    shown = repr(v) if len(repr(v)) <= 80 else repr(v)[:77] + "..."
    if kind in ("exact", "one_of"):
        try:
            want = json_format.MessageToDict(getattr(c, kind))
        except ValueError:  # NaN or infinity: an attenuation block is not schema-checked
            return f"constraint on {c.arg!r} holds a number that is not JSON"
    if kind == "exact":
        return "" if _strict_equal(v, want) else f"argument {c.arg!r}={shown} is not {want!r}"
    if kind == "one_of":
        options = want
        return ("" if any(_strict_equal(v, o) for o in options)
                else f"argument {c.arg!r}={shown} is not one of {options!r}")
    if kind in ("prefix", "glob", "regex", "max_len") and not isinstance(v, str):
        return f"argument {c.arg!r} must be a string"
    if kind == "prefix":
        return "" if v.startswith(c.prefix) else (
            f"argument {c.arg!r}={shown} does not start with {c.prefix!r}")
    if kind == "glob":
        try:
            path = clean_relpath(v)
        except PathInvalid as exc:
            return f"argument {c.arg!r}: {exc.details}"
        return "" if path_matches([c.glob], path) else (
            f"argument {c.arg!r}={shown} does not match {c.glob!r}")
    if kind == "regex":
        if len(v) > MAX_REGEX_INPUT:
            return f"argument {c.arg!r} is too long to check against a pattern"
        # Grants are checked when parsed; an attenuation block is not, so re-check here.
        if len(c.regex) > MAX_PATTERN:
            return f"constraint on {c.arg!r} has a pattern longer than {MAX_PATTERN} characters"
        try:
            pattern = _regex(c.regex)
        except re.error:
            return f"constraint on {c.arg!r} has an invalid pattern"
        return "" if pattern.fullmatch(v) else (
            f"argument {c.arg!r}={shown} does not match /{c.regex}/")
    if kind == "range":
        if not _is_number(v):
            return f"argument {c.arg!r} must be a number"
        if c.range.HasField("min") and v < c.range.min:
            return f"argument {c.arg!r}={shown} is below {c.range.min:g}"
        if c.range.HasField("max") and v > c.range.max:
            return f"argument {c.arg!r}={shown} is above {c.range.max:g}"
        return ""
    if kind == "max_len":
        return "" if len(v) <= c.max_len else (
            f"argument {c.arg!r} is longer than {c.max_len} characters")
    return f"constraint on {c.arg!r} has no check"  # unclear: deny


def check_args(rule: caps.ToolRule, args: dict[str, Any]) -> str:
    for c in rule.args:
        reason = check_arg(c, args)
        if reason:
            return reason
    if rule.only_listed_args:
        extra = sorted(set(args) - {c.arg for c in rule.args})
        if extra:
            return f"argument {extra[0]!r} is not allowed (only listed arguments)"
    return ""


# -- network -------------------------------------------------------------------------------
DEFAULT_PORTS = {"https": 443, "http": 80}


def host_matches(pattern: str, host: str) -> bool:
    """Exact, or "*.suffix" matching any name strictly below the suffix."""
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        return host.endswith(suffix) and len(host) > len(suffix)
    return host == pattern


def port_allowed(rule: caps.NetRule, scheme: str, port: int) -> bool:
    return port in rule.ports if rule.ports else port == DEFAULT_PORTS.get(scheme)
