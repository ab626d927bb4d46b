"""Plays the client against the server's sans-I/O services, with real codec and crypto.

``Server`` opens a data dir and wires the three services to one store; its ``now``
(milliseconds) is the clock every call passes in. ``Client`` builds request frames exactly
as flows.md says (sealed to the server key, or under the session key), sends them through
``Server.call`` and opens the replies, checking the request id and the protection.
RSA keys are 2048-bit and made once per test session, to keep tests fast.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from Crypto.PublicKey import RSA

from common import crypto, keys
from common.codec import (
    decode_body,
    decode_envelope,
    encode_body,
    encode_envelope,
    key_request_signed_bytes,
    new_request_id,
    rekey_signed_bytes,
    server_key_endorsement_bytes,
    session_granted_signed_bytes,
)
from common.compress import compress_chunk
from common.ephemeral import Ephemeral, session_key
from common.fields import MAX_PUBLIC_KEY_LEN
from common.keys import RsaKey
from common.messages import (
    NO_FLAGS,
    PROTOCOL_VERSION,
    ChunkStored,
    Codec,
    Envelope,
    ErrorReply,
    Flags,
    KeyRequest,
    Message,
    MessageType,
    Registered,
    RegisterRequest,
    Rekeyed,
    RekeyRequest,
    SessionGranted,
    StreamPosition,
    UploadBegin,
    UploadCommit,
    UploadCommitted,
    UploadConfirm,
    UploadDone,
    UploadReady,
    Verdict,
    type_of,
)
from common.secretfile import write_secret_file
from workers.datadir import DataDir, open_data_dir
from workers.files import file_service
from workers.keyx import key_service
from workers.register import register_service
from workers.service import Dispatcher
from workers.store import Store

NOW = 1_700_000_000_000  # ms
BITS = 2048
MAX_CHUNK = 8 * 1024 * 1024


@functools.cache
def rsa_key(label: str) -> RsaKey:
    """One key pair per label for the whole test session."""
    return keys.generate_private_key(BITS)


def endorsement(previous: RsaKey, new_der: bytes) -> tuple[bytes, bytes]:
    """``(previous key DER, its signature)`` handing the server over from ``previous`` to
    ``new_der``, as a ServerKey reply carries it after a change of key."""
    previous_der = keys.public_key_der(previous)
    return previous_der, keys.sign(previous, server_key_endorsement_bytes(previous_der, new_der))


@functools.cache
def bad_public_keys() -> dict[str, bytes]:
    """Public keys no key exchange accepts, each with why."""
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


def envelope(
    msg_type: MessageType,
    *,
    flags: Flags = NO_FLAGS,
    client_id: bytes = b"",
    key_id: bytes = b"",
    request_id: bytes | None = None,
    codec: Codec = Codec.NONE,
    stream: StreamPosition | None = None,
) -> bytes:
    return encode_envelope(
        Envelope(
            PROTOCOL_VERSION,
            msg_type,
            client_id,
            key_id,
            request_id or new_request_id(),
            flags,
            codec,
            stream,
        )
    )


class Server:
    """The three services on one data dir and store, with a settable clock."""

    def __init__(self, path: Path, session_ttl: float = 3600.0) -> None:
        path.mkdir(mode=0o700, exist_ok=True)
        if not (path / "server_key.pem").exists():
            write_secret_file(path / "server_key.pem", keys.private_key_to_pem(rsa_key("server")))
        self.data: DataDir = open_data_dir(path, BITS, env={})
        self.store = Store.open(self.data.db_path, busy_timeout=5.0)
        self.register = register_service(self.store, self.data)
        self.key = key_service(self.store, self.data, session_ttl)
        self.file = file_service(self.store, self.data, MAX_CHUNK)
        self.now = NOW
        self.outcomes: list[str] = []

    @property
    def server_public(self) -> RsaKey:
        return self.data.server_key.public_key()

    def call(self, service: str, frames: list[bytes]) -> list[bytes]:
        dispatcher: Dispatcher = getattr(self, service)
        handled = dispatcher.handle(frames, self.now)
        if handled.error is not None:
            raise AssertionError(f"handler crashed: {handled.error!r}") from handled.error
        self.outcomes.append(handled.outcome)
        return handled.frames

    def dump(self) -> list[str]:
        """Every row of every table: to check that a request changed nothing."""
        return list(self.store._db.iterdump())

    def close(self) -> None:
        self.store.close()


class Endpoint(Protocol):
    """Where a client sends requests: the in-process ``Server`` or real processes."""

    now: int

    @property
    def server_public(self) -> RsaKey: ...

    def call(self, service: str, frames: list[bytes]) -> list[bytes]: ...


@dataclass
class Client:
    """One client: its key pair, its id once registered, its session once connected."""

    server: Endpoint
    name: str
    key: RsaKey
    client_id: bytes = b""
    session_id: bytes = b""
    session_keys: crypto.SessionKeys | None = field(default=None, repr=False)
    session_key: bytes = field(default=b"", repr=False)
    ephemerals: dict[bytes, Ephemeral] = field(default_factory=dict, repr=False)

    @property
    def server_public(self) -> RsaKey:
        return self.server.server_public

    @property
    def public_der(self) -> bytes:
        return keys.public_key_der(self.key)

    # -- sealed to the server -------------------------------------------------------

    def sealed(self, msg: Message, request_id: bytes | None = None) -> tuple[list[bytes], bytes]:
        env = envelope(type_of(msg), flags=Flags.SEALED_TO_SERVER, request_id=request_id)
        payload, one_time_key = keys.seal_to_public_key(self.server_public, encode_body(msg), env)
        return [env, payload], one_time_key

    def open_reply(self, frames: list[bytes], request: bytes, key: bytes | None = None) -> Message:
        """Open a reply to the request whose envelope is ``request``."""
        env = decode_envelope(frames[0])
        assert env.request_id == decode_envelope(request).request_id
        if env.flags == Flags.SEALED_REPLY:
            assert key is not None
            body = crypto.open_sealed(key, frames[1], frames[0])
        elif env.flags == Flags.SESSION:
            assert self.session_keys is not None and env.key_id == self.session_id
            body = crypto.open_sealed(self.session_keys.server_to_client, frames[1], frames[0])
        else:
            assert env.flags == Flags(0)
            body = frames[1]
        return decode_body(env.type, body)

    def register(self, request_id: bytes | None = None, invite: bytes = b"") -> Message:
        request = RegisterRequest(self.name, self.public_der, invite)
        frames, key = self.sealed(request, request_id)
        reply = self.open_reply(self.server.call("register", frames), frames[0], key)
        if isinstance(reply, Registered):
            self.client_id = reply.client_id
        return reply

    def key_request(self, nonce: bytes | None = None, timestamp: int | None = None) -> KeyRequest:
        ephemeral = Ephemeral()
        self.ephemerals[ephemeral.public] = ephemeral
        unsigned = KeyRequest(
            self.client_id,
            self.name,
            self.public_der,
            self.server.now if timestamp is None else timestamp,
            nonce or secrets.token_bytes(16),
            ephemeral.public,
            b"\0",
        )
        signature = keys.sign(self.key, key_request_signed_bytes(unsigned))
        return dataclasses.replace(unsigned, signature=signature)

    def connect(self, request: KeyRequest | None = None) -> Message:
        """Key exchange; on success the session is set and the grant checked like a client."""
        request = request or self.key_request()
        frames, one_time_key = self.sealed(request)
        reply = self.open_reply(self.server.call("key", frames), frames[0], one_time_key)
        if isinstance(reply, SessionGranted):
            signed = session_granted_signed_bytes(reply, request.nonce)
            keys.verify(self.server_public, signed, reply.signature)
            secret = keys.unwrap_key(self.key, reply.wrapped_key)
            shared = self.ephemerals.pop(request.ephemeral).agree(reply.ephemeral)
            self.session_key = session_key(shared, secret, reply.session_id)
            self.session_id = reply.session_id
            self.session_keys = crypto.derive_session_keys(self.session_key, reply.session_id)
        return reply

    def rekey_request(
        self, new_key: RsaKey, nonce: bytes | None = None, timestamp: int | None = None
    ) -> RekeyRequest:
        """A request moving this client to ``new_key``, signed by both keys."""
        unsigned = RekeyRequest(
            self.client_id,
            self.name,
            self.public_der,
            keys.public_key_der(new_key),
            self.server.now if timestamp is None else timestamp,
            nonce or secrets.token_bytes(16),
            b"\0",
            b"\0",
        )
        signed = rekey_signed_bytes(unsigned)
        return dataclasses.replace(
            unsigned,
            signature=keys.sign(self.key, signed),
            new_signature=keys.sign(new_key, signed),
        )

    def rekey(self, new_key: RsaKey, request: RekeyRequest | None = None) -> Message:
        """Send a rekey; on ``Rekeyed`` this client holds ``new_key`` from then on."""
        request = request or self.rekey_request(new_key)
        frames, one_time_key = self.sealed(request)
        reply = self.open_reply(self.server.call("key", frames), frames[0], one_time_key)
        if isinstance(reply, Rekeyed):
            self.key = new_key
        return reply

    # -- session requests ------------------------------------------------------------

    def session_frames(self, msg: Message, request_id: bytes | None = None) -> list[bytes]:
        assert self.session_keys is not None
        env = envelope(
            type_of(msg),
            flags=Flags.SESSION,
            client_id=self.client_id,
            key_id=self.session_id,
            request_id=request_id,
        )
        return [env, crypto.seal(self.session_keys.client_to_server, encode_body(msg), env)]

    def ask(self, msg: Message, request_id: bytes | None = None) -> Message:
        frames = self.session_frames(msg, request_id)
        return self.open_reply(self.server.call("file", frames), frames[0])

    def chunk_frames(
        self, ready: UploadReady, index: int, final: bool, data: bytes, compress: bool = False
    ) -> list[bytes]:
        codec, body = compress_chunk(data) if compress else (Codec.NONE, data)
        stream = StreamPosition(ready.transfer_id, index, final)
        env = envelope(
            MessageType.UPLOAD_CHUNK,
            flags=Flags.SESSION,
            client_id=self.client_id,
            key_id=self.session_id,
            codec=Codec(codec),
            stream=stream,
        )
        aad = ready.transfer_id + bytes([codec])
        return [env, crypto.seal_chunk(ready.data_key, index, final, body, aad=aad)]

    def send_chunk(self, frames: list[bytes]) -> Message:
        return self.open_reply(self.server.call("file", frames), frames[0])

    def begin(self, name: str, data: bytes, chunk_size: int, source: bytes = b"") -> UploadReady:
        count = max(1, -(-len(data) // chunk_size))
        ready = self.ask(UploadBegin(name, len(data), chunk_size, count, source))
        assert isinstance(ready, UploadReady), ready
        return ready

    def upload(
        self,
        name: str,
        data: bytes,
        chunk_size: int = 4096,
        compress: bool = False,
        source: bytes = b"",
        sha256: bytes | None = None,
    ) -> tuple[UploadCommitted, UploadDone]:
        ready = self.begin(name, data, chunk_size, source)
        pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
        for index, piece in enumerate(pieces):
            if index in ready.stored:
                continue
            final = index == len(pieces) - 1
            stored = self.send_chunk(self.chunk_frames(ready, index, final, piece, compress))
            assert stored == ChunkStored(ready.transfer_id, index), stored
        committed = self.ask(UploadCommit(ready.transfer_id))
        assert isinstance(committed, UploadCommitted), committed
        done = self.ask(UploadConfirm(ready.transfer_id, Verdict.OK, sha256))
        assert isinstance(done, UploadDone), done
        return committed, done


def error_code(reply: Message) -> str:
    assert isinstance(reply, ErrorReply), reply
    return str(reply.code)
