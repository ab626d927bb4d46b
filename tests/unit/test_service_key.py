"""cipherdrop.key: proof of possession of the registered key, replays, fresh session keys;
and RekeyRequest, which moves a client to a new key signed by the old and the new.

Every refusal leaves the store as it was and the client on its old key; a move ends every
session the client had, including in the file service's session cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from common import keys
from common.codec import key_request_signed_bytes
from common.messages import FileList, Flags, ListFiles, MessageType, Rekeyed, SessionGranted
from workers.keyx import CLOCK_SKEW_MS

from .server_harness import Client, Server, bad_public_keys, envelope, error_code, rsa_key


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "var", session_ttl=600.0)
    yield running
    running.close()


@pytest.fixture
def alice(server: Server) -> Client:
    client = Client(server, "alice", rsa_key("alice"))
    client.register()
    return client


def sessions(server: Server) -> int:
    return int(server.store._db.execute("SELECT count(*) FROM sessions").fetchone()[0])


def test_key_exchange_grants_a_signed_session_wrapped_to_the_client(
    server: Server, alice: Client
) -> None:
    grant = alice.connect()  # the harness checks the signature and unwraps the key
    assert isinstance(grant, SessionGranted)
    assert grant.expires_at == server.now + 600_000
    assert len(alice.session_key) == 32 and len(alice.session_id) == 16
    row = server.store.get_client(alice.client_id)
    assert row is not None and row.public_key == keys.public_key_der(alice.key)
    session = server.store.get_session(alice.session_id)
    assert session is not None and alice.session_key not in session.session_key


def test_reconnect_gives_a_new_session_key(server: Server, alice: Client) -> None:
    alice.connect()
    first = (alice.session_id, alice.session_key)
    alice.connect()
    assert alice.session_id != first[0] and alice.session_key != first[1]
    assert sessions(server) == 2


def test_an_unknown_client_is_refused(server: Server) -> None:
    ghost = Client(server, "ghost", rsa_key("alice"), client_id=b"g" * 16)
    assert error_code(ghost.connect()) == "unknown-client"
    assert sessions(server) == 0


def test_the_name_must_match_the_registered_one(server: Server, alice: Client) -> None:
    renamed = Client(server, "alicia", alice.key, client_id=alice.client_id)
    assert error_code(renamed.connect()) == "unknown-client"


def test_a_bad_signature_is_refused(server: Server, alice: Client) -> None:
    request = alice.key_request()
    forged = dataclasses.replace(request, signature=bytes(len(request.signature)))
    before = server.dump()
    assert error_code(alice.connect(forged)) == "bad-proof"
    assert server.dump() == before


def test_nobody_can_replace_another_clients_public_key(server: Server, alice: Client) -> None:
    alice.connect()
    # Mallory knows alice's id and name and signs with her own key: a valid proof of
    # possession of *her* key, which must not replace alice's.
    mallory = Client(server, "alice", rsa_key("mallory"), client_id=alice.client_id)
    before = server.dump()
    assert error_code(mallory.connect()) == "bad-proof"
    assert server.dump() == before
    assert isinstance(alice.connect(), SessionGranted)


def test_a_new_client_cannot_be_claimed_with_another_key(server: Server, alice: Client) -> None:
    # Mallory learned alice's new id before alice's first key exchange: the key alice
    # registered with is the only one that gets a session.
    mallory = Client(server, "alice", rsa_key("mallory"), client_id=alice.client_id)
    before = server.dump()
    assert error_code(mallory.connect()) == "bad-proof"
    assert server.dump() == before
    assert isinstance(alice.connect(), SessionGranted)


def test_a_client_registered_without_a_key_takes_the_first_that_proves_itself(
    server: Server, alice: Client
) -> None:
    # A row an earlier server wrote, whose registration did not carry the key.
    server.store._db.execute(
        "UPDATE clients SET public_key = NULL WHERE id = ?", (alice.client_id,)
    )
    mallory = Client(server, "alice", rsa_key("mallory"), client_id=alice.client_id)
    assert isinstance(mallory.connect(), SessionGranted)
    assert error_code(alice.connect()) == "bad-proof"  # once set, the key sticks


def test_a_replayed_key_request_changes_nothing(server: Server, alice: Client) -> None:
    request = alice.key_request()
    frames, one_time_key = alice.sealed(request)
    first = alice.open_reply(server.call("key", frames), frames[0], one_time_key)
    before = server.dump()
    replayed = alice.open_reply(server.call("key", frames), frames[0], one_time_key)
    assert replayed == first and server.outcomes[-1] == "replayed"
    assert server.dump() == before and sessions(server) == 1


def test_a_spent_nonce_under_a_new_request_id_is_refused(server: Server, alice: Client) -> None:
    request = alice.key_request()
    assert isinstance(alice.connect(request), SessionGranted)
    before = server.dump()
    assert error_code(alice.connect(request)) == "bad-proof"  # new request id, same nonce
    assert server.dump() == before


@pytest.mark.parametrize("skew", [CLOCK_SKEW_MS + 1, -CLOCK_SKEW_MS - 1])
def test_a_timestamp_outside_the_window_is_refused(
    server: Server, alice: Client, skew: int
) -> None:
    request = alice.key_request(timestamp=server.now + skew)
    assert error_code(alice.connect(request)) == "bad-proof"
    assert sessions(server) == 0


def test_a_one_use_key_of_small_order_is_refused(server: Server, alice: Client) -> None:
    # Such a key would make the X25519 secret zero: the session key would then rest on
    # the RSA-wrapped secret alone, without forward secrecy.
    unsigned = dataclasses.replace(alice.key_request(), ephemeral=bytes(32))
    signature = keys.sign(alice.key, key_request_signed_bytes(unsigned))
    before = server.dump()
    assert error_code(alice.connect(dataclasses.replace(unsigned, signature=signature))) == (
        "bad-request"
    )
    assert server.dump() == before


def test_a_revoked_client_gets_no_session(server: Server, alice: Client) -> None:
    server.store._db.execute("UPDATE clients SET revoked = 1 WHERE id = ?", (alice.client_id,))
    assert error_code(alice.connect()) == "unknown-client"


# --- rekey ---------------------------------------------------------------------------------


def stored_key(server: Server, client: Client) -> bytes | None:
    row = server.store.get_client(client.client_id)
    assert row is not None
    return row.public_key


def test_rekey_moves_the_client_to_the_new_key(server: Server, alice: Client) -> None:
    old_key = alice.key
    assert alice.rekey(rsa_key("alice-2")) == Rekeyed(sessions_ended=0)
    assert stored_key(server, alice) == keys.public_key_der(rsa_key("alice-2"))
    assert isinstance(alice.connect(), SessionGranted)  # with the new key
    with_old = dataclasses.replace(alice, key=old_key)
    assert error_code(with_old.connect()) == "bad-proof"


def test_rekey_ends_every_session_even_cached_ones(server: Server, alice: Client) -> None:
    alice.connect()
    first_session = (alice.session_id, alice.session_keys)
    alice.connect()
    assert isinstance(alice.ask(ListFiles()), FileList)  # the file service caches it now
    assert alice.rekey(rsa_key("alice-2")) == Rekeyed(sessions_ended=2)
    assert error_code(alice.ask(ListFiles())) == "unknown-session"
    alice.session_id, alice.session_keys = first_session
    assert error_code(alice.ask(ListFiles())) == "unknown-session"
    alice.connect()
    assert isinstance(alice.ask(ListFiles()), FileList)


@pytest.mark.parametrize("which", ["signature", "new_signature"])
def test_a_bad_signature_by_either_key_is_refused(
    server: Server, alice: Client, which: str
) -> None:
    request = alice.rekey_request(rsa_key("alice-2"))
    forged = dataclasses.replace(request, **{which: bytes(len(getattr(request, which)))})
    before = server.dump()
    assert error_code(alice.rekey(rsa_key("alice-2"), forged)) == "bad-proof"
    assert server.dump() == before
    assert isinstance(alice.connect(), SessionGranted)  # still on the old key


def test_nobody_can_move_another_client_to_their_key(server: Server, alice: Client) -> None:
    alice.connect()
    # Mallory knows alice's id and name; she holds only keys of her own.
    mallory = Client(server, "alice", rsa_key("mallory"), client_id=alice.client_id)
    before = server.dump()
    assert error_code(mallory.rekey(rsa_key("mallory-2"))) == "bad-proof"
    # Naming alice's key as the current one does not help without its signature.
    claimed = dataclasses.replace(
        mallory.rekey_request(rsa_key("mallory-2")), public_key=alice.public_der
    )
    assert error_code(mallory.rekey(rsa_key("mallory-2"), claimed)) == "bad-proof"
    assert server.dump() == before
    assert isinstance(alice.ask(ListFiles()), FileList)  # her session was not ended


def test_the_new_key_must_sign_too(server: Server, alice: Client) -> None:
    # Whoever holds alice's key cannot move her to a key nobody holds (or someone else's).
    request = alice.rekey_request(rsa_key("alice-2"))
    someone_elses = dataclasses.replace(request, new_public_key=keys.public_key_der(rsa_key("bob")))
    before = server.dump()
    assert error_code(alice.rekey(rsa_key("bob"), someone_elses)) == "bad-proof"
    assert server.dump() == before


@pytest.mark.parametrize("why", list(bad_public_keys()))
def test_a_new_key_no_exchange_would_accept_is_refused(
    server: Server, alice: Client, why: str
) -> None:
    request = alice.rekey_request(rsa_key("alice-2"))
    body = dataclasses.asdict(request) | {"new_public_key": bad_public_keys()[why]}
    env = envelope(MessageType.REKEY_REQUEST, flags=Flags.SEALED_TO_SERVER)
    payload, one_time_key = keys.seal_to_public_key(alice.server_public, msgpack.packb(body), env)
    before = server.dump()
    reply = alice.open_reply(server.call("key", [env, payload]), env, one_time_key)
    assert error_code(reply) == "bad-request"
    assert server.dump() == before


def test_the_current_key_is_no_new_key(server: Server, alice: Client) -> None:
    before = server.dump()
    assert error_code(alice.rekey(alice.key)) == "bad-request"
    assert server.dump() == before


def test_a_replayed_rekey_changes_nothing(server: Server, alice: Client) -> None:
    request = alice.rekey_request(rsa_key("alice-2"))
    frames, one_time_key = alice.sealed(request)
    first = alice.open_reply(server.call("key", frames), frames[0], one_time_key)
    assert first == Rekeyed(0)
    before = server.dump()
    again = alice.open_reply(server.call("key", frames), frames[0], one_time_key)
    assert again == first and server.outcomes[-1] == "replayed"
    assert server.dump() == before


def test_a_spent_nonce_is_refused_for_a_rekey_too(server: Server, alice: Client) -> None:
    request = alice.rekey_request(rsa_key("alice-2"))
    old = dataclasses.replace(alice)
    assert alice.rekey(rsa_key("alice-2"), request) == Rekeyed(0)
    before = server.dump()
    assert error_code(old.rekey(rsa_key("alice-2"), request)) == "bad-proof"
    assert server.dump() == before


def test_a_client_already_on_the_new_key_is_answered_as_moved(
    server: Server, alice: Client
) -> None:
    # The rekey was done but its reply lost with the client: a fresh request for the same
    # change finishes it without ending the sessions made with the new key since.
    old = dataclasses.replace(alice)
    assert alice.rekey(rsa_key("alice-2")) == Rekeyed(0)
    alice.connect()
    assert old.rekey(rsa_key("alice-2")) == Rekeyed(0)
    assert stored_key(server, alice) == keys.public_key_der(rsa_key("alice-2"))
    assert isinstance(alice.ask(ListFiles()), FileList)


@pytest.mark.parametrize("skew", [CLOCK_SKEW_MS + 1, -CLOCK_SKEW_MS - 1])
def test_a_rekey_outside_the_clock_window_is_refused(
    server: Server, alice: Client, skew: int
) -> None:
    request = alice.rekey_request(rsa_key("alice-2"), timestamp=server.now + skew)
    before = server.dump()
    assert error_code(alice.rekey(rsa_key("alice-2"), request)) == "bad-proof"
    assert server.dump() == before


def test_unknown_revoked_and_misnamed_clients_are_refused(server: Server, alice: Client) -> None:
    ghost = Client(server, "ghost", rsa_key("mallory"), client_id=b"g" * 16)
    misnamed = Client(server, "alicia", alice.key, client_id=alice.client_id)
    before = server.dump()
    assert error_code(ghost.rekey(rsa_key("mallory-2"))) == "unknown-client"
    assert error_code(misnamed.rekey(rsa_key("alice-2"))) == "unknown-client"
    assert server.dump() == before
    server.store._db.execute("UPDATE clients SET revoked = 1 WHERE id = ?", (alice.client_id,))
    assert error_code(alice.rekey(rsa_key("alice-2"))) == "unknown-client"


def test_a_client_without_a_key_has_nothing_to_move_from(server: Server, alice: Client) -> None:
    # A row an earlier server wrote: its first key exchange sets the key, not a rekey.
    server.store._db.execute(
        "UPDATE clients SET public_key = NULL WHERE id = ?", (alice.client_id,)
    )
    before = server.dump()
    assert error_code(alice.rekey(rsa_key("alice-2"))) == "bad-proof"
    assert server.dump() == before
