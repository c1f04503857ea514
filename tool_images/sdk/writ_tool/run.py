"""Entrypoint of every tool container: ``python3 -m writ_tool.run /opt/tool/tool.py``.

Protocol (frames on the ops socket, else unary gRPC calls): ask the broker for the input
(Start), start the loopback forwarder that HTTP_PROXY/HTTPS_PROXY point at (for programs
that do not use ``writ_tool.net``), call the tool's ``main(input)``, send the JSON result
or the error (Finish). Exit 0 on success, 1 when the tool failed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import traceback

from ._broker import BrokerError, connection
from ._proto import tool_pb2
from .proxy import Forwarder


def _load_main(path: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("tool", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"writ_tool.run: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    main = getattr(module, "main", None)
    if not callable(main):
        raise TypeError(f"writ_tool.run: {path} defines no main(input) function")
    return main


def run(path: str) -> int:
    # Load the tool (and pay for its imports) before any authority exists: in a warm-pool
    # container this happens ahead of time, so a claimed call starts at once.
    try:
        main, load_error = _load_main(path), None
    except Exception as exc:  # noqa: BLE001 - reported through Finish below
        main, load_error = None, exc
    conn = connection()
    start = conn.op("Start", "start", tool_pb2.StartRequest())
    if start.token:
        conn.use_token(start.token)
    try:
        Forwarder().start().export()
        if load_error is not None:
            raise load_error
        output = main(json.loads(start.input_json or "{}"))
        finish = tool_pb2.FinishRequest(output_json=json.dumps(output))
        code = 0
    except BrokerError as err:
        finish = tool_pb2.FinishRequest(
            error=tool_pb2.FinishError(code=err.code, message=err.message))
        code = 1
    except Exception as exc:  # noqa: BLE001 - the tool's own bug: report it, do not hide it
        traceback.print_exc()
        finish = tool_pb2.FinishRequest(
            error=tool_pb2.FinishError(code="TOOL_ERROR", message=f"{type(exc).__name__}: {exc}"))
        code = 1
    conn.op("Finish", "finish", finish)
    return code


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python3 -m writ_tool.run TOOL_FILE")
    sys.exit(run(sys.argv[1]))
