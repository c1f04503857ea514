"""Redeeming a ticket on the broker's descriptor socket (``fd.sock``, beside the broker
socket): the descriptor a checked operation handed out, received over SCM_RIGHTS."""

from __future__ import annotations

import os
import socket

from ._broker import BrokerError, connection

FD_SOCKET = "fd.sock"


def redeem(ticket: str) -> int:
    """The descriptor held under ``ticket``; the caller closes it."""
    path = os.path.join(os.path.dirname(connection().socket_path), FD_SOCKET)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(ticket.encode() + b"\n")
        msg, fds, _flags, _addr = socket.recv_fds(s, 256, 1)
    if msg[:1] != b"\x00" or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise BrokerError("UNAVAILABLE", msg[1:].decode(errors="replace") or
                          "the descriptor socket closed without an answer")
    return fds[0]


def available() -> bool:
    """Whether this invocation has a descriptor socket (a broker without one sends bytes
    in messages only)."""
    try:
        path = os.path.join(os.path.dirname(connection().socket_path), FD_SOCKET)
    except BrokerError:
        return False
    return os.path.exists(path)
