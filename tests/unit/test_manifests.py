"""Manifests and grants from YAML: strict schema, semantic checks, errors naming the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from writ._proto import capabilities_pb2 as caps
from writ.errors import ManifestInvalid
from writ.manifests import (
    load_grant_file,
    load_manifest_file,
    load_yaml,
    parse_grant,
    parse_manifest,
)

REPO = Path(__file__).resolve().parents[2]

MANIFEST = """
name: read-file
image: writ-tool/read-file:latest
description: Return the text of one file.
input_schema:
  type: object
  properties: {path: {type: string}}
files:
  - id: read-any
    paths: ["**"]
    ops: [READ, STAT]
    max_bytes: 1048576
limits: {memory_mb: 128, cpus: 0.5, pids: 32, timeout_s: 30, tmp_mb: 8}
"""

GRANT = """
tools:
  - name: read-file
  - {id: wc, name: word-count}
files:
  - id: reports-read
    workspace: demo
    paths: ["reports/**", "shared/*.csv"]
    ops: [READ, LIST, STAT]
not_before: 1700000000
expires_at: 1700003600
limits: {memory_mb: 64}
"""


def manifest_dict() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(MANIFEST, "manifest")
    return data


def grant_dict() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(GRANT, "grant")
    return data


def test_good_manifest_parses() -> None:
    m = parse_manifest(manifest_dict())
    assert (m.name, m.image) == ("read-file", "writ-tool/read-file:latest")
    assert list(m.files[0].ops) == [caps.READ, caps.STAT]
    assert m.files[0].workspace == ""
    assert m.files[0].max_bytes == 1048576
    assert m.limits.cpus == 0.5
    assert m.input_schema["type"] == "object"


def test_good_grant_parses() -> None:
    g = parse_grant(grant_dict())
    assert [t.name for t in g.tools] == ["read-file", "word-count"]
    assert g.tools[1].id == "wc"
    assert list(g.files[0].paths) == ["reports/**", "shared/*.csv"]
    assert (g.not_before, g.expires_at, g.limits.memory_mb) == (1700000000, 1700003600, 64)


def test_empty_grant_grants_nothing_but_parses() -> None:
    g = parse_grant({})
    assert not g.tools and not g.files


# -- rejections: (id, kind, edit of the good document, exact message or substring) --------
def _set(path: str, value: Any) -> Any:
    """An edit setting a dotted path (list indices as numbers) in the document."""
    def edit(doc: dict[str, Any]) -> None:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        target: Any = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return edit


def _delete(path: str) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        target: Any = doc
        for k in keys[:-1]:
            target = target[k]
        del target[keys[-1]]
    return edit


def _both(*edits: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        for e in edits:
            e(doc)
    return edit


M, G = "manifest", "grant"
EXACT = [
    # manifest name
    ("name-uppercase", M, _set("name", "Read-File"), ("manifest.name: 'Read-File' must be "
     "lowercase letters, digits and dashes, starting with a letter")),
    ("name-underscore", M, _set("name", "read_file"), ("manifest.name: 'read_file' must be "
     "lowercase letters, digits and dashes, starting with a letter")),
    ("name-leading-digit", M, _set("name", "1tool"), ("manifest.name: '1tool' must be "
     "lowercase letters, digits and dashes, starting with a letter")),
    ("name-empty", M, _delete("name"), ("manifest.name: '' must be lowercase letters, digits "
     "and dashes, starting with a letter")),
    ("name-trailing-newline", M, _set("name", "read-file\n"), ("manifest.name: 'read-file\\n' "
     "must be lowercase letters, digits and dashes, starting with a letter")),
    ("name-too-long", M, _set("name", "a" * 64), (f"manifest.name: {'a' * 64!r} must be "
     "lowercase letters, digits and dashes, starting with a letter")),
    ("name-space", M, _set("name", "read file"), ("manifest.name: 'read file' must be "
     "lowercase letters, digits and dashes, starting with a letter")),
    # manifest image
    ("image-empty", M, _delete("image"), "manifest.image: '' is not a local image reference"),
    ("image-uppercase", M, _set("image", "Writ/Tool:1"),
     "manifest.image: 'Writ/Tool:1' is not a local image reference"),
    ("image-digest", M, _set("image", "writ@sha256:abc"),
     "manifest.image: 'writ@sha256:abc' is not a local image reference"),
    ("image-space", M, _set("image", "writ tool"),
     "manifest.image: 'writ tool' is not a local image reference"),
    ("image-trailing-newline", M, _set("image", "writ:1\n"),
     "manifest.image: 'writ:1\\n' is not a local image reference"),
    ("image-empty-tag", M, _set("image", "writ:"),
     "manifest.image: 'writ:' is not a local image reference"),
    ("image-option-like", M, _set("image", "-v"),
     "manifest.image: '-v' is not a local image reference"),
    # manifest file rules
    ("m-ops-empty", M, _set("files.0.ops", []),
     "manifest.files[0].ops: empty; list the operations (READ, LIST, ...)"),
    ("m-ops-unspecified", M, _set("files.0.ops", ["READ", "FILE_OP_UNSPECIFIED"]),
     "manifest.files[0].ops: FILE_OP_UNSPECIFIED is not an operation"),
    ("m-ops-unspecified-number", M, _set("files.0.ops", [0]),
     "manifest.files[0].ops[0]: 0 is not an operation name (READ, LIST, STAT, ...)"),
    ("m-ops-unknown-number", M, _set("files.0.ops", ["READ", 99]),
     "manifest.files[0].ops[1]: 99 is not an operation name (READ, LIST, STAT, ...)"),
    ("m-ops-yaml-boolean", M, _set("files.0.ops", [True]),
     "manifest.files[0].ops[0]: True is not an operation name (READ, LIST, STAT, ...)"),
    ("m-paths-empty", M, _set("files.0.paths", []),
     "manifest.files[0].paths: empty; an empty list grants nothing"),
    ("m-paths-missing", M, _delete("files.0.paths"),
     "manifest.files[0].paths: empty; an empty list grants nothing"),
    ("m-glob-empty-string", M, _set("files.0.paths", ["**", ""]),
     "manifest.files[0].paths[1]: empty path pattern"),
    ("m-glob-dotdot", M, _set("files.0.paths", ["reports/**", "../etc/*"]),
     "manifest.files[0].paths[1]: '../etc/*' contains an empty, '.' or '..' segment"),
    ("m-glob-dotdot-middle", M, _set("files.0.paths", ["a/../b"]),
     "manifest.files[0].paths[0]: 'a/../b' contains an empty, '.' or '..' segment"),
    ("m-glob-dot", M, _set("files.0.paths", ["./a"]),
     "manifest.files[0].paths[0]: './a' contains an empty, '.' or '..' segment"),
    ("m-glob-double-slash", M, _set("files.0.paths", ["a//b"]),
     "manifest.files[0].paths[0]: 'a//b' contains an empty, '.' or '..' segment"),
    ("m-glob-trailing-slash", M, _set("files.0.paths", ["reports/"]),
     "manifest.files[0].paths[0]: 'reports/' contains an empty, '.' or '..' segment"),
    ("m-glob-absolute", M, _set("files.0.paths", ["**", "/etc/**"]),
     ("manifest.files[0].paths[1]: '/etc/**' is absolute; patterns are relative to the "
     "workspace root")),
    ("m-glob-star-star-x", M, _set("files.0.paths", ["**x"]),
     "manifest.files[0].paths[0]: '**' must be a whole segment in '**x'"),
    ("m-glob-x-star-star", M, _set("files.0.paths", ["reports/a**"]),
     "manifest.files[0].paths[0]: '**' must be a whole segment in 'reports/a**'"),
    ("m-glob-triple-star", M, _set("files.0.paths", ["***"]),
     "manifest.files[0].paths[0]: '**' must be a whole segment in '***'"),
    ("m-glob-nul", M, _set("files.0.paths", ["a\x00b"]),
     "manifest.files[0].paths[0]: 'a\\x00b' contains an empty, '.' or '..' segment"),
    ("m-second-rule", M, lambda d: d["files"].append({"paths": ["x"], "ops": []}),
     "manifest.files[1].ops: empty; list the operations (READ, LIST, ...)"),
    # manifest limits
    ("m-memory-over", M, _set("limits.memory_mb", 4097),
     "manifest.limits.memory_mb: 4097 is outside 0..4096"),
    ("m-cpus-over", M, _set("limits.cpus", 2.5), "manifest.limits.cpus: 2.5 is outside 0..2.0"),
    ("m-cpus-negative", M, _set("limits.cpus", -0.5),
     "manifest.limits.cpus: -0.5 is outside 0..2.0"),
    ("m-cpus-nan", M, _set("limits.cpus", "NaN"), "manifest.limits.cpus: nan is outside 0..2.0"),
    ("m-cpus-infinity", M, _set("limits.cpus", "Infinity"),
     "manifest.limits.cpus: inf is outside 0..2.0"),
    ("m-pids-over", M, _set("limits.pids", 1025), "manifest.limits.pids: 1025 is outside 0..1024"),
    ("m-timeout-over", M, _set("limits.timeout_s", 3601),
     "manifest.limits.timeout_s: 3601 is outside 0..3600"),
    ("m-tmp-over", M, _set("limits.tmp_mb", 1025),
     "manifest.limits.tmp_mb: 1025 is outside 0..1024"),
    # grant
    ("g-tool-name-bad", G, _set("tools.1.name", "Word Count"),
     "grant.tools[1].name: 'Word Count' is not a tool name"),
    ("g-tool-name-empty", G, _set("tools.0", {"id": "x"}), ("grant.tools[0].name: '' is not a "
     "tool name")),
    ("g-tool-name-wildcard", G, _set("tools.0.name", "*"), ("grant.tools[0].name: '*' is not a "
     "tool name")),
    ("g-tool-name-trailing-newline", G, _set("tools.0.name", "read-file\n"),
     "grant.tools[0].name: 'read-file\\n' is not a tool name"),
    ("g-no-workspace", G, _delete("files.0.workspace"),
     "grant.files[0].workspace: a grant must name the workspace"),
    ("g-empty-workspace", G, _set("files.0.workspace", ""),
     "grant.files[0].workspace: a grant must name the workspace"),
    ("g-ops-empty", G, _set("files.0.ops", []),
     "grant.files[0].ops: empty; list the operations (READ, LIST, ...)"),
    ("g-ops-unspecified", G, _set("files.0.ops", ["FILE_OP_UNSPECIFIED"]),
     "grant.files[0].ops: FILE_OP_UNSPECIFIED is not an operation"),
    ("g-ops-unknown-number", G, _set("files.0.ops", [7]),
     "grant.files[0].ops[0]: 7 is not an operation name (READ, LIST, STAT, ...)"),
    ("g-paths-empty", G, _set("files.0.paths", []),
     "grant.files[0].paths: empty; an empty list grants nothing"),
    ("g-glob-dotdot", G, _set("files.0.paths", ["reports/**", "reports/../private/*"]),
     "grant.files[0].paths[1]: 'reports/../private/*' contains an empty, '.' or '..' segment"),
    ("g-glob-absolute", G, _set("files.0.paths", ["/reports/**"]),
     ("grant.files[0].paths[0]: '/reports/**' is absolute; patterns are relative to the "
     "workspace root")),
    ("g-glob-star-star-x", G, _set("files.0.paths", ["reports/**", "**x"]),
     "grant.files[0].paths[1]: '**' must be a whole segment in '**x'"),
    ("g-second-rule-no-workspace", G,
     lambda d: d["files"].append({"paths": ["x"], "ops": ["READ"]}),
     "grant.files[1].workspace: a grant must name the workspace"),
    ("g-limits-over", G, _set("limits.memory_mb", 5000),
     "grant.limits.memory_mb: 5000 is outside 0..4096"),
    ("g-limits-cpus-nan", G, _set("limits.cpus", "NaN"), ("grant.limits.cpus: nan is outside "
     "0..2.0")),
    ("g-expires-equal-not-before", G, _set("expires_at", 1700000000),
     "grant.expires_at: not after not_before"),
    ("g-expires-before-not-before", G, _set("expires_at", 1699999999),
     "grant.expires_at: not after not_before"),
    # not a mapping
    ("m-list-top-level", M, None, "manifest: expected a mapping at the top level"),
]

SUBSTRING = [
    # unknown keys: json_format names the key and the message type
    ("m-unknown-top-key", M, _set("nmae", "x"), "manifest: ", '"nmae"'),
    ("m-unknown-rule-key", M, _set("files.0.path", ["x"]), "manifest: ", '"path"'),
    ("m-unknown-limits-key", M, _set("limits.memory", 1), "manifest: ", '"memory"'),
    ("m-workspace-typo", M, _set("files.0.workspce", "demo"), "manifest: ", '"workspce"'),
    ("g-unknown-top-key", G, _set("expires", 1), "grant: ", '"expires"'),
    ("g-unknown-tool-key", G, _set("tools.0.image", "x"), "grant: ", '"image"'),
    ("g-unknown-rule-key", G, _set("files.0.deny", ["x"]), "grant: ", '"deny"'),
    # type errors and unknown enum names
    ("m-unknown-op-name", M, _set("files.0.ops", ["EXECUTE"]), "manifest: ", "EXECUTE"),
    ("m-paths-not-a-list", M, _set("files.0.paths", "**"), "manifest: ", "paths"),
    ("m-memory-negative", M, _set("limits.memory_mb", -1), "manifest: ", "memory_mb"),
    ("m-memory-fraction", M, _set("limits.memory_mb", 1.5), "manifest: ", "memory_mb"),
    ("m-files-not-a-list", M, _set("files", 5), "manifest: ", "files"),
    ("m-schema-not-a-mapping", M, _set("input_schema", 5), "manifest: ", "input_schema"),
    ("g-max-bytes-negative", G, _set("files.0.max_bytes", -1), "grant: ", "max_bytes"),
    ("g-expires-not-a-number", G, _set("expires_at", "tomorrow"), "grant: ", "expires_at"),
]


def _apply(kind: str, edit: Any) -> Any:
    if edit is None:
        return [manifest_dict()]
    doc = copy.deepcopy(manifest_dict() if kind == M else grant_dict())
    edit(doc)
    return doc


def _parse(kind: str, doc: Any) -> Any:
    return parse_manifest(doc) if kind == M else parse_grant(doc)


@pytest.mark.parametrize(("kind", "edit", "message"), [r[1:] for r in EXACT],
                         ids=[r[0] for r in EXACT])
def test_rejected_with_field_path(kind: str, edit: Any, message: str) -> None:
    with pytest.raises(ManifestInvalid) as info:
        _parse(kind, _apply(kind, edit))
    assert info.value.details == message
    assert info.value.code == "INVALID_ARGUMENT"


@pytest.mark.parametrize(("kind", "edit", "prefix", "names"), [r[1:] for r in SUBSTRING],
                         ids=[r[0] for r in SUBSTRING])
def test_rejected_by_schema_naming_the_key(kind: str, edit: Any, prefix: str,
                                           names: str) -> None:
    with pytest.raises(ManifestInvalid) as info:
        _parse(kind, _apply(kind, edit))
    assert info.value.details.startswith(prefix)
    assert names in info.value.details


@pytest.mark.parametrize("value", [None, "text", 5, ["a"]], ids=repr)
def test_top_level_must_be_a_mapping(value: Any) -> None:
    with pytest.raises(ManifestInvalid) as info:
        parse_grant(value)
    assert info.value.details == "grant: expected a mapping at the top level"


def test_invalid_yaml_names_the_source() -> None:
    with pytest.raises(ManifestInvalid) as info:
        load_yaml("name: [unclosed", "tool.yaml")
    assert info.value.details.startswith("tool.yaml: not valid YAML: ")


def test_yaml_is_loaded_safely() -> None:
    with pytest.raises(ManifestInvalid) as info:
        load_yaml("!!python/object/apply:os.system ['true']", "evil.yaml")
    assert info.value.details.startswith("evil.yaml: not valid YAML: ")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GRANT.replace("workspace: demo", "workspace: ''"))
    with pytest.raises(ManifestInvalid) as info:
        load_grant_file(path)
    assert info.value.details == f"{path}.files[0].workspace: a grant must name the workspace"


def test_expiry_without_not_before_is_fine() -> None:
    doc = grant_dict()
    del doc["not_before"]
    assert parse_grant(doc).expires_at == 1700003600


def test_limits_at_their_ceilings_are_accepted() -> None:
    doc = manifest_dict()
    doc["limits"] = {"memory_mb": 4096, "cpus": 2.0, "pids": 1024, "timeout_s": 3600,
                     "tmp_mb": 1024}
    parse_manifest(doc)


def test_manifest_may_name_a_workspace() -> None:
    doc = manifest_dict()
    doc["files"][0]["workspace"] = "demo"
    assert parse_manifest(doc).files[0].workspace == "demo"


SHIPPED_MANIFESTS = sorted((REPO / "capabilities").glob("*.yaml"))


def test_there_are_shipped_manifests() -> None:
    assert SHIPPED_MANIFESTS


@pytest.mark.parametrize("path", SHIPPED_MANIFESTS, ids=lambda p: p.name)
def test_shipped_manifest_parses(path: Path) -> None:
    m = load_manifest_file(path)
    assert m.name == path.stem
    assert m.files or m.pay or m.net, "a shipped tool reaches files, the network or money"


def test_demo_grant_parses() -> None:
    g = load_grant_file(REPO / "runtime" / "writ" / "demo" / "grant.yaml")
    assert {t.name for t in g.tools} <= {m.stem for m in SHIPPED_MANIFESTS}
    assert [r.workspace for r in g.files] == ["demo"]
    assert list(g.files[0].paths) == ["reports/**"]
