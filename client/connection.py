"""The client's I/O shell: the session core of :mod:`client.session` over a Transport.

:class:`Connection` owns the broker socket (a :class:`~client.transport.Transport`) and
sends what :mod:`client.session` builds. :class:`Account` is a registered client talking
to a pinned server: it runs the key exchange ("reconnect": a new session key each time)
and sends session requests, reconnecting once if the server no longer knows the session.
:func:`register` is the whole ``cipherdrop register`` flow.

Guarantees: the server key is checked against the pin (:func:`client.identity.pin_server`)
before anything is sealed to it; an identity is written only after the server registered
it; no key material is ever logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from client import session as core
from client.identity import Identity, Pinned, pin_server, save_identity
from client.transport import Transport
from client.transport_core import Body
from common import keys
from common.errors import RefusedError
from common.keys import RsaKey
from common.log import get_logger
from common.messages import ErrorCode, Message, Rekeyed, ServerKey

__all__ = [
    "FILE_SERVICE",
    "KEY_SERVICE",
    "REGISTER_SERVICE",
    "SESSION_ERRORS",
    "Account",
    "Connection",
    "TransportOptions",
    "register",
]

REGISTER_SERVICE = "cipherdrop.register"
KEY_SERVICE = "cipherdrop.key"
FILE_SERVICE = "cipherdrop.file"
# Refusals that a fresh key exchange cures.
SESSION_ERRORS = frozenset({str(ErrorCode.UNKNOWN_SESSION), str(ErrorCode.SESSION_EXPIRED)})

M = TypeVar("M", bound=Message)
T = TypeVar("T")
_log = get_logger()


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """How the client talks to the broker (from ``settings.client``)."""

    timeout: float = 10.0
    retries: int = 3
    window: int = 8


class Connection:
    """One broker endpoint; the transport can be reset after an aborted pipeline."""

    def __init__(self, endpoint: str, options: TransportOptions = TransportOptions()) -> None:
        self.endpoint = endpoint
        self.options = options
        self.transport = self._open()

    def _open(self) -> Transport:
        opts = self.options
        return Transport(
            self.endpoint, timeout=opts.timeout, retries=opts.retries, window=opts.window
        )

    def send(self, service: str, req: core.Outgoing) -> list[Body]:
        """Send one request; the reply body frames."""
        return self.transport.request(service, req.frames)

    def reset(self) -> None:
        """Drop requests still in flight (after a failed pipeline) with a new socket."""
        self.transport.close()
        self.transport = self._open()

    def server_key(self) -> ServerKey:
        """The server's key as it presents it (not yet pinned), with any endorsement."""
        req = core.server_key_request()
        return core.open_server_key(req, self.send(REGISTER_SERVICE, req))

    def pinned_server_key(self, home: Path, expected: str | None) -> tuple[RsaKey, Pinned]:
        """Fetch the server key and check it against the pin (or trust it on first use);
        a key the pinned one endorsed is followed (``Pinned.followed``)."""
        answer = self.server_key()
        endorsement = core.endorsement_of(answer)
        pinned = pin_server(home, self.endpoint, answer.public_key, expected, endorsement)
        return keys.load_public_key(answer.public_key), pinned

    def close(self) -> None:
        self.transport.close()


