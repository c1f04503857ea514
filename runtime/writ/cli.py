"""`writ`: the command line for operators, agents' developers and security teams.

Human-readable by default; `--json` prints one JSON document for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from . import cli_agents, cli_audit, cli_authority, cli_caps, cli_payments, cli_secrets
from .client import Client, WritError

EXIT_DENIED = 3


def _emit(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else human)


def _state_dir(args: argparse.Namespace) -> Path:
    from .broker.server import default_state_dir

    return Path(args.state_dir) if args.state_dir else default_state_dir()


def _client(args: argparse.Namespace, operator: bool = False) -> Client:
    if args.socket:
        return Client(args.socket)
    name = "control.sock" if operator else "agent.sock"
    return Client(_state_dir(args) / name)


def _msg(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(m, preserving_proto_field_name=True)
    return out


# -- commands --------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from .broker.server import Broker, BrokerConfig

    workspaces = {}
    for spec in args.workspace:
        name, sep, path = spec.partition("=")
        if not sep or not name:
            raise SystemExit(f"--workspace expects NAME=DIR, got {spec!r}")
        workspaces[name] = Path(path).resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = BrokerConfig(state_dir=_state_dir(args), workspaces=workspaces, tcp=args.tcp,
                          deny_globs=args.deny_glob, strict=args.strict,
                          trusted_keys=[Path(k) for k in args.trusted_key],
                          checkpoint_every=args.checkpoint_every,
                          checkpoint_interval_s=args.checkpoint_interval,
                          warm_per_tool=args.warm_per_tool,
                          net_ca_file=Path(args.net_ca_file) if args.net_ca_file else None,
                          net_hosts=_net_hosts(args.net_host))
    asyncio.run(Broker(config).run_forever())
    return 0


def _net_hosts(specs: list[str]) -> dict[str, list[str]]:
    hosts: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, addr = spec.partition("=")
        if not sep or not name or not addr:
            raise SystemExit(f"--net-host expects NAME=ADDRESS, got {spec!r}")
        hosts.setdefault(name, []).append(addr)
    return hosts


def cmd_images_build(args: argparse.Namespace) -> int:
    import docker

    from . import images

    built = images.build_all(docker.from_env(timeout=600), [Path(p) for p in args.tool_dir])
    _emit(args, built, "\n".join(f"{tag}  {image_id[:19]}" for tag, image_id in built.items()))
    return 0


def cmd_tool_register(args: argparse.Namespace) -> int:
    from .manifests import load_manifest_file

    manifest = load_manifest_file(Path(args.manifest))
    if args.image:
        manifest.image = args.image
    with _client(args, operator=True) as c:
        info = c.register_tool(manifest, signature_json=cli_caps.signature_json(
            Path(args.manifest), args.sig))
    _emit(args, _msg(info), f"registered {info.name}: {info.image} ({info.image_id[:19]})")
    return 0


def cmd_tool_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        tools = c.list_tools()
    rows = [f"{t.name:<16} {t.image:<32} {t.manifest.description}" for t in tools]
    _emit(args, [_msg(t) for t in tools], "\n".join(rows) or "no tools registered")
    return 0


def cmd_grant_mint(args: argparse.Namespace) -> int:
    from .manifests import load_grant_file

    grant = load_grant_file(Path(args.grant))
    with _client(args, operator=True) as c:
        resp = c.mint_token(grant, args.ttl)
    expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(resp.expires_at))
    _emit(args, _msg(resp), resp.token if args.quiet else
          f"token id {resp.token_id}, expires {expires}\n{resp.token}")
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    token = args.token or Path(args.token_file).read_text().strip()
    with _client(args) as c:
        out = c.invoke(args.tool, args.input, token, timeout=args.timeout)
    data = {"invocation_id": out.invocation_id, "ok": out.ok, "result": out.result,
            "error": {"code": out.error_code, "message": out.error_message} if not out.ok
            else None, "launch_ms": round(out.launch_ms, 1),
            "duration_ms": round(out.duration_ms, 1), "output": out.output.decode(errors="replace")}
    if out.ok:
        human = json.dumps(out.result, indent=2)
    else:
        human = f"tool failed: {out.error_code}: {out.error_message}"
    _emit(args, data, human + f"\n({out.invocation_id}, {out.duration_ms:.0f} ms)")
    return 0 if out.ok else EXIT_DENIED


def cmd_methods(args: argparse.Namespace) -> int:
    from .methods import METHODS, render_table

    _emit(args, {k: v.__dict__ for k, v in METHODS.items()}, render_table())
    return 0


def _adapt(fn: Any, operator: bool | None) -> Any:
    """Give a command module's handler its client (None: offline) and output function."""
    def handler(args: argparse.Namespace) -> int:
        def emit(data: Any, human: str) -> None:
            _emit(args, data, human)

        if operator is None:
            return int(fn(args, None, emit))
        with _client(args, operator=operator) as client:
            return int(fn(args, client, emit))

    return handler


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="writ", description=__doc__)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--state-dir", help="broker state dir (default $WRIT_STATE_DIR or "
                   "~/.local/state/writ)")
    p.add_argument("--socket", help="broker address (unix path or host:port)")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the broker")
    s.add_argument("--workspace", action="append", default=[], metavar="NAME=DIR")
    s.add_argument("--tcp", metavar="HOST:PORT", help="also serve the agent API on TCP")
    s.add_argument("--warm-per-tool", type=int, default=0, metavar="N",
                   help="keep N hardened containers of each tool started ahead of time, "
                   "holding no authority until a call claims one (default 0: cold starts)")
    s.add_argument("--deny-glob", action="append", default=[], metavar="GLOB",
                   help="a workspace path no tool may touch, on top of the built-in deny "
                   "list (.git/hooks, shell start-up files, keys, ...); repeatable")
    s.add_argument("--strict", action="store_true", help="register and run only tools whose "
                   "manifest a trusted key signed for the image their tag names")
    s.add_argument("--trusted-key", action="append", default=[], metavar="FILE",
                   help="public key of a security team (`writ caps keygen`); repeatable")
    s.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                   help="sign the audit head after N records (default 1000) ...")
    s.add_argument("--checkpoint-interval", type=float, default=60.0, metavar="SECONDS",
                   help="... or after this long when records came (default 60)")
    s.add_argument("--net-ca-file", metavar="PEM", help="extra CA certificates the broker "
                   "trusts for mediated https requests")
    s.add_argument("--net-host", action="append", default=[], metavar="NAME=ADDRESS",
                   help="answer NAME with ADDRESS instead of DNS; explicit enough to reach a "
                   "private address (an internal service); repeatable")
    s.set_defaults(fn=cmd_serve)

    img = sub.add_parser("images", help="build images").add_subparsers(dest="sub", required=True)
    b = img.add_parser("build", help="build the base image and the example tools")
    b.add_argument("--tool-dir", action="append", default=[], help="extra tool dir to build")
    b.set_defaults(fn=cmd_images_build)

    tool = sub.add_parser("tool", help="tools").add_subparsers(dest="sub", required=True)
    r = tool.add_parser("register", help="register a tool from its manifest")
    r.add_argument("manifest")
    r.add_argument("--image", help="override the manifest's image")
    r.add_argument("--sig", help="signature file (default: <manifest>.sig.json beside it, "
                   "if present)")
    r.set_defaults(fn=cmd_tool_register)
    tool.add_parser("list", help="registered tools").set_defaults(fn=cmd_tool_list)

    grant = sub.add_parser("grant", help="grants").add_subparsers(dest="sub", required=True)
    m = grant.add_parser("mint", help="turn a grant YAML into a token")
    m.add_argument("grant")
    m.add_argument("--ttl", type=int, default=0, help="lifetime in seconds (default 3600)")
    m.add_argument("-q", "--quiet", action="store_true", help="print only the token")
    m.set_defaults(fn=cmd_grant_mint)

    c = sub.add_parser("call", help="invoke a tool")
    c.add_argument("tool")
    c.add_argument("--input", default="{}", help="JSON object")
    tok = c.add_mutually_exclusive_group(required=True)
    tok.add_argument("--token")
    tok.add_argument("--token-file")
    c.add_argument("--timeout", type=float, default=None)
    c.set_defaults(fn=cmd_call)

    sub.add_parser("methods", help="the RPC surface table").set_defaults(fn=cmd_methods)
    cli_authority.add_commands(sub, _adapt)
    cli_agents.add_commands(sub, _adapt)
    cli_audit.add_commands(sub)
    cli_caps.add_commands(sub)
    cli_payments.add_commands(sub, _adapt)
    cli_secrets.add_commands(sub, _adapt)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except WritError as err:
        print(f"writ: {err.code}: {err.details}", file=sys.stderr)
        return EXIT_DENIED if err.code in ("PERMISSION_DENIED", "UNAUTHENTICATED") else 1
    except Exception as exc:
        from .errors import BrokerError

        if isinstance(exc, BrokerError):
            print(f"writ: {exc.code}: {exc.details}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
