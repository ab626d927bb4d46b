"""cipherdrop.register: server key, registration, names, idempotency, hostile input."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from common import keys
from common.codec import decode_body, decode_envelope, encode_body, server_key_endorsement_bytes
from common.messages import (
    ErrorReply,
    Flags,
    MessageType,
    Registered,
    RegisterRequest,
    ServerKey,
    ServerKeyRequest,
)
from common.secretfile import write_secret_file
from workers.admin_store import AdminStore
from workers.register import invite_digest, register_service

from .server_harness import Client, Server, bad_public_keys, envelope, error_code, rsa_key


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "var")
    yield running
    running.close()


def plain_reply(frames: list[bytes]) -> tuple[Flags, object]:
    env = decode_envelope(frames[0])
    return env.flags, decode_body(env.type, frames[1])


def test_server_key_request_is_answered_in_plain_with_the_public_key(server: Server) -> None:
    frames = [envelope(MessageType.SERVER_KEY_REQUEST), encode_body(ServerKeyRequest())]
    flags, reply = plain_reply(server.call("register", frames))
    assert flags == Flags(0)
    assert isinstance(reply, ServerKey)
    assert keys.fingerprint(reply.public_key) == server.data.fingerprint


def test_after_a_change_of_key_the_previous_key_endorses_the_new_one(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir(mode=0o700)
    previous = rsa_key("previous server")
    write_secret_file(
        tmp_path / "var" / "server_key.previous.pem", keys.private_key_to_pem(previous)
    )
    server = Server(tmp_path / "var")
    try:
        frames = [envelope(MessageType.SERVER_KEY_REQUEST), encode_body(ServerKeyRequest())]
        _, reply = plain_reply(server.call("register", frames))
    finally:
        server.close()
    assert isinstance(reply, ServerKey)
    assert reply.previous_key == keys.public_key_der(previous)
    signed = server_key_endorsement_bytes(reply.previous_key, reply.public_key)
    keys.verify(previous.public_key(), signed, reply.endorsement)
    assert reply.public_key == server.data.server_public_der != reply.previous_key


def test_register_returns_a_new_16_byte_id_sealed_to_the_one_time_key(server: Server) -> None:
    alice = Client(server, "alice", rsa_key("alice"))
    reply = alice.register()
    assert isinstance(reply, Registered) and len(reply.client_id) == 16
    row = server.store.get_client(reply.client_id)
    assert row is not None and row.name == "alice" and row.public_key == alice.public_der


def test_a_taken_name_is_refused(server: Server) -> None:
    Client(server, "alice", rsa_key("alice")).register()
    before = server.dump()
    assert error_code(Client(server, "alice", rsa_key("mallory")).register()) == "name-taken"
    assert server.dump() == before


@pytest.mark.parametrize(
    "name", ["", "a/b", "../x", "nul\x00byte", "x" * 256, " lead", "trail ", "bidi\u202e"]
)
def test_invalid_names_are_refused_and_store_nothing(server: Server, name: str) -> None:
    before = server.dump()
    client = Client(server, "placeholder", rsa_key("alice"))
    body = encode_body(RegisterRequest("placeholder", client.public_der)).replace(
        b"\xabplaceholder", _msgpack_str(name)
    )
    env = envelope(MessageType.REGISTER_REQUEST, flags=Flags.SEALED_TO_SERVER)
    payload, key = keys.seal_to_public_key(client.server_public, body, env)
    reply = client.open_reply(server.call("register", [env, payload]), env, key)
    assert error_code(reply) == "invalid-name"
    assert server.dump() == before


@pytest.mark.parametrize("why", list(bad_public_keys()))
def test_a_key_no_exchange_would_accept_is_refused_and_stores_nothing(
    server: Server, why: str
) -> None:
    client = Client(server, "alice", rsa_key("alice"))
    before = server.dump()
    body = msgpack.packb({"name": "alice", "public_key": bad_public_keys()[why]})
    env = envelope(MessageType.REGISTER_REQUEST, flags=Flags.SEALED_TO_SERVER)
    payload, key = keys.seal_to_public_key(client.server_public, body, env)
    reply = client.open_reply(server.call("register", [env, payload]), env, key)
    assert error_code(reply) == "bad-request"
    assert server.dump() == before
    assert isinstance(client.register(), Registered)  # the name is still free, served as usual


def _msgpack_str(text: str) -> bytes:
    packed: bytes = msgpack.packb(text)
    return packed


def test_a_retried_request_gets_the_same_reply_and_changes_nothing(server: Server) -> None:
    alice = Client(server, "alice", rsa_key("alice"))
    request_id = b"r" * 16
    first = alice.register(request_id)
    before = server.dump()
    assert alice.register(request_id) == first  # resealed under the retry's new one-time key
    assert server.dump() == before
    assert server.outcomes[-1] == "replayed"


def test_a_request_id_reused_for_another_body_is_a_conflict(server: Server) -> None:
    Client(server, "alice", rsa_key("alice")).register(b"r" * 16)
    before = server.dump()
    assert error_code(Client(server, "bob", rsa_key("bob")).register(b"r" * 16)) == "conflict"
    assert server.dump() == before


def test_a_plain_register_request_is_refused(server: Server) -> None:
    frames = [envelope(MessageType.REGISTER_REQUEST), encode_body(RegisterRequest("eve", b"k"))]
    flags, reply = plain_reply(server.call("register", frames))
    assert flags == Flags(0) and isinstance(reply, ErrorReply)
    assert reply.code == "bad-request"


def test_a_tampered_sealed_request_is_an_integrity_error_in_plain(server: Server) -> None:
    alice = Client(server, "alice", rsa_key("alice"))
    frames, _ = alice.sealed(RegisterRequest("alice", alice.public_der))
    tampered = bytearray(frames[1])
    tampered[-1] ^= 1
    flags, reply = plain_reply(server.call("register", [frames[0], bytes(tampered)]))
    assert flags == Flags(0) and isinstance(reply, ErrorReply) and reply.code == "integrity"
    assert server.store.list_files(b"") == []


def test_requests_of_other_services_are_refused(server: Server) -> None:
    frames = [envelope(MessageType.LIST_FILES), b"\x80"]
    _, reply = plain_reply(server.call("register", frames))
    assert isinstance(reply, ErrorReply) and reply.code == "bad-request"


def test_an_unreadable_envelope_is_answered_with_the_zero_request_id(server: Server) -> None:
    frames = server.call("register", [b"\x93\x01", b""])
    env = decode_envelope(frames[0])
    assert env.request_id == bytes(16) and env.type == MessageType.ERROR_REPLY
    assert decode_body(env.type, frames[1]).code == "bad-request"  # type: ignore[union-attr]
    other_version = bytes([0x98, 0x02]) + b"\x00" * 6
    _, reply = plain_reply(server.call("register", [other_version, b""]))
    assert isinstance(reply, ErrorReply) and reply.code == "unsupported-version"


# --- registration by invite ---------------------------------------------------------------------


@pytest.fixture
def invites_only(server: Server) -> Server:
    server.register = register_service(server.store, server.data, invites_only=True)
    return server


def make_invite(server: Server, valid_ms: int = 60_000) -> bytes:
    """What ``cipherdrop-admin invite`` does: a code, and its digest kept until it expires."""
    code = os.urandom(16)
    admin = AdminStore(server.store._db)  # the server's own connection: not closed here
    admin.create_invite(invite_digest(code), server.now, server.now + valid_ms)
    return code


def test_an_invite_is_used_up_by_the_registration_it_allows(invites_only: Server) -> None:
    server = invites_only
    code = make_invite(server)
    alice = Client(server, "alice", rsa_key("alice"))
    assert isinstance(alice.register(invite=code), Registered)
    assert server.store.get_client(alice.client_id) is not None
    stored = server.store._db.execute("SELECT count(*) FROM invites").fetchone()[0]
    assert stored == 0
    before = server.dump()
    refused = Client(server, "bob", rsa_key("bob")).register(invite=code)  # used
    assert error_code(refused) == "not-invited"
    assert isinstance(refused, ErrorReply) and "unknown, used or expired" in refused.message
    assert server.dump() == before


def test_without_a_valid_invite_nothing_is_registered(invites_only: Server) -> None:
    server = invites_only
    expired = make_invite(server, valid_ms=1)
    server.now += 1
    before = server.dump()
    for invite in (b"", os.urandom(16), expired):
        reply = Client(server, "eve", rsa_key("eve")).register(invite=invite)
        assert error_code(reply) == "not-invited", invite
    assert server.dump() == before
    assert isinstance(
        Client(server, "eve", rsa_key("eve")).register(invite=make_invite(server)), Registered
    )


def test_a_taken_name_leaves_the_invite_for_another_try(invites_only: Server) -> None:
    server = invites_only
    Client(server, "alice", rsa_key("alice")).register(invite=make_invite(server))
    code = make_invite(server)
    assert (
        error_code(Client(server, "alice", rsa_key("other")).register(invite=code)) == "name-taken"
    )
    assert isinstance(Client(server, "alice2", rsa_key("other")).register(invite=code), Registered)


def test_a_retried_invited_registration_gets_the_recorded_reply(invites_only: Server) -> None:
    server = invites_only
    alice = Client(server, "alice", rsa_key("alice"))
    code, request_id = make_invite(server), os.urandom(16)
    first = alice.register(request_id, invite=code)
    assert isinstance(first, Registered)
    assert alice.register(request_id, invite=code) == first  # the invite is spent, yet


def test_an_open_server_ignores_invites(server: Server) -> None:
    reply = Client(server, "alice", rsa_key("alice")).register(invite=os.urandom(16))
    assert isinstance(reply, Registered)
