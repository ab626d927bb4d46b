"""The asyncio twin of :class:`client.transport.Transport`, on ``zmq.asyncio``.

Same core, same rules (request ids, window, deadlines, retries, reconnects); see
:mod:`client.transport`. Kept apart so that the blocking client never loads asyncio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Self, cast

import zmq
import zmq.asyncio

from client.transport import BaseTransport, KeyOf, unwrap
from client.transport_core import Body, Outcome, Reconnect, Send, request_key
from common.mdp import Part


class AsyncTransport(BaseTransport):
    """The asyncio twin of :class:`Transport` (``zmq.asyncio``), for one event loop.

    Any number of coroutines may call :meth:`request` or iterate :meth:`map` at once: one
    driver task owns the socket while anything is in flight and hands each finished
    request to the future its caller awaits.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        window: int = 8,
        key_of: KeyOf = request_key,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        super().__init__(endpoint, timeout=timeout, retries=retries, window=window, key_of=key_of)
        self._context = context or zmq.asyncio.Context.instance()
        self._socket = self._open()
        self._waiters: dict[bytes, asyncio.Future[Outcome]] = {}
        self._driver: asyncio.Task[None] | None = None

    async def request(self, service: str, frames: Sequence[Part]) -> list[Body]:
        """Send one request and return its reply body."""
        return unwrap(await self.submit(service, frames))

    def submit(self, service: str, frames: Sequence[Part]) -> asyncio.Future[Outcome]:
        """Queue one request; the returned future gets its outcome (see :func:`unwrap`)."""
        key = self.core.submit(service, frames, time.monotonic())
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters[key] = future
        self._execute()
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive())
        return future

    async def map(
        self, service: str, bodies: Iterable[Sequence[Part]]
    ) -> AsyncIterator[list[Body]]:
        """Like :meth:`Transport.map`: at most ``window`` of these bodies in flight."""
        running: set[asyncio.Future[Outcome]] = set()
        source = iter(bodies)
        exhausted = False
        while True:
            while not exhausted and len(running) < self.core.window:
                body = next(source, None)
                if body is None:
                    exhausted = True
                else:
                    running.add(self.submit(service, body))
            if not running:
                return
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                yield unwrap(future.result())

    def close(self) -> None:
        """Stop the driver and close the socket (linger 0)."""
        if self._driver is not None:
            self._driver.cancel()
        self._socket.close(linger=0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the loop --------------------------------------------------------------------

    async def _drive(self) -> None:
        try:
            while self._waiters:
                if await self._socket.poll(self._wait_ms()):  # POLLIN
                    await self._read_available()
                self.core.tick(time.monotonic())
                self._execute()
        except Exception as exc:  # hand a loop failure to every caller, not to the void
            for future in self._waiters.values():
                if not future.done():
                    future.set_exception(exc)
            self._waiters.clear()

    async def _read_available(self) -> None:
        while True:
            try:
                frames = await self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._ignored(self.core.receive(frames, time.monotonic()))

    def _execute(self) -> None:
        for command in self.core.drain():
            if isinstance(command, Reconnect):
                self._log.info("transport.reconnect")
                self._socket.close(linger=0)
                self._socket = self._open()
            elif isinstance(command, Send):
                # With NOBLOCK the future is already settled: sent, or failed with Again.
                sent = cast(
                    "asyncio.Future[object]",
                    self._socket.send_multipart(command.frames, flags=zmq.NOBLOCK, copy=False),
                )
                if sent.done() and sent.exception() is not None:
                    self._log.warning("transport.send_dropped")  # the deadline resends it
        for outcome in self.core.outcomes():
            future = self._waiters.pop(outcome.key, None)
            if future is not None and not future.done():
                future.set_result(outcome)

    def _open(self) -> zmq.asyncio.Socket:
        socket = self._context.socket(zmq.DEALER)
        self._configure(socket)
        return socket
