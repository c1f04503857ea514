"""Build gRPC handlers from the method table and translate errors to statuses.

Handlers raise ``BrokerError``; here, and only here, it becomes ``context.abort`` with the
class's status code and client-safe message. Any other exception becomes INTERNAL with an
incident id; its traceback goes to the broker's log, never to the wire.

A request that does not parse (bad protobuf, invalid UTF-8 in a string field) is answered
INVALID_ARGUMENT, not UNKNOWN; a servicer with a ``refuse_malformed(row, context, err)``
coroutine records it first. In a client stream (also a bidirectional one), the bad message
raises InvalidArgument where the handler reads it, so the handler's own error path records
it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from .._proto import control_pb2, tool_pb2
from ..errors import BrokerError, InvalidArgument
from ..methods import Method, rows

log = logging.getLogger("writ.broker")
_FILES = {"Control": control_pb2.DESCRIPTOR, "ToolBroker": tool_pb2.DESCRIPTOR}


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, BrokerError):
        await context.abort(grpc.StatusCode[exc.code], exc.details)
    incident = secrets.token_hex(4)
    log.error("incident %s: unhandled error", incident, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")


class Malformed:
    """Stands in for a request message that did not parse."""

    def __init__(self, type_name: str) -> None:
        self.error = InvalidArgument(f"malformed request: not a valid {type_name} (bad "
                                     "encoding, or invalid UTF-8 in a string field)")


def _parser(cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError:
            return Malformed(cls.DESCRIPTOR.full_name)

    return parse


Refuse = Callable[[Malformed, Any], Awaitable[None]]


def _refuser(servicer: object, row: Method) -> Refuse:
    hook = getattr(servicer, "refuse_malformed", None)

    async def refuse(bad: Malformed, context: Any) -> None:
        if hook is not None:
            await hook(row, context, bad.error)  # records, then raises
        raise bad.error

    return refuse


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Malformed):
            raise request.error
        yield request


def _wrap_unary(fn: Callable[[Any, Any], Awaitable[Any]], refuse: Refuse,
                client_streaming: bool = False) -> Any:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if client_streaming:
                request = _checked(request)
            elif isinstance(request, Malformed):
                await refuse(request, context)
            return await fn(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated, never leaked
            await _abort(context, exc)

    return handler


def _wrap_stream(fn: Callable[[Any, Any], AsyncIterator[Any]], refuse: Refuse,
                 client_streaming: bool = False) -> Any:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            if client_streaming:
                request = _checked(request)
            elif isinstance(request, Malformed):
                await refuse(request, context)
            async for item in fn(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated, never leaked
            await _abort(context, exc)

    return handler


def generic_handler(service: str, servicer: object,
                    surfaces: tuple[str, ...]) -> grpc.GenericRpcHandler:
    """A handler serving exactly the table's rows of ``service`` on ``surfaces``."""
    desc = _FILES[service].services_by_name[service]
    handlers = {}
    for row in rows(service, surfaces):
        mdesc = desc.methods_by_name[row.name]
        req_cls = message_factory.GetMessageClass(mdesc.input_type)
        resp_cls = message_factory.GetMessageClass(mdesc.output_type)
        fn = getattr(servicer, row.name)
        refuse = _refuser(servicer, row)
        if row.streaming and row.client_streaming:
            make = grpc.stream_stream_rpc_method_handler
            wrapped = _wrap_stream(fn, refuse, client_streaming=True)
        elif row.streaming:
            make, wrapped = grpc.unary_stream_rpc_method_handler, _wrap_stream(fn, refuse)
        elif row.client_streaming:
            make = grpc.stream_unary_rpc_method_handler
            wrapped = _wrap_unary(fn, refuse, client_streaming=True)
        else:
            make, wrapped = grpc.unary_unary_rpc_method_handler, _wrap_unary(fn, refuse)
        handlers[row.name] = make(wrapped, request_deserializer=_parser(req_cls),
                                  response_serializer=resp_cls.SerializeToString)
    return grpc.method_handlers_generic_handler(f"writ.v1.{service}", handlers)
