"""Asking a broker, over MMI (8/MMI), whether it is alive and which services have workers.

Used by ``cipherdrop-admin ping`` (container health checks) and by ``cipherdrop-server``
to see when its broker and workers are ready. Each question opens its own ZeroMQ
context and DEALER socket and destroys both before returning (linger 0), so no socket,
and no background I/O thread, outlives a call: a supervisor may fork right after.
"""

from __future__ import annotations

import zmq

from common import mdp

__all__ = ["ask_service"]


def ask_service(endpoint: str, service: str, timeout: float) -> bytes | None:
    """The broker's ``mmi.service`` answer for ``service`` (b"200" when at least one
    worker serves it, b"404" when none does), or None if nothing came back in time.

    Any answer at all proves the broker is up and routing.
    """
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        try:
            socket.connect(endpoint)
            socket.send_multipart(mdp.client_request(mdp.MMI_SERVICE, [service.encode()]))
            if not socket.poll(max(1, int(timeout * 1000))):
                return None
            reply = socket.recv_multipart()
        finally:
            socket.close(linger=0)
    finally:
        context.destroy(linger=0)
    # ["", "MDPC01", "mmi.service", status]
    return bytes(reply[3]) if len(reply) >= 4 else None
