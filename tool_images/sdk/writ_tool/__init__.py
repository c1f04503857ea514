"""Writ tool SDK: what a tool imports inside its container.

    from writ_tool import files

    def main(args: dict) -> dict:
        return {"text": files.read_text(args["path"])}

The container has no network and no host files; every file access, HTTP request
(``net.fetch``) and payment is a call on the invocation's broker socket, checked against the
invocation's token.
"""

from . import files, net, pay
from ._broker import (
    AlreadyExists,
    BrokerDenied,
    BrokerError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

__all__ = [
           "AlreadyExists",
           "BrokerDenied",
           "BrokerError",
           "InvalidArgument",
           "NotFound",
           "PermissionDenied",
           "files",
           "net",
           "pay",
]
