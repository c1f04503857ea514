"""`writ audit ...`: what security teams run against the audit log.

    writ audit verify [--pubkey F] [--checkpoint F]   the chain, checkpoints, truncation
    writ audit query|export|tail [filters]            select records; JSON Lines out
    writ audit report [filters]                       granted | exercised | denied
    writ audit unused                                 authority each tool never used
    writ audit checkpoint-key                         the public key that signs checkpoints

Offline: these read files (the log in the state dir, manifests, keys) and need no broker.
Human output by default; `--json` prints one JSON document.
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

from ._proto import audit_pb2
from ._proto import capabilities_pb2 as caps
from .audit import checkpoint as cp_mod
from .audit import query, read_records, report, verify_log
from .cli_caps import EXIT_INVALID, EXIT_PROBLEM, emit, handler, load_keys
from .errors import ManifestInvalid
from .security import keys, review


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


def cmd_tail(args: argparse.Namespace) -> int:
    events = _filter(args).select(_records(args))[-args.n:]
    emit(args, [_msg(e) for e in events], "\n".join(audit_line(e) for e in events))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    events = _filter(args).select(_records(args))
    if args.limit:
        events = events[: args.limit]
    emit(args, [_msg(e) for e in events],
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


def cmd_verify(args: argparse.Namespace) -> int:
    path = _log_path(args)
    trusted = load_keys(args.pubkey)
    anchor_file = Path(args.checkpoint) if args.checkpoint else None
    if anchor_file is None and not args.range and not args.no_sidecar and \
            cp_mod.sidecar_path(path).exists():
        anchor_file = cp_mod.sidecar_path(path)
    anchor = None
    if anchor_file is not None:
        try:
            anchor = cp_mod.read_checkpoint_file(anchor_file)
        except ValueError as exc:
            emit(args, {"ok": False, "problem": {"kind": "checkpoint", "message": str(exc)}},
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
    emit(args, data, human)
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
    emit(args, {"key_id": keys.key_id(public), "public_key_pem": pem},
         pem.rstrip() + f"\n# key id {keys.key_id(public)}: give this file to "
         "`writ audit verify --pubkey`")
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    path = cp_mod.sidecar_path(_log_path(args))
    try:
        cp = cp_mod.read_checkpoint_file(path)
    except ValueError as exc:
        raise SystemExit(f"writ: {exc}") from None
    emit(args, json.loads(cp.to_json()), cp.to_json())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    delta = report.action_authority(_records(args), _filter(args))
    emit(args, delta.as_json(), report.render_delta(delta))
    return 0


def _manifest_yaml(m: caps.Manifest) -> str:
    doc = _msg(m)
    if "input_schema" in doc:
        # A Struct's map has no stable order: sorted, the same manifest prints the same.
        doc["input_schema"] = _sorted_keys(doc["input_schema"])
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _sorted_keys(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _sorted_keys(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [_sorted_keys(x) for x in v]
    return v


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
    emit(args, [u.as_json() for u in usages],
         "\n".join(lines).rstrip() or "no registered tool in this log (give --manifest)")
    return 0


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


def add_commands(sub: Any) -> None:
    """Register `writ audit ...` on the top-level subparsers."""
    audit = sub.add_parser("audit", help="the audit log: verify, query, export, report")
    a = audit.add_subparsers(dest="sub", required=True)
    t = a.add_parser("tail", help="last records")
    t.add_argument("-n", type=int, default=20)
    _filters(t)
    t.set_defaults(fn=handler(cmd_tail))
    v = a.add_parser("verify", help="check the chain, checkpoint signatures and truncation")
    v.add_argument("--file", help="audit file (default: the state dir's audit.jsonl)")
    v.add_argument("--pubkey", action="append", default=[], metavar="FILE",
                   help="trusted checkpoint public key (repeatable); checks signatures")
    v.add_argument("--checkpoint", metavar="FILE", help="a checkpoint kept elsewhere; the "
                   "log must reach it (default: the sidecar beside the log, if any)")
    v.add_argument("--no-sidecar", action="store_true", help="ignore the sidecar checkpoint")
    v.add_argument("--range", action="store_true", help="the file is an exported range: "
                   "its first record may start anywhere")
    v.set_defaults(fn=handler(cmd_verify))
    q = a.add_parser("query", help="records matching filters")
    _filters(q)
    q.add_argument("--limit", type=int, default=0)
    q.set_defaults(fn=handler(cmd_query))
    e = a.add_parser("export", help="records matching filters, as JSON Lines")
    _filters(e)
    e.add_argument("--out", help="file (default stdout)")
    e.set_defaults(fn=handler(cmd_export))
    r = a.add_parser("report", help="action-authority delta: granted | exercised | denied")
    _filters(r)
    r.set_defaults(fn=handler(cmd_report))
    u = a.add_parser("unused", help="per tool: declared authority never exercised")
    u.add_argument("--file", help="audit file (default: the state dir's audit.jsonl)")
    u.add_argument("--tool")
    u.add_argument("--manifest", action="append", default=[], help="manifest file to judge "
                   "(default: the manifests tools were registered with, from the log)")
    u.set_defaults(fn=handler(cmd_unused))
    k = a.add_parser("checkpoint-key", help="print the public key that signs checkpoints")
    k.set_defaults(fn=handler(cmd_checkpoint_key))
    c = a.add_parser("checkpoint", help="print the latest signed checkpoint (to keep "
                     "elsewhere)")
    c.add_argument("--file", help="audit file (default: the state dir's audit.jsonl)")
    c.set_defaults(fn=handler(cmd_checkpoint))
