"""The client's half of the request flows, without I/O: build requests, open replies.

Every builder returns an :class:`Outgoing` (the two body frames plus what is needed to
open the reply); every ``open_*`` function takes that and the reply body and returns a
validated message or raises. Nothing here touches a socket or reads a clock: the caller
passes the time in (``now_ms``). ``docs/protocol.md`` section 5 is the contract.

Guarantees:

* A reply is accepted only if it answers the request (same request id, the expected reply
  type or an error reply) and opens under the key it must be sealed with: the one-time key
  of a request sealed to the server, or the session's server-to-client key.
* A session is granted only if the server's signature over the grant and our request's
  nonce verifies with the pinned server key, so an interceptor cannot hand us a session.
* An :class:`ErrorReply` becomes ``RefusedError(code, sentence)`` whose sentence a person
  can act on. Unsealed error replies are accepted (a server that cannot open a request
  has no key to seal with); they can only make a request fail, which dropping it could too.
* Anything malformed is :class:`RemoteProtocolError`; anything that fails to open or verify
  is the opaque :class:`IntegrityError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import zmq

from common import crypto, keys
from common.codec import (
    decode_body,
    decode_envelope,
    encode_body,
    encode_envelope,
    key_request_signed_bytes,
    new_request_id,
    rekey_signed_bytes,
    session_granted_signed_bytes,
)
from common.ephemeral import Ephemeral
from common.ephemeral import session_key as derive_session_key
from common.errors import RefusedError, RemoteProtocolError
from common.keys import RsaKey
from common.mdp import Part
from common.messages import (
    NO_FLAGS,
    PROTOCOL_VERSION,
    ChunkStored,
    Codec,
    Envelope,
    ErrorCode,
    ErrorReply,
    Flags,
    KeyRequest,
    Message,
    MessageType,
    Registered,
    RegisterRequest,
    RekeyRequest,
    ServerKey,
    ServerKeyRequest,
    SessionGranted,
    StreamPosition,
    reply_type,
    type_of,
)

__all__ = [
    "ZERO_COPY_FROM",
    "KeyExchange",
    "Outgoing",
    "Session",
    "chunk_aad",
    "chunk_request",
    "endorsement_of",
    "key_request",
    "open_registered",
    "open_reply",
    "open_sealed_reply",
    "open_server_key",
    "open_session_granted",
    "refused",
    "register_request",
    "rekey_request",
    "sealed_to_server",
    "server_key_request",
    "session_request",
    "source_secret",
    "source_token",
    "zero_copy",
]

M = TypeVar("M", bound=Message)
ZERO_COPY_FROM = 64 * 1024  # sealed chunks this long or longer are sent without a copy
Buffer = bytes | bytearray | memoryview
Frame = bytes | memoryview  # a received body frame

# What a person can do about each refusal; the server's own words follow after a colon.
SENTENCES: dict[ErrorCode, str] = {
    ErrorCode.BAD_REQUEST: "the server could not understand the request",
    ErrorCode.UNSUPPORTED_VERSION: "the server speaks another protocol version",
    ErrorCode.NAME_TAKEN: "that name is already registered; choose another one",
    ErrorCode.NOT_INVITED: "this server registers only clients with an invite from its operator"
    " (cipherdrop register NAME --invite CODE)",
    ErrorCode.INVALID_NAME: "the server refused the name",
    ErrorCode.UNKNOWN_CLIENT: "the server does not know this client (register again?)",
    ErrorCode.BAD_PROOF: "the server refused this client's proof of identity",
    ErrorCode.SESSION_EXPIRED: "the session has expired",
    ErrorCode.UNKNOWN_SESSION: "the server does not know this session",
    ErrorCode.NOT_FOUND: "no such file or transfer",
    ErrorCode.INTEGRITY: "data failed its integrity check on the server (altered in transit?)",
    ErrorCode.TOO_LARGE: "too large for the server",
    ErrorCode.NO_SPACE: "the server is out of disk space; try again once it has room",
    ErrorCode.OVER_QUOTA: "this client's storage quota on the server is full (free some with"
    " 'cipherdrop rm', or 'cipherdrop rm --partial' for unfinished uploads)",
    ErrorCode.CONFLICT: "the request conflicts with the state of the transfer",
    ErrorCode.INTERNAL: "the server failed; try again",
    ErrorCode.UNAVAILABLE: "the server is busy; try again later",
}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request ready to send, and what it takes to open its reply.

    The payload of a chunk is a ``zmq.Frame`` over the buffer it was sealed into, so
    neither sealing nor sending copies the megabyte; every other payload is ``bytes``.
    """

    frames: tuple[bytes, Part]
    request_id: bytes
    expect: MessageType
    reply_key: bytes | None = field(default=None, repr=False)  # one-time key, if sealed


