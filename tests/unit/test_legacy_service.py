"""The server side of the legacy gateway: trusted gateways only, legacy clients only.

Runs the register and key services in process (``server_harness``) with the gateway's
messages built and signed here as the gateway builds them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from common import crypto, keys
from common.body_schema import gateway_signed_bytes, legacy_grant_signed_bytes
from common.keys import RsaKey
from common.messages import (
    ErrorReply,
    FileList,
    LegacyKeyRequest,
    LegacyRegistered,
    LegacyRegisterRequest,
    LegacySessionGranted,
    ListFiles,
    Message,
    SessionGranted,
)
from gateway.backend import Backend, LegacyGrant
from tests.legacy_client import legacy_key
from workers.keyx import TRUSTED_GATEWAYS
from workers.store import ClientRow

from .server_harness import NOW, Client, Server, error_code, rsa_key


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "data")
    yield running
    running.close()


def trust(server: Server, key: RsaKey) -> None:
    path = server.data.path / TRUSTED_GATEWAYS
    with path.open("a", encoding="utf-8") as trusted:
        trusted.write(f"# the gateway\n{keys.fingerprint(key)}  # trusted\nnot a fingerprint\n")


def gateway_key() -> RsaKey:
    return rsa_key("gateway")


def signed(msg: LegacyRegisterRequest | LegacyKeyRequest, key: RsaKey) -> Message:
    return dataclasses.replace(msg, signature=keys.sign(key, gateway_signed_bytes(msg)))


def ask(server: Server, service: str, msg: Message) -> Message:
    via = Client(server, "gateway", gateway_key())
    frames, one_time = via.sealed(msg)
    return via.open_reply(server.call(service, frames), frames[0], one_time)


def register(server: Server, name: str, key: RsaKey | None = None) -> Message:
    key = key or gateway_key()
    unsigned = LegacyRegisterRequest(
        keys.public_key_der(key), name, server.now, secrets.token_bytes(16), b"-"
    )
    return ask(server, "register", signed(unsigned, key))


def key_request(
    server: Server,
    name: str,
    client_id: bytes = b"",
    public_key: bytes = b"",
    *,
    key: RsaKey | None = None,
    nonce: bytes | None = None,
) -> tuple[Message, bytes]:
    key = key or gateway_key()
    nonce = nonce or secrets.token_bytes(16)
    unsigned = LegacyKeyRequest(
        keys.public_key_der(key), client_id, name, public_key, server.now, nonce, b"-"
    )
    return ask(server, "key", signed(unsigned, key)), nonce


LEGACY_DER = legacy_key().public_key().export_key(format="DER")


def legacy_flag(server: Server, client_id: bytes) -> int:
    row = server.store._db.execute("SELECT legacy FROM clients WHERE id = ?", (client_id,))
    return int(row.fetchone()[0])


def test_an_untrusted_gateway_is_refused(server: Server) -> None:
    assert error_code(register(server, "alice")) == "bad-proof"
    trust(server, rsa_key("another gateway"))
    assert error_code(register(server, "alice")) == "bad-proof"
    assert error_code(key_request(server, "alice")[0]) == "bad-proof"


def test_a_forged_signature_is_refused(server: Server) -> None:
    trust(server, gateway_key())
    unsigned = LegacyRegisterRequest(
        keys.public_key_der(gateway_key()), "alice", NOW, bytes(16), b"-"
    )
    forged = signed(dataclasses.replace(unsigned, name="mallory"), gateway_key())
    assert error_code(ask(server, "register", dataclasses.replace(forged, name="alice"))) == (
        "bad-proof"
    )


def test_register_key_and_reconnect(server: Server) -> None:
    trust(server, gateway_key())
    registered = register(server, "alice")
    assert isinstance(registered, LegacyRegistered)
    assert legacy_flag(server, registered.client_id) == 1
    first, nonce = key_request(server, "alice", registered.client_id, LEGACY_DER)
    assert isinstance(first, LegacySessionGranted)
    assert (first.client_id, first.public_key) == (registered.client_id, LEGACY_DER)
    keys.verify(server.server_public, legacy_grant_signed_bytes(first, nonce), first.signature)
    session_key = keys.unwrap_key(gateway_key(), first.wrapped_key)  # wrapped to the gateway
    again, _ = key_request(server, "alice")  # reconnect: by name, nothing proven
    assert isinstance(again, LegacySessionGranted)
    assert (again.client_id, again.public_key) == (registered.client_id, LEGACY_DER)
    assert again.session_id != first.session_id
    # The session works for the file service like any other.
    user = Client(server, "alice", gateway_key(), client_id=registered.client_id)
    user.session_id = first.session_id
    user.session_keys = crypto.derive_session_keys(session_key, first.session_id)
    assert user.ask(ListFiles()) == FileList(())


def test_first_key_wins_and_another_is_refused(server: Server) -> None:
    trust(server, gateway_key())
    registered = register(server, "bob")
    assert isinstance(registered, LegacyRegistered)
    assert isinstance(
        key_request(server, "bob", registered.client_id, LEGACY_DER)[0], LegacySessionGranted
    )
    other = legacy_key().public_key().export_key(format="DER")
    assert error_code(key_request(server, "bob", registered.client_id, other)[0]) == "bad-proof"


def test_reconnect_before_any_key_and_of_unknown_names_is_refused(server: Server) -> None:
    trust(server, gateway_key())
    assert isinstance(register(server, "carol"), LegacyRegistered)
    assert error_code(key_request(server, "carol")[0]) == "unknown-client"
    assert error_code(key_request(server, "nobody")[0]) == "unknown-client"


def test_native_clients_are_out_of_the_gateways_reach(server: Server) -> None:
    trust(server, gateway_key())
    native = Client(server, "dave", rsa_key("dave"))
    native.register()
    assert isinstance(native.connect(), SessionGranted)  # a working native client
    native_der = keys.public_key_der(rsa_key("dave"))
    assert error_code(key_request(server, "dave")[0]) == "unknown-client"
    assert error_code(key_request(server, "dave", native.client_id, native_der)[0]) == (
        "unknown-client"
    )


def test_only_rsa_1024_keys_are_legacy_keys(server: Server) -> None:
    trust(server, gateway_key())
    registered = register(server, "erin")
    assert isinstance(registered, LegacyRegistered)
    strong = keys.public_key_der(rsa_key("erin"))
    assert error_code(key_request(server, "erin", registered.client_id, strong)[0]) == (
        "bad-request"
    )


def test_the_native_path_refuses_a_legacy_key(server: Server) -> None:
    """RSA-1024 is accepted only on the gateway's path: not by a registration, nor by the
    exchange of a client that has no key yet (a row an earlier server wrote)."""
    before = server.dump()
    assert error_code(Client(server, "frank", legacy_key()).register()) == "bad-request"
    assert server.dump() == before
    frank = Client(server, "frank", rsa_key("frank"))
    frank.register()
    server.store._db.execute(
        "UPDATE clients SET public_key = NULL WHERE id = ?", (frank.client_id,)
    )
    reply = Client(server, "frank", legacy_key(), client_id=frank.client_id).connect()
    assert isinstance(reply, ErrorReply) and reply.code == "bad-request"


def test_a_replayed_nonce_is_refused(server: Server) -> None:
    trust(server, gateway_key())
    registered = register(server, "gina")
    assert isinstance(registered, LegacyRegistered)
    first, nonce = key_request(server, "gina", registered.client_id, LEGACY_DER)
    assert isinstance(first, LegacySessionGranted)
    again, _ = key_request(server, "gina", nonce=nonce)
    assert error_code(again) == "bad-proof"


def test_name_taken(server: Server) -> None:
    trust(server, gateway_key())
    assert isinstance(register(server, "hank"), LegacyRegistered)
    assert error_code(register(server, "hank")) == "name-taken"


def test_the_native_exchange_cannot_claim_a_legacy_client(server: Server) -> None:
    """A legacy client's id travels in clear on the legacy wire; whoever saw it must not
    claim the client (before its first key) through the native exchange with a key of
    their own: the native exchange does not know legacy clients at all."""
    trust(server, gateway_key())
    registered = register(server, "ivan")
    assert isinstance(registered, LegacyRegistered)
    mallory = Client(server, "ivan", rsa_key("mallory"), client_id=registered.client_id)
    assert error_code(mallory.connect()) == "unknown-client"
    assert server.store.get_client(registered.client_id) == ClientRow(
        registered.client_id, "ivan", None, False
    )  # still unclaimed: no key stored
    first, _ = key_request(server, "ivan", registered.client_id, LEGACY_DER)
    assert isinstance(first, LegacySessionGranted)
    assert error_code(mallory.connect()) == "unknown-client"  # nor once it has its key


def test_store_reads_by_flag(server: Server) -> None:
    """The store's legacy queries see only their own kind of client."""
    trust(server, gateway_key())
    registered = register(server, "judy")
    assert isinstance(registered, LegacyRegistered)
    native = Client(server, "ken", rsa_key("ken"))
    native.register()
    store = server.store
    assert store.find_legacy_client("judy") == ClientRow(registered.client_id, "judy", None, False)
    assert store.find_legacy_client("ken") is None
    assert store.get_native_client(registered.client_id) is None
    ken = store.get_native_client(native.client_id)
    assert ken is not None and ken.name == "ken"
    assert legacy_flag(server, registered.client_id) == 1
    assert legacy_flag(server, native.client_id) == 0


