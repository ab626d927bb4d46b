"""cipherdrop.register: server key, registration, names, idempotency, hostile input."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from Crypto.PublicKey import RSA

from common import keys
from common.codec import decode_body, decode_envelope, encode_body
from common.fields import MAX_PUBLIC_KEY_LEN
from common.messages import (
    ErrorReply,
    Flags,
    MessageType,
    Registered,
    RegisterRequest,
    ServerKey,
    ServerKeyRequest,
)

from .server_harness import Client, Server, envelope, error_code, rsa_key


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


@functools.cache
def _bad_public_keys() -> dict[str, bytes]:
    good = keys.public_key_der(rsa_key("alice"))
    return {
        "empty": b"",
        "junk": b"not a key",
        "truncated": good[:-1],
        "trailing byte": good + b"\x00",
        "PEM instead of DER": rsa_key("alice").public_key().export_key("PEM"),
        "RSA-1024": RSA.generate(1024).public_key().export_key("DER"),
        "exponent 3": RSA.construct((RSA.generate(2048, e=3).n, 3)).export_key("DER"),
        "longer than any key": good + bytes(MAX_PUBLIC_KEY_LEN),
    }


@pytest.mark.parametrize("why", list(_bad_public_keys()))
def test_a_key_no_exchange_would_accept_is_refused_and_stores_nothing(
    server: Server, why: str
) -> None:
    client = Client(server, "alice", rsa_key("alice"))
    before = server.dump()
    body = msgpack.packb({"name": "alice", "public_key": _bad_public_keys()[why]})
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