@dataclass(frozen=True, slots=True)
class Session:
    """A granted session: its id (the envelopes' key_id) and directional keys."""

    client_id: bytes
    session_id: bytes
    keys: crypto.SessionKeys = field(repr=False)
    expires_at: int


@dataclass(frozen=True, slots=True)
class KeyExchange:
    """A key request in flight: the nonce the server's grant must be bound to, and the
    one-use X25519 key whose exchange with the server's gives part of the session key."""

    outgoing: Outgoing
    client_id: bytes
    nonce: bytes
    ephemeral: Ephemeral = field(repr=False)


def refused(reply: ErrorReply) -> RefusedError:
    """The RefusedError for an error reply, worded for a person."""
    sentence = SENTENCES.get(reply.code, "the server refused the request")
    return RefusedError(str(reply.code), f"{sentence}: {reply.message}")


# --- building requests -------------------------------------------------------------------


def _envelope(
    msg_type: MessageType, flags: Flags, client_id: bytes = b"", key_id: bytes = b""
) -> Envelope:
    return Envelope(
        version=PROTOCOL_VERSION,
        type=msg_type,
        client_id=client_id,
        key_id=key_id,
        request_id=new_request_id(),
        flags=flags,
    )


def server_key_request() -> Outgoing:
    """Ask for the server's public key (plain: there is nothing to hide or bind yet)."""
    env = _envelope(MessageType.SERVER_KEY_REQUEST, NO_FLAGS)
    frames = (encode_envelope(env), encode_body(ServerKeyRequest()))
    return Outgoing(frames, env.request_id, MessageType.SERVER_KEY)


def sealed_to_server(server_key: RsaKey, msg: Message) -> Outgoing:
    """``msg`` sealed to the server's long-term key (hybrid RSA-OAEP + AES-GCM)."""
    env = _envelope(type_of(msg), Flags.SEALED_TO_SERVER)
    env_bytes = encode_envelope(env)
    payload, one_time_key = keys.seal_to_public_key(server_key, encode_body(msg), env_bytes)
    return Outgoing((env_bytes, payload), env.request_id, reply_type(env.type), one_time_key)


def register_request(
    server_key: RsaKey, name: str, private_key: RsaKey, invite: bytes = b""
) -> Outgoing:
    """RegisterRequest (the name, ``private_key``'s public half and the operator's invite
    code, if any) sealed to the server key: the code is never readable on the wire."""
    request = RegisterRequest(name, keys.public_key_der(private_key), invite)
    return sealed_to_server(server_key, request)


def key_request(
    server_key: RsaKey, client_id: bytes, name: str, private_key: RsaKey, now_ms: int
) -> KeyExchange:
    """A KeyRequest proving possession of ``private_key``, with a one-use X25519 key,
    sealed to the server key."""
    nonce = secrets.token_bytes(16)
    ephemeral = Ephemeral()
    public_key = keys.public_key_der(private_key)
    unsigned = KeyRequest(client_id, name, public_key, now_ms, nonce, ephemeral.public, b"-")
    signature = keys.sign(private_key, key_request_signed_bytes(unsigned))
    request = dataclasses.replace(unsigned, signature=signature)
    return KeyExchange(sealed_to_server(server_key, request), client_id, nonce, ephemeral)


def rekey_request(
    server_key: RsaKey,
    client_id: bytes,
    name: str,
    private_key: RsaKey,
    new_private_key: RsaKey,
    now_ms: int,
) -> Outgoing:
    """A RekeyRequest from ``private_key`` to ``new_private_key``, signed by both and
    sealed to the server key; its reply is :class:`Rekeyed`."""
    unsigned = RekeyRequest(
        client_id,
        name,
        keys.public_key_der(private_key),
        keys.public_key_der(new_private_key),
        now_ms,
        secrets.token_bytes(16),
        b"-",
        b"-",
    )
    signed = rekey_signed_bytes(unsigned)
    request = dataclasses.replace(
        unsigned,
        signature=keys.sign(private_key, signed),
        new_signature=keys.sign(new_private_key, signed),
    )
    return sealed_to_server(server_key, request)


