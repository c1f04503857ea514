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
    import jsonschema  # about 130 ms: paid by the broker, not by every client import

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return str(exc.message)
    return None


@functools.lru_cache(maxsize=256)
def _validator(canonical: str) -> Any:
    import jsonschema

    schema = json.loads(canonical)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def schema_problem(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> str | None:
    """Why ``arguments`` break ``schema`` (one line), or None. A schema that is itself not
    valid JSON Schema checks nothing (registration refuses those)."""
    problem = schema_error(schema)
    if problem is not None:
        log.warning("input schema is not valid JSON Schema, not checked: %s", problem)
        return None
    import jsonschema

    validator = _validator(json.dumps(schema, sort_keys=True))
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
