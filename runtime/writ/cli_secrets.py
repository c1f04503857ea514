"""`writ secrets ...`: credentials the broker adds to network requests a grant allows.

    writ secrets set NAME --from-file FILE     store (or replace) a value; "-" reads stdin
    writ secrets set NAME --from-env VAR       ... or from an environment variable
    writ secrets list                          names, dates and lengths, never values
    writ secrets delete NAME

The value is the whole header value ("Bearer sk-..."); a grant attaches it with
`net[i].secrets: [{secret: NAME, header: Authorization, path_prefix: /v1/}]`. It is never
passed on the command line (shell history, `ps`), never printed, never given to a tool.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ._proto import control_pb2


def _row(s: control_pb2.SecretInfo) -> dict[str, Any]:
    return {"name": s.name, "created": s.created, "length": s.length}


def _value(args: argparse.Namespace) -> bytes:
    if args.from_env:
        if args.from_env not in os.environ:
            raise SystemExit(f"writ: environment variable {args.from_env} is not set")
        return os.environ[args.from_env].encode()
    if args.from_file == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(args.from_file, "rb") as f:
            data = f.read()
    return data[:-1] if data.endswith(b"\n") else data


def cmd_set(args: argparse.Namespace, client: Any, emit: Any) -> int:
    info = client.put_secret(args.name, _value(args))
    emit(_row(info), f"stored secret {info.name!r} ({info.length} bytes)")
    return 0


def cmd_list(args: argparse.Namespace, client: Any, emit: Any) -> int:
    rows = list(client._call("ListSecrets", control_pb2.ListSecretsRequest()).secrets)
    emit([_row(s) for s in rows], "\n".join(
        f"{s.name}  {s.length} bytes  stored {s.created}" for s in rows) or "no secrets")
    return 0


def cmd_delete(args: argparse.Namespace, client: Any, emit: Any) -> int:
    info = client._call("DeleteSecret", control_pb2.DeleteSecretRequest(name=args.name))
    emit(_row(info), f"deleted secret {info.name!r}")
    return 0


def add_commands(sub: Any, run: Any) -> None:
    """Register the commands; ``run(fn, operator)`` adapts a handler to the CLI."""
    sp = sub.add_parser("secrets", help="credentials the broker adds to granted requests"
                        ).add_subparsers(dest="sub", required=True)
    p = sp.add_parser("set", help="store or replace a secret")
    p.add_argument("name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-file", metavar="FILE", help='file holding the value ("-": stdin)')
    src.add_argument("--from-env", metavar="VAR", help="environment variable holding it")
    p.set_defaults(fn=run(cmd_set, operator=True))
    sp.add_parser("list", help="stored secrets (never their values)").set_defaults(
        fn=run(cmd_list, operator=True))
    p = sp.add_parser("delete", help="remove a secret")
    p.add_argument("name")
    p.set_defaults(fn=run(cmd_delete, operator=True))
