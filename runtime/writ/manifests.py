"""Manifests and grants from YAML: strict schema parsing, then semantic checks.

``yaml.safe_load`` then ``json_format.ParseDict``, which rejects unknown keys; then checks
that refuse what the schema allows but policy must not: empty names, ``..`` in globs,
absolute globs, unknown workspaces, limits out of range. Errors name the offending field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from . import rulecheck
from ._proto import capabilities_pb2 as caps
from .errors import ManifestInvalid
from .launcher._spec import MAX_LIMITS
from .rulecheck import check_glob
from .schemas import schema_error, struct_schema

TOOL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]{1,128})?$")


def _parse(data: Any, message: Message, what: str) -> Any:
    if not isinstance(data, dict):
        raise ManifestInvalid(f"{what}: expected a mapping at the top level")
    rules = data.get("files")
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        ops = rule.get("ops") if isinstance(rule, dict) else None
        for j, op in enumerate(ops if isinstance(ops, list) else []):
            # YAML reads `yes`/`on` as true and protobuf would take that as READ (1):
            # operations must be spelled by name.
            if not isinstance(op, str):
                raise ManifestInvalid(f"{what}.files[{i}].ops[{j}]: {op!r} is not an "
                                      "operation name (READ, LIST, STAT, ...)")
    try:
        return json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise ManifestInvalid(f"{what}: {exc}") from None


def load_yaml(text: str, what: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestInvalid(f"{what}: not valid YAML: {exc}") from None


def parse_manifest(data: Any, what: str = "manifest") -> caps.Manifest:
    m: caps.Manifest = _parse(data, caps.Manifest(), what)
    check_manifest(m, what)
    return m


def parse_grant(data: Any, what: str = "grant") -> caps.Grant:
    g: caps.Grant = _parse(data, caps.Grant(), what)
    check_grant(g, what)
    return g


def load_manifest_file(path: Path) -> caps.Manifest:
    return parse_manifest(load_yaml(path.read_text(), str(path)), str(path))


def load_grant_file(path: Path) -> caps.Grant:
    return parse_grant(load_yaml(path.read_text(), str(path)), str(path))


def _check_file_rules(rules: Any, where: str, need_workspace: bool) -> None:
    for i, rule in enumerate(rules):
        field = f"{where}.files[{i}]"
        if need_workspace and not rule.workspace:
            raise ManifestInvalid(f"{field}.workspace: a grant must name the workspace")
        if not rule.ops:
            raise ManifestInvalid(f"{field}.ops: empty; list the operations (READ, LIST, ...)")
        if caps.FILE_OP_UNSPECIFIED in rule.ops:
            raise ManifestInvalid(f"{field}.ops: FILE_OP_UNSPECIFIED is not an operation")
        # json_format accepts any integer for an open proto3 enum; refuse what we don't know.
        for op in rule.ops:
            if op not in caps.FileOp.values():
                raise ManifestInvalid(f"{field}.ops: {op} is not an operation")
        if not rule.paths:
            raise ManifestInvalid(f"{field}.paths: empty; an empty list grants nothing")
        for j, glob in enumerate(rule.paths):
            check_glob(glob, f"{field}.paths[{j}]")


def _check_limits(limits: caps.Limits, where: str) -> None:
    for name in ("memory_mb", "cpus", "pids", "timeout_s", "tmp_mb"):
        value, ceiling = getattr(limits, name), getattr(MAX_LIMITS, name)
        # Written so that NaN (which YAML and json_format accept for a double) is refused.
        if not 0 <= value <= ceiling:
            raise ManifestInvalid(f"{where}.limits.{name}: {value} is outside 0..{ceiling}")


def check_manifest(m: caps.Manifest, what: str = "manifest") -> None:
    if not TOOL_NAME.fullmatch(m.name):
        raise ManifestInvalid(f"{what}.name: {m.name!r} must be lowercase letters, digits and "
                              "dashes, starting with a letter")
    if not IMAGE_REF.fullmatch(m.image):
        raise ManifestInvalid(f"{what}.image: {m.image!r} is not a local image reference")
    _check_file_rules(m.files, what, need_workspace=False)
    problem = schema_error(struct_schema(m.input_schema))
    if problem is not None:
        raise ManifestInvalid(f"{what}.input_schema: not valid JSON Schema: {problem}")
    rulecheck.check_net(m.net, what)
    rulecheck.check_pay(m.pay, what)
    _check_limits(m.limits, what)


def check_grant(g: caps.Grant, what: str = "grant") -> None:
    for i, rule in enumerate(g.tools):
        if not TOOL_NAME.fullmatch(rule.name):
            raise ManifestInvalid(f"{what}.tools[{i}].name: {rule.name!r} is not a tool name")
        rulecheck.check_args(rule, f"{what}.tools[{i}]")
    _check_file_rules(g.files, what, need_workspace=True)
    rulecheck.check_net(g.net, what, grant=True)
    rulecheck.check_pay(g.pay, what)
    _check_limits(g.limits, what)
    if g.expires_at and g.not_before and g.expires_at <= g.not_before:
        raise ManifestInvalid(f"{what}.expires_at: not after not_before")
