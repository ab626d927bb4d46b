"""One legacy client's TCP connection: exact reads, the state table, answers, timeouts.

The loop reads a 23-byte header, checks it (version, a code of this dialect, the exact
payload size of that request), consults :mod:`gateway.machine`, serves the request
through :class:`~gateway.backend.Backend`, and writes the answer. A file's bytes are
received by :mod:`gateway.receive`, through this connection's reads. Every read is exact
(``readexactly``: a read may return fewer bytes) and bounded by the idle timeout; the
whole connection by the total timeout.

Answers to failures (docs/legacy.md, "Errors"):

* Bytes that break the framing -- a short or malformed header, an unknown code, another
  version, a payload size that is not the request's, a file larger than allowed, a file
  whose ciphertext fails to decrypt (bad padding *or* a wrong length: one answer) -- get
  the general error and the connection is closed, since nothing after them can be
  trusted (and a key never answers a second padding question).
* A well-framed request out of order, or one our services refuse or cannot serve now,
  gets the general error (or the protocol's own refusal: registration failed, reconnect
  refused) and the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from common import crypto
from common.errors import CipherdropError, IntegrityError, RefusedError
from common.keys import load_legacy_public_key
from common.messages import ErrorCode, Verdict
from common.names import InvalidNameError, validate_client_name
from gateway import wire
from gateway.backend import Backend, LegacyGrant
from gateway.legacy_crypto import wrap_legacy_key
from gateway.machine import State, next_state
from gateway.receive import Broken, Receiver, receive_file
from gateway.spool import Spool
from gateway.wire import Dialect, LegacyFormatError, Request, RequestHeader, Response

__all__ = ["MAX_RESENDS", "LegacyConnection", "Limits"]

MAX_RESENDS = 3  # "CRC bad, will resend" accepted per file; the next one is refused
_REFUSALS = {str(ErrorCode.NAME_TAKEN), str(ErrorCode.INVALID_NAME)}
_UNKNOWN = {str(ErrorCode.UNKNOWN_CLIENT), str(ErrorCode.BAD_PROOF)}
_SESSION_MARGIN_MS = 60_000


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one connection (docs/legacy.md, "Limits")."""

    max_file: int = 1024 * 2**20  # ciphertext bytes of one file
    max_packet: int = 64 * 2**20  # ciphertext bytes of one packet (dialects C, D)
    idle_timeout: float = 30.0
    total_timeout: float = 3600.0


class _Fail(Exception):
    """Answer ``response`` (general error by default) and keep the connection."""

    def __init__(
        self, why: str, response: Response = Response.GENERAL_ERROR, payload: bytes = b""
    ) -> None:
        super().__init__(why)
        self.response = response
        self.payload = payload


@dataclass(slots=True)
class _Pending:
    transfer_id: bytes
    name: str


