"""The gateway's asyncio TCP server: accept, cap, hand each connection to its handler.

Guarantees: at most ``max_connections`` legacy connections are served at once, and at
most ``max_per_address`` from one address (so one host cannot take every slot); one more
gets the general error and is closed at once, before anything is read from it. A
failure inside one connection's handler is logged and ends only that connection.
The server never reads the store: everything goes through :class:`~gateway.backend.Backend`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway import wire
from gateway.backend import Backend
from gateway.connection import LegacyConnection, Limits
from gateway.wire import Dialect, Response

__all__ = ["GatewayServer", "ServerOptions"]

# Bytes a connection may have buffered unread: the reader pauses the socket beyond twice this.
_BUFFER = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServerOptions:
    host: str
    port: int
    dialect: Dialect
    limits: Limits
    max_connections: int = 64
    max_per_address: int = 16
    spool_dir: Path | None = None


class GatewayServer:
    """Listens for legacy clients; :meth:`start` binds, :meth:`serve` runs until cancelled."""

    def __init__(self, options: ServerOptions, backend: Backend) -> None:
        self.options = options
        self.backend = backend
        self._per_address: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = structlog.get_logger()

    async def start(self) -> tuple[str, int]:
        """Bind; the address actually bound (port 0 picks a free one)."""
        self._server = await asyncio.start_server(
            self._accept, self.options.host, self.options.port, limit=_BUFFER
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def serve(self) -> None:
        if self._server is None:
            raise RuntimeError("start() first")
        try:
            await self._server.serve_forever()
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def active(self) -> int:
        """Connections being served now."""
        return sum(self._per_address.values())

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else ""
        if self.active() >= self.options.max_connections:
            await self._refuse(writer, "too many connections")
            return
        if self._per_address[address] >= self.options.max_per_address:
            await self._refuse(writer, "too many connections from one address")
            return
        self._per_address[address] += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            connection = LegacyConnection(
                reader,
                writer,
                self.options.dialect,
                self.backend,
                self.options.limits,
                self.options.spool_dir,
            )
            await connection.run()
        except Exception:
            self._log.exception("legacy.connection_failed")
            writer.close()
        finally:
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]
            if task is not None:
                self._tasks.discard(task)

    async def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        self._log.warning("legacy.connection_refused", reason=reason)
        with contextlib.suppress(Exception):
            writer.write(wire.encode_response(self.options.dialect, Response.GENERAL_ERROR))
            await asyncio.wait_for(writer.drain(), 1.0)
        writer.close()
