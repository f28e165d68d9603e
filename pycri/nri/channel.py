"""The asyncio side of NRI's transport: one socket, the multiplexer, a ttrpc client and a ttrpc server.

:class:`Channel` owns a connected stream (a unix socket, or one end of a socketpair). Its
reader task feeds every chunk to the sans-IO :class:`~pycri.nri.mux.Mux` and hands each
connection's bytes to the sans-IO ttrpc state of that connection: answers complete the
futures of :meth:`Channel.call`, requests start one task each running the registered
handler. The runtime side calls on :data:`~pycri.nri.mux.PLUGIN_SERVICE_CONN` and serves on
:data:`~pycri.nri.mux.RUNTIME_SERVICE_CONN`; a plugin the other way round.

Timeouts: :meth:`Channel.call` waits at most ``timeout`` seconds (writing included) and
tells the peer in ``Request.timeout_nano``; a handler runs at most as long as its caller's
``timeout_nano`` says, then the call is answered ``DEADLINE_EXCEEDED``. When the socket
ends, or :meth:`Channel.close` is called, every waiting call fails with
:class:`~pycri.nri.ttrpc.ConnectionClosed` and running handlers are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from pycri.nri import ttrpc
from pycri.nri.mux import Mux, MuxError

log = logging.getLogger("pycri.nri")

READ_CHUNK = 256 * 1024

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Method:
    """A unary method this side serves: how to parse its argument, and the coroutine answering it."""

    request_type: type[Message]
    handler: Callable[[Any], Awaitable[Message]]


Services = Mapping[str, Mapping[str, Method]]


class Channel:
    # Reader tasks of open channels: the event loop keeps only weak references to tasks, and a
    # connection must live until it is closed even if its owner dropped every reference.
    _running: set[asyncio.Task[None]] = set()

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        client_conn: int,
        server_conn: int,
        services: Services,
        name: str = "nri",
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.name = name
        self.client_conn = client_conn
        self.server_conn = server_conn
        self.services = services
        self.mux = Mux()
        self.mux.open(client_conn)
        self.mux.open(server_conn)
        self.client = ttrpc.ClientConnection()
        self.server = ttrpc.ServerConnection({service: methods.keys() for service, methods in services.items()})
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start reading the socket (once)."""
        if self._reader_task is None:
            self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(), name=f"{self.name} reader")
            Channel._running.add(self._reader_task)
            self._reader_task.add_done_callback(Channel._running.discard)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Until the socket has ended or :meth:`close` was called."""
        await self._closed.wait()

    # -- calling ---------------------------------------------------------------------------------

    async def call(self, service: str, method: str, request: Message, response_type: type[M], *, timeout: float | None) -> M:
        """Call ``service``/``method`` on the peer; raises :class:`~pycri.nri.ttrpc.RpcError` and subclasses.

        :class:`~pycri.nri.ttrpc.DeadlineExceeded` after ``timeout`` seconds,
        :class:`~pycri.nri.ttrpc.ConnectionClosed` when the socket ends first,
        :class:`~pycri.nri.ttrpc.OversizedMessage` (nothing sent) when the request is too large.
        """
        if self.closed:
            raise ttrpc.ConnectionClosed()
        timeout_nano = int(timeout * 1e9) if timeout is not None and timeout > 0 else 0
        stream_id = self.client.send_request(service, method, request.SerializeToString(), timeout_nano=timeout_nano)
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[stream_id] = answer
        try:
            async with asyncio.timeout(timeout):
                self._flush()
                await self.writer.drain()
                payload = await answer
        except TimeoutError:
            raise ttrpc.DeadlineExceeded() from None
        except (ConnectionError, OSError) as exc:
            self.close()
            raise ttrpc.ConnectionClosed(f"ttrpc: closed: {exc}") from exc
        finally:
            self._waiting.pop(stream_id, None)
            self.client.forget(stream_id)
        response = response_type()
        try:
            response.ParseFromString(payload)
        except DecodeError as exc:
            raise ttrpc.RpcError(ttrpc.Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}") from exc
        return response

    # -- reading ---------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while not self.closed:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    break
                for item in self.mux.receive_data(data):
                    if item.conn_id == self.client_conn:
                        self._answers(self.client.receive_data(item.data))
                    elif item.conn_id == self.server_conn:
                        for request in self.server.receive_data(item.data):
                            self._serve(request)
                self._flush()
        except MuxError as exc:
            log.warning("%s: multiplexing error from the peer: %s", self.name, exc)
        except (ConnectionError, OSError) as exc:
            log.debug("%s: connection lost: %s", self.name, exc)
        finally:
            self.close()

    def _answers(self, events: list[ttrpc.ClientEvent]) -> None:
        for event in events:
            answer = self._waiting.get(event.stream_id)
            if answer is None or answer.done():
                continue
            if isinstance(event, ttrpc.CallCompleted):
                answer.set_result(event.payload)
            else:
                answer.set_exception(event.error)

    # -- serving ---------------------------------------------------------------------------------

    def _serve(self, request: ttrpc.RequestReceived) -> None:
        method = self.services[request.service][request.method]
        task = asyncio.get_running_loop().create_task(self._handle(method, request), name=f"{self.name} {request.method}")
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, method: Method, request: ttrpc.RequestReceived) -> None:
        argument = method.request_type()
        try:
            argument.ParseFromString(request.payload)
        except DecodeError as exc:
            self._respond_error(request.stream_id, ttrpc.Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}")
            return
        deadline = request.timeout_nano / 1e9 if request.timeout_nano > 0 else None
        try:
            async with asyncio.timeout(deadline) as scope:
                result = await method.handler(argument)
        except ttrpc.RpcError as exc:
            self._respond_error(request.stream_id, exc.code, exc.message)
        except TimeoutError as exc:
            if scope.expired():
                self._respond_error(request.stream_id, ttrpc.Code.DEADLINE_EXCEEDED, "context deadline exceeded")
            else:
                self._respond_error(request.stream_id, ttrpc.Code.UNKNOWN, str(exc) or "timed out")
        except Exception as exc:
            log.warning("%s: %s/%s failed: %s", self.name, request.service, request.method, exc, exc_info=True)
            self._respond_error(request.stream_id, ttrpc.Code.UNKNOWN, str(exc) or type(exc).__name__)
        else:
            if not self.closed:
                self.server.respond(request.stream_id, result.SerializeToString())
                self._flush()

    def _respond_error(self, stream_id: int, code: int, message: str) -> None:
        if not self.closed:
            self.server.respond_error(stream_id, code, message)
            self._flush()

    # -- writing and closing ---------------------------------------------------------------------

    def _flush(self) -> None:
        if self.closed:
            return
        for conn_id, conn in ((self.client_conn, self.client), (self.server_conn, self.server)):
            if data := conn.data_to_send():
                self.mux.send(conn_id, data)
        if (out := self.mux.data_to_send()) and not self.writer.is_closing():
            self.writer.write(out)

    def close(self) -> None:
        """Close the socket: waiting calls fail with ConnectionClosed, running handlers are cancelled."""
        if self.closed:
            return
        self._closed.set()
        with contextlib.suppress(Exception):
            self.writer.close()
        self._answers(self.client.connection_lost())
        self.server.connection_lost()
        for task in list(self._handlers):
            task.cancel()
        try:
            current = asyncio.current_task()
        except RuntimeError:  # the loop is gone (a task being garbage-collected at shutdown)
            return
        if self._reader_task is not None and self._reader_task is not current:
            self._reader_task.cancel()
