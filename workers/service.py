"""The work every service does around its handlers, done once: a sans-I/O dispatcher.

:meth:`Dispatcher.handle` takes the body frames of one request and ``now`` (integer
milliseconds since the Unix epoch) and returns the reply frames. In order it: decodes
the envelope; picks the route of the message type, which fixes the protection the
request must use; opens the payload (server key, or session via :class:`SessionCache`);
decodes and validates the body; answers a mutating request that was seen before with
the reply recorded for it; calls the handler; encodes and seals the reply.

Guarantees:

* It never raises and never sends a traceback: every failure is an ``ErrorReply`` with
  a precise :class:`ErrorCode`, protected like the reply it replaces when a key is
  shared, in plain otherwise. An unexpected exception is answered ``internal`` and
  handed back in :attr:`Handled.error` for the shell to log.
* Nothing is written to the store before the request is authenticated and validated;
  a handler writes its effect and its reply in one transaction (:meth:`Context.record`).
* Mutating requests are idempotent by ``(client id, request id)``: a retry or replay of
  the same request gets the recorded reply, re-sealed for the key it arrived under, and
  changes nothing; the same request id with another body is refused ``conflict``.
  Recorded replies are sealed by the master key (they may hold keys).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from common import crypto, keys
from common.codec import (
    HEAD_SIZE,
    decode_body,
    decode_envelope,
    encode_body,
    error_code_for,
    head,
)
from common.errors import (
    IntegrityError,
    NoSpaceError,
    RefusedError,
    RemoteProtocolError,
    StorageError,
)
from common.keys import RsaKey
from common.messages import (
    Envelope,
    ErrorCode,
    ErrorReply,
    Flags,
    Message,
    MessageType,
    carries_data,
    type_of,
)
from common.names import validate_text
from workers.datadir import MasterKey
from workers.protection import (
    NO_REQUEST_ID,
    OneTimeKey,
    Plain,
    Protection,
    SessionKey,
    message_frames,
    reply_frames,
)
from workers.sessions import SessionCache
from workers.store import DuplicateRequest, ReplyRecord, Store

__all__ = ["Context", "Dispatcher", "Handled", "Route"]

Frame = bytes | zmq.Frame
# Envelopes are a few dozen bytes; a first frame longer than this is not one.
MAX_ENVELOPE = 1024
_MAX_MESSAGE = 1024
# Chunk requests: their successful handling is logged at debug level (one per chunk).
_ROUTINE = frozenset({MessageType.UPLOAD_CHUNK, MessageType.DOWNLOAD_CHUNK})
# Requests whose work is short and bounded, with no sync to disk (a chunk; opening a
# transfer; confirming an upload, which writes rows and leaves a replaced file's removal
# to the background), so the worker loop may run them on its I/O thread. A commit, which
# syncs the whole file, and everything else go to the handler thread.
_INLINE = _ROUTINE | {
    MessageType.UPLOAD_BEGIN,
    MessageType.UPLOAD_CONFIRM,
    MessageType.DOWNLOAD_BEGIN,
}


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler knows about its request."""

    envelope: Envelope
    client_id: bytes  # authenticated by the session; b"" before one exists
    protection: Protection
    now: int
    digest: bytes
    master: MasterKey

    def record(self, reply: Message) -> ReplyRecord:
        """The reply to store with the request's effect, sealed by the master key."""
        request_id = self.envelope.request_id
        sealed = self.master.wrap(
            bytes([type_of(reply)]) + encode_body(reply), reply_context(self.client_id, request_id)
        )
        return ReplyRecord(self.client_id, request_id, self.digest, sealed)


@dataclass(frozen=True, slots=True)
class DataReply:
    """A reply that is already frames (chunk data)."""

    frames: list[bytes]


Handler = Callable[[Context, Any], "Message | DataReply"]


@dataclass(frozen=True, slots=True)
class Route:
    """A request type a service takes: the protection it must arrive under, its handler,
    and whether it changes state (then its reply is recorded for retries)."""

    flags: Flags
    handler: Handler
    mutating: bool = False


@dataclass(frozen=True, slots=True)
class Handled:
    """The reply frames and what the shell's summary log line needs.

    ``level`` is the level that line deserves: ``debug`` for a chunk stored or sent as
    asked (a gigabyte is a thousand of them; the upload's summary is its commit and
    confirm lines), ``info`` for everything else, refusals of chunks included.
    """

    frames: list[bytes]
    type: str
    client: str
    request_id: str
    outcome: str
    error: BaseException | None = None
    level: str = "info"


