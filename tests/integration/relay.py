"""A ROUTER/DEALER relay between one client and the broker, with hooks on each direction.

Tests and benchmarks point a client at :attr:`Relay.endpoint` (a random port on
127.0.0.1) to watch or alter what crosses the wire. Every request is handed to
``on_request`` and every reply to ``on_reply`` before it is forwarded; a hook takes the
frames (without the client's routing id) and returns the frames to send on. The frames
are ``bytes``, or ``zmq.Frame`` when the relay is made with ``copy=False`` (cheap when
only sizes matter). Hooks run on the relay's own thread, one message at a time.

The relay serves one client: replies go back to the last peer that sent a request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import zmq

Frames = list[Any]  # list[bytes], or list[zmq.Frame] with copy=False
Hook = Callable[[Frames], Frames]


def _unchanged(frames: Frames) -> Frames:
    return frames


class Relay:
    """Forward requests from :attr:`endpoint` to ``broker`` and replies back, through
    the hooks. Runs on a daemon thread from construction until :meth:`close`."""

    def __init__(
        self,
        broker: str,
        on_request: Hook | None = None,
        on_reply: Hook | None = None,
        *,
        copy: bool = True,
    ) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.front = self.context.socket(zmq.ROUTER)
        self.back = self.context.socket(zmq.DEALER)
        for sock in (self.front, self.back):
            sock.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{self.front.bind_to_random_port('tcp://127.0.0.1')}"
        self.back.connect(broker)
        self._on_request = on_request or _unchanged
        self._on_reply = on_reply or _unchanged
        self._copy = copy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        peer: Any = b""
        copy = self._copy
        while not self._stop.is_set():
            # A short poll so close() is noticed quickly.
            for sock, _ in poller.poll(50):
                if sock is self.front:
                    peer, *frames = self.front.recv_multipart(0, copy)
                    self.back.send_multipart(self._on_request(frames), copy=copy)
                else:
                    frames = self.back.recv_multipart(0, copy)
                    self.front.send_multipart([peer, *self._on_reply(frames)], copy=copy)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.front.close(linger=0)
        self.back.close(linger=0)
        self.context.term()