def source_secret(private_key: RsaKey) -> bytes:
    """The key of this client's source tokens, derived from its private key:
    SHA-256("cipherdrop-source-v1" || d). A client that changed its key pair keeps the one
    of its first key (``source.key`` in its home), so its tokens do not change."""
    d = int(private_key.d)
    return hashlib.sha256(b"cipherdrop-source-v1" + d.to_bytes((d.bit_length() + 7) // 8)).digest()


def source_token(secret: bytes, size: int, mtime_ns: int) -> bytes:
    """``UploadBegin.source``: 16 bytes that change with the file's size and modification
    time, keyed by the client's ``secret`` (:func:`source_secret`), so the server can match
    a resume to the same version of a file without learning when it was modified."""
    version = struct.pack(">Qq", size, mtime_ns)
    return hmac.new(secret, version, hashlib.sha256).digest()[:16]


def session_request(session: Session, msg: Message) -> Outgoing:
    """A control message sealed under the session's client-to-server key."""
    env = _envelope(type_of(msg), Flags.SESSION, session.client_id, session.session_id)
    env_bytes = encode_envelope(env)
    payload = crypto.seal(session.keys.client_to_server, encode_body(msg), env_bytes)
    return Outgoing((env_bytes, payload), env.request_id, reply_type(env.type))


def chunk_aad(transfer_id: bytes, codec: Codec) -> bytes:
    """The caller's part of a chunk's associated data: transfer id and codec byte."""
    return transfer_id + bytes((codec,))


def zero_copy(data_length: int) -> bool:
    """Whether :func:`chunk_request` sends ``data_length`` bytes, sealed, without a copy
    (so the buffer they were sealed into is worth lending, and following)."""
    return data_length + crypto.OVERHEAD >= ZERO_COPY_FROM


def chunk_request(
    session: Session,
    data_key: bytes,
    position: StreamPosition,
    codec: Codec,
    data: Buffer,
    out: bytearray | None = None,
) -> Outgoing:
    """UPLOAD_CHUNK: ``data`` (already compressed per ``codec``) sealed under the data key.

    Sealed into ``out`` when it is large enough: the payload frame then tracks when
    ZeroMQ is done sending it (``payload.tracker``), after which ``out`` may be reused.
    A sealed chunk under :data:`ZERO_COPY_FROM` bytes is a plain buffer, which ZeroMQ
    copies: a frame sent without a copy costs a message to pyzmq's garbage-collector
    thread when it is freed, more than copying a few kilobytes."""
    env = Envelope(
        version=PROTOCOL_VERSION,
        type=MessageType.UPLOAD_CHUNK,
        client_id=session.client_id,
        key_id=session.session_id,
        request_id=new_request_id(),
        flags=Flags.SESSION,
        codec=codec,
        stream=position,
    )
    aad = chunk_aad(position.transfer_id, codec)
    # Sealed straight into the buffer that is sent: one AES-GCM pass, no copy.
    size = len(memoryview(data).cast("B"))
    length = size + crypto.OVERHEAD
    reused = out if out is not None and len(out) >= length else None
    sealed = memoryview(reused if reused is not None else bytearray(length))[:length]
    crypto.seal_chunk_into(data_key, position.index, position.final, data, sealed, aad)
    if not zero_copy(size):
        payload: Part = bytes(sealed)
    else:
        payload = zmq.Frame(sealed, copy=False, track=reused is not None)
    return Outgoing((encode_envelope(env), payload), env.request_id, MessageType.CHUNK_STORED)


# --- opening replies ---------------------------------------------------------------------


def _check_reply(req: Outgoing, reply: Sequence[Frame]) -> tuple[Envelope, bytes, Frame]:
    if len(reply) != 2:
        raise RemoteProtocolError(f"reply has {len(reply)} body frames, expected 2")
    env_bytes = bytes(reply[0])
    env = decode_envelope(env_bytes)
    if env.request_id != req.request_id:
        raise RemoteProtocolError("reply answers another request")
    if env.type not in (req.expect, MessageType.ERROR_REPLY):
        raise RemoteProtocolError(f"reply of type {env.type.name}, expected {req.expect.name}")
    return env, env_bytes, reply[1]


def _body(env: Envelope, plaintext: Frame, cls: type[M]) -> M:
    msg = decode_body(env.type, plaintext)
    if isinstance(msg, ErrorReply):
        raise refused(msg)
    if not isinstance(msg, cls):
        raise RemoteProtocolError(f"reply body is {type(msg).__name__}, expected {cls.__name__}")
    return msg


def _plain_error(env: Envelope, payload: Frame) -> None:
    """Raise the refusal in an unsealed error reply; other unsealed replies are refused."""
    if env.type is not MessageType.ERROR_REPLY:
        raise RemoteProtocolError(f"{env.type.name} reply must be sealed")
    _body(env, payload, ErrorReply)


def open_server_key(req: Outgoing, reply: Sequence[Frame]) -> ServerKey:
    """The server's public key (DER, checked to be a sane RSA key) and, after a change of
    server key, the previous key and its endorsement (checked by the pinning, which is
    the caller's)."""
    env, _, payload = _check_reply(req, reply)
    if env.flags is not NO_FLAGS:
        raise RemoteProtocolError("ServerKey reply must be plain")
    answer = _body(env, payload, ServerKey)
    keys.load_public_key(answer.public_key)
    return answer


def endorsement_of(answer: ServerKey) -> tuple[bytes, bytes] | None:
    """``(previous key DER, its signature)`` of a ServerKey after a change of key, else None."""
    return (answer.previous_key, answer.endorsement) if answer.endorsement else None


def open_sealed_reply(req: Outgoing, reply: Sequence[Frame], cls: type[M]) -> M:
    """The body of a reply sealed under ``req``'s one-time key; a refusal is raised."""
    env, env_bytes, payload = _check_reply(req, reply)
    if env.flags is NO_FLAGS:
        _plain_error(env, payload)
    if env.flags is not Flags.SEALED_REPLY or req.reply_key is None:
        raise RemoteProtocolError(f"reply protected by {env.flags!r}, expected SEALED_REPLY")
    return _body(env, crypto.open_sealed(req.reply_key, payload, env_bytes), cls)


def open_registered(req: Outgoing, reply: Sequence[Frame]) -> bytes:
    """The new client id from a Registered reply."""
    return open_sealed_reply(req, reply, Registered).client_id


def open_session_granted(
    kx: KeyExchange, reply: Sequence[Frame], server_key: RsaKey, private_key: RsaKey
) -> Session:
    """Verify the grant's signature with the pinned server key, unwrap the secret and
    derive the session key from it and the X25519 exchange of the two one-use keys."""
    env, _, payload = _check_reply(kx.outgoing, reply)
    if env.flags is NO_FLAGS and env.type is MessageType.SESSION_GRANTED:
        grant = _body(env, payload, SessionGranted)  # signed, and its key is wrapped to us
    else:
        grant = open_sealed_reply(kx.outgoing, reply, SessionGranted)
    keys.verify(server_key, session_granted_signed_bytes(grant, kx.nonce), grant.signature)
    secret = keys.unwrap_key(private_key, grant.wrapped_key)
    shared = kx.ephemeral.agree(grant.ephemeral)
    session_key = derive_session_key(shared, secret, grant.session_id)
    return Session(
        client_id=kx.client_id,
        session_id=grant.session_id,
        keys=crypto.derive_session_keys(session_key, grant.session_id),
        expires_at=grant.expires_at,
    )


def open_reply(session: Session, req: Outgoing, reply: Sequence[Frame], cls: type[M]) -> M:
    """The body of a session-sealed reply, which must be a ``cls``."""
    env, env_bytes, payload = _check_reply(req, reply)
    if env.flags is NO_FLAGS:
        _plain_error(env, payload)
    if env.flags is not Flags.SESSION or env.key_id != session.session_id:
        raise RemoteProtocolError("reply is not sealed under this session")
    plaintext = crypto.open_sealed(session.keys.server_to_client, payload, env_bytes)
    return _body(env, plaintext, cls)


def open_chunk_stored(session: Session, req: Outgoing, reply: Sequence[Frame]) -> ChunkStored:
    """The ChunkStored answer to an UPLOAD_CHUNK."""
    return open_reply(session, req, reply, ChunkStored)
