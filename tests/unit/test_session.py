"""The client's request/reply core against a fake server made of the same common modules.

No sockets: requests built by ``client.session`` are opened here the way the flows say a
server opens them, and the fake's replies are opened by ``client.session``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from client import session as core
from common import crypto, keys
from common.codec import (
    decode_body,
    decode_envelope,
    encode_body,
    encode_envelope,
    key_request_signed_bytes,
    session_granted_signed_bytes,
)
from common.compress import decompress_chunk
from common.ephemeral import Ephemeral, session_key
from common.errors import IntegrityError, RefusedError, RemoteProtocolError
from common.keys import RsaKey
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
    ServerKey,
    SessionGranted,
    StreamPosition,
    UploadBegin,
    UploadReady,
    type_of,
)

CLIENT_ID = bytes(range(16))
NOW_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def server_key() -> RsaKey:
    return keys.generate_private_key(2048)


@pytest.fixture(scope="module")
def client_key() -> RsaKey:
    return keys.generate_private_key(2048)


def reply(
    request_id: bytes,
    msg: Message,
    flags: Flags = NO_FLAGS,
    key: bytes | None = None,
    key_id: bytes = b"",
) -> list[bytes]:
    """What a server sends back: envelope + body, sealed under ``key`` when given."""
    env = encode_envelope(Envelope(PROTOCOL_VERSION, type_of(msg), b"", key_id, request_id, flags))
    body = encode_body(msg)
    return [env, body if key is None else crypto.seal(key, body, env)]


def open_sealed_request(server_key: RsaKey, frames: Sequence[bytes]) -> tuple[Message, bytes]:
    """What the server does with a SEALED_TO_SERVER request: (message, one-time key)."""
    env = decode_envelope(frames[0])
    assert env.flags is Flags.SEALED_TO_SERVER
    plain, one_time = keys.open_with_private_key(server_key, frames[1], frames[0])
    return decode_body(env.type, plain), one_time


def grant(
    server_key: RsaKey, client_key: RsaKey, request: KeyRequest, nonce: bytes | None = None
) -> tuple[SessionGranted, bytes]:
    """What the key worker answers ``request`` (bound to ``nonce``, by default the
    request's): the grant, and the session key both sides derive from it."""
    secret, server_ephemeral, session_id = crypto.random_key(), Ephemeral(), b"S" * 16
    unsigned = SessionGranted(
        session_id,
        keys.wrap_key(client_key.public_key(), secret),
        NOW_MS + 3600_000,
        server_ephemeral.public,
        b"-",
    )
    signed = session_granted_signed_bytes(unsigned, nonce or request.nonce)
    signature = keys.sign(server_key, signed)
    shared = server_ephemeral.agree(request.ephemeral)
    return dataclasses.replace(unsigned, signature=signature), session_key(
        shared, secret, session_id
    )


def make_session(server_key: RsaKey, client_key: RsaKey) -> core.Session:
    kx = core.key_request(server_key.public_key(), CLIENT_ID, "alice", client_key, NOW_MS)
    msg, one_time = open_sealed_request(server_key, kx.outgoing.frames)
    assert isinstance(msg, KeyRequest)
    granted, _ = grant(server_key, client_key, msg)
    frames = reply(kx.outgoing.request_id, granted, Flags.SEALED_REPLY, one_time)
    return core.open_session_granted(kx, frames, server_key.public_key(), client_key)


# --- server key ----------------------------------------------------------------------------


def test_server_key_round_trip(server_key: RsaKey) -> None:
    req = core.server_key_request()
    assert decode_envelope(req.frames[0]).type is MessageType.SERVER_KEY_REQUEST
    der = keys.public_key_der(server_key)
    assert core.open_server_key(req, reply(req.request_id, ServerKey(der))) == ServerKey(der)
    endorsed = ServerKey(der, b"\x30" * 294, b"\x01" * 384)  # checked by the pinning
    assert core.open_server_key(req, reply(req.request_id, endorsed)) == endorsed


def test_reply_to_another_request_is_refused(server_key: RsaKey) -> None:
    req = core.server_key_request()
    der = keys.public_key_der(server_key)
    with pytest.raises(RemoteProtocolError, match="another request"):
        core.open_server_key(req, reply(b"x" * 16, ServerKey(der)))


def test_server_key_that_is_not_an_rsa_key_is_refused() -> None:
    req = core.server_key_request()
    with pytest.raises(RemoteProtocolError):
        core.open_server_key(req, reply(req.request_id, ServerKey(b"\x30\x03junk")))


def test_reply_with_extra_frames_is_refused(server_key: RsaKey) -> None:
    req = core.server_key_request()
    frames = reply(req.request_id, ServerKey(keys.public_key_der(server_key)))
    with pytest.raises(RemoteProtocolError, match="3 body frames"):
        core.open_server_key(req, [*frames, b""])


# --- registration --------------------------------------------------------------------------


def test_register_round_trip(server_key: RsaKey, client_key: RsaKey) -> None:
    req = core.register_request(server_key.public_key(), "alice", client_key)
    msg, one_time = open_sealed_request(server_key, req.frames)
    assert msg == RegisterRequest("alice", keys.public_key_der(client_key))
    frames = reply(req.request_id, Registered(CLIENT_ID), Flags.SEALED_REPLY, one_time)
    assert core.open_registered(req, frames) == CLIENT_ID


def test_register_request_hides_the_name(server_key: RsaKey, client_key: RsaKey) -> None:
    req = core.register_request(server_key.public_key(), "a-very-recognisable-name", client_key)
    assert b"recognisable" not in b"".join(req.frames)


def test_unsealed_registered_reply_is_refused(server_key: RsaKey, client_key: RsaKey) -> None:
    # An interceptor cannot hand us a client id of its choosing.
    req = core.register_request(server_key.public_key(), "alice", client_key)
    with pytest.raises(RemoteProtocolError, match="must be sealed"):
        core.open_registered(req, reply(req.request_id, Registered(CLIENT_ID)))


def test_registered_reply_under_another_key_fails_integrity(
    server_key: RsaKey, client_key: RsaKey
) -> None:
    req = core.register_request(server_key.public_key(), "alice", client_key)
    frames = reply(req.request_id, Registered(CLIENT_ID), Flags.SEALED_REPLY, crypto.random_key())
    with pytest.raises(IntegrityError):
        core.open_registered(req, frames)


def test_tampered_registered_envelope_fails_integrity(
    server_key: RsaKey, client_key: RsaKey
) -> None:
    req = core.register_request(server_key.public_key(), "alice", client_key)
    _, one_time = open_sealed_request(server_key, req.frames)
    env, payload = reply(req.request_id, Registered(CLIENT_ID), Flags.SEALED_REPLY, one_time)
    tampered = encode_envelope(dataclasses.replace(decode_envelope(env), client_id=b"z" * 16))
    with pytest.raises(IntegrityError):
        core.open_registered(req, [tampered, payload])


def test_name_taken_becomes_a_clear_refusal(server_key: RsaKey, client_key: RsaKey) -> None:
    req = core.register_request(server_key.public_key(), "alice", client_key)
    _, one_time = open_sealed_request(server_key, req.frames)
    error = ErrorReply(ErrorCode.NAME_TAKEN, "the name alice is taken")
    frames = reply(req.request_id, error, Flags.SEALED_REPLY, one_time)
    with pytest.raises(RefusedError) as info:
        core.open_registered(req, frames)
    assert info.value.code == "name-taken"
    assert "already registered" in str(info.value)
    assert "the name alice is taken" in str(info.value)


def test_plain_error_reply_is_accepted_before_any_key(
    server_key: RsaKey, client_key: RsaKey
) -> None:
    req = core.register_request(server_key.public_key(), "alice", client_key)
    frames = reply(req.request_id, ErrorReply(ErrorCode.INTEGRITY, "cannot open"))
    with pytest.raises(RefusedError) as info:
        core.open_registered(req, frames)
    assert info.value.code == "integrity"


# --- key exchange --------------------------------------------------------------------------


def test_key_request_carries_a_valid_proof(server_key: RsaKey, client_key: RsaKey) -> None:
    kx = core.key_request(server_key.public_key(), CLIENT_ID, "alice", client_key, NOW_MS)
    msg, _ = open_sealed_request(server_key, kx.outgoing.frames)
    assert isinstance(msg, KeyRequest)
    assert (msg.client_id, msg.name, msg.timestamp, msg.nonce) == (
        CLIENT_ID,
        "alice",
        NOW_MS,
        kx.nonce,
    )
    assert msg.public_key == keys.public_key_der(client_key)
    keys.verify(client_key.public_key(), key_request_signed_bytes(msg), msg.signature)
    # The client id is not in clear on the wire before a key is set.
    assert decode_envelope(kx.outgoing.frames[0]).client_id == b""
    assert CLIENT_ID not in kx.outgoing.frames[1]


def test_every_key_request_has_a_fresh_nonce(server_key: RsaKey, client_key: RsaKey) -> None:
    first = core.key_request(server_key.public_key(), CLIENT_ID, "alice", client_key, NOW_MS)
    second = core.key_request(server_key.public_key(), CLIENT_ID, "alice", client_key, NOW_MS)
    assert first.nonce != second.nonce


def test_session_granted_round_trip(server_key: RsaKey, client_key: RsaKey) -> None:
    kx = core.key_request(server_key.public_key(), CLIENT_ID, "alice", client_key, NOW_MS)
    msg, one_time = open_sealed_request(server_key, kx.outgoing.frames)
    assert isinstance(msg, KeyRequest)
    granted, derived = grant(server_key, client_key, msg)
    frames = reply(kx.outgoing.request_id, granted, Flags.SEALED_REPLY, one_time)
    session = core.open_session_granted(kx, frames, server_key.public_key(), client_key)
    assert session.session_id == granted.session_id
    assert session.client_id == CLIENT_ID
    assert session.expires_at == granted.expires_at
    assert session.keys == crypto.derive_session_keys(derived, granted.session_id)


def test_the_session_key_needs_the_one_use_key_of_this_exchange(
    server_key: RsaKey, client_key: RsaKey
) -> None:
    # Forward secrecy: the RSA key unwraps only part of what makes the session key. A
    # grant whose X25519 half is exchanged with another one-use key gives other keys,
    # and the server's one-use key must be a proper X25519 key.
    kx = core.key_request(server_key.public_key(), CLIENT_ID, "alice", client_key, NOW_MS)
    msg, one_time = open_sealed_request(server_key, kx.outgoing.frames)
    assert isinstance(msg, KeyRequest) and msg.ephemeral == kx.ephemeral.public
    granted, derived = grant(server_key, client_key, msg)
    secret = keys.unwrap_key(client_key, granted.wrapped_key)
    assert derived != secret
    other = Ephemeral().agree(granted.ephemeral)
    assert session_key(other, secret, granted.session_id) != derived
    unsigned = dataclasses.replace(granted, ephemeral=bytes(32))  # small order: secret 0
    signed = session_granted_signed_bytes(unsigned, msg.nonce)
    forged = dataclasses.replace(unsigned, signature=keys.sign(server_key, signed))
    frames = reply(kx.outgoing.request_id, forged, Flags.SEALED_REPLY, one_time)
    with pytest.raises(IntegrityError):
        core.open_session_granted(kx, frames, server_key.public_key(), client_key)


def test_grant_signed_by_another_server_is_refused(server_key: RsaKey, client_key: RsaKey) -> None:
    impostor = keys.generate_private_key(2048)
    kx = core.key_request(server_key.public_key(), CLIENT_ID, "alice", client_key, NOW_MS)
    msg, one_time = open_sealed_request(server_key, kx.outgoing.frames)
    assert isinstance(msg, KeyRequest)
    granted, _ = grant(impostor, client_key, msg)
    frames = reply(kx.outgoing.request_id, granted, Flags.SEALED_REPLY, one_time)
    with pytest.raises(IntegrityError):
        core.open_session_granted(kx, frames, server_key.public_key(), client_key)


def test_grant_for_another_request_is_refused(server_key: RsaKey, client_key: RsaKey) -> None:
    # A recorded grant replayed as the answer to a new request: the nonce differs.
    old = core.key_request(server_key.public_key(), CLIENT_ID, "alice", client_key, NOW_MS)
    kx = core.key_request(server_key.public_key(), CLIENT_ID, "alice", client_key, NOW_MS)
    msg, _ = open_sealed_request(server_key, kx.outgoing.frames)
    assert isinstance(msg, KeyRequest)
    granted, _ = grant(server_key, client_key, msg, nonce=old.nonce)
    frames = reply(kx.outgoing.request_id, granted)
    with pytest.raises(IntegrityError):
        core.open_session_granted(kx, frames, server_key.public_key(), client_key)


def test_bad_proof_refusal_is_mapped(server_key: RsaKey, client_key: RsaKey) -> None:
    kx = core.key_request(server_key.public_key(), CLIENT_ID, "alice", client_key, NOW_MS)
    _, one_time = open_sealed_request(server_key, kx.outgoing.frames)
    error = ErrorReply(ErrorCode.BAD_PROOF, "the signature does not verify")
    frames = reply(kx.outgoing.request_id, error, Flags.SEALED_REPLY, one_time)
    with pytest.raises(RefusedError) as info:
        core.open_session_granted(kx, frames, server_key.public_key(), client_key)
    assert info.value.code == "bad-proof"


# --- session requests ----------------------------------------------------------------------


def test_session_request_round_trip(server_key: RsaKey, client_key: RsaKey) -> None:
    session = make_session(server_key, client_key)
    req = core.session_request(session, UploadBegin("notes.txt", 10, 4, 3))
    env = decode_envelope(req.frames[0])
    assert (env.flags, env.key_id, env.client_id) == (Flags.SESSION, b"S" * 16, CLIENT_ID)
    plain = crypto.open_sealed(session.keys.client_to_server, req.frames[1], req.frames[0])
    assert decode_body(env.type, plain) == UploadBegin("notes.txt", 10, 4, 3)
    ready = UploadReady(b"T" * 16, b"K" * 32, (0, 2))
    frames = reply(req.request_id, ready, Flags.SESSION, session.keys.server_to_client, b"S" * 16)
    assert core.open_reply(session, req, frames, UploadReady) == ready


def test_reflected_request_does_not_open_as_a_reply(server_key: RsaKey, client_key: RsaKey) -> None:
    session = make_session(server_key, client_key)
    req = core.session_request(session, UploadBegin("a", 0, 4, 1))
    ready = UploadReady(b"T" * 16, b"K" * 32, ())
    frames = reply(req.request_id, ready, Flags.SESSION, session.keys.client_to_server, b"S" * 16)
    with pytest.raises(IntegrityError):
        core.open_reply(session, req, frames, UploadReady)


def test_reply_under_another_session_is_refused(server_key: RsaKey, client_key: RsaKey) -> None:
    session = make_session(server_key, client_key)
    req = core.session_request(session, UploadBegin("a", 0, 4, 1))
    ready = UploadReady(b"T" * 16, b"K" * 32, ())
    frames = reply(req.request_id, ready, Flags.SESSION, session.keys.server_to_client, b"X" * 16)
    with pytest.raises(RemoteProtocolError, match="not sealed under this session"):
        core.open_reply(session, req, frames, UploadReady)


def test_unknown_session_refusal_keeps_its_code(server_key: RsaKey, client_key: RsaKey) -> None:
    session = make_session(server_key, client_key)
    req = core.session_request(session, UploadBegin("a", 0, 4, 1))
    frames = reply(req.request_id, ErrorReply(ErrorCode.UNKNOWN_SESSION, "no such session"))
    with pytest.raises(RefusedError) as info:
        core.open_reply(session, req, frames, UploadReady)
    assert info.value.code == "unknown-session"


def test_chunk_request_opens_at_its_position(server_key: RsaKey, client_key: RsaKey) -> None:
    session = make_session(server_key, client_key)
    data_key = crypto.random_key()
    transfer = b"T" * 16
    position = StreamPosition(transfer, 7, True)
    req = core.chunk_request(session, data_key, position, Codec.NONE, memoryview(b"chunk bytes"))
    env = decode_envelope(req.frames[0])
    assert env.stream == position and env.codec is Codec.NONE
    aad = core.chunk_aad(transfer, Codec.NONE)
    assert crypto.open_chunk(data_key, 7, True, req.frames[1], aad) == b"chunk bytes"
    for index, final in ((6, True), (7, False)):  # moved or un-finalised: refused
        with pytest.raises(IntegrityError):
            crypto.open_chunk(data_key, index, final, req.frames[1], aad)
    with pytest.raises(IntegrityError):  # codec relabelled
        crypto.open_chunk(data_key, 7, True, req.frames[1], core.chunk_aad(transfer, Codec.ZLIB))
    stored = reply(
        req.request_id,
        ChunkStored(transfer, 7),
        Flags.SESSION,
        session.keys.server_to_client,
        b"S" * 16,
    )
    assert core.open_chunk_stored(session, req, stored) == ChunkStored(transfer, 7)


def test_compressed_chunk_round_trip(server_key: RsaKey, client_key: RsaKey) -> None:
    import zlib

    session = make_session(server_key, client_key)
    data_key = crypto.random_key()
    packed = zlib.compress(b"a" * 1000, 1)
    position = StreamPosition(b"T" * 16, 0, False)
    req = core.chunk_request(session, data_key, position, Codec.ZLIB, packed)
    opened = crypto.open_chunk(
        data_key, 0, False, req.frames[1], core.chunk_aad(b"T" * 16, Codec.ZLIB)
    )
    assert decompress_chunk(Codec.ZLIB, opened, 1000) == b"a" * 1000


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_has_a_sentence(code: ErrorCode) -> None:
    error = core.refused(ErrorReply(code, "server words"))
    assert error.code == str(code)
    assert str(error).endswith(": server words")
    assert code in core.SENTENCES


# --- the shell around the core: reconnect once on a lost session ---------------------------


class FakeConnection:
    """Answers like a server whose first session is forgotten after the first grant."""

    def __init__(self, server_key: RsaKey, client_key: RsaKey, lose_sessions: int) -> None:
        self.server_key, self.client_key = server_key, client_key
        self.lose_sessions = lose_sessions
        self.grants = 0
        self.file_requests = 0

    def send(self, service: str, req: core.Outgoing) -> list[bytes]:
        env = decode_envelope(req.frames[0])
        if service == "cipherdrop.key":
            msg, one_time = open_sealed_request(self.server_key, req.frames)
            assert isinstance(msg, KeyRequest)
            granted, self.session_key = grant(self.server_key, self.client_key, msg)
            self.grants += 1
            return reply(env.request_id, granted, Flags.SEALED_REPLY, one_time)
        self.file_requests += 1
        if self.lose_sessions:
            self.lose_sessions -= 1
            return reply(env.request_id, ErrorReply(ErrorCode.UNKNOWN_SESSION, "gone"))
        keys_ = crypto.derive_session_keys(self.session_key, env.key_id)
        ready = UploadReady(b"T" * 16, b"K" * 32, ())
        return reply(env.request_id, ready, Flags.SESSION, keys_.server_to_client, env.key_id)


def make_account(conn: FakeConnection, server_key: RsaKey, client_key: RsaKey) -> object:
    from pathlib import Path

    from client.connection import Account
    from client.identity import Identity

    identity = Identity("alice", CLIENT_ID, "tcp://x:1", "SHA256:x", Path("."))
    return Account(
        conn,  # type: ignore[arg-type]
        identity,
        client_key,
        server_key.public_key(),
        clock=lambda: NOW_MS / 1000,
    )


def test_lost_session_reconnects_once_and_retries(server_key: RsaKey, client_key: RsaKey) -> None:
    conn = FakeConnection(server_key, client_key, lose_sessions=1)
    account = make_account(conn, server_key, client_key)
    ready = account.call(UploadBegin("a", 0, 4, 1), UploadReady)  # type: ignore[attr-defined]
    assert ready.transfer_id == b"T" * 16
    assert (conn.grants, conn.file_requests) == (2, 2)


def test_session_lost_twice_is_an_error(server_key: RsaKey, client_key: RsaKey) -> None:
    conn = FakeConnection(server_key, client_key, lose_sessions=2)
    account = make_account(conn, server_key, client_key)
    with pytest.raises(RefusedError) as info:
        account.call(UploadBegin("a", 0, 4, 1), UploadReady)  # type: ignore[attr-defined]
    assert info.value.code == "unknown-session"
    assert (conn.grants, conn.file_requests) == (2, 2)


# --- the source token of an upload ---------------------------------------------------------


def test_source_token_names_a_file_version_for_this_client_only(
    client_key: RsaKey, server_key: RsaKey
) -> None:
    secret = core.source_secret(client_key)
    assert len(secret) == 32 and secret == core.source_secret(client_key)
    token = core.source_token(secret, 1000, 1_700_000_000_123_456_789)
    assert len(token) == 16
    assert token == core.source_token(secret, 1000, 1_700_000_000_123_456_789)
    others = {
        core.source_token(secret, 1001, 1_700_000_000_123_456_789),  # grew
        core.source_token(secret, 1000, 1_700_000_000_123_456_790),  # touched
        core.source_token(core.source_secret(server_key), 1000, 1_700_000_000_123_456_789),
        core.source_token(secret, 1000, -1),  # before 1970
    }
    assert token not in others and len(others) == 4
