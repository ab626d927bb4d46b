"""The ``cipherdrop.key`` service: proof of possession, then a fresh session key.

A ``KeyRequest`` arrives sealed to the server key (so the client id and public key are not
on the wire in clear) and is answered sealed under its one-time key. It grants a session
only if all of these hold, else it is refused (``unknown-client`` / ``bad-proof``):

* the client ``(id, name)`` is registered, not revoked and not flagged legacy (a legacy
  client's id travels in clear on the legacy wire, so whoever saw it could otherwise
  claim a client that has no key yet with a key of their own);
* the signature over ``key_request_signed_bytes`` verifies with ``public_key``, so the
  sender holds the private key;
* the timestamp is within :data:`CLOCK_SKEW_MS` of the server's clock and the nonce was
  not used before by this client (spent in the same transaction as the grant);
* ``public_key`` equals the key the client registered with, byte for byte: nobody can
  replace another client's key. Only a client registered by an earlier server, whose
  registration did not carry the key, has none: its first key that proves itself wins.

A ``RekeyRequest`` moves a client to a new key under the same rules, signed by the
current key and by the new one (which must be one the exchange accepts); every session
of the client ends with it, so whoever held the old key or a session made with it is out.
A client already on the new key (its rekey was done but the reply lost) is answered as
if moved, with no session ended.

The grant is a fresh 16-byte session id and a session key valid for the session TTL: a
32-byte secret travels RSA-OAEP-wrapped to the client's key, and the session key is
derived from it and from an X25519 exchange of one-use keys (``KeyRequest.ephemeral`` and
``SessionGranted.ephemeral``), so a recording of the exchange is worthless to whoever
later obtains the client's RSA key. The grant is signed by the server key and bound to
the request's nonce; the store keeps the session key wrapped by the master key.

``LegacyKeyRequest`` is the same exchange made by a trusted gateway for a client of the
legacy protocol (see the section at the end of this module and docs/legacy.md).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from typing import TypeVar

from common import crypto, keys
from common.body_schema import gateway_signed_bytes, legacy_grant_signed_bytes
from common.codec import (
    key_request_signed_bytes,
    rekey_signed_bytes,
    session_granted_signed_bytes,
)
from common.ephemeral import Ephemeral
from common.ephemeral import session_key as derive_session_key
from common.errors import ConfigError, IntegrityError, RefusedError, RemoteProtocolError
from common.fields import ID_LEN
from common.keys import RsaKey
from common.messages import (
    ErrorCode,
    Flags,
    KeyRequest,
    LegacyKeyRequest,
    LegacyRegisterRequest,
    LegacySessionGranted,
    MessageType,
    Rekeyed,
    RekeyRequest,
    SessionGranted,
)
from workers.datadir import DataDir
from workers.service import Context, Dispatcher, Route
from workers.sessions import session_context
from workers.store import ClientRow, Grant, SessionRow, Store

__all__ = [
    "CLOCK_SKEW_MS",
    "SERVICE",
    "TRUSTED_GATEWAYS",
    "key_service",
    "legacy_key_routes",
    "trusted_gateways",
    "verify_gateway",
]

SERVICE = "cipherdrop.key"
CLOCK_SKEW_MS = 5 * 60 * 1000


def _bad_proof(why: str) -> RefusedError:
    return RefusedError(ErrorCode.BAD_PROOF, why)


def _check_signature(public_key: RsaKey, signed: bytes, signature: bytes, whose: str) -> None:
    try:
        keys.verify(public_key, signed, signature)
    except IntegrityError:
        raise _bad_proof(f"the signature by {whose} does not verify") from None


def _check_clock(now: int, timestamp: int) -> None:
    if abs(timestamp - now) > CLOCK_SKEW_MS:
        raise _bad_proof("the request time is too far from the server's clock")


_Granted = TypeVar("_Granted", SessionGranted, LegacySessionGranted)


def _issue_session(
    ctx: Context,
    store: Store,
    data: DataDir,
    req: KeyRequest | LegacyKeyRequest,
    *,
    expires_at: int,
    make_grant: Callable[[bytes, bytes, int, bytes, bytes], _Granted],
    signed_bytes: Callable[[_Granted, bytes], bytes],
    wrap_to: RsaKey,
    client_id: bytes,
    public_key: bytes,
    peer_ephemeral: bytes | None = None,
) -> _Granted:
    """Grant a fresh session to ``client_id``, its secret wrapped to ``wrap_to``.

    With the client's one-use X25519 key ``peer_ephemeral``, the server makes one too and
    the session key is derived from both the wrapped secret and their exchange
    (common.ephemeral); without (the legacy gateway), the session key is the secret.
    ``make_grant(session_id, wrapped_key, expires_at, ephemeral, signature)`` builds the
    reply, which is signed by the server key over ``signed_bytes(grant, req.nonce)``. The
    store records ``public_key`` (or refuses it), spends the nonce and keeps the session
    key wrapped by the master key, all in one transaction with the reply.
    """
    secret = crypto.random_key()
    session_id = secrets.token_bytes(ID_LEN)
    session_key, own_public = secret, b""
    if peer_ephemeral is not None:
        own = Ephemeral()
        try:
            shared = own.agree(peer_ephemeral)
        except IntegrityError:
            raise RefusedError(
                ErrorCode.BAD_REQUEST, "ephemeral: not an X25519 public key of large order"
            ) from None
        session_key, own_public = derive_session_key(shared, secret, session_id), own.public
    wrapped = keys.wrap_key(wrap_to, secret)
    unsigned = make_grant(session_id, wrapped, expires_at, own_public, b"\0")
    signed = signed_bytes(unsigned, req.nonce)
    grant = dataclasses.replace(unsigned, signature=keys.sign(data.server_key, signed))
    row = SessionRow(
        session_id,
        client_id,
        data.master.wrap(session_key, session_context(session_id)),
        grant.expires_at,
        revoked=False,
    )
    outcome = store.grant_session(
        row,
        public_key,
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


def key_service(store: Store, data: DataDir, session_ttl: float) -> Dispatcher:
    ttl_ms = int(session_ttl * 1000)

    def exchange(ctx: Context, req: KeyRequest) -> SessionGranted:
        client = store.get_native_client(req.client_id)  # legacy clients are not here
        if client is None or client.name != req.name or client.revoked:
            raise RefusedError(ErrorCode.UNKNOWN_CLIENT, "no such client")
        if client.public_key is not None and client.public_key != req.public_key:
            raise _bad_proof("this is not the client's registered key")
        public_key = keys.load_public_key(req.public_key)
        _check_signature(public_key, key_request_signed_bytes(req), req.signature, "the key")
        _check_clock(ctx.now, req.timestamp)
        return _issue_session(
            ctx,
            store,
            data,
            req,
            expires_at=ctx.now + ttl_ms,
            make_grant=SessionGranted,
            signed_bytes=session_granted_signed_bytes,
            wrap_to=public_key,
            client_id=req.client_id,
            public_key=req.public_key,
            peer_ephemeral=req.ephemeral,
        )

    def rekey(ctx: Context, req: RekeyRequest) -> Rekeyed:
        client = store.get_native_client(req.client_id)
        if client is None or client.name != req.name or client.revoked:
            raise RefusedError(ErrorCode.UNKNOWN_CLIENT, "no such client")
        if client.public_key not in (req.public_key, req.new_public_key):
            raise _bad_proof("this is not the client's registered key")
        new_key = keys.load_public_key(req.new_public_key)  # refused as a registration would be
        if req.new_public_key == req.public_key:
            raise RefusedError(ErrorCode.BAD_REQUEST, "the new key is the current key")
        signed = rekey_signed_bytes(req)
        _check_signature(keys.load_public_key(req.public_key), signed, req.signature, "the key")
        _check_signature(new_key, signed, req.new_signature, "the new key")
        _check_clock(ctx.now, req.timestamp)
        outcome, ended = store.rekey_client(
            req.client_id,
            req.public_key,
            req.new_public_key,
            req.nonce,
            req.timestamp,
            oldest_timestamp=ctx.now - CLOCK_SKEW_MS,
            now=ctx.now,
            record=lambda ended: ctx.record(Rekeyed(ended)),
        )
        if outcome is Grant.KEY_MISMATCH:
            raise _bad_proof("this is not the client's registered key")
        if outcome is Grant.NONCE_REPLAYED:
            raise _bad_proof("the nonce was used before")
        return Rekeyed(ended)

    routes = {
        MessageType.KEY_REQUEST: Route(Flags.SEALED_TO_SERVER, exchange, mutating=True),
        MessageType.REKEY_REQUEST: Route(Flags.SEALED_TO_SERVER, rekey, mutating=True),
    }
    routes.update(legacy_key_routes(store, data, session_ttl))  # served only to trusted gateways
    return Dispatcher(routes, store=store, master=data.master, server_key=data.server_key)


# --- the legacy gateway (docs/legacy.md) ---------------------------------------------------
#
# A client of the legacy protocol cannot prove possession of its key our way; a gateway
# the operator trusts speaks for it. The gateway signs each request with its own key,
# whose fingerprint must be listed in ``<data_dir>/trusted_gateways`` (read on every
# request, so removing a line revokes the gateway at once). Only clients the gateway
# registered (flagged legacy) are served here, and only here is RSA-1024 accepted: the
# native exchange refuses keys below 2048 bits, so a legacy key never works there.

TRUSTED_GATEWAYS = "trusted_gateways"


def trusted_gateways(data: DataDir) -> frozenset[bytes]:
    """Fingerprint digests listed in the trusted-gateways file (none if it is absent).

    One fingerprint per line as ``fingerprint`` prints it; ``#`` starts a comment. A line
    that is not a fingerprint is skipped: a typo must not trust anything else.
    """
    try:
        text = (data.path / TRUSTED_GATEWAYS).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return frozenset()
    found = set()
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            try:
                found.add(keys.parse_fingerprint(entry))
            except ConfigError:
                continue
    return frozenset(found)


def verify_gateway(data: DataDir, msg: LegacyRegisterRequest | LegacyKeyRequest, now: int) -> None:
    """Return only if a trusted gateway signed ``msg`` within the clock skew; else bad-proof."""
    gateway_key = keys.load_public_key(msg.gateway_key)
    if keys.fingerprint_digest(msg.gateway_key) not in trusted_gateways(data):
        raise _bad_proof("not a trusted gateway")
    _check_signature(gateway_key, gateway_signed_bytes(msg), msg.signature, "the gateway")
    _check_clock(now, msg.timestamp)


def _legacy_client(store: Store, req: LegacyKeyRequest) -> ClientRow:
    """The legacy client the request names (by id and name, or by name on reconnect)."""
    client = store.find_legacy_client(req.name)
    if client is None or client.revoked or (req.client_id and client.id != req.client_id):
        raise RefusedError(ErrorCode.UNKNOWN_CLIENT, "no such legacy client")
    return client


def legacy_key_routes(store: Store, data: DataDir, session_ttl: float) -> dict[MessageType, Route]:
    """The ``LegacyKeyRequest`` route of the key service."""
    ttl_ms = int(session_ttl * 1000)

    def exchange(ctx: Context, req: LegacyKeyRequest) -> LegacySessionGranted:
        verify_gateway(data, req, ctx.now)
        if bool(req.client_id) != bool(req.public_key):
            raise RemoteProtocolError("client_id and public_key: both set, or both empty")
        client = _legacy_client(store, req)
        public_key = req.public_key or client.public_key
        if public_key is None:  # reconnect before any key was sent
            raise RefusedError(ErrorCode.UNKNOWN_CLIENT, "the legacy client has no key yet")
        if client.public_key is not None and client.public_key != public_key:
            raise _bad_proof("this is not the client's registered key")
        keys.load_legacy_public_key(public_key)
        gateway_key = keys.load_public_key(req.gateway_key)
        return _issue_session(
            ctx,
            store,
            data,
            req,
            expires_at=ctx.now + ttl_ms,
            make_grant=lambda sid, wrapped, expires, _, signature: LegacySessionGranted(
                client.id, public_key, sid, wrapped, expires, signature
            ),
            signed_bytes=legacy_grant_signed_bytes,
            wrap_to=gateway_key,
            client_id=client.id,
            public_key=public_key,
        )

    return {MessageType.LEGACY_KEY_REQUEST: Route(Flags.SEALED_TO_SERVER, exchange, mutating=True)}