def reply_context(client_id: bytes, request_id: bytes) -> bytes:
    return b"reply:" + client_id + request_id


def _text(message: str) -> str:
    """An ErrorReply message: one valid line, whatever the exception said."""
    try:
        return validate_text(message[:_MAX_MESSAGE], "message", _MAX_MESSAGE)
    except RemoteProtocolError:
        return "request refused"


class _Refusal(Exception):
    def __init__(self, code: ErrorCode, message: str, protection: Protection) -> None:
        super().__init__(message)
        self.code = code
        self.protection = protection


class Dispatcher:
    """One service: routes by message type; see the module docstring."""

    def __init__(
        self,
        routes: Mapping[MessageType, Route],
        *,
        store: Store,
        master: MasterKey,
        server_key: RsaKey | None = None,
        sessions: SessionCache | None = None,
    ) -> None:
        self.routes = dict(routes)
        self._inline_heads = frozenset(head(kind) for kind in _INLINE if kind in routes)
        self.store = store
        self.master = master
        self.server_key = server_key
        self.sessions = sessions

    def runs_inline(self, frames: Sequence[Frame]) -> bool:
        """Whether ``frames`` look like a request this service may handle on the worker
        loop's I/O thread (its ``inline``: see ``_INLINE``), from the envelope's first
        three bytes alone. Never raises; whatever it says, :meth:`handle` then checks the
        request in full."""
        if len(frames) != 2 or not self._inline_heads:
            return False
        first = frames[0]
        start = first[:HEAD_SIZE] if isinstance(first, bytes) else bytes(first.buffer[:HEAD_SIZE])
        return start in self._inline_heads

    def handle(self, frames: Sequence[Frame], now: int) -> Handled:
        envelope: Envelope | None = None
        try:
            envelope, raw = self._envelope(frames)
            return self._serve(envelope, raw, frames[1], now)
        except _Refusal as refusal:
            return self._refused(envelope, refusal)
        except StorageError as exc:  # e.g. the store stayed busy while a session was read
            busy = _Refusal(ErrorCode.INTERNAL, f"{exc}; retry with the same request id", Plain())
            return self._refused(envelope, busy, exc)
        except Exception as exc:  # a bug: answer, and let the shell log it
            internal = _Refusal(ErrorCode.INTERNAL, "internal error", Plain())
            return self._refused(envelope, internal, exc)

    def _envelope(self, frames: Sequence[Frame]) -> tuple[Envelope, bytes]:
        if len(frames) != 2:
            raise _Refusal(ErrorCode.BAD_REQUEST, "expected [envelope, payload]", Plain())
        if len(frames[0]) > MAX_ENVELOPE:
            raise _Refusal(ErrorCode.BAD_REQUEST, "envelope too long", Plain())
        raw = _bytes(frames[0])
        try:
            return decode_envelope(raw), raw
        except RemoteProtocolError as exc:
            raise _Refusal(error_code_for(exc), str(exc), Plain()) from exc

    def _serve(self, envelope: Envelope, aad: bytes, payload: Frame, now: int) -> Handled:
        route = self.routes.get(envelope.type)
        if route is None:
            raise _Refusal(
                ErrorCode.BAD_REQUEST, f"{envelope.type.name} is not taken here", Plain()
            )
        if envelope.flags != route.flags:
            raise _Refusal(
                ErrorCode.BAD_REQUEST,
                f"{envelope.type.name} must be protected as {route.flags!r}",
                Plain(),
            )
        protection, plaintext = self._open(envelope, aad, payload, now)
        client_id = protection.client_id if isinstance(protection, SessionKey) else b""
        try:
            msg: Any = (
                plaintext if carries_data(envelope.type) else decode_body(envelope.type, plaintext)
            )
        except RemoteProtocolError as exc:
            raise _Refusal(error_code_for(exc), str(exc), protection) from exc
        digest = (
            self.master.digest(bytes([envelope.type]) + bytes(plaintext)) if route.mutating else b""
        )
        ctx = Context(envelope, client_id, protection, now, digest, self.master)
        if route.mutating and (replayed := self._recorded(ctx)) is not None:
            return replayed
        try:
            reply = route.handler(ctx, msg)
        except DuplicateRequest:
            replayed = self._recorded(ctx)
            if replayed is None:
                raise _Refusal(ErrorCode.INTERNAL, "retry the request", protection) from None
            return replayed
        except RefusedError as exc:
            raise _Refusal(ErrorCode(exc.code), str(exc), protection) from exc
        except IntegrityError as exc:
            raise _Refusal(ErrorCode.INTEGRITY, "integrity check failed", protection) from exc
        except RemoteProtocolError as exc:
            raise _Refusal(error_code_for(exc), str(exc), protection) from exc
        except NoSpaceError as exc:
            raise _Refusal(ErrorCode.NO_SPACE, str(exc), protection) from exc
        except StorageError as exc:
            raise _Refusal(
                ErrorCode.INTERNAL, f"{exc}; retry with the same request id", protection
            ) from exc
        if isinstance(reply, DataReply):
            frames = reply.frames
        else:
            frames = message_frames(protection, envelope.request_id, reply)
        return self._handled(envelope, client_id, frames, "ok")

    def _open(
        self, envelope: Envelope, aad: bytes, payload: Frame, now: int
    ) -> tuple[Protection, Any]:
        # The envelope bytes as received are the AAD: canonical, so they are the ones sealed.
        if envelope.flags == Flags.SEALED_TO_SERVER and self.server_key is not None:
            try:
                body, one_time_key = keys.open_with_private_key(
                    self.server_key, _view(payload), aad
                )
            except IntegrityError as exc:
                raise _Refusal(ErrorCode.INTEGRITY, "integrity check failed", Plain()) from exc
            return OneTimeKey(one_time_key), body
        if envelope.flags == Flags.SESSION and self.sessions is not None:
            try:
                session = self.sessions.lookup(envelope.key_id, envelope.client_id, now)
            except RefusedError as exc:
                raise _Refusal(ErrorCode(exc.code), str(exc), Plain()) from exc
            if carries_data(envelope.type):
                return session, _view(payload)  # sealed under the data key: the handler opens it
            try:
                return session, crypto.open_sealed(
                    session.keys.client_to_server, _view(payload), aad
                )
            except IntegrityError as exc:
                raise _Refusal(ErrorCode.INTEGRITY, "integrity check failed", session) from exc
        if envelope.flags == Flags(0):
            return Plain(), _bytes(payload)
        raise _Refusal(ErrorCode.BAD_REQUEST, "this service cannot open that payload", Plain())

    def _recorded(self, ctx: Context) -> Handled | None:
        request_id = ctx.envelope.request_id
        found = self.store.find_reply(ctx.client_id, request_id)
        if found is None:
            return None
        digest, sealed = found
        if digest != ctx.digest:
            raise _Refusal(
                ErrorCode.CONFLICT, "request id already used for another request", ctx.protection
            )
        record = self.master.unwrap(sealed, reply_context(ctx.client_id, request_id))
        frames = reply_frames(ctx.protection, request_id, MessageType(record[0]), record[1:])
        return self._handled(ctx.envelope, ctx.client_id, frames, "replayed")

    def _refused(
        self, envelope: Envelope | None, refusal: _Refusal, error: BaseException | None = None
    ) -> Handled:
        request_id = envelope.request_id if envelope is not None else NO_REQUEST_ID
        body = ErrorReply(refusal.code, _text(str(refusal)))
        frames = message_frames(refusal.protection, request_id, body)
        client = refusal.protection.client_id if isinstance(refusal.protection, SessionKey) else b""
        handled = self._handled(envelope, client, frames, str(refusal.code))
        return dataclasses.replace(handled, error=error)

    def _handled(
        self, envelope: Envelope | None, client_id: bytes, frames: list[bytes], outcome: str
    ) -> Handled:
        routine = outcome == "ok" and envelope is not None and envelope.type in _ROUTINE
        return Handled(
            frames=frames,
            type=envelope.type.name if envelope is not None else "?",
            client=(client_id or (envelope.client_id if envelope else b"")).hex()[:8],
            request_id=envelope.request_id.hex() if envelope is not None else "",
            outcome=outcome,
            level="debug" if routine else "info",
        )


def _bytes(frame: Frame) -> bytes:
    return frame if isinstance(frame, bytes) else frame.bytes


def _view(frame: Frame) -> bytes | memoryview:
    """The payload without a copy (a zmq.Frame received with copy=False has a buffer)."""
    return frame if isinstance(frame, bytes) else frame.buffer
