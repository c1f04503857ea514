"""`writ audit ...` and `writ caps ...`: what security teams run.

    writ audit verify [--pubkey F] [--checkpoint F]   the chain, checkpoints, truncation
    writ audit query|export|tail [filters]            select records; JSON Lines out
    writ audit report [filters]                       granted | exercised | denied
    writ audit unused                                 authority each tool never used
    writ audit checkpoint-key                         the public key that signs checkpoints
    writ caps lint|diff|explain                       review manifests
    writ caps keygen|sign|verify                      approve a manifest for one image

Offline: these read files (the log in the state dir, manifests, keys) and need no broker,
except that `caps sign` and `caps verify` ask the local Docker engine for an image id when
none is given. Human output by default; `--json` prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from ._proto import audit_pb2, control_pb2
from ._proto import capabilities_pb2 as caps
from .audit import checkpoint as cp_mod
from .audit import query, read_records, report, verify_log
from .errors import BrokerError, ManifestInvalid
from .security import keys, review, signing

EXIT_PROBLEM = 1   # broken log, risky manifest, widening diff, refused signature
EXIT_INVALID = 2   # input that does not parse


def _emit(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) if args.json
          else human)


def _state_dir(args: argparse.Namespace) -> Path:
    from .broker.server import default_state_dir

    return Path(args.state_dir) if args.state_dir else default_state_dir()


def _log_path(args: argparse.Namespace) -> Path:
    path = Path(args.file) if getattr(args, "file", None) else _state_dir(args) / "audit.jsonl"
    if not path.exists():
        raise SystemExit(f"writ: no audit log at {path}")
    return path


def _msg(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(m, preserving_proto_field_name=True)
    return out


def _records(args: argparse.Namespace) -> list[audit_pb2.AuditEvent]:
    path = _log_path(args)
    try:
        return list(read_records(path, live=True))
    except ValueError as exc:
        raise SystemExit(f"writ: {exc} (run `writ audit verify`)") from None


def _filter(args: argparse.Namespace) -> query.Filter:
    try:
        return query.Filter(
            grant=args.grant or "", token=args.token or "", tool=args.tool or "",
            invocation=args.invocation or "", decision=(args.decision or "").lower(),
            operation=args.operation or "",
            since=query.parse_time(args.since) if args.since else "",
            until=query.parse_time(args.until) if args.until else "",
            from_seq=args.from_seq, to_seq=args.to_seq)
    except ValueError as exc:
        raise SystemExit(f"writ: {exc}") from None


def audit_line(ev: audit_pb2.AuditEvent) -> str:
    d = {audit_pb2.ALLOW: "ALLOW", audit_pb2.DENY: "DENY "}.get(ev.decision, "-    ")
    who = ev.actor + (f"/{ev.invocation_id}" if ev.invocation_id else "")
    tail = f" [{ev.rule}]" if ev.rule else ""
    return (f"{ev.seq:>6} {ev.time[:10]} {ev.time[11:23]} {d} {ev.operation:<16} "
            f"{ev.target:<28} {who:<36} {ev.reason}{tail}")


# -- audit -----------------------------------------------------------------------------------
def cmd_tail(args: argparse.Namespace) -> int:
    events = _filter(args).select(_records(args))[-args.n:]
    _emit(args, [_msg(e) for e in events], "\n".join(audit_line(e) for e in events))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    events = _filter(args).select(_records(args))
    if args.limit:
        events = events[: args.limit]
    _emit(args, [_msg(e) for e in events],
          "\n".join(audit_line(e) for e in events) or "no record matches")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    events = _filter(args).select(_records(args))
    if args.out and args.out != "-":
        with open(args.out, "w", encoding="utf-8") as f:
            n = query.export_jsonl(events, f)
    else:
        n = query.export_jsonl(events, sys.stdout)
    span = f"seq {events[0].seq}..{events[-1].seq}" if events else "nothing"
    note = (" (contiguous: `writ audit verify --range --file ...` re-checks it)"
            if events and query.contiguous(events) else "")
    print(f"exported {n} record(s), {span}{note}", file=sys.stderr)
    return 0


def _load_keys(paths: list[str]) -> dict[str, keys.Ed25519PublicKey] | None:
    if not paths:
        return None
    try:
        return keys.load_public_keys([Path(p) for p in paths])
    except keys.KeyFileError as exc:
        raise SystemExit(f"writ: {exc}") from None


def cmd_verify(args: argparse.Namespace) -> int:
    path = _log_path(args)
    trusted = _load_keys(args.pubkey)
    anchor_file = Path(args.checkpoint) if args.checkpoint else None
    if anchor_file is None and not args.range and not args.no_sidecar and \
            cp_mod.sidecar_path(path).exists():
        anchor_file = cp_mod.sidecar_path(path)
    anchor = None
    if anchor_file is not None:
        try:
            anchor = cp_mod.read_checkpoint_file(anchor_file)
        except ValueError as exc:
            _emit(args, {"ok": False, "problem": {"kind": "checkpoint", "message": str(exc)}},
                  f"{path}: cannot use checkpoint: {exc}")
            return EXIT_INVALID
    v = verify_log(path, keys=trusted, anchor=anchor, from_genesis=not args.range)
    for _ in range(3):
        # A running broker may be mid-write: a last line that grows was not torn.
        if not v.torn_tail:
            break
        size = path.stat().st_size
        time.sleep(0.2)
        if path.stat().st_size == size:
            break
        v = verify_log(path, keys=trusted, anchor=anchor, from_genesis=not args.range)
    data: dict[str, Any] = {
        "file": str(path), "ok": v.ok, "records": v.records, "first_seq": v.first_seq,
        "last_seq": v.last_seq, "head": v.head, "checkpoints": len(v.checkpoints),
        "signatures_checked": trusted is not None, "signed_through": v.signed_through,
        "external_checkpoint": str(anchor_file) if anchor_file else None,
        "problem": None if v.problem is None else {
            "kind": v.problem.kind, "message": v.problem.message, "line": v.problem.line,
            "byte": v.problem.offset, "record": v.problem.record}}
    if v.problem is not None:
        human = (f"{path}: BROKEN: {v.problem.located(path)}\n"
                 f"  {v.records} record(s) before it verified")
    else:
        span = f"seq {v.first_seq}..{v.last_seq}" if v.records else "empty"
        human = f"{path}: {v.records} record(s) ({span}), chain intact"
        if trusted is None:
            human += (f"; {len(v.checkpoints)} checkpoint(s), signatures NOT checked "
                      "(give --pubkey)")
        else:
            human += (f"; {len(v.checkpoints)} checkpoint(s) signed by a trusted key; "
                      f"authenticated through seq {v.signed_through}")
            if v.signed_through < v.last_seq:
                human += f" ({v.last_seq - v.signed_through} later record(s) not yet signed)"
        if anchor is not None:
            human += f"\n  reaches the checkpoint in {anchor_file} (seq {anchor.seq})"
    _emit(args, data, human)
    return 0 if v.ok else EXIT_PROBLEM


def cmd_checkpoint_key(args: argparse.Namespace) -> int:
    path = _state_dir(args) / cp_mod.KEY_FILE
    if not path.exists():
        raise SystemExit(f"writ: no checkpoint key at {path}; the broker creates it when it "
                         "first starts")
    try:
        public = keys.load_public(path)
    except keys.KeyFileError as exc:
        raise SystemExit(f"writ: {exc}") from None
    pem = keys.public_pem(public)
    _emit(args, {"key_id": keys.key_id(public), "public_key_pem": pem},
          pem.rstrip() + f"\n# key id {keys.key_id(public)}: give this file to "
          "`writ audit verify --pubkey`")
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    path = cp_mod.sidecar_path(_log_path(args))
    try:
        cp = cp_mod.read_checkpoint_file(path)
    except ValueError as exc:
        raise SystemExit(f"writ: {exc}") from None
    _emit(args, json.loads(cp.to_json()), cp.to_json())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    delta = report.action_authority(_records(args), _filter(args))
    _emit(args, delta.as_json(), report.render_delta(delta))
    return 0


def _manifest_yaml(m: caps.Manifest) -> str:
    return yaml.safe_dump(_msg(m), sort_keys=False, allow_unicode=True)


def cmd_unused(args: argparse.Namespace) -> int:
    records = _records(args)
    manifests = report.manifests_from_log(records)
    for p in args.manifest:
        try:
            doc = review.load(Path(p))
            manifests[doc.manifest.name] = report.ManifestSeen(doc.manifest, p)
        except ManifestInvalid as exc:
            raise SystemExit(f"writ: {exc.details}") from None
    usages = [u for u in report.unused_authority(records, manifests)
              if not args.tool or u.tool == args.tool]
    lines = []
    for u in usages:
        lines.append(f"{u.tool}: manifest from {u.source}; {u.invocations} invocation(s), "
                     f"{u.exercised} allowed operation(s), {u.denied} denied")
        if not u.invocations and not u.exercised:
            lines += ["  never used in this log: no suggestion", ""]
            continue
        lines += [f"  unused: {x}" for x in u.unused] or [
            "  every declared capability was exercised"]
        lines += [f"  unexplained by the manifest: {x}" for x in u.unexplained]
        if u.unused:
            lines.append("  suggested manifest (only what was exercised):")
            lines += [f"    {x}" for x in _manifest_yaml(u.suggested).splitlines()]
        lines.append("")
    _emit(args, [u.as_json() for u in usages],
          "\n".join(lines).rstrip() or "no registered tool in this log (give --manifest)")
    return 0


# -- caps ------------------------------------------------------------------------------------
def _load(path: str) -> review.Loaded:
    try:
        return review.load(Path(path))
    except ManifestInvalid as exc:
        raise _Invalid(exc.details) from None


class _Invalid(Exception):
    """Input that does not parse: reported with its location, exit 2."""


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
    _emit(args, results, "\n".join(lines))
    return worst


def cmd_diff(args: argparse.Namespace) -> int:
    try:
        old, new = _load(args.old).manifest, _load(args.new).manifest
    except (_Invalid, ManifestInvalid) as exc:
        _emit(args, {"valid": False, "error": str(exc)}, str(exc))
        return EXIT_INVALID
    changes = review.diff(old, new)
    widening = [c for c in changes if c.kind == "widening"]
    human = "\n".join(c.render() for c in changes) or "no authority change"
    human += (f"\n{len(widening)} widening(s): needs a security review" if widening else
              "\nno widening")
    _emit(args, {"widening": bool(widening), "changes": [c.__dict__ for c in changes]}, human)
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
    _emit(args, {"tool": manifest.name, "summary": text,
                 "findings": [f.__dict__ for f in findings]}, "\n".join(text))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    private, public = Path(args.out + ".key"), Path(args.out + ".pub")
    try:
        key = keys.generate(private, public)
    except FileExistsError:
        raise SystemExit(f"writ: {private} exists; refusing to overwrite a key") from None
    kid = keys.key_id(key.public_key())
    _emit(args, {"key_id": kid, "private_key": str(private), "public_key": str(public)},
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
    _emit(args, json.loads(sig.to_json()) | {"file": str(out)},
          f"signed {manifest.name} for {image_id} with key {sig.key_id}: {out}")
    return 0


def cmd_caps_verify(args: argparse.Namespace) -> int:
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
    trusted = _load_keys(args.trusted_key) or {}
    try:
        sig = signing.verify(manifest, text, trusted, _image_id(manifest, args.image_id),
                             str(sig_path))
    except BrokerError as exc:
        _emit(args, {"ok": False, "code": exc.code, "problem": exc.details},
              f"REFUSED ({exc.code}): {exc.details}")
        return EXIT_INVALID if exc.code == "INVALID_ARGUMENT" else EXIT_PROBLEM
    _emit(args, {"ok": True, "key_id": sig.key_id, "image_id": sig.image_id},
          f"ok: {manifest.name} approved for {sig.image_id} by key {sig.key_id}")
    return 0


def register(client: Any, manifest: caps.Manifest, manifest_path: Path,
             sig: str | None) -> control_pb2.ToolInfo:
    """RegisterTool with the manifest's signature, when there is one (``--sig``, or
    ``<tool>.sig.json`` beside the manifest)."""
    path = Path(sig) if sig else signing.signature_path(manifest_path)
    text = path.read_text() if (sig or path.exists()) else ""
    info: control_pb2.ToolInfo = client._call(  # the client has no signature parameter yet
        "RegisterTool", control_pb2.RegisterToolRequest(manifest=manifest, signature_json=text))
    return info


# -- wiring ----------------------------------------------------------------------------------
def _filters(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters (ids match by prefix)")
    g.add_argument("--grant", help="grant id (the token.mint id)")
    g.add_argument("--token", help="token id; includes the invocations it started")
    g.add_argument("--tool")
    g.add_argument("--invocation")
    g.add_argument("--decision", choices=["allow", "deny", "ALLOW", "DENY"])
    g.add_argument("--operation", help='e.g. file.read, or a family: "file."')
    g.add_argument("--since", help="ISO 8601 time or a span back from now: 15m, 2h, 7d")
    g.add_argument("--until", help="ISO 8601 time or a span back from now (exclusive)")
    g.add_argument("--from-seq", type=int, default=0)
    g.add_argument("--to-seq", type=int, default=0)
    p.add_argument("--file", help="audit file (default: the state dir's audit.jsonl)")


def _handler(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except _Invalid as exc:
            print(f"writ: {exc}", file=sys.stderr)
            return EXIT_INVALID

    return run


def add_commands(sub: Any) -> None:
    """Register `writ audit ...` and `writ caps ...` on the top-level subparsers."""
    audit = sub.add_parser("audit", help="the audit log: verify, query, export, report")
    a = audit.add_subparsers(dest="sub", required=True)
    t = a.add_parser("tail", help="last records")
    t.add_argument("-n", type=int, default=20)
    _filters(t)
    t.set_defaults(fn=_handler(cmd_tail))
    v = a.add_parser("verify", help="check the chain, checkpoint signatures and truncation")
    v.add_argument("--file", help="audit file (default: the state dir's audit.jsonl)")
    v.add_argument("--pubkey", action="append", default=[], metavar="FILE",
                   help="trusted checkpoint public key (repeatable); checks signatures")
    v.add_argument("--checkpoint", metavar="FILE", help="a checkpoint kept elsewhere; the "
                   "log must reach it (default: the sidecar beside the log, if any)")
    v.add_argument("--no-sidecar", action="store_true", help="ignore the sidecar checkpoint")
    v.add_argument("--range", action="store_true", help="the file is an exported range: "
                   "its first record may start anywhere")
    v.set_defaults(fn=_handler(cmd_verify))
    q = a.add_parser("query", help="records matching filters")
    _filters(q)
    q.add_argument("--limit", type=int, default=0)
    q.set_defaults(fn=_handler(cmd_query))
    e = a.add_parser("export", help="records matching filters, as JSON Lines")
    _filters(e)
    e.add_argument("--out", help="file (default stdout)")
    e.set_defaults(fn=_handler(cmd_export))
    r = a.add_parser("report", help="action-authority delta: granted | exercised | denied")
    _filters(r)
    r.set_defaults(fn=_handler(cmd_report))
    u = a.add_parser("unused", help="per tool: declared authority never exercised")
    u.add_argument("--file", help="audit file (default: the state dir's audit.jsonl)")
    u.add_argument("--tool")
    u.add_argument("--manifest", action="append", default=[], help="manifest file to judge "
                   "(default: the manifests tools were registered with, from the log)")
    u.set_defaults(fn=_handler(cmd_unused))
    k = a.add_parser("checkpoint-key", help="print the public key that signs checkpoints")
    k.set_defaults(fn=_handler(cmd_checkpoint_key))
    c = a.add_parser("checkpoint", help="print the latest signed checkpoint (to keep "
                     "elsewhere)")
    c.add_argument("--file", help="audit file (default: the state dir's audit.jsonl)")
    c.set_defaults(fn=_handler(cmd_checkpoint))

    capsp = sub.add_parser("caps", help="capability manifests: lint, diff, explain, sign")
    cs = capsp.add_subparsers(dest="sub", required=True)
    lt = cs.add_parser("lint", help="schema and risk rules (exit 1 on a risk, 2 if invalid)")
    lt.add_argument("files", nargs="+")
    lt.add_argument("--fail-on", choices=review.SEVERITIES, default="medium")
    lt.set_defaults(fn=_handler(cmd_lint))
    df = cs.add_parser("diff", help="every widening and narrowing (exit 1 on widening)")
    df.add_argument("old")
    df.add_argument("new")
    df.set_defaults(fn=_handler(cmd_diff))
    ex = cs.add_parser("explain", help="a tool's ceiling in plain language")
    ex.add_argument("tool", help="tool name (looked up in --dir) or manifest file")
    ex.add_argument("--dir", default="capabilities")
    ex.set_defaults(fn=_handler(cmd_explain))
    kg = cs.add_parser("keygen", help="a new Ed25519 signing key: OUT.key and OUT.pub")
    kg.add_argument("--out", required=True, metavar="PREFIX")
    kg.set_defaults(fn=_handler(cmd_keygen))
    sg = cs.add_parser("sign", help="approve a manifest for one image id")
    sg.add_argument("manifest")
    sg.add_argument("--key", required=True, help="private key file")
    sg.add_argument("--image-id", help="sha256:... (default: ask the local engine)")
    sg.add_argument("--out", help="default: <manifest>.sig.json beside it")
    sg.set_defaults(fn=_handler(cmd_sign))
    vf = cs.add_parser("verify", help="check a manifest's signature as a strict broker would")
    vf.add_argument("manifest")
    vf.add_argument("--sig", help="default: <manifest>.sig.json beside it")
    vf.add_argument("--trusted-key", action="append", default=[], required=True)
    vf.add_argument("--image-id", help="sha256:... (default: ask the local engine)")
    vf.set_defaults(fn=_handler(cmd_caps_verify))
