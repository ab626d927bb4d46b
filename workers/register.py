"""The ``cipherdrop.register`` service: the server's public key, and new clients.

* ``ServerKeyRequest`` (plain) is answered with the server's public key, which the client
  pins (trust on first use, like SSH ``known_hosts``): everything later is sealed to that
  key or signed by it, so a server showing another key cannot serve that client. After
  ``cipherdrop-admin rotate-server-key`` the answer also carries the previous key and its
  signature over the new one, so clients that pinned the previous key follow the change.
* ``RegisterRequest`` arrives sealed to the server key. The name has been validated by the
  codec (``invalid-name`` otherwise) and the public key must be one the key exchange
  accepts (``bad-request`` otherwise); a taken name is refused ``name-taken``. A new
  client gets 16 random bytes as its id and keeps that key until it moves to another
  (``RekeyRequest``): from its first key exchange on, only a request signed by that key
  gets a session (see :mod:`workers.keyx`).
  The key is bound here, not at the first exchange, so nobody who learns a new id can
  claim it with a key of their own before its owner connects. Where the operator allows
  only invited clients (``store.registration = "invite"``), the request must carry an
  invite code the operator made (``cipherdrop-admin invite``), used up by the
  registration in the same transaction; otherwise it is refused ``not-invited``.
* ``LegacyRegisterRequest`` arrives sealed to the server key from a gateway the operator
  trusts (:func:`workers.keyx.verify_gateway`) and registers a client of the legacy
  protocol, flagged legacy: only the legacy exchange serves it (docs/legacy.md).
"""

from __future__ import annotations

import hashlib
import secrets

from common import keys
from common.codec import server_key_endorsement_bytes
from common.errors import RefusedError
from common.fields import ID_LEN
from common.messages import (
    ErrorCode,
    Flags,
    LegacyRegistered,
    LegacyRegisterRequest,
    MessageType,
    Registered,
    RegisterRequest,
    ServerKey,
    ServerKeyRequest,
)
from workers.datadir import DataDir
from workers.keyx import verify_gateway
from workers.service import Context, Dispatcher, Route
from workers.store import NotInvited, Store

__all__ = [
    "SERVICE",
    "invite_digest",
    "legacy_register_routes",
    "register_service",
    "server_key_reply",
]

SERVICE = "cipherdrop.register"


def invite_digest(code: bytes) -> bytes:
    """What the store keeps of an invite code: its SHA-256 (codes are 16 random bytes)."""
    return hashlib.sha256(code).digest()


def server_key_reply(data: DataDir) -> ServerKey:
    """The ServerKey answer: the key, and after a rotation the previous key's endorsement."""
    public_der = data.server_public_der
    previous = data.previous_server_key
    if previous is None:
        return ServerKey(public_der)
    previous_der = keys.public_key_der(previous)
    endorsement = keys.sign(previous, server_key_endorsement_bytes(previous_der, public_der))
    return ServerKey(public_der, previous_der, endorsement)


def register_service(store: Store, data: DataDir, *, invites_only: bool = False) -> Dispatcher:
    answer = server_key_reply(data)  # signed once: the keys do not change while it runs

    def server_key(ctx: Context, msg: ServerKeyRequest) -> ServerKey:
        return answer

    def register(ctx: Context, msg: RegisterRequest) -> Registered:
        keys.load_public_key(msg.public_key)  # a key no exchange would accept: bad-request
        if invites_only and not msg.invite:
            raise RefusedError(ErrorCode.NOT_INVITED, "registration needs an invite")
        invite = invite_digest(msg.invite) if invites_only else None
        reply = Registered(secrets.token_bytes(ID_LEN))
        record = ctx.record(reply)
        try:
            created = store.create_client(
                reply.client_id, msg.name, msg.public_key, ctx.now, record, invite
            )
        except NotInvited:
            raise RefusedError(
                ErrorCode.NOT_INVITED, "the invite is unknown, used or expired"
            ) from None
        if not created:
            raise RefusedError(ErrorCode.NAME_TAKEN, f"the name {msg.name!r} is taken")
        return reply

    routes = {
        MessageType.SERVER_KEY_REQUEST: Route(Flags(0), server_key),
        MessageType.REGISTER_REQUEST: Route(Flags.SEALED_TO_SERVER, register, mutating=True),
    }
    routes.update(legacy_register_routes(store, data))  # served only to trusted gateways
    return Dispatcher(routes, store=store, master=data.master, server_key=data.server_key)


def legacy_register_routes(store: Store, data: DataDir) -> dict[MessageType, Route]:
    """The ``LegacyRegisterRequest`` route of the register service."""

    def register(ctx: Context, msg: LegacyRegisterRequest) -> LegacyRegistered:
        verify_gateway(data, msg, ctx.now)
        reply = LegacyRegistered(secrets.token_bytes(ID_LEN))
        if not store.create_legacy_client(reply.client_id, msg.name, ctx.now, ctx.record(reply)):
            raise RefusedError(ErrorCode.NAME_TAKEN, f"the name {msg.name!r} is taken")
        return reply

    return {
        MessageType.LEGACY_REGISTER_REQUEST: Route(Flags.SEALED_TO_SERVER, register, mutating=True)
    }
