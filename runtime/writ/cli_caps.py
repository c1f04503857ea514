"""`writ caps ...`: what security teams run to review and approve capability manifests.

    writ caps lint|diff|explain                       review manifests
    writ caps keygen|sign|verify                      approve a manifest for one image

Offline: these read manifests and keys and need no broker, except that `caps sign` and
`caps verify` ask the local Docker engine for an image id when none is given. Human output
by default; `--json` prints one JSON document.

`writ audit ...` (cli_audit) shares this module's exit codes, output, command wrapper and
trusted-key loading.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._proto import capabilities_pb2 as caps
from .errors import BrokerError, ManifestInvalid
from .security import keys, review, signing

EXIT_PROBLEM = 1   # broken log, risky manifest, widening diff, refused signature
EXIT_INVALID = 2   # input that does not parse


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) if args.json
          else human)


def load_keys(paths: list[str]) -> dict[str, keys.Ed25519PublicKey] | None:
    """Trusted public keys by key id; None when no path is given.

    Raises:
        SystemExit: a key file cannot be read.
    """
    if not paths:
        return None
    try:
        return keys.load_public_keys([Path(p) for p in paths])
    except keys.KeyFileError as exc:
        raise SystemExit(f"writ: {exc}") from None


class _Invalid(Exception):
    """Input that does not parse: reported with its location, exit 2."""


def handler(fn: Any) -> Any:
    """Wrap a command: input that does not parse (`_Invalid`) prints and exits 2."""
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except _Invalid as exc:
            print(f"writ: {exc}", file=sys.stderr)
            return EXIT_INVALID

    return run


def _load(path: str) -> review.Loaded:
    try:
        return review.load(Path(path))
    except ManifestInvalid as exc:
        raise _Invalid(exc.details) from None


def cmd_lint(args: argparse.Namespace) -> int:
    results, worst = [], 0
    for path in args.files:
        try:
            doc = _load(path)
        except _Invalid as exc:
            results.append({"file": path, "valid": False, "error": str(exc), "findings": []})
            worst = EXIT_INVALID
            continue
        findings = review.lint(doc)
        failing = [f for f in findings if review.severity_at_least(f, args.fail_on)]
        worst = max(worst, EXIT_PROBLEM if failing else 0)
        results.append({"file": path, "valid": True, "kind": doc.kind,
                        "findings": [f.__dict__ for f in findings]})
    lines = []
    for r in results:
        if not r["valid"]:
            lines.append(f"{r['error']}")
            continue
        lines += [review.Finding(**f).render(r["file"]) for f in r["findings"]] or \
            [f"{r['file']}: ok ({r['kind']}, no risk found)"]
    emit(args, results, "\n".join(lines))
    return worst


def cmd_diff(args: argparse.Namespace) -> int:
    try:
        old, new = _load(args.old).manifest, _load(args.new).manifest
    except (_Invalid, ManifestInvalid) as exc:
        emit(args, {"valid": False, "error": str(exc)}, str(exc))
        return EXIT_INVALID
    changes = review.diff(old, new)
    widening = [c for c in changes if c.kind == "widening"]
    human = "\n".join(c.render() for c in changes) or "no authority change"
    human += (f"\n{len(widening)} widening(s): needs a security review" if widening else
              "\nno widening")
    emit(args, {"widening": bool(widening), "changes": [c.__dict__ for c in changes]}, human)
    return EXIT_PROBLEM if widening else 0


def _find_manifest(name: str, directory: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    for suffix in (".yaml", ".yml"):
        candidate = Path(directory) / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    raise _Invalid(f"no manifest {name!r}: not a file, and no {name}.yaml in {directory}/")


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        doc = _load(str(_find_manifest(args.tool, args.dir)))
        manifest = doc.manifest
    except (_Invalid, ManifestInvalid) as exc:
        print(f"writ: {exc}", file=sys.stderr)
        return EXIT_INVALID
    text = review.explain(manifest)
    findings = review.lint(doc)
    if findings:
        text += ["Review notes:"] + [f"  {f.severity}: {f.field}: {f.message}" for f in findings]
    emit(args, {"tool": manifest.name, "summary": text,
                "findings": [f.__dict__ for f in findings]}, "\n".join(text))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    private, public = Path(args.out + ".key"), Path(args.out + ".pub")
    try:
        key = keys.generate(private, public)
    except FileExistsError:
        raise SystemExit(f"writ: {private} exists; refusing to overwrite a key") from None
    kid = keys.key_id(key.public_key())
    emit(args, {"key_id": kid, "private_key": str(private), "public_key": str(public)},
         f"key {kid}: private {private} (0600, keep it offline), public {public} (give it "
         "to brokers: `writ serve --strict --trusted-key`)")
    return 0


def _image_id(manifest: caps.Manifest, given: str | None) -> str:
    if given:
        return given
    import docker

    try:
        return str(docker.from_env(timeout=30).images.get(manifest.image).id)
    except docker.errors.ImageNotFound:
        raise SystemExit(f"writ: image {manifest.image} is not on the local engine; build "
                         "it, or give --image-id") from None


def cmd_sign(args: argparse.Namespace) -> int:
    try:
        manifest = _load(args.manifest).manifest
        private = keys.load_private(Path(args.key))
    except (_Invalid, ManifestInvalid, keys.KeyFileError) as exc:
        print(f"writ: {exc}", file=sys.stderr)
        return EXIT_INVALID
    image_id = _image_id(manifest, args.image_id)
    try:
        sig = signing.sign(manifest, image_id, private)
    except BrokerError as exc:
        print(f"writ: {exc.details}", file=sys.stderr)
        return EXIT_INVALID
    out = Path(args.out) if args.out else signing.signature_path(Path(args.manifest))
    out.write_text(sig.to_json())
    emit(args, json.loads(sig.to_json()) | {"file": str(out)},
         f"signed {manifest.name} for {image_id} with key {sig.key_id}: {out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    sig_path = Path(args.sig) if args.sig else signing.signature_path(Path(args.manifest))
    try:
        manifest = _load(args.manifest).manifest
        text = sig_path.read_text()
    except (_Invalid, ManifestInvalid) as exc:
        print(f"writ: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"writ: {sig_path}: {exc.strerror}", file=sys.stderr)
        return EXIT_INVALID
    trusted = load_keys(args.trusted_key) or {}
    try:
        sig = signing.verify(manifest, text, trusted, _image_id(manifest, args.image_id),
                             str(sig_path))
    except BrokerError as exc:
        emit(args, {"ok": False, "code": exc.code, "problem": exc.details},
             f"REFUSED ({exc.code}): {exc.details}")
        return EXIT_INVALID if exc.code == "INVALID_ARGUMENT" else EXIT_PROBLEM
    emit(args, {"ok": True, "key_id": sig.key_id, "image_id": sig.image_id},
         f"ok: {manifest.name} approved for {sig.image_id} by key {sig.key_id}")
    return 0


def signature_json(manifest_path: Path, sig: str | None) -> str:
    """The signature document to register a manifest with: ``sig`` when given, else
    ``<tool>.sig.json`` beside the manifest when it exists, else "".

    Raises:
        OSError: ``sig`` (or the file beside the manifest) cannot be read.
    """
    path = Path(sig) if sig else signing.signature_path(manifest_path)
    return path.read_text() if (sig or path.exists()) else ""


def add_commands(sub: Any) -> None:
    """Register `writ caps ...` on the top-level subparsers."""
    capsp = sub.add_parser("caps", help="capability manifests: lint, diff, explain, sign")
    cs = capsp.add_subparsers(dest="sub", required=True)
    lt = cs.add_parser("lint", help="schema and risk rules (exit 1 on a risk, 2 if invalid)")
    lt.add_argument("files", nargs="+")
    lt.add_argument("--fail-on", choices=review.SEVERITIES, default="medium")
    lt.set_defaults(fn=handler(cmd_lint))
    df = cs.add_parser("diff", help="every widening and narrowing (exit 1 on widening)")
    df.add_argument("old")
    df.add_argument("new")
    df.set_defaults(fn=handler(cmd_diff))
    ex = cs.add_parser("explain", help="a tool's ceiling in plain language")
    ex.add_argument("tool", help="tool name (looked up in --dir) or manifest file")
    ex.add_argument("--dir", default="capabilities")
    ex.set_defaults(fn=handler(cmd_explain))
    kg = cs.add_parser("keygen", help="a new Ed25519 signing key: OUT.key and OUT.pub")
    kg.add_argument("--out", required=True, metavar="PREFIX")
    kg.set_defaults(fn=handler(cmd_keygen))
    sg = cs.add_parser("sign", help="approve a manifest for one image id")
    sg.add_argument("manifest")
    sg.add_argument("--key", required=True, help="private key file")
    sg.add_argument("--image-id", help="sha256:... (default: ask the local engine)")
    sg.add_argument("--out", help="default: <manifest>.sig.json beside it")
    sg.set_defaults(fn=handler(cmd_sign))
    vf = cs.add_parser("verify", help="check a manifest's signature as a strict broker would")
    vf.add_argument("manifest")
    vf.add_argument("--sig", help="default: <manifest>.sig.json beside it")
    vf.add_argument("--trusted-key", action="append", default=[], required=True)
    vf.add_argument("--image-id", help="sha256:... (default: ask the local engine)")
    vf.set_defaults(fn=handler(cmd_verify))