class _InProcess:
    """Stands in for the gateway's AsyncTransport: each request goes to the services."""

    def __init__(self, server: Server) -> None:
        self.server = server

    async def request(self, service: str, frames: Sequence[bytes]) -> list[bytes]:
        return self.server.call(service.rsplit(".", 1)[-1], list(frames))


def test_the_gateway_does_its_rsa_work_off_the_event_loop(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing and unwrapping (~15 ms per handshake) would stall every other connection."""
    trust(server, gateway_key())
    server.now = int(time.time() * 1000)  # the gateway stamps its requests with real time
    on_loop: list[tuple[str, bool]] = []

    def watched(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            if args[0] is identity:  # the gateway's work, not the in-process server's
                on_loop.append((name, threading.current_thread() is loop_thread))
            return call(*args)

        return run

    monkeypatch.setattr(keys, "sign", watched("sign", keys.sign))
    monkeypatch.setattr(keys, "unwrap_key", watched("unwrap", keys.unwrap_key))
    identity = gateway_key()
    backend = Backend(cast(Any, _InProcess(server)), identity, server.server_public)

    async def handshake() -> LegacyGrant:
        client_id = await backend.register("oldtimer")
        return await backend.grant("oldtimer", client_id, LEGACY_DER)

    loop_thread = threading.current_thread()  # asyncio.run runs the loop on this thread
    grant = asyncio.run(handshake())
    assert grant.public_key == LEGACY_DER
    assert on_loop == [("sign", False), ("sign", False), ("unwrap", False)]  # none on the loop
