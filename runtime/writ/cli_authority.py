"""`writ explain`, `writ token ...`, `writ keys rotate`: asking about and shaping authority."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from ._proto import capabilities_pb2 as caps
from ._proto import control_pb2
from .core.describe import describe
from .core.tokens import UnverifiedToken, attenuate
from .manifests import load_grant_file


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    if args.token_file:
        return Path(args.token_file).read_text().strip()
    return sys.stdin.readline().strip()


def parse_op(words: list[str]) -> dict[str, Any]:
    """The operation of `writ explain --op ...`, as ExplainRequest fields.

    Forms: ``invoke '{"path": "x"}'`` · ``read|list|stat|write|create|delete|mkdir|rename
    WORKSPACE:PATH`` · ``GET https://host/path`` · ``pay PAYEE AMOUNT CURRENCY``.
    """
    if not words:
        raise SystemExit("--op needs an operation, e.g. --op read demo:reports/q3.csv")
    verb = words[0]
    if verb == "invoke":
        return {"invoke": control_pb2.ExplainInvoke(input_json=" ".join(words[1:]) or "{}")}
    if verb.upper() in set(caps.FileOp.keys()) and len(words) == 2:
        workspace, _, path = words[1].partition(":")
        return {"file": control_pb2.ExplainFile(workspace=workspace, path=path,
                                                op=verb.upper())}
    if verb.isupper() and len(words) == 2:
        return {"net": control_pb2.ExplainNet(method=verb, url=words[1])}
    if verb == "pay" and len(words) == 4:
        try:
            amount = int(words[2])
        except ValueError:
            raise SystemExit(f"amount {words[2]!r} must be an integer of minor units") from None
        return {"pay": control_pb2.ExplainPay(payee=words[1], amount=amount, currency=words[3])}
    raise SystemExit(f"cannot read the operation {' '.join(words)!r}; see `writ explain -h`")


def cmd_explain(args: argparse.Namespace, client: Any, emit: Any) -> int:
    req = control_pb2.ExplainRequest(token=_token(args), tool=args.tool or "",
                                     **parse_op(args.op))
    resp = client.explain(req)
    verdict = "ALLOWED" if resp.allowed else "DENIED"
    lines = [f"{verdict}: {resp.reason}"]
    if resp.needs_approval:
        lines.append("  a person must approve it first")
    for b in resp.budgets:
        lines.append(f"  budget {b.kind}: {b.used} of {b.cap} used ({b.key})")
    lines += [f"  the broker adds {s}" for s in resp.secrets]
    lines.append("effective authority:")
    lines += [f"  {line}" for line in resp.authority]
    emit(json_format.MessageToDict(resp, preserving_proto_field_name=True), "\n".join(lines))
    return 0 if resp.allowed else 3


def cmd_attenuate(args: argparse.Namespace, client: Any, emit: Any) -> int:
    """Offline: no broker, no key. The broker refuses the result if it widens anything."""
    narrower = load_grant_file(Path(args.grant))
    token = attenuate(UnverifiedToken.parse(_token(args)), narrower, int(time.time()))
    new_id = UnverifiedToken.parse(token).token_id
    emit({"token": token, "token_id": new_id}, token if args.quiet else
         f"narrowed token {new_id}\n{token}")
    return 0


def cmd_show(args: argparse.Namespace, client: Any, emit: Any) -> int:
    """Decode a token without verifying it: what it claims, for people to read."""
    from .core.policy import Authority

    u = UnverifiedToken.parse(_token(args))
    blocks = u.blocks
    lines = ["UNVERIFIED (only the broker can verify): " + u.token_id]
    lines += describe(Authority.from_blocks(blocks))
    emit({"token_id": u.token_id, "grant_id": u.grant_id,
          "blocks": [json_format.MessageToDict(b, preserving_proto_field_name=True)
                     for b in blocks]}, "\n".join(lines))
    return 0


def cmd_revoke(args: argparse.Namespace, client: Any, emit: Any) -> int:
    client.revoke_token(args.token_id, args.reason)
    emit({"revoked": args.token_id}, f"revoked {args.token_id} and every token narrowed from it")
    return 0


def cmd_rotate(args: argparse.Namespace, client: Any, emit: Any) -> int:
    resp = client.rotate_key()
    emit(json_format.MessageToDict(resp, preserving_proto_field_name=True),
         f"new tokens are sealed with {resp.key_id}; verifying: "
         f"{', '.join(resp.verifying_key_ids)}")
    return 0


def add_commands(sub: Any, run: Any) -> None:
    """Register the commands; ``run(fn, operator)`` adapts a handler to the CLI."""
    def token_args(p: argparse.ArgumentParser) -> None:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--token", help="the token text (default: read from stdin)")
        g.add_argument("--token-file")

    e = sub.add_parser("explain", help="would this operation be allowed, and why?",
                       description=parse_op.__doc__)
    token_args(e)
    e.add_argument("--tool", help="the tool whose manifest caps the operation")
    e.add_argument("--op", nargs="+", required=True, metavar="WORD")
    e.set_defaults(fn=run(cmd_explain, operator=False))

    tok = sub.add_parser("token", help="tokens").add_subparsers(dest="sub", required=True)
    a = tok.add_parser("attenuate", help="narrow a token offline with a grant YAML")
    token_args(a)
    a.add_argument("grant")
    a.add_argument("-q", "--quiet", action="store_true", help="print only the token")
    a.set_defaults(fn=run(cmd_attenuate, operator=None))
    s = tok.add_parser("show", help="decode a token (unverified) and describe it")
    token_args(s)
    s.set_defaults(fn=run(cmd_show, operator=None))
    r = tok.add_parser("revoke", help="revoke a token and its descendants")
    r.add_argument("token_id")
    r.add_argument("--reason", default="")
    r.set_defaults(fn=run(cmd_revoke, operator=True))

    keys = sub.add_parser("keys", help="broker root keys").add_subparsers(dest="sub",
                                                                        required=True)
    keys.add_parser("rotate", help="seal new tokens with a fresh key").set_defaults(
        fn=run(cmd_rotate, operator=True))