class Account:
    """A registered client on a connection to its pinned server."""

    def __init__(
        self,
        conn: Connection,
        identity: Identity,
        private_key: RsaKey,
        server_key: RsaKey,
        clock: Callable[[], float] = time.time,
        source_secret: bytes | None = None,
    ) -> None:
        self.conn = conn
        self.identity = identity
        self._private_key = private_key
        self._server_key = server_key
        self._clock = clock
        self._session: core.Session | None = None
        # The key of the source tokens: kept from the first key pair once there is another.
        self.source_secret = source_secret or core.source_secret(private_key)

    @property
    def session(self) -> core.Session:
        """The current session, after a key exchange if there is none yet."""
        if self._session is None:
            self._session = self.reconnect()
        return self._session

    def source_token(self, size: int, mtime_ns: int) -> bytes:
        """This client's token for a file version (:func:`client.session.source_token`)."""
        return core.source_token(self.source_secret, size, mtime_ns)

    def reconnect(self) -> core.Session:
        """Key exchange: prove possession of our key, get a new session key."""
        kx = core.key_request(
            self._server_key,
            self.identity.client_id,
            self.identity.name,
            self._private_key,
            int(self._clock() * 1000),
        )
        reply = self.conn.send(KEY_SERVICE, kx.outgoing)
        self._session = core.open_session_granted(kx, reply, self._server_key, self._private_key)
        _log.debug("client.session", session_expires_at=self._session.expires_at)
        return self._session

    def rekey(self, new_private_key: RsaKey) -> int:
        """Move this client to ``new_private_key`` (the request is signed by both keys);
        how many sessions the server ended. The account then speaks with the new key."""
        req = core.rekey_request(
            self._server_key,
            self.identity.client_id,
            self.identity.name,
            self._private_key,
            new_private_key,
            int(self._clock() * 1000),
        )
        rekeyed = core.open_sealed_reply(req, self.conn.send(KEY_SERVICE, req), Rekeyed)
        self._private_key = new_private_key
        self._session = None
        return rekeyed.sessions_ended

    def sibling(self) -> Account:
        """The same client on a connection of its own and, until either reconnects, the
        same session: for requests sent from another thread (a transport is not
        thread-safe). Its connection is the caller's to close."""
        other = Account(
            Connection(self.conn.endpoint, self.conn.options),
            self.identity,
            self._private_key,
            self._server_key,
            self._clock,
            self.source_secret,
        )
        other._session = self._session
        return other

    def with_session(self, run: Callable[[], T]) -> T:
        """Run a transfer; if the server has lost or expired our session, once more on a
        new one. The transport is reset first: requests of the old session may still be
        in flight, and their replies must not be taken for the new run's."""
        try:
            return run()
        except RefusedError as exc:
            if exc.code not in SESSION_ERRORS:
                raise
        self.conn.reset()
        self.reconnect()
        return run()

    def call(self, msg: Message, cls: type[M]) -> M:
        """A session request on the file service; one reconnect if the session is gone."""
        try:
            return self._call_once(msg, cls)
        except RefusedError as exc:
            if exc.code not in SESSION_ERRORS:
                raise
        self.reconnect()
        return self._call_once(msg, cls)

    def _call_once(self, msg: Message, cls: type[M]) -> M:
        session = self.session
        req = core.session_request(session, msg)
        return core.open_reply(session, req, self.conn.send(FILE_SERVICE, req), cls)


def register(
    conn: Connection,
    home: Path,
    name: str,
    *,
    server_fingerprint: str | None,
    rsa_bits: int,
    passphrase: str | None,
    invite: bytes = b"",
    on_event: Callable[[str], None] = lambda _: None,
) -> Identity:
    """Pin the server, make a key pair, register ``name`` (with the operator's ``invite``
    code where one is needed), store the identity, key-exchange.

    ``on_event`` receives short progress sentences for the user (key generation, TOFU).
    """
    server_key, pinned = conn.pinned_server_key(home, server_fingerprint)
    if pinned.first_use:
        on_event(f"trusting server {conn.endpoint} on first use: {pinned.fingerprint}")
    on_event(f"generating a {rsa_bits}-bit RSA key...")
    private_key = keys.generate_private_key(rsa_bits)
    req = core.register_request(server_key, name, private_key, invite)
    client_id = core.open_registered(req, conn.send(REGISTER_SERVICE, req))
    identity = Identity(name, client_id, conn.endpoint, pinned.fingerprint, home)
    # Stored before the key exchange: the name is ours now, and `put` can finish the job.
    save_identity(identity, private_key, passphrase)
    Account(conn, identity, private_key, server_key).reconnect()
    return identity
