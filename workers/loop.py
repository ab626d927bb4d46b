"""The zmq loop around :class:`workers.runtime.WorkerCore`: one DEALER, one handler.

:func:`run_worker` owns the socket and the clock and nothing else; every protocol
decision is the core's. Two threads share the work:

* an I/O thread owns the socket and the core: it polls, heartbeats (also while a request
  is being handled, so a handler slower than the broker's liveness window, such as a
  commit that syncs a gigabyte, is not taken for a dead worker), and hands requests over;
* the thread that called :func:`run_worker` runs the handler, one request at a time. It
  is the thread that built the handler.

Requests that ``inline`` picks (short, bounded work: a chunk of a transfer, or opening
or confirming one) are handled on the I/O thread itself. Handing a request to the other
thread and its reply back costs two wake-ups and two hand-overs of the interpreter lock,
which for a download chunk was more than the chunk's own work (docs/performance.md).
Heartbeats wait while such a request runs, so ``inline`` must only pick work far shorter
than the broker's liveness window. Either way the core holds one request at a time, so
the handler never runs on both threads at once: state it keeps (an ``sqlite3``
connection) is used by one thread at a time, handed over through the request queue.

It guarantees that a handler exception never ends the worker: the exception is logged
with the request's context and answered with the reply frames that ``on_error`` returns,
so the client gets an answer instead of waiting for a timeout. An error in the I/O
thread (the socket itself failing) ends :func:`run_worker` with that error.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeAlias, cast

import structlog
import zmq

from common import mdp
from common.codec import peek_request_id
from common.errors import LocalProtocolError, RemoteProtocolError
from common.mdp import Part
from common.waiting import messages_waiting
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
Inline: TypeAlias = Callable[[Sequence[Part]], bool]
ErrorPolicy: TypeAlias = Callable[[BaseException, list[zmq.Frame]], Sequence[BodyPart]]

# Longest a wait may block, so that a set ``stop`` event is seen promptly.
STOP_CHECK = 0.1
# Envelopes are small; a bigger first frame is not one and is not worth copying to find out.
MAX_ENVELOPE_PEEK = 1024
# How long stopping waits for the I/O thread to say goodbye to the broker.
_JOIN_TIMEOUT = 5.0


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
    inline: Inline | None = None,
) -> None:
    """Serve ``service`` for the broker at ``endpoint`` until ``stop`` is set.

    ``inline(body)`` is true for a request to handle on the I/O thread (it must not
    raise); without it every request goes to the calling thread.
    """
    core = WorkerCore(
        service,
        heartbeat_interval=heartbeat_interval,
        heartbeat_liveness=heartbeat_liveness,
        reconnect_min=reconnect_min,
        reconnect_max=reconnect_max,
    )
    halt = stop if stop is not None else threading.Event()
    shell = _Shell(endpoint, service, context or zmq.Context.instance())
    io = _IoThread(
        core, shell, lambda request: shell.handle(request, handler, on_error), inline or _never
    )
    io.start()
    try:
        while not halt.is_set():
            try:
                request = io.requests.get(timeout=STOP_CHECK)
            except queue.Empty:
                continue
            if request is None:  # the I/O thread ended
                break
            io.post(io.answer(request))
    finally:
        io.finish()
    if io.error is not None:
        raise io.error


class _IoThread(threading.Thread):
    """Owns the socket and the core; requests go out on a queue, replies come back."""

    def __init__(
        self,
        core: WorkerCore,
        shell: _Shell,
        answer: Callable[[Request], list[BodyPart]],
        inline: Inline,
    ) -> None:
        super().__init__(name=f"mdp-worker-io-{core.service.decode()}", daemon=True)
        self.core = core
        self.shell = shell
        self.answer = answer
        self.inline = inline
        # Not a SimpleQueue: the caller's thread waits on it with a timeout and handles
        # signals, and before Python 3.13 a SimpleQueue.get whose timeout passes while a
        # signal handler runs goes on waiting forever (the worker then ignored SIGTERM).
        self.requests: queue.Queue[Request | None] = queue.Queue()
        self.error: BaseException | None = None
        self._replies: queue.SimpleQueue[list[BodyPart]] = queue.SimpleQueue()
        self._done = threading.Event()
        # A pipe wakes the poll when a reply is posted or the worker stops.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def post(self, reply: list[BodyPart]) -> None:
        """Hand the handler's reply to the I/O thread (any thread may call this)."""
        self._replies.put(reply)
        self._wake()

    def finish(self) -> None:
        """Stop: the I/O thread sends pending replies, says DISCONNECT and closes."""
        self._done.set()
        self._wake()
        self.join(_JOIN_TIMEOUT)
        if not self.is_alive():  # else it may still poll the pipe; the process is ending
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
        self.shell.log.info("worker.stopped")

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe already wakes the poll
            os.write(self._wake_w, b"!")

    def run(self) -> None:
        try:
            self._loop()
            self._send_replies()  # the last request's reply goes out before DISCONNECT
            self.core.shutdown()
            self.shell.execute(self.core.drain())
        except BaseException as exc:  # hand it to the caller's thread, do not lose it
            self.error = exc
            self.shell.close()
        finally:
            self.requests.put(None)

    def _loop(self) -> None:
        core, shell = self.core, self.shell
        # Only finish() ends this loop, so the request being handled when ``stop`` is set
        # still gets its reply.
        woken = False
        while not self._done.is_set():
            if woken:
                self._send_replies()
            core.tick(time.monotonic())
            shell.execute(core.drain())
            wait = min(max(core.next_deadline() - time.monotonic(), 0.0), STOP_CHECK)
            woken, messages = shell.receive(wait, self._wake_r)
            for frames in messages:
                self._take(frames)
            shell.execute(core.drain())

    def _take(self, frames: list[zmq.Frame]) -> None:
        event = self.core.receive(frames, time.monotonic())
        if isinstance(event, Request):
            if self.inline(event.body):
                self._deliver(self.answer(event))
            else:
                self.requests.put(event)
        elif isinstance(event, Disconnected):
            self.shell.log.info("worker.disconnected_by_broker")
        elif isinstance(event, Malformed):
            self.shell.log.warning("worker.malformed_message", reason=event.reason)

    def _send_replies(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        while not self._replies.empty():  # this thread is the only reader
            self._deliver(self._replies.get_nowait())

    def _deliver(self, reply: list[BodyPart]) -> None:
        if not self.core.reply(reply, time.monotonic()):
            self.shell.log.info("worker.reply_dropped", reason="connection lost meanwhile")
        self.shell.execute(self.core.drain())


class _Shell:
    """The socket and the logging around the core."""

    def __init__(self, endpoint: str, service: str, context: zmq.Context[zmq.Socket[bytes]]):
        self.endpoint = endpoint
        self.context = context
        self.socket: zmq.Socket[bytes] | None = None
        self._poller: tuple[zmq.Socket[bytes] | None, zmq.Poller] | None = None
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

    def receive(self, wait: float, wake_fd: int) -> tuple[bool, list[list[zmq.Frame]]]:
        """Whether ``wake_fd`` became readable, and the messages that arrive within
        ``wait`` seconds (or until woken), without blocking once the first has come."""
        if self._poller is None or self._poller[0] is not self.socket:
            poller = zmq.Poller()
            poller.register(wake_fd, zmq.POLLIN)
            if self.socket is not None:
                poller.register(self.socket, zmq.POLLIN)
            self._poller = (self.socket, poller)
        poller = self._poller[1]
        ready = dict(poller.poll(int(wait * 1000)))
        woken = wake_fd in ready
        socket = self.socket
        if socket is None or socket not in ready:
            return woken, []
        return woken, list(messages_waiting(socket))

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

    def close(self) -> None:
        self._close()

    def _close(self) -> None:
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None


def _never(body: Sequence[Part]) -> bool:
    return False


def _request_id(body: list[zmq.Frame]) -> str | None:
    """The request id for log lines, when the first frame is a valid envelope."""
    if not body or len(body[0]) > MAX_ENVELOPE_PEEK:
        return None
    try:
        return peek_request_id(mdp.as_bytes(body[0])).hex()
    except RemoteProtocolError:
        return None
