"""The RPC surface as one table. A method without a row is not served (UNIMPLEMENTED);
tests/unit/test_methods.py fails when the proto grows a method without a row.

    surface  "operator": only on the operator socket (control.sock, mode 0600)
             "agent":    on the operator socket and the agent socket (agent.sock)
             "tool":     only on an invocation's own socket
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    service: str     # proto service name in package writ.v1
    name: str        # rpc name; also the handler's attribute name on the servicer
    surface: str     # "operator" | "agent" | "tool"
    operation: str   # audit operation name
    streaming: bool  # server-streaming response
    note: str
    client_streaming: bool = False  # a stream of request messages

    @property
    def full_name(self) -> str:
        return f"/writ.v1.{self.service}/{self.name}"


_ROWS = [
    Method("Control", "RegisterTool", "operator", "tool.register", False,
           "pins the image id; manifest checked strictly"),
    Method("Control", "MintToken", "operator", "token.mint", False,
           "grant -> token; workspaces must be registered"),
    Method("Control", "ListTools", "agent", "tool.list", False, "manifests and input schemas"),
    Method("Control", "Invoke", "agent", "tool.invoke", True,
           "verify token, decide, launch, stream result, destroy"),
    Method("Control", "Explain", "agent", "token.explain", False,
           "dry run: decision, rule, budgets, effective authority; acts on nothing, so "
           "writes no audit record"),
    Method("Control", "RevokeToken", "operator", "token.revoke", False,
           "revokes the token and every token narrowed from it"),
    Method("Control", "RotateKey", "operator", "key.rotate", False,
           "new sealing key; older keys keep verifying"),
    Method("ToolBroker", "Start", "tool", "tool.start", False, "input of the invocation"),
    Method("ToolBroker", "Finish", "tool", "tool.finish", False, "result of the invocation"),
    Method("ToolBroker", "ReadFile", "tool", "file.read", True,
           "openat2 RESOLVE_BENEATH|NO_SYMLINKS; regular files only"),
    Method("ToolBroker", "ListDir", "tool", "file.list", False,
           "openat2 RESOLVE_BENEATH|NO_SYMLINKS; directories only"),
    Method("ToolBroker", "Stat", "tool", "file.stat", False,
           "a trailing symlink is described, never followed"),
    Method("ToolBroker", "OpenFile", "tool", "file.read", False,
           "whole-file READ charged and recorded, then a read-only descriptor (SCM_RIGHTS)"),
    Method("ToolBroker", "WriteFile", "tool", "file.write", False,
           "file.create when new; O_TMPFILE, fsync, atomic rename; discarded unless finished",
           client_streaming=True),
    Method("ToolBroker", "MakeDir", "tool", "file.mkdir", False, "charges one file"),
    Method("ToolBroker", "Delete", "tool", "file.delete", False,
           "a regular single-link file or an empty directory"),
    Method("ToolBroker", "Rename", "tool", "file.rename", False,
           "regular files only; RENAME allowed on both paths"),
    Method("ToolBroker", "Pay", "tool", "pay", False,
           "exactly once per grant and idempotency key; reserve, record, transfer, record"),
    Method("ToolBroker", "GetPayment", "tool", "pay.get", False,
           "an earlier payment of this grant by its key; reads only"),
    Method("ToolBroker", "HttpRequest", "tool", "net.request", True,
           "decide, resolve and pin (special addresses only by IP literal), add secrets, "
           "record, then connect; redirects re-checked per hop; net.response records the "
           "outcome", client_streaming=True),
    Method("ToolBroker", "Connect", "tool", "net.connect", True,
           "CONNECT rule on an https host; the ClientHello's server name must be that host; "
           "pinned address; bytes and time bounded", client_streaming=True),
    Method("Control", "ListApprovals", "operator", "pay.approval.list", False,
           "payments held for a person; reads only"),
    Method("Control", "Approve", "operator", "pay.approval.approve", False,
           "bound to the held payee, amount, currency and key; expires"),
    Method("Control", "DenyApproval", "operator", "pay.approval.deny", False,
           "the held payment is refused and its budget released"),
    Method("Control", "SeedAccount", "operator", "ledger.seed", False,
           "create or credit an account of the embedded ledger"),
    Method("Control", "ListAccounts", "operator", "ledger.list", False,
           "accounts and balances; reads only"),
    Method("Control", "PutSecret", "operator", "secret.put", False,
           "stores a value grants may attach to requests; never returned"),
    Method("Control", "ListSecrets", "operator", "secret.list", False,
           "names, dates and lengths; reads only"),
    Method("Control", "DeleteSecret", "operator", "secret.delete", False,
           "requests whose grant attaches it are refused from then on"),
]

METHODS: dict[str, Method] = {m.full_name: m for m in _ROWS}


def rows(service: str, surfaces: tuple[str, ...]) -> list[Method]:
    return [m for m in _ROWS if m.service == service and m.surface in surfaces]


def render_table() -> str:
    """Markdown of the surface, for docs (`writ methods`)."""
    lines = ["| method | surface | audit operation | note |", "|---|---|---|---|"]
    lines += [f"| `{m.full_name}` | {m.surface} | `{m.operation}` | {m.note} |" for m in _ROWS]
    return "\n".join(lines)
