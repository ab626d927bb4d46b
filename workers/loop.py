"""The zmq loop around :class:`workers.runtime.WorkerCore`: one DEALER, one handler.

:func:`run_worker` owns the socket and the clock and nothing else; every protocol
decision is the core's. It guarantees that a handler exception never ends the worker:
the exception is logged with the request's context and answered with the reply frames
that ``on_error`` returns, so the client gets an answer instead of waiting for a timeout.

Handlers run in the loop's thread, one request at a time, so a handler must finish well
within ``heartbeat_liveness * heartbeat_interval``; a worker stuck longer than that is
considered dead by the broker and its request is handed to another worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeAlias, cast

import structlog
import zmq

from common import mdp
from common.codec import decode_envelope
from common.errors import LocalProtocolError, RemoteProtocolError
from workers.runtime import (
    BodyPart,
    Close,
    Command,
    Connect,
    Disconnected,
    Malformed,
    Request,
    Send,
    WorkerCore,
)

Handler: TypeAlias = Callable[[list[zmq.Frame]], Sequence[BodyPart]]
ErrorPolicy: TypeAlias = Callable[[BaseException, list[zmq.Frame]], Sequence[BodyPart]]

# Longest a poll may block, so that a set ``stop`` event is seen promptly.
STOP_CHECK = 0.1
# Envelopes are small; a bigger first frame is not one and is not worth copying to find out.
MAX_ENVELOPE_PEEK = 1024


def internal_error(exc: BaseException, body: list[zmq.Frame]) -> list[BodyPart]:
    """Default error policy: ``[b"500", b"internal error", envelope]``.

    Same shape as the broker's status replies, so clients treat it the same way; the
    exception text is not sent, as it may describe server internals.
    """
    echo: BodyPart = body[0] if body else b""
    return [b"500", b"internal error", echo]


def run_worker(
    endpoint: str,
    service: str,
    handler: Handler,
    *,
    heartbeat_interval: float = 2.5,
    heartbeat_liveness: int = 3,
    reconnect_min: float = 0.1,
    reconnect_max: float = 5.0,
    stop: threading.Event | None = None,
    on_error: ErrorPolicy = internal_error,
    context: zmq.Context[zmq.Socket[bytes]] | None = None,
) -> None:
    """Serve ``service`` for the broker at ``endpoint`` until ``stop`` is set."""
    core = WorkerCore(
        service,
        heartbeat_interval=heartbeat_interval,
        heartbeat_liveness=heartbeat_liveness,
        reconnect_min=reconnect_min,
        reconnect_max=reconnect_max,
    )
    shell = _Shell(endpoint, service, context or zmq.Context.instance())
    halt = stop if stop is not None else threading.Event()
    try:
        while not halt.is_set():
            core.tick(time.monotonic())
            shell.execute(core.drain())
            wait = min(max(core.next_deadline() - time.monotonic(), 0.0), STOP_CHECK)
            frames = shell.receive(wait, halt)
            if frames is None:
                continue
            event = core.receive(frames, time.monotonic())
            if isinstance(event, Request):
                reply = shell.handle(event, handler, on_error)
                core.reply(reply, time.monotonic())
            elif isinstance(event, Disconnected):
                shell.log.info("worker.disconnected_by_broker")
            elif isinstance(event, Malformed):
                shell.log.warning("worker.malformed_message", reason=event.reason)
            shell.execute(core.drain())
    finally:
        core.shutdown()
        shell.execute(core.drain())
        shell.log.info("worker.stopped")


class _Shell:
    """The socket and the logging around the core."""

    def __init__(self, endpoint: str, service: str, context: zmq.Context[zmq.Socket[bytes]]):
        self.endpoint = endpoint
        self.context = context
        self.socket: zmq.Socket[bytes] | None = None
        self.log = structlog.get_logger().bind(service=service, endpoint=endpoint)

    def execute(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Connect):
                self._close()
                self.socket = self.context.socket(zmq.DEALER)
                self.socket.setsockopt(zmq.LINGER, 0)
                self.socket.connect(self.endpoint)
                self.log.info("worker.connecting")
            elif isinstance(command, Close):
                self._close()
            elif isinstance(command, Send) and self.socket is not None:
                try:
                    self.socket.send_multipart(command.frames, flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    # Queue full towards a broker that is not reading: dropping is safe,
                    # heartbeats are periodic and clients resend requests.
                    self.log.warning("worker.send_dropped")

    def receive(self, wait: float, halt: threading.Event) -> list[zmq.Frame] | None:
        if self.socket is None:
            halt.wait(wait)  # offline: nothing to read until the reconnect is due
            return None
        if not self.socket.poll(int(wait * 1000)):
            return None
        return self.socket.recv_multipart(copy=False)

    def handle(self, request: Request, handler: Handler, on_error: ErrorPolicy) -> list[BodyPart]:
        # Received with copy=False, so every body part is a zmq.Frame.
        body = cast(list[zmq.Frame], list(request.body))
        context = {"client": request.client.hex(), "request_id": _request_id(body)}
        with structlog.contextvars.bound_contextvars(**context):
            started = time.monotonic()
            try:
                reply = list(handler(body))
                if not reply:
                    raise LocalProtocolError("handler returned no reply frames")
            except Exception as exc:
                self.log.exception("worker.handler_failed")
                try:
                    reply = list(on_error(exc, body))
                except Exception:
                    self.log.exception("worker.error_policy_failed")
                    reply = internal_error(exc, body)
            elapsed_ms = round((time.monotonic() - started) * 1000, 3)
            self.log.debug("worker.request", elapsed_ms=elapsed_ms)
        return reply

    def _close(self) -> None:
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None


def _request_id(body: list[zmq.Frame]) -> str | None:
    """The request id for log lines, when the first frame is a valid envelope."""
    if not body or len(body[0]) > MAX_ENVELOPE_PEEK:
        return None
    try:
        return decode_envelope(mdp.as_bytes(body[0])).request_id.hex()
    except RemoteProtocolError:
        return None
