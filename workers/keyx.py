"""The ``cipherdrop.key`` service: proof of possession, then a fresh session key.

A ``KeyRequest`` arrives sealed to the server key (so the client id and public key are not
on the wire in clear) and is answered sealed under its one-time key. It grants a session
only if all of these hold, else it is refused (``unknown-client`` / ``bad-proof``):

* the client ``(id, name)`` is registered and not revoked;
* the signature over ``key_request_signed_bytes`` verifies with ``public_key``, so the
  sender holds the private key;
* the timestamp is within :data:`CLOCK_SKEW_MS` of the server's clock and the nonce was
  not used before by this client (spent in the same transaction as the grant);
* the client has no key yet (the first key that proves itself wins) or ``public_key``
  equals the stored one byte for byte: nobody can replace another client's key.

The grant is a fresh 32-byte session key and 16-byte session id, valid for the session
TTL; the key travels RSA-OAEP-wrapped to the client's key, the grant is signed by the
server key and bound to the request's nonce; the store keeps it wrapped by the master key.
"""

from __future__ import annotations

import dataclasses
import secrets

from common import crypto, keys
from common.codec import key_request_signed_bytes, session_granted_signed_bytes
from common.errors import IntegrityError, RefusedError
from common.fields import ID_LEN
from common.messages import ErrorCode, Flags, KeyRequest, MessageType, SessionGranted
from workers.datadir import DataDir
from workers.service import Context, Dispatcher, Route
from workers.sessions import session_context
from workers.store import Grant, SessionRow, Store

__all__ = ["CLOCK_SKEW_MS", "SERVICE", "key_service"]

SERVICE = "cipherdrop.key"
CLOCK_SKEW_MS = 5 * 60 * 1000


def _bad_proof(why: str) -> RefusedError:
    return RefusedError(ErrorCode.BAD_PROOF, why)


def key_service(store: Store, data: DataDir, session_ttl: float) -> Dispatcher:
    ttl_ms = int(session_ttl * 1000)

    def exchange(ctx: Context, req: KeyRequest) -> SessionGranted:
        client = store.get_client(req.client_id)
        if client is None or client.name != req.name or client.revoked:
            raise RefusedError(ErrorCode.UNKNOWN_CLIENT, "no such client")
        if client.public_key is not None and client.public_key != req.public_key:
            raise _bad_proof("this is not the client's registered key")
        public_key = keys.load_public_key(req.public_key)
        try:
            keys.verify(public_key, key_request_signed_bytes(req), req.signature)
        except IntegrityError:
            raise _bad_proof("the signature does not verify") from None
        if abs(req.timestamp - ctx.now) > CLOCK_SKEW_MS:
            raise _bad_proof("the request time is too far from the server's clock")
        session_key = crypto.random_key()
        session_id = secrets.token_bytes(ID_LEN)
        unsigned = SessionGranted(
            session_id, keys.wrap_key(public_key, session_key), ctx.now + ttl_ms, b"\0"
        )
        signed = session_granted_signed_bytes(unsigned, req.nonce)
        grant = dataclasses.replace(unsigned, signature=keys.sign(data.server_key, signed))
        row = SessionRow(
            session_id,
            req.client_id,
            data.master.wrap(session_key, session_context(session_id)),
            grant.expires_at,
            revoked=False,
        )
        outcome = store.grant_session(
            row,
            req.public_key,
            req.nonce,
            req.timestamp,
            oldest_timestamp=ctx.now - CLOCK_SKEW_MS,
            now=ctx.now,
            record=ctx.record(grant),
        )
        if outcome is Grant.KEY_MISMATCH:
            raise _bad_proof("this is not the client's registered key")
        if outcome is Grant.NONCE_REPLAYED:
            raise _bad_proof("the nonce was used before")
        return grant

    routes = {MessageType.KEY_REQUEST: Route(Flags.SEALED_TO_SERVER, exchange, mutating=True)}
    return Dispatcher(routes, store=store, master=data.master, server_key=data.server_key)
