"""The folder tree draws the trust boundary: runtime/writ/core stays pure.

Core may import the standard library, the protobuf runtime, and, relatively, the generated
messages (``.._proto.*_pb2``), ``..errors`` and its own siblings. Anything else (grpc,
docker, the mediators, the launcher, an absolute ``writ.*`` import) needs review first.
``errors.py`` imports nothing but the standard library, so core can raise without grpc.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

WRIT = Path(__file__).resolve().parents[2] / "runtime" / "writ"
CORE = WRIT / "core"
CORE_MODULES = sorted(CORE.glob("*.py"))
SIBLINGS = {p.stem for p in CORE_MODULES}
STDLIB = set(sys.stdlib_module_names)
THIRD_PARTY_ALLOWED = ("google.protobuf",)
# Names that would let a module import something the static check cannot see.
DYNAMIC_IMPORT = {"__import__", "import_module", "importlib", "exec", "eval"}


def _is_stdlib(module: str) -> bool:
    return module.split(".")[0] in STDLIB


def _allowed_absolute(module: str) -> bool:
    return _is_stdlib(module) or any(module == a or module.startswith(a + ".")
                                     for a in THIRD_PARTY_ALLOWED)


def _allowed_relative(level: int, module: str | None, names: list[str]) -> bool:
    if level == 1:   # from .x import y / from . import x: a core sibling
        targets = [module.split(".")[0]] if module else names
        return all(t in SIBLINGS for t in targets)
    if level == 2:   # from ..x import y: only the generated messages and errors
        if module == "errors":
            return True
        if module == "_proto":
            return all(n.endswith("_pb2") for n in names)
        if module and module.startswith("_proto."):
            return module.removeprefix("_proto.").endswith("_pb2")
    return False


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            bad += [f"{where}: import {a.name}" for a in node.names
                    if not _allowed_absolute(a.name) or a.name.split(".")[0] in DYNAMIC_IMPORT]
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level == 0:
                ok = (node.module is not None and _allowed_absolute(node.module)
                      and node.module.split(".")[0] not in DYNAMIC_IMPORT)
            else:
                ok = _allowed_relative(node.level, node.module, names)
            if not ok:
                bad.append(f"{where}: from {'.' * node.level}{node.module or ''} "
                           f"import {', '.join(names)}")
        elif isinstance(node, ast.Name) and node.id in DYNAMIC_IMPORT:
            bad.append(f"{where}: dynamic import or evaluation via {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in DYNAMIC_IMPORT:
            bad.append(f"{where}: dynamic import or evaluation via .{node.attr}")
    return bad


def test_core_has_modules() -> None:
    assert {"policy", "tokens", "paths"} <= SIBLINGS


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_imports_stay_in_allowlist(path: Path) -> None:
    assert violations(path) == []


def test_errors_imports_only_stdlib() -> None:
    tree = ast.parse((WRIT / "errors.py").read_text())
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "errors.py must not import from the package"
            imported.append(node.module or "")
    assert [m for m in imported if not _is_stdlib(m)] == []


@pytest.mark.parametrize("source", [
    "import grpc",
    "import docker.errors",
    "from google.cloud import storage",
    "from writ._proto import token_pb2",
    "from writ.errors import PathInvalid",
    "from .. import mediators",
    "from ..mediators import files",
    "from ..launcher._spec import MAX_LIMITS",
    "from .._proto import control_pb2_grpc",
    "from .._proto.tool_pb2_grpc import ToolBrokerStub",
    "from .nonexistent import x",
    "from ...outside import x",
    "def f():\n    import socket as s, yaml",
    "m = __import__('grpc')",
    "import importlib",
    "x = eval('1')",
    "from importlib import import_module",
])
def test_the_checker_catches(tmp_path: Path, source: str) -> None:
    path = tmp_path / "sample.py"
    path.write_text(source + "\n")
    assert violations(path), f"not flagged: {source!r}"


@pytest.mark.parametrize("source", [
    "from __future__ import annotations",
    "import hmac, hashlib, base64",
    "from collections.abc import Sequence",
    "from google.protobuf.message import DecodeError",
    "from .._proto import capabilities_pb2 as caps, token_pb2",
    "from ..errors import PathInvalid",
    "from .policy import Authority",
    "from . import paths",
])
def test_the_checker_allows(tmp_path: Path, source: str) -> None:
    path = tmp_path / "sample.py"
    path.write_text(source + "\n")
    assert violations(path) == []
