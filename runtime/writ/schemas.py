"""Tool input against the manifest's ``input_schema`` (JSON Schema), checked by the broker
before a call is decided, so a tool never starts on input its own manifest rules out, and
by the MCP bridge before it calls the broker (the same function, the same message)."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

log = logging.getLogger("writ.schemas")


def schema_error(schema: Mapping[str, Any]) -> str | None:
    """Why ``schema`` is not valid JSON Schema, or None."""
    return _checked(json.dumps(schema, sort_keys=True))[1]


@functools.lru_cache(maxsize=256)
def _checked(canonical: str) -> tuple[Any, str | None]:
    """(validator, None) for a valid schema, (None, why not) otherwise. Memoized: checking
    a schema against its metaschema costs 0.15-0.7 ms, and every call of a tool would."""
    import jsonschema  # about 130 ms: paid by the broker, not by every client import

    schema = json.loads(canonical)
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return None, str(exc.message)
    problem = _reference_problem(schema)
    if problem is not None:
        return None, problem
    return cls(schema), None


def _reference_problem(schema: Any) -> str | None:
    """Why a ``$ref`` in the schema cannot be followed, or None. Only references within
    the schema itself count: the broker fetches nothing (a URL there would otherwise make
    every call fail unresolvable, or, with another library, make the broker a client)."""
    from referencing import Registry, Resource
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    refs: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                    refs.append(value)
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    if not refs:
        return None
    resolver = Registry().resolver_with_root(
        Resource.from_contents(schema, default_specification=DRAFT202012))
    for ref in sorted(set(refs)):
        if not ref.startswith("#"):
            return f"$ref {ref!r} points outside the schema; only '#...' references are allowed"
        try:
            resolver.lookup(ref)
        except Unresolvable:
            return f"$ref {ref!r} names nothing in the schema"
    return None


def schema_problem(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> str | None:
    """Why ``arguments`` break ``schema`` (one line), or None. A schema that is itself not
    valid JSON Schema checks nothing (registration refuses those)."""
    validator, problem = _checked(json.dumps(schema, sort_keys=True))
    if problem is not None:
        log.warning("input schema is not valid JSON Schema, not checked: %s", problem)
        return None
    import jsonschema

    # The schema arrives through a protobuf Struct, whose key order is not stable, so the
    # errors are sorted first: the same bad input always gets the same message.
    errors = sorted(validator.iter_errors(arguments),
                    key=lambda e: ([str(p) for p in e.absolute_path], str(e.validator)))
    error = jsonschema.exceptions.best_match(errors)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message}" + (f" (at {where})" if where else "")


def struct_schema(s: struct_pb2.Struct) -> dict[str, Any]:
    """The schema as JSON. A Struct holds every number as a double; integral ones become
    ints again, so keywords that must be integers (minimum, maxItems, ...) read as integers
    to strict validators and messages read "minimum of 1", not "1.0"."""
    out: dict[str, Any] = _ints(json_format.MessageToDict(s))
    return out


def _ints(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {k: _ints(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_ints(x) for x in v]
    return v