class LegacyConnection:
    """Serves one connection; :meth:`run` returns when it is closed."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dialect: Dialect,
        backend: Backend,
        limits: Limits,
        spool_dir: Path | None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.dialect = dialect
        self.backend = backend
        self.limits = limits
        self.spool_dir = spool_dir
        self.state = State.START
        self.name: str | None = None
        self.client_id = bytes(16)
        self.aes_key: bytes | None = None
        self.grant: LegacyGrant | None = None
        self.pending: _Pending | None = None
        self.resends = 0  # "CRC bad, will resend" so far for the file named resend_name
        self.resend_name = ""
        peer = writer.get_extra_info("peername")
        self.log = structlog.get_logger().bind(peer=str(peer), dialect=dialect.name)

    async def run(self) -> None:
        outcome = "closed"
        try:
            async with asyncio.timeout(self.limits.total_timeout):
                while (header := await self._header()) is not None:
                    await self._serve(header)
        except Broken as close:
            outcome = f"dropped: {close}"
            if not close.silent:
                with contextlib.suppress(Exception):
                    await self._send(Response.GENERAL_ERROR)
        except TimeoutError:
            outcome = "timeout"
        except (asyncio.IncompleteReadError, ConnectionError):
            outcome = "peer closed mid-request"
        finally:
            await self._discard_pending()
            self.aes_key = None
            self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), 1.0)
            self.log.info("legacy.connection", outcome=outcome)

    # -- reading and writing -------------------------------------------------------------

    async def _read(self, size: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(size), self.limits.idle_timeout)

    async def _header(self) -> RequestHeader | None:
        try:
            raw = await self._read(wire.REQUEST_HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise Broken("truncated header") from None
            return None  # a clean close between requests
        try:
            return wire.parse_header(self.dialect, raw)
        except LegacyFormatError as exc:
            raise Broken(str(exc)) from None

    async def _send(self, response: Response, payload: bytes = b"") -> None:
        self.writer.write(wire.encode_response(self.dialect, response, payload))
        await asyncio.wait_for(self.writer.drain(), self.limits.idle_timeout)

    # -- dispatch --------------------------------------------------------------------------

    async def _serve(self, header: RequestHeader) -> None:
        started = time.monotonic()
        request = header.request
        fixed = wire.fixed_payload_size(request)
        if fixed is not None and header.payload_size != fixed:
            raise Broken(f"{request.name}: payload size {header.payload_size}, expected {fixed}")
        payload = await self._read(fixed) if fixed is not None else b""
        target = next_state(self.state, request)
        outcome = "ok"
        try:
            if target is None:
                if request is Request.SEND_FILE:
                    raise Broken("file sent out of order")
                raise _Fail(f"{request.name} out of order in state {self.state.value}")
            await self._handle(request, header, payload)
            self.state = target
        except _Fail as fail:
            outcome = str(fail)
            await self._send(fail.response, fail.payload)
        finally:
            self.log.info(
                "legacy.request",
                request=request.name,
                client=self.client_id.hex()[:8],
                outcome=outcome,
                ms=round((time.monotonic() - started) * 1000, 1),
            )

    async def _handle(self, request: Request, header: RequestHeader, payload: bytes) -> None:
        if request is Request.REGISTER:
            await self._register(payload)
        elif request is Request.PUBLIC_KEY:
            await self._public_key(payload)
        elif request is Request.RECONNECT:
            await self._reconnect(header, payload)
        elif request is Request.SEND_FILE:
            await self._send_file(header)
        else:
            await self._verdict(request, payload)

    # -- registration and keys -----------------------------------------------------------

    async def _register(self, payload: bytes) -> None:
        name = _client_name(payload)
        if name is None:
            raise _Fail("invalid name", Response.REGISTRATION_FAILED)
        try:
            client_id = await self.backend.register(name)
        except RefusedError as exc:
            if exc.code in _REFUSALS:
                raise _Fail(exc.code, Response.REGISTRATION_FAILED) from None
            raise _Fail(f"register: {exc.code}") from None
        except CipherdropError as exc:
            raise _Fail(f"register: {type(exc).__name__}") from None
        await self._forget_client()
        self.name, self.client_id = name, client_id
        await self._send(Response.REGISTERED, client_id)

    async def _public_key(self, payload: bytes) -> None:
        try:
            name, der = wire.parse_public_key_payload(payload)
            public_key = load_legacy_public_key(der)
        except CipherdropError:
            raise _Fail("bad public key payload") from None
        if name != self.name:  # only the name registered or reconnected on this connection
            raise _Fail("public key for another name")
        try:
            grant = await self.backend.grant(name, self.client_id, der)
        except CipherdropError as exc:
            raise _Fail(f"key: {getattr(exc, 'code', type(exc).__name__)}") from None
        self.grant = grant
        self.aes_key = crypto.random_key()[: self.dialect.aes_key_size]
        wrapped = wrap_legacy_key(public_key, self.aes_key)
        await self._send(Response.AES_KEY, self.client_id + wrapped)

    async def _reconnect(self, header: RequestHeader, payload: bytes) -> None:
        refused = _Fail("reconnect refused", Response.RECONNECT_REFUSED, header.client_id)
        name = _client_name(payload)
        if name is None:
            raise refused
        try:
            grant = await self.backend.grant(name)
            public_key = load_legacy_public_key(grant.public_key)
        except RefusedError as exc:
            if exc.code in _UNKNOWN:
                raise refused from None
            raise _Fail(f"reconnect: {exc.code}") from None
        except CipherdropError as exc:
            raise _Fail(f"reconnect: {type(exc).__name__}") from None
        await self._forget_client()
        self.name, self.client_id, self.grant = name, grant.session.client_id, grant
        self.aes_key = crypto.random_key()[: self.dialect.aes_key_size]
        wrapped = wrap_legacy_key(public_key, self.aes_key)
        await self._send(Response.RECONNECT_APPROVED, self.client_id + wrapped)

    async def _forget_client(self) -> None:
        await self._discard_pending()
        self.name, self.client_id, self.grant, self.aes_key = None, bytes(16), None, None
        self.resends = 0

    async def _fresh_grant(self) -> LegacyGrant:
        if self.grant is None or self.name is None:
            raise _Fail("no session")
        if self.grant.session.expires_at - _SESSION_MARGIN_MS < int(time.time() * 1000):
            try:
                self.grant = await self.backend.grant(self.name)
            except CipherdropError as exc:
                raise _Fail(f"session: {type(exc).__name__}") from None
        return self.grant

    # -- files -----------------------------------------------------------------------------

    async def _send_file(self, header: RequestHeader) -> None:
        received = await receive_file(self._receiver(), header)
        spool, name, original = received.spool, received.name, received.original_size
        try:
            await self._discard_pending()
            key = self.aes_key
            if key is None:
                raise Broken("no key")
            try:
                size = spool.plaintext_size(key)
            except IntegrityError:
                raise Broken("file does not decrypt") from None
            if original is not None and size != original:
                raise Broken("file does not decrypt")  # the same answer as bad padding
            await self._upload(spool, name, size)
        finally:
            spool.close()

    def _receiver(self) -> Receiver:
        limits = self.limits
        return Receiver(
            self.dialect,
            limits.max_file,
            limits.max_packet,
            self.spool_dir,
            self._read,
            self._header,
        )

    async def _upload(self, spool: Spool, name: str, size: int) -> None:
        grant = await self._fresh_grant()
        chunk_size = self.backend.chunk_size

        async def chunk(index: int) -> bytes:
            return await asyncio.to_thread(spool.chunk, index, chunk_size)

        try:
            committed = await self.backend.upload(grant.session, name, size, chunk)
        except CipherdropError as exc:
            raise _Fail(f"upload: {getattr(exc, 'code', type(exc).__name__)}") from None
        if name != self.resend_name:
            self.resends, self.resend_name = 0, name
        self.pending = _Pending(committed.transfer_id, name)
        payload = wire.file_received_payload(
            self.client_id, spool.content_size, name, committed.crc
        )
        await self._send(Response.FILE_RECEIVED, payload)

    # -- verdicts --------------------------------------------------------------------------

    async def _verdict(self, request: Request, payload: bytes) -> None:
        try:
            name = wire.parse_name(payload, strip_quotes=True)
        except LegacyFormatError:
            raise _Fail("bad file name field") from None
        pending = self.pending
        if pending is None or name != pending.name or self.grant is None:
            raise _Fail("verdict for a file not pending")
        if request is Request.CRC_RETRY and self.resends >= MAX_RESENDS:
            await self._discard_pending()
            raise _Fail("too many resends")
        verdict = {
            Request.CRC_OK: Verdict.OK,
            Request.CRC_RETRY: Verdict.RESEND,
            Request.CRC_GIVE_UP: Verdict.GIVE_UP,
        }[request]
        self.pending = None
        try:
            await self.backend.confirm(self.grant.session, pending.transfer_id, verdict)
        except CipherdropError as exc:
            raise _Fail(f"confirm: {getattr(exc, 'code', type(exc).__name__)}") from None
        if request is Request.CRC_RETRY:
            self.resends += 1
            return  # no answer: the client sends the file again
        self.resends = 0
        await self._send(Response.THANKS, self.client_id)

    async def _discard_pending(self) -> None:
        """Give up a file whose verdict never came (best effort: it expires anyway)."""
        pending, self.pending = self.pending, None
        if pending is None or self.grant is None:
            return
        with contextlib.suppress(CipherdropError):
            await self.backend.confirm(self.grant.session, pending.transfer_id, Verdict.GIVE_UP)


def _client_name(payload: bytes) -> str | None:
    try:
        return validate_client_name(wire.parse_name(payload), "name")
    except (LegacyFormatError, InvalidNameError):
        return None
