"""`writ mcp`: serving the registered tools to agents that speak the Model Context Protocol."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any


def cmd_mcp(args: argparse.Namespace, client: Any, emit: Any) -> int:
    """Serve until stdin closes (stdio) or the process is interrupted (HTTP)."""
    try:
        from .mcp_bridge import parse_listen, serve_http, serve_stdio
    except ImportError as exc:
        raise SystemExit(f"writ mcp needs the MCP SDK ({exc}): pip install "
                         "'writ-runtime[mcp]'") from None

    token = Path(args.token_file).read_text().strip() if args.token_file else None
    if args.http:
        try:
            parse_listen(args.http)
        except ValueError as exc:
            raise SystemExit(f"writ mcp: {exc}") from None
    elif not token:
        raise SystemExit("writ mcp: --token-file is required over stdio")
    # stdout carries the protocol over stdio: everything else goes to stderr.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    client.list_tools()  # no broker answering: fail now, with its status, not per call
    if args.http:
        asyncio.run(serve_http(client.target, token, args.http, args.timeout))
    else:
        assert token is not None
        asyncio.run(serve_stdio(client.target, token, args.timeout))
    return 0


def add_commands(sub: Any, run: Any) -> None:
    """Register the commands; ``run(fn, operator)`` adapts a handler to the CLI."""
    m = sub.add_parser(
        "mcp", help="serve the registered tools as an MCP server (stdio, or HTTP on loopback)",
        description="Serve the broker's tools over the Model Context Protocol. Every call "
        "is an Invoke with the session's Writ token; the broker decides it.")
    m.add_argument("--token-file", help="the Writ token every session uses unless it brings "
                   "its own (HTTP: Authorization: Bearer writ1...); required over stdio")
    m.add_argument("--http", metavar="HOST:PORT", help="serve streamable HTTP at "
                   "http://HOST:PORT/mcp instead of stdio; loopback only (port 0: any)")
    m.add_argument("--timeout", type=float, default=None,
                   help="deadline of each tool call in seconds (default: the tool's wall time)")
    m.set_defaults(fn=run(cmd_mcp, operator=False))
