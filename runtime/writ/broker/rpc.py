"""Build gRPC handlers from the method table and translate errors to statuses.

Handlers raise ``BrokerError``; here, and only here, it becomes ``context.abort`` with the
class's status code and client-safe message. Any other exception becomes INTERNAL with an
incident id; its traceback goes to the broker's log, never to the wire.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message_factory

from .._proto import control_pb2, tool_pb2
from ..errors import BrokerError
from ..methods import rows

log = logging.getLogger("writ.broker")
_FILES = {"Control": control_pb2.DESCRIPTOR, "ToolBroker": tool_pb2.DESCRIPTOR}


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, BrokerError):
        await context.abort(grpc.StatusCode[exc.code], exc.details)
    incident = secrets.token_hex(4)
    log.error("incident %s: unhandled error", incident, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")


def _wrap_unary(fn: Callable[[Any, Any], Awaitable[Any]]) -> Any:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated, never leaked
            await _abort(context, exc)

    return handler


def _wrap_stream(fn: Callable[[Any, Any], AsyncIterator[Any]]) -> Any:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
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
        make = (grpc.unary_stream_rpc_method_handler if row.streaming
                else grpc.unary_unary_rpc_method_handler)
        handlers[row.name] = make(
            (_wrap_stream if row.streaming else _wrap_unary)(fn),
            request_deserializer=req_cls.FromString,
            response_serializer=resp_cls.SerializeToString)
    return grpc.method_handlers_generic_handler(f"writ.v1.{service}", handlers)
