"""Which legacy request a connection may make when: the state machine, as a table.

How it works: a connection starts in ``START``. :data:`TRANSITIONS` maps (state, request)
to the state after that request *succeeds*; a request with no entry is out of order and
is answered with the general error, the state unchanged. A refusal the protocol names
(registration failed, reconnect refused) also leaves the state unchanged, so the client
can try again as the originals do. Which errors also close the connection is decided by
the caller (:mod:`gateway.connection`), not here.

``KEYED`` means the connection holds a legacy AES key and a session for its client;
``VERDICT`` means a file was received and its CRC sent, and the client's verdict is due.
Sending another file instead of a verdict gives the pending one up.
"""

from __future__ import annotations

import enum

from gateway.wire import Request

__all__ = ["TRANSITIONS", "State", "next_state"]


class State(enum.Enum):
    START = "start"
    REGISTERED = "registered"
    KEYED = "keyed"
    VERDICT = "verdict"


TRANSITIONS: dict[tuple[State, Request], State] = {
    (State.START, Request.REGISTER): State.REGISTERED,
    (State.START, Request.RECONNECT): State.KEYED,
    (State.REGISTERED, Request.PUBLIC_KEY): State.KEYED,
    (State.REGISTERED, Request.RECONNECT): State.KEYED,
    (State.KEYED, Request.PUBLIC_KEY): State.KEYED,
    (State.KEYED, Request.RECONNECT): State.KEYED,
    (State.KEYED, Request.SEND_FILE): State.VERDICT,
    (State.VERDICT, Request.SEND_FILE): State.VERDICT,
    (State.VERDICT, Request.CRC_OK): State.KEYED,
    (State.VERDICT, Request.CRC_RETRY): State.KEYED,
    (State.VERDICT, Request.CRC_GIVE_UP): State.KEYED,
}


def next_state(state: State, request: Request) -> State | None:
    """The state after ``request`` succeeds in ``state``; None if it is out of order."""
    return TRANSITIONS.get((state, request))
