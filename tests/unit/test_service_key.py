"""cipherdrop.key: proof of possession of the registered key, replays, fresh session keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import keys
from common.messages import SessionGranted
from workers.keyx import CLOCK_SKEW_MS

from .server_harness import Client, Server, error_code, rsa_key


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


def test_a_revoked_client_gets_no_session(server: Server, alice: Client) -> None:
    server.store._db.execute("UPDATE clients SET revoked = 1 WHERE id = ?", (alice.client_id,))
    assert error_code(alice.connect()) == "unknown-client"
