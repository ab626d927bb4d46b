"""The broker-facing half of the gateway: our own protocol, spoken on a legacy client's behalf.

The gateway is a client of our services with an identity of its own (an RSA key the
operator trusts, see :mod:`gateway.identity`). It registers legacy clients and obtains
sessions for them with the gateway-signed messages of docs/protocol.md section 3.8, and it
uploads their decrypted files through the ordinary upload flow (section 5.5): per-file
data key, STREAM-sealed chunks, CRC from the server, idempotent retries. Session requests
and chunks are built with :mod:`client.session`; only the two gateway messages are sealed
and opened here.

Guarantees: a grant is accepted only if it opens under the one-time key of our request
(so it comes from the holder of the pinned server key), its server signature over the
grant and our nonce verifies, and its session key unwraps with the gateway's key. A
refusal is :class:`RefusedError`; a malformed reply :class:`RemoteProtocolError`; a reply
that does not open or verify :class:`IntegrityError`. Memory per upload is bounded by
``window`` sealed chunks.

The RSA work of a handshake (signing our request, unwrapping the session key: about 15 ms
with a 3072-bit key here) runs on a worker thread (``asyncio.to_thread``; pycryptodome's
modular exponentiation releases the GIL), so the event loop keeps serving every other
connection meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from client import session as native
from client.async_transport import AsyncTransport
from client.transport import unwrap
from client.transport_core import Outcome
from common import crypto, keys
from common.body_schema import gateway_signed_bytes, legacy_grant_signed_bytes
from common.compress import compress_chunk
from common.errors import RemoteProtocolError
from common.fields import ID_LEN, chunk_count_for
from common.keys import RsaKey
from common.messages import (
    LegacyKeyRequest,
    LegacyRegistered,
    LegacyRegisterRequest,
    LegacySessionGranted,
    Message,
    StreamPosition,
    UploadBegin,
    UploadCommit,
    UploadCommitted,
    UploadConfirm,
    UploadDone,
    UploadReady,
    Verdict,
)

__all__ = ["FILE_SERVICE", "KEY_SERVICE", "REGISTER_SERVICE", "Backend", "LegacyGrant"]

REGISTER_SERVICE = "cipherdrop.register"
KEY_SERVICE = "cipherdrop.key"
FILE_SERVICE = "cipherdrop.file"
CHUNK_SIZE = 1024 * 1024

M = TypeVar("M", bound=Message)
ChunkSource = Callable[[int], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class LegacyGrant:
    """A session for a legacy client, and the legacy public key the server holds for it."""

    session: native.Session
    public_key: bytes


def now_ms() -> int:
    return int(time.time() * 1000)


class Backend:
    """Our services, reached through one shared :class:`AsyncTransport`."""

    def __init__(
        self,
        transport: AsyncTransport,
        identity: RsaKey,
        server_key: RsaKey,
        *,
        chunk_size: int = CHUNK_SIZE,
        window: int = 4,
    ) -> None:
        self.transport = transport
        self.identity = identity
        self.identity_der = keys.public_key_der(identity)
        self.server_key = server_key
        self.chunk_size = chunk_size
        self.window = window

    async def _sealed(self, msg: LegacyRegisterRequest | LegacyKeyRequest) -> native.Outgoing:
        """``msg`` signed with the gateway's key and sealed to the server, off the loop."""

        def build() -> native.Outgoing:
            signature = keys.sign(self.identity, gateway_signed_bytes(msg))
            return native.sealed_to_server(
                self.server_key, dataclasses.replace(msg, signature=signature)
            )

        return await asyncio.to_thread(build)

    async def register(self, name: str) -> bytes:
        """Register a legacy client named ``name``; its new client id."""
        unsigned = LegacyRegisterRequest(
            self.identity_der, name, now_ms(), secrets.token_bytes(ID_LEN), b"-"
        )
        req = await self._sealed(unsigned)
        reply = await self.transport.request(REGISTER_SERVICE, req.frames)
        return native.open_sealed_reply(req, reply, LegacyRegistered).client_id

    async def grant(
        self, name: str, client_id: bytes = b"", public_key: bytes = b""
    ) -> LegacyGrant:
        """A session for a legacy client: its first key (``client_id`` and ``public_key``
        given) or a reconnect by ``name`` (both empty)."""
        nonce = secrets.token_bytes(ID_LEN)
        unsigned = LegacyKeyRequest(
            self.identity_der, client_id, name, public_key, now_ms(), nonce, b"-"
        )
        req = await self._sealed(unsigned)
        reply = await self.transport.request(KEY_SERVICE, req.frames)
        grant = native.open_sealed_reply(req, reply, LegacySessionGranted)
        if client_id and grant.client_id != client_id:
            raise RemoteProtocolError("the grant names another client")
        keys.verify(self.server_key, legacy_grant_signed_bytes(grant, nonce), grant.signature)
        session_key = await asyncio.to_thread(keys.unwrap_key, self.identity, grant.wrapped_key)
        session = native.Session(
            client_id=grant.client_id,
            session_id=grant.session_id,
            keys=crypto.derive_session_keys(session_key, grant.session_id),
            expires_at=grant.expires_at,
        )
        return LegacyGrant(session, grant.public_key)

    async def _call(self, session: native.Session, msg: Message, cls: type[M]) -> M:
        req = native.session_request(session, msg)
        reply = await self.transport.request(FILE_SERVICE, req.frames)
        return native.open_reply(session, req, reply, cls)

    async def _begin(self, session: native.Session, name: str, size: int) -> UploadReady:
        begin = UploadBegin(name, size, self.chunk_size, chunk_count_for(size, self.chunk_size))
        ready = await self._call(session, begin, UploadReady)
        if ready.stored:
            # An unfinished upload of the same name and size from an earlier connection:
            # its chunks may hold other contents, so it is discarded, never resumed.
            await self.confirm(session, ready.transfer_id, Verdict.GIVE_UP)
            ready = await self._call(session, begin, UploadReady)
        return ready

    async def upload(
        self, session: native.Session, name: str, size: int, chunks: ChunkSource
    ) -> UploadCommitted:
        """Upload ``size`` bytes whose chunk ``i`` is ``await chunks(i)``; commit; the CRC."""
        ready = await self._begin(session, name, size)
        count = chunk_count_for(size, self.chunk_size)
        in_flight: dict[asyncio.Future[Outcome], native.Outgoing] = {}
        try:
            for index in range(count):
                plain = await chunks(index)
                codec, data = compress_chunk(plain)
                position = StreamPosition(ready.transfer_id, index, index == count - 1)
                req = native.chunk_request(session, ready.data_key, position, codec, data)
                future = self.transport.submit(FILE_SERVICE, req.frames)
                in_flight[future] = req
                while len(in_flight) >= self.window:
                    await self._settle(session, in_flight)
            while in_flight:
                await self._settle(session, in_flight)
        finally:
            for future in in_flight:
                future.cancel()
        return await self._call(session, UploadCommit(ready.transfer_id), UploadCommitted)

    @staticmethod
    async def _settle(
        session: native.Session, in_flight: dict[asyncio.Future[Outcome], native.Outgoing]
    ) -> None:
        done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        for future in done:
            req = in_flight.pop(future)
            native.open_chunk_stored(session, req, unwrap(future.result()))

    async def confirm(self, session: native.Session, transfer_id: bytes, verdict: Verdict) -> bool:
        """Send the verdict on a committed upload; whether the file is now verified."""
        done = await self._call(session, UploadConfirm(transfer_id, verdict), UploadDone)
        return done.verified
