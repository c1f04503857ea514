"""The agent clients against a real broker: the asyncio client runs calls concurrently, and
a deadline or a cancelled task removes the container and is recorded as CANCELLED; a flood
past the broker's queue is answered RESOURCE_EXHAUSTED, never a crash."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from writ._proto import audit_pb2, control_pb2
from writ.client import AsyncClient, Client, Finished, Output, Started, WritError
from writ.launcher._spec import LABEL_INVOCATION

from .conftest import (
    PROBE_GRANT,
    PROBE_IMAGE,
    PROBE_MANIFEST,
    RunningBroker,
    make_workspace,
    wait_for,
)

Q3 = "region,revenue\nnorth,1\n"
SLEEP = {"action": "sleep", "seconds": 60}


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 90))


def containers_of(docker_client: Any, inv: str) -> list[Any]:
    return docker_client.containers.list(all=True, filters={"label": f"{LABEL_INVOCATION}={inv}"})


def ends_of(broker: RunningBroker, seq: int, inv: str) -> list[tuple[str, str, str]]:
    return [(audit_pb2.Decision.Name(e.decision), e.status, e.reason)
            for e in broker.audit_since(seq) if e.operation == "tool.exit"
            and e.invocation_id == inv]


def assert_killed_and_recorded(broker: RunningBroker, docker_client: Any, seq: int,
                               inv: str) -> None:
    assert wait_for(lambda: containers_of(docker_client, inv) == [], 15)
    assert wait_for(lambda: ends_of(broker, seq, inv) != [], 10)
    assert ends_of(broker, seq, inv) == [("ALLOW", "CANCELLED", "cancelled: the agent went away")]
    assert not (broker.config.run_dir / inv).exists()


def test_async_client_runs_calls_concurrently(broker: RunningBroker) -> None:
    token = broker.mint(PROBE_GRANT)

    async def go() -> list[Any]:
        async with AsyncClient(broker.config.agent_socket) as c:
            return await asyncio.gather(*(
                c.invoke("probe", {"action": "read", "path": "reports/q3.csv"}, token)
                for _ in range(4)))

    outs = run(go())
    assert [(o.ok, o.result) for o in outs] == [(True, {"action": "read",
                                                        "result": {"text": Q3}})] * 4
    assert len({o.invocation_id for o in outs}) == 4
    assert len({o.container_id for o in outs}) == 4


def test_async_deadline_kills_the_container_and_is_recorded_cancelled(
        broker: RunningBroker, docker_client: Any) -> None:
    token = broker.mint(PROBE_GRANT)
    seq = broker.last_seq()

    async def go() -> tuple[list[Any], WritError]:
        seen: list[Any] = []
        async with AsyncClient(broker.config.agent_socket) as c:
            with pytest.raises(WritError) as info:
                async for event in c.stream("probe", SLEEP, token, timeout=4):
                    seen.append(event)
        return seen, info.value

    seen, error = run(go())
    assert [type(e) for e in seen] == [Started]
    # gRPC words the same expiry two ways, depending on whether its stream was torn down
    # before or after the deadline fired on the client side.
    assert error.code == "DEADLINE_EXCEEDED"
    assert error.details in ("Stream removed (Deadline Exceeded)", "Deadline Exceeded")
    assert_killed_and_recorded(broker, docker_client, seq, seen[0].invocation_id)


def test_cancelling_the_awaiting_task_kills_the_container(broker: RunningBroker,
                                                          docker_client: Any) -> None:
    token = broker.mint(PROBE_GRANT)
    seq = broker.last_seq()

    async def go() -> str:
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def agent(c: AsyncClient) -> None:
            async for event in c.stream("probe", SLEEP, token):
                if isinstance(event, Started):
                    started.set_result(event.invocation_id)

        async with AsyncClient(broker.config.agent_socket) as c:
            task = asyncio.ensure_future(agent(c))
            inv = await started
            assert len(containers_of(docker_client, inv)) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return inv

    assert_killed_and_recorded(broker, docker_client, seq, run(go()))


def test_cancel_on_the_call_ends_it_with_cancelled(broker: RunningBroker,
                                                   docker_client: Any) -> None:
    token = broker.mint(PROBE_GRANT)
    seq = broker.last_seq()

    async def go() -> tuple[str, WritError]:
        async with AsyncClient(broker.config.agent_socket) as c:
            call = c.stream("probe", SLEEP, token)
            events = aiter(call)
            first = await anext(events)
            assert isinstance(first, Started)
            call.cancel()
            with pytest.raises(WritError) as info:
                await anext(events)
            return first.invocation_id, info.value

    inv, error = run(go())
    assert error.code == "CANCELLED"
    assert_killed_and_recorded(broker, docker_client, seq, inv)


@pytest.mark.parametrize("how", ["close", "cancel"])
def test_sync_client_close_or_call_cancel_kills_the_container(
        broker: RunningBroker, docker_client: Any, how: str) -> None:
    token = broker.mint(PROBE_GRANT)
    seq = broker.last_seq()
    client = Client(broker.config.agent_socket)
    call = client.stream("probe", SLEEP, token)
    events = iter(call)
    first = next(events)
    assert isinstance(first, Started)
    client.close() if how == "close" else call.cancel()
    with pytest.raises(WritError) as info:
        next(events)
    assert info.value.code == "CANCELLED"
    client.close()
    assert_killed_and_recorded(broker, docker_client, seq, first.invocation_id)


def test_stream_yields_typed_events_and_the_failed_tool_output(broker: RunningBroker) -> None:
    token = broker.mint(PROBE_GRANT)

    async def go() -> list[Any]:
        async with AsyncClient(broker.config.agent_socket) as c:
            return [e async for e in c.stream("probe", {"action": "no-such-action"}, token)]

    started, output, finished = run(go())
    assert isinstance(started, Started) and started.warm is False
    assert isinstance(output, Output) and b"KeyError: 'no-such-action'" in output.data
    assert isinstance(finished, Finished)
    assert (finished.ok, finished.error_code, finished.error_message) == (
        False, "TOOL_ERROR", "KeyError: 'no-such-action'")


def test_refusals_raise_writ_error_with_the_broker_status(broker: RunningBroker) -> None:
    token = broker.mint(PROBE_GRANT)

    async def go() -> list[tuple[str, str]]:
        out = []
        async with AsyncClient(broker.config.agent_socket) as c:
            for tool, tok in (("nope", token), ("probe", "writ1.garbage")):
                try:
                    await c.invoke(tool, {}, tok)
                except WritError as err:
                    out.append((err.code, err.details))
        return out

    assert run(go()) == [
        ("NOT_FOUND", "no tool named 'nope' is registered (see `writ tool list`)"),
        ("UNAUTHENTICATED", "malformed token: not valid base64url protobuf")]


def test_tool_specs_in_function_calling_shapes(broker: RunningBroker) -> None:
    schema = {"type": "object", "properties": {"path": {"type": "string", "maxLength": 64}},
              "required": ["path"]}
    broker.register({"name": "probe-spec", "image": PROBE_IMAGE, "description": "typed",
                     "input_schema": schema})

    async def go() -> tuple[Any, Any, Any]:
        async with AsyncClient(broker.config.agent_socket) as c:
            return await c.tool_specs(), await c.openai_tools(), await c.anthropic_tools()

    specs, openai, anthropic = run(go())
    by_name = {s["name"]: s for s in specs}
    assert by_name["probe-spec"] == {"name": "probe-spec", "description": "typed",
                                     "input_schema": schema}
    assert by_name["probe"]["input_schema"] == {"type": "object", "properties": {}}
    assert {"type": "function", "function": {"name": "probe-spec", "description": "typed",
                                             "parameters": schema}} in openai
    assert {"name": "probe-spec", "description": "typed", "input_schema": schema} in anthropic
    assert broker.agent.tool_specs() == specs  # the sync client agrees


# -- a flood past the queue -------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_broker(tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
                 probe_image: str) -> Iterator[RunningBroker]:
    root = Path(os.path.realpath(tmp_path_factory.mktemp("q")))
    rb = RunningBroker(root / "state", make_workspace(root), docker_client,
                       max_invocations=2, max_queued=2)
    rb.register(PROBE_MANIFEST)
    yield rb
    rb.stop()


def test_flood_past_the_queue_is_resource_exhausted_and_the_broker_keeps_serving(
        small_broker: RunningBroker, docker_client: Any) -> None:
    token = small_broker.mint({**PROBE_GRANT, "tools": [{"name": "probe", "max_calls": 100}]})
    seq = small_broker.last_seq()
    sleep = {"action": "sleep", "seconds": 3}

    async def call(c: AsyncClient) -> str:
        try:
            out = await c.invoke("probe", sleep, token)
            return "ok" if out.ok else out.error_code
        except WritError as err:
            return err.code

    async def go() -> list[str]:
        async with AsyncClient(small_broker.config.agent_socket) as c:
            return await asyncio.gather(*(call(c) for _ in range(10)))

    outcomes = run(go())
    # Two run, two wait; the other six are refused at once.
    assert sorted(outcomes) == ["RESOURCE_EXHAUSTED"] * 6 + ["ok"] * 4
    ends = [(e.status, e.reason) for e in small_broker.audit_since(seq)
            if e.operation == "tool.exit"]
    assert sorted(ends) == [("OK", "finished with a result")] * 4 + [
        ("RESOURCE_EXHAUSTED", "not run: 2 invocations running and 2 queued; retry later")] * 6
    invokes = [e for e in small_broker.audit_since(seq) if e.operation == "tool.invoke"]
    assert len(invokes) == 10
    # Refused calls were given their budget back: 4 calls used of 100.
    explained = small_broker.operator.explain(control_pb2.ExplainRequest(
        token=token, tool="probe", invoke=control_pb2.ExplainInvoke(input_json="{}")))
    assert [(b.kind, b.used, b.cap) for b in explained.budgets] == [("calls", 4, 100)]
    out = small_broker.agent.invoke("probe", {"action": "read", "path": "reports/q3.csv"}, token)
    assert out.ok
    assert docker_client.containers.list(
        all=True, filters={"label": f"writ.broker={small_broker.broker.broker_id}"}) == []
