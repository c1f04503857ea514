"""Operator RPCs of the secret store: put, list, delete. Mixed into ControlService
(broker/control.py). Every change is audited by name and length; no call, record or error
message ever carries a value."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._proto import control_pb2
from ..errors import InvalidArgument, NotFound
from ..rulecheck import SECRET_NAME

if TYPE_CHECKING:
    from ..broker.server import Broker

MAX_SECRET = 8192


def _info(row: tuple[str, str, int]) -> control_pb2.SecretInfo:
    return control_pb2.SecretInfo(name=row[0], created=row[1], length=row[2])


def check_secret_name(name: str) -> str:
    if not SECRET_NAME.fullmatch(name):
        raise InvalidArgument(f"secret name {name[:80]!r} must be 1-64 of a-z 0-9 _ . - "
                              "starting with a letter or digit")
    return name


class SecretsControl:
    b: Broker

    async def PutSecret(self, req: control_pb2.PutSecretRequest,
                        context: Any) -> control_pb2.SecretInfo:
        ev = self.b.event("operator", "PutSecret", "secret.put", req.name[:80])
        async with self.b.audited(ev):
            check_secret_name(req.name)
            if not 0 < len(req.value) <= MAX_SECRET:
                raise InvalidArgument(f"a secret is 1..{MAX_SECRET} bytes, not "
                                      f"{len(req.value)}")
            if any(b in req.value for b in b"\r\n\x00"):
                raise InvalidArgument("a secret is sent as a header value: no CR, LF or NUL")
            replaced = self.b.state.secret(req.name) is not None
            ev.reason = f"{'replaced' if replaced else 'stored'} ({len(req.value)} bytes)"
            await self.b.allow(ev)
        return _info(self.b.state.put_secret(req.name, bytes(req.value)))

    async def ListSecrets(self, req: control_pb2.ListSecretsRequest,
                          context: Any) -> control_pb2.ListSecretsResponse:
        return control_pb2.ListSecretsResponse(
            secrets=[_info(r) for r in self.b.state.list_secrets()])

    async def DeleteSecret(self, req: control_pb2.DeleteSecretRequest,
                           context: Any) -> control_pb2.SecretInfo:
        ev = self.b.event("operator", "DeleteSecret", "secret.delete", req.name[:80])
        async with self.b.audited(ev):
            check_secret_name(req.name)
            if self.b.state.secret(req.name) is None:
                raise NotFound(f"no secret named {req.name!r} (see `writ secrets list`)")
            ev.reason = "deleted; grants attaching it now fail their requests"
            await self.b.allow(ev)
        row = self.b.state.delete_secret(req.name)
        assert row is not None
        return _info(row)
