"""The asyncio channel: ttrpc over the mux on a real socketpair, both directions at once."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator

import pytest

from pycri.nri import api_pb2 as nri
from pycri.nri import ttrpc
from pycri.nri.channel import Channel, Method
from pycri.nri.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN

SERVICE = "test.Echo"
cancelled: list[str] = []


async def echo(request: nri.LogRequest) -> nri.LogRequest:
    await asyncio.sleep(random.random() / 100)
    return nri.LogRequest(msg=request.msg.upper())


async def slow(request: nri.LogRequest) -> nri.Empty:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.append(request.msg)
        raise
    return nri.Empty()


async def fail(request: nri.LogRequest) -> nri.Empty:
    if request.msg == "status":
        raise ttrpc.RpcError(ttrpc.Code.NOT_FOUND, "no such thing")
    raise ValueError("broken handler")


METHODS = {
    SERVICE: {
        "Echo": Method(nri.LogRequest, echo),
        "Slow": Method(nri.LogRequest, slow),
        "Fail": Method(nri.LogRequest, fail),
    }
}


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Channel, Channel]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ra, wa = await asyncio.open_unix_connection(sock=a)
    rb, wb = await asyncio.open_unix_connection(sock=b)
    runtime = Channel(ra, wa, client_conn=PLUGIN_SERVICE_CONN, server_conn=RUNTIME_SERVICE_CONN, services=METHODS, name="rt")
    plugin = Channel(rb, wb, client_conn=RUNTIME_SERVICE_CONN, server_conn=PLUGIN_SERVICE_CONN, services=METHODS, name="pl")
    runtime.start()
    plugin.start()
    yield runtime, plugin
    runtime.close()
    plugin.close()


async def test_concurrent_calls_both_ways_are_matched(pair: tuple[Channel, Channel]) -> None:
    runtime, plugin = pair
    calls = [runtime.call(SERVICE, "Echo", nri.LogRequest(msg=f"r{i}"), nri.LogRequest, timeout=5) for i in range(30)]
    calls += [plugin.call(SERVICE, "Echo", nri.LogRequest(msg=f"p{i}"), nri.LogRequest, timeout=5) for i in range(30)]
    answers = await asyncio.gather(*calls)
    assert [a.msg for a in answers] == [f"R{i}" for i in range(30)] + [f"P{i}" for i in range(30)]


async def test_handler_errors_become_statuses(pair: tuple[Channel, Channel]) -> None:
    runtime, _ = pair
    with pytest.raises(ttrpc.RpcError) as caught:
        await runtime.call(SERVICE, "Fail", nri.LogRequest(msg="status"), nri.Empty, timeout=5)
    assert (caught.value.code, caught.value.message) == (ttrpc.Code.NOT_FOUND, "no such thing")
    with pytest.raises(ttrpc.RpcError) as caught:
        await runtime.call(SERVICE, "Fail", nri.LogRequest(msg="other"), nri.Empty, timeout=5)
    assert (caught.value.code, caught.value.message) == (ttrpc.Code.UNKNOWN, "broken handler")
    with pytest.raises(ttrpc.RpcError) as caught:
        await runtime.call(SERVICE, "Nope", nri.LogRequest(), nri.Empty, timeout=5)
    assert (caught.value.code, caught.value.message) == (ttrpc.Code.UNIMPLEMENTED, "method Nope")


async def test_the_callers_timeout_travels_and_bounds_the_handler(pair: tuple[Channel, Channel]) -> None:
    runtime, _ = pair
    started = time.monotonic()
    with pytest.raises(ttrpc.DeadlineExceeded):
        await runtime.call(SERVICE, "Slow", nri.LogRequest(msg="bounded"), nri.Empty, timeout=0.2)
    assert time.monotonic() - started < 1.0
    for _ in range(100):  # the serving side gave up too, from Request.timeout_nano
        if "bounded" in cancelled:
            break
        await asyncio.sleep(0.01)
    assert "bounded" in cancelled
    answer = await runtime.call(SERVICE, "Echo", nri.LogRequest(msg="after"), nri.LogRequest, timeout=5)
    assert answer.msg == "AFTER"


async def test_an_oversized_request_is_refused_and_the_channel_goes_on(pair: tuple[Channel, Channel]) -> None:
    runtime, _ = pair
    with pytest.raises(ttrpc.OversizedMessage):
        await runtime.call(SERVICE, "Echo", nri.LogRequest(msg="x" * (ttrpc.MAX_MESSAGE_LENGTH + 1)), nri.LogRequest, timeout=5)
    big = "y" * (ttrpc.MAX_MESSAGE_LENGTH - 1000)  # several mux frames each way
    answer = await runtime.call(SERVICE, "Echo", nri.LogRequest(msg=big), nri.LogRequest, timeout=10)
    assert answer.msg == big.upper()


async def test_peer_closing_mid_call_fails_the_call_at_once(pair: tuple[Channel, Channel]) -> None:
    runtime, plugin = pair
    call = asyncio.ensure_future(runtime.call(SERVICE, "Slow", nri.LogRequest(msg="orphan"), nri.Empty, timeout=30))
    await asyncio.sleep(0.05)
    plugin.close()
    with pytest.raises(ttrpc.ConnectionClosed):
        await asyncio.wait_for(call, 2.0)
    await asyncio.wait_for(runtime.wait_closed(), 2.0)
    with pytest.raises(ttrpc.ConnectionClosed):
        await runtime.call(SERVICE, "Echo", nri.LogRequest(), nri.LogRequest, timeout=1)
