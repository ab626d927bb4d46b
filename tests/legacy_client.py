"""A client of the legacy binary TCP protocol, written from its specification alone.

It does not import the gateway: it is the independent other side that the gateway's tests
talk to, byte for byte as the original clients do. All integers are little-endian.

* Request header (23 bytes): client id 16, version u8 (3), code u16, payload size u32.
* Response header (7 bytes): version u8, code u16, payload size u32.
* Strings: 255-byte fields, NUL-terminated (bytes after the NUL may be garbage).
* Public key: 160 bytes, X.509 SubjectPublicKeyInfo DER of RSA-1024 (e = 17, as the
  originals' library makes them, which is what fits 160 bytes).
* AES key: RSA-OAEP (SHA-1) to that key; 16 bytes (A, B) or 32 (C, D).
* Files: AES-CBC, all-zero IV, PKCS#7. A and B: content size u32 + name[255] + the whole
  ciphertext. C and D: content size u32 + original size u32 + packet number u16 + total
  packets u16 + name[255] + this packet's part of the ciphertext, packets numbered from 1.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from Crypto.Cipher import AES, PKCS1_OAEP
from Crypto.Hash import SHA1
from Crypto.PublicKey import RSA
from Crypto.Util.Padding import pad

__all__ = ["DIALECTS", "LegacyClient", "LegacyDialect", "Reply", "legacy_key"]

VERSION = 3


@dataclass(frozen=True)
class LegacyDialect:
    requests: dict[str, int]
    responses: dict[int, str]
    port: int
    aes_key_size: int
    packets: bool


_REQUESTS = (
    "register",
    "public_key",
    "reconnect",
    "send_file",
    "crc_ok",
    "crc_retry",
    "crc_give_up",
)
_RESPONSES = (
    "registered",
    "registration_failed",
    "aes_key",
    "file_received",
    "thanks",
    "reconnect_approved",
    "reconnect_refused",
    "general_error",
)


def _dialect(
    requests: list[int], responses: range, port: int, key: int, packets: bool
) -> LegacyDialect:
    return LegacyDialect(
        dict(zip(_REQUESTS, requests, strict=True)),
        dict(zip(responses, _RESPONSES, strict=True)),
        port,
        key,
        packets,
    )


DIALECTS = {
    "a": _dialect(list(range(1100, 1107)), range(2100, 2108), 1234, 16, False),
    "b": _dialect(list(range(1025, 1032)), range(2100, 2108), 1357, 16, False),
    "c": _dialect(list(range(1025, 1032)), range(1600, 1608), 1256, 32, True),
    "d": _dialect([825, 826, 827, 828, 900, 901, 902], range(1600, 1608), 1256, 32, True),
}


def legacy_key() -> RSA.RsaKey:
    """An RSA-1024 key as the originals make them (public exponent 17)."""
    return RSA.generate(1024, e=17)


def field(text: str, *, garbage: bool = False) -> bytes:
    """A 255-byte string field; ``garbage`` fills the bytes after the NUL with junk."""
    raw = text.encode() + b"\0"
    filler = os.urandom(255 - len(raw)) if garbage else bytes(255 - len(raw))
    return raw + filler


@dataclass(frozen=True)
class Reply:
    version: int
    code: int
    kind: str
    payload: bytes


class LegacyClient:
    """One TCP connection to a legacy server."""

    def __init__(self, host: str, port: int, dialect: str, timeout: float = 30.0) -> None:
        self.dialect = DIALECTS[dialect]
        # The key first: making one can take longer than a strict gateway's idle timeout
        # (1.5 s in the tests) on a loaded machine, and the connection would be cut.
        self.key = legacy_key()
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.client_id = bytes(16)
        self.aes_key: bytes | None = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LegacyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- framing -------------------------------------------------------------------------

    def send(self, request: str, payload: bytes) -> None:
        code = self.dialect.requests[request]
        self.sock.sendall(
            struct.pack("<16sBHI", self.client_id, VERSION, code, len(payload)) + payload
        )

    def recv_exact(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            piece = self.sock.recv(size - len(data))
            if not piece:
                raise ConnectionError(f"closed after {len(data)} of {size} bytes")
            data += piece
        return bytes(data)

    def reply(self) -> Reply:
        version, code, size = struct.unpack("<BHI", self.recv_exact(7))
        kind = self.dialect.responses.get(code, f"unknown-{code}")
        return Reply(version, code, kind, self.recv_exact(size))

    def closed_by_server(self) -> bool:
        """True if the server has closed the connection (after any bytes still in flight)."""
        try:
            while self.sock.recv(65536):
                pass
        except (ConnectionResetError, TimeoutError):
            return False
        return True

    # -- requests --------------------------------------------------------------------------

    def register(self, name: str) -> Reply:
        self.send("register", field(name, garbage=True))
        reply = self.reply()
        if reply.kind == "registered":
            self.client_id = reply.payload
        return reply

    def send_public_key(self, name: str) -> Reply:
        der = self.key.public_key().export_key(format="DER")
        if len(der) != 160:
            raise ValueError(f"public key is {len(der)} bytes, not 160")
        self.send("public_key", field(name) + der)
        reply = self.reply()
        if reply.kind == "aes_key":
            self._take_key(reply.payload)
        return reply

    def reconnect(self, name: str) -> Reply:
        self.send("reconnect", field(name))
        reply = self.reply()
        if reply.kind == "reconnect_approved":
            self._take_key(reply.payload)
        return reply

    def _take_key(self, payload: bytes) -> None:
        self.client_id = payload[:16]
        self.aes_key = PKCS1_OAEP.new(self.key, hashAlgo=SHA1).decrypt(payload[16:])
        if len(self.aes_key) != self.dialect.aes_key_size:
            raise ValueError(f"AES key of {len(self.aes_key)} bytes")

    def encrypt(self, data: bytes) -> bytes:
        if self.aes_key is None:
            raise ValueError("no AES key yet")
        return AES.new(self.aes_key, AES.MODE_CBC, iv=bytes(16)).encrypt(pad(data, 16))

    def send_file(
        self, name: str, data: bytes, *, packet_size: int = 256 * 1024, quote: bool = True
    ) -> Reply:
        """Send a file; the server's reply (file received with its CRC, or an error)."""
        self.send_file_bytes(
            name, self.encrypt(data), len(data), packet_size=packet_size, quote=quote
        )
        return self.reply()

    def send_file_bytes(
        self,
        name: str,
        ciphertext: bytes,
        original: int,
        *,
        packet_size: int = 256 * 1024,
        quote: bool = True,
    ) -> None:
        name_field = field(f'"{name}"' if quote else name)
        if not self.dialect.packets:
            self.send("send_file", struct.pack("<I", len(ciphertext)) + name_field + ciphertext)
            return
        total = max(1, -(-len(ciphertext) // packet_size))
        for number in range(1, total + 1):
            part = ciphertext[(number - 1) * packet_size : number * packet_size]
            head = struct.pack("<IIHH", len(ciphertext), original, number, total)
            self.send("send_file", head + name_field + part)

    def verdict(self, request: str, name: str) -> Reply | None:
        self.send(request, field(name))
        return None if request == "crc_retry" else self.reply()

    def upload(
        self, name: str, data: bytes, crc_of: Callable[[bytes, int], int], attempts: int = 3
    ) -> tuple[bool, int]:
        """The original client's loop: send, compare the CRC, confirm or resend (3 tries).

        ``crc_of(data, attempt)`` is the CRC the client believes; returns (verified, tries).
        """
        for attempt in range(1, attempts + 1):
            reply = self.send_file(name, data)
            if reply.kind != "file_received":
                raise ConnectionError(f"send file answered {reply.kind}")
            crc = struct.unpack("<I", reply.payload[-4:])[0]
            if crc == crc_of(data, attempt):
                thanks = self.verdict("crc_ok", name)
                assert thanks is not None and thanks.kind == "thanks"
                return True, attempt
            if attempt < attempts:
                self.verdict("crc_retry", name)
        thanks = self.verdict("crc_give_up", name)
        assert thanks is not None and thanks.kind == "thanks"
        return False, attempts
