"""Agent-side clients for the broker's control API: ``Client`` (blocking) and
``AsyncClient`` (asyncio), with typed invoke events and tool specs for function calling.

    from writ.client import Client
    with Client(state_dir / "agent.sock") as c:
        tools = c.openai_tools()                       # or anthropic_tools(), tool_specs()
        out = c.invoke("read-file", {"path": "reports/q3.csv"}, token, timeout=30)
        for event in c.stream("word-count", {"dir": "reports"}, token):
            ...                                        # Started, Output, Finished

Errors the broker answers with raise ``WritError(code, details)``; a tool that ran and
failed returns an outcome with ``ok=False``.
"""

from ._async import AsyncClient, AsyncInvokeCall
from ._common import (
    Event,
    Finished,
    InvokeOutcome,
    Output,
    Started,
    ToolSpec,
    WritError,
    anthropic_tool,
    input_schema,
    openai_tool,
    tool_spec,
)
from ._sync import Client, InvokeCall

__all__ = ["AsyncClient", "AsyncInvokeCall", "Client", "Event", "Finished", "InvokeCall",
           "InvokeOutcome", "Output", "Started", "ToolSpec", "WritError", "anthropic_tool",
           "input_schema", "openai_tool", "tool_spec"]
