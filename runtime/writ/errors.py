"""Every error the broker can answer with, under one root.

Each class names its gRPC status code and carries a client-safe message. Handlers raise;
only ``writ.broker.rpc`` turns them into a status. The codes are names (``"NOT_FOUND"``), not
``grpc.StatusCode`` members, so the pure core can raise these without importing grpc. Anything that is not a ``BrokerError``
becomes INTERNAL with an incident id: the traceback goes to the broker log, never the wire.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Root of all errors the broker reports to a caller."""

    code: str = "INTERNAL"

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self.details = details


# -- bad input -----------------------------------------------------------------------------
class InvalidArgument(BrokerError):
    code = "INVALID_ARGUMENT"


class ManifestInvalid(InvalidArgument):
    """A manifest or grant failed schema or semantic checks; the message names the field."""


class PathInvalid(InvalidArgument):
    """A path is not a clean workspace-relative path."""


class NotFound(BrokerError):
    code = "NOT_FOUND"


class ToolNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no tool named {name!r} is registered (see `writ tool list`)")


class ImageNotFound(NotFound):
    def __init__(self, image: str) -> None:
        super().__init__(f"image {image!r} does not exist on this Docker engine; "
                         "build it first (`writ images build`)")


class FileMissing(NotFound):
    pass


class FileExists(BrokerError):
    """The path is taken: create, mkdir or a non-replacing rename."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(BrokerError):
    code = "FAILED_PRECONDITION"


class Aborted(BrokerError):
    """The filesystem changed under the operation (only a host process can race us: tool
    mutations of one workspace are serialized)."""

    code = "ABORTED"


# -- tokens --------------------------------------------------------------------------------
class TokenInvalid(BrokerError):
    """Malformed or forged: not a token this broker sealed. Possibly an attack."""

    code = "UNAUTHENTICATED"


class CaveatUnmet(BrokerError):
    """A genuine token whose conditions do not hold here: expired, not yet valid, bound
    to another invocation. A normal denial, recorded as such."""

    code = "PERMISSION_DENIED"


class AttenuationWidens(BrokerError):
    """A genuine token with a block that tries to widen an earlier one: refused whole."""

    code = "PERMISSION_DENIED"


class TokenRevoked(CaveatUnmet):
    """The token, or a token it was narrowed from, was revoked."""


# -- policy --------------------------------------------------------------------------------
class PermissionDenied(BrokerError):
    code = "PERMISSION_DENIED"


# -- runtime -------------------------------------------------------------------------------
class ResourceExhausted(BrokerError):
    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(BrokerError):
    code = "DEADLINE_EXCEEDED"


class UpstreamFailed(BrokerError):
    """A mediated network request could not be completed: the server could not be
    reached, or answered with something that is not HTTP."""

    code = "UNAVAILABLE"


class AuditUnavailable(BrokerError):
    """The audit record could not be written, so the operation is refused."""

    code = "UNAVAILABLE"

    def __init__(self, cause: str) -> None:
        super().__init__(f"audit log unavailable, operation refused: {cause}")


class LaunchFailed(BrokerError):
    """A launch step failed; the message names the step and the cause."""

    code = "UNAVAILABLE"

    def __init__(self, step: str, cause: str) -> None:
        super().__init__(f"container launch failed at step {step!r}: {cause}")
        self.step = step


class HardeningMismatch(LaunchFailed):
    """Docker applied something other than what the launcher asked for."""

    code = "INTERNAL"

    def __init__(self, field: str, wanted: object, got: object) -> None:
        super().__init__("verify", f"{field}: asked for {wanted!r}, Docker applied {got!r}")
        self.field = field


class ImageBuildFailed(Exception):
    """Not an RPC error: raised by `writ images build`."""

    def __init__(self, stage: str, cause: str) -> None:
        super().__init__(f"image build failed at {stage}: {cause}")
