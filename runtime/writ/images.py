"""Build the base image and the example tool images locally, with progress.

No image registry is assumed. The base is two layers:

1. ``writ-base-os:<hash>``: ``debootstrap`` of a minimal Debian (tool_images/base/recipe.env)
   with set-uid bits stripped and a non-root ``tool`` user, imported with ``docker import``.
   Its tag is a hash of the recipe, so it is built once per recipe change (about a minute).
2. ``writ-base:latest``: grpcio/protobuf wheels (the broker's exact pins) and the
   ``writ_tool`` SDK on top (tool_images/base/Dockerfile); seconds, and cached by Docker.

Tool images (tool_images/tools/<name>/Dockerfile) build ``FROM writ-base:latest``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import ImageBuildFailed

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "tool_images"
BASE_IMAGE = "writ-base:latest"
BASE_OS_REPO = "writ-base-os"
TOOL_REPO = "writ-tool"
CACHE_DIR = Path(os.environ.get("WRIT_CACHE_DIR", "/var/cache/writ"))
# Packages copied into the image at the broker's pinned versions (see pyproject.toml).
IMAGE_WHEELS = ("grpcio", "protobuf", "typing_extensions")

Progress = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_recipe() -> dict[str, str]:
    recipe: dict[str, str] = {}
    for line in (IMAGES_DIR / "base/recipe.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            recipe[key.strip()] = value.strip()
    return recipe


def base_os_tag() -> str:
    digest = hashlib.sha256((IMAGES_DIR / "base/recipe.env").read_bytes()).hexdigest()
    return f"{BASE_OS_REPO}:{digest[:16]}"


def _debian_mirror() -> str:
    """debootstrap's mirror: WRIT_DEBIAN_MIRROR, else Debian's own redirector."""
    return os.environ.get("WRIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def _run_with_progress(cmd: list[str], label: str, say: Progress) -> None:
    say(f"[{label}] $ {' '.join(cmd)}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-20:]
        if line.startswith(("I: Retrieving", "I: Validating")):
            continue  # hundreds of lines; the stage lines below are progress enough
        say(f"[{label}] {line}")
    if proc.wait() != 0:
        raise ImageBuildFailed(label, "\n".join(tail))


def build_base_os(client: Any, say: Progress = _say) -> str:
    """debootstrap + docker import, skipped when the recipe's tag already exists."""
    tag = base_os_tag()
    if client.images.list(name=tag):
        say(f"[base-os] {tag} is cached")
        return tag
    if shutil.which("debootstrap") is None:
        raise ImageBuildFailed("base-os", "debootstrap is missing: apt-get install debootstrap")
    recipe = read_recipe()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix="rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        _run_with_progress(
            ["debootstrap", f"--variant={recipe['VARIANT']}", f"--include={recipe['PACKAGES']}",
             recipe["SUITE"], str(root), _debian_mirror()], "base-os", say)
        _harden_rootfs(root, int(recipe["TOOL_UID"]), say)
        say(f"[base-os] importing {tag}")
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."],
                               stdout=subprocess.PIPE)
        assert tar.stdout is not None
        imp = subprocess.run(["docker", "import", "-", tag],
                             stdin=tar.stdout, capture_output=True, text=True, check=False)
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise ImageBuildFailed("base-os", imp.stderr.strip() or "tar failed")
    say(f"[base-os] built {tag}")
    return tag


def _harden_rootfs(root: Path, uid: int, say: Progress) -> None:
    say("[base-os] trimming docs and apt caches, stripping set-uid/set-gid bits, adding user tool")
    for junk in ["usr/share/doc", "usr/share/man", "usr/share/info", "var/cache/apt",
                 "var/lib/apt/lists"]:
        shutil.rmtree(root / junk, ignore_errors=True)
    # No-new-privileges already neuters set-uid binaries; removing the bits means a
    # mistaken launch without it still gains nothing.
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            st = path.lstat()
            if not path.is_symlink() and st.st_mode & 0o6000:
                path.chmod(st.st_mode & ~0o6000)
    with open(root / "etc/passwd", "a") as f:
        f.write(f"tool:x:{uid}:{uid}:writ tool:/tmp:/usr/sbin/nologin\n")
    with open(root / "etc/group", "a") as f:
        f.write(f"tool:x:{uid}:\n")


def _stage_site_packages(dest: Path, say: Progress) -> None:
    pins = [f"{name}=={metadata.version(name)}" for name in IMAGE_WHEELS]
    say(f"[base] staging wheels for the image: {' '.join(pins)}")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--target", str(dest), "--no-deps", "--only-binary=:all:",
           "--platform", "manylinux2014_x86_64", "--python-version", "3.11",
           "--implementation", "cp", *pins]
    _run_with_progress(cmd, "base", say)
    for junk in dest.glob("*.dist-info"):
        shutil.rmtree(junk)


def _docker_build(client: Any, context: Path, tag: str, label: str, say: Progress,
                  buildargs: dict[str, str] | None = None) -> str:
    say(f"[{label}] docker build -t {tag}")
    try:
        stream: Iterable[dict[str, Any]] = client.api.build(
            path=str(context), tag=tag, rm=True, forcerm=True, decode=True,
            buildargs=buildargs or {}, labels={"writ.image": label})
        for chunk in stream:
            if "error" in chunk:
                raise ImageBuildFailed(label, chunk["error"].strip())
            text = chunk.get("stream", "").rstrip()
            if text:
                say(f"[{label}] {text}")
    except ImageBuildFailed:
        raise
    except Exception as exc:  # docker.errors.APIError, BuildError, connection errors
        raise ImageBuildFailed(label, str(exc)) from exc
    image = client.images.get(tag)
    return str(image.id)


def build_base(client: Any, say: Progress = _say) -> str:
    base_os = build_base_os(client, say)
    with tempfile.TemporaryDirectory(prefix="writ-base-") as tmp:
        ctx = Path(tmp)
        shutil.copy(IMAGES_DIR / "base/Dockerfile", ctx / "Dockerfile")
        _stage_site_packages(ctx / "site-packages", say)
        shutil.copytree(IMAGES_DIR / "sdk/writ_tool", ctx / "writ_tool",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _normalise_mtimes(ctx)
        return _docker_build(client, ctx, BASE_IMAGE, "base", say, {"BASE_OS": base_os})


def _normalise_mtimes(ctx: Path) -> None:
    # Docker's COPY cache key includes file metadata; fixed mtimes keep rebuilds cached.
    for dirpath, dirs, files in os.walk(ctx):
        for name in dirs + files:
            os.utime(Path(dirpath) / name, (0, 0), follow_symlinks=False)


def tool_dirs(extra: Iterable[Path] = ()) -> list[Path]:
    return sorted(p for p in (IMAGES_DIR / "tools").iterdir() if (p / "Dockerfile").exists()) + [
        Path(p) for p in extra]


def tool_tag(tool_dir: Path) -> str:
    return f"{TOOL_REPO}/{tool_dir.name.replace('_', '-')}:latest"


def build_tool(client: Any, tool_dir: Path, say: Progress = _say) -> str:
    return _docker_build(client, tool_dir, tool_tag(tool_dir), tool_dir.name, say)


def build_all(client: Any, extra: Iterable[Path] = (), say: Progress = _say) -> dict[str, str]:
    """Build the base and every tool image; returns tag -> image id."""
    built = {BASE_IMAGE: build_base(client, say)}
    for tool_dir in tool_dirs(extra):
        built[tool_tag(tool_dir)] = build_tool(client, tool_dir, say)
    return built
