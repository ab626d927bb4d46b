"""Known-answer frames: tests/vectors/frames.json byte for byte, and docs/protocol.md shows them."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest

from common.codec import (
    decode_body,
    decode_envelope,
    encode_body,
    encode_envelope,
    key_request_signed_bytes,
    rekey_signed_bytes,
    session_granted_signed_bytes,
)
from common.crypto import derive_session_keys, open_sealed, seal_chunk
from common.ephemeral import session_key as derive_session_key
from common.errors import RemoteProtocolError
from common.messages import (
    Codec,
    Envelope,
    ErrorCode,
    FileInfo,
    Flags,
    KeyRequest,
    Message,
    MessageType,
    RekeyRequest,
    SessionGranted,
    StreamPosition,
    UploadInfo,
    Verdict,
    message_class,
)

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text())


def from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"hex"}:
        return bytes.fromhex(value["hex"])
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(from_json(v) for v in value)
    return value


def build_envelope(value: dict[str, Any]) -> Envelope:
    fields = from_json(value)
    stream = fields["stream"]
    return Envelope(
        version=fields["version"],
        type=MessageType[fields["type"]],
        client_id=fields["client_id"],
        key_id=fields["key_id"],
        request_id=fields["request_id"],
        flags=Flags(fields["flags"]),
        codec=Codec[fields["codec"]],
        stream=None if stream is None else StreamPosition(**stream),
    )


def build_body(type_name: str, value: dict[str, Any]) -> Message:
    fields = from_json(value)
    if "verdict" in fields:
        fields["verdict"] = Verdict[fields["verdict"]]
    if "code" in fields:
        fields["code"] = ErrorCode(fields["code"])
    if "files" in fields:
        fields["files"] = tuple(FileInfo(**f) for f in fields["files"])
    if "uploads" in fields:
        fields["uploads"] = tuple(UploadInfo(**u) for u in fields["uploads"])
    cls = message_class(MessageType[type_name])
    assert cls is not None
    return cls(**fields)


def vector_ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


@pytest.mark.parametrize("vector", VECTORS["envelopes"], ids=vector_ids(VECTORS["envelopes"]))
def test_envelope_vectors(vector: dict[str, Any]) -> None:
    env = build_envelope(vector["value"])
    assert encode_envelope(env).hex() == vector["hex"]
    assert decode_envelope(bytes.fromhex(vector["hex"])) == env


@pytest.mark.parametrize("vector", VECTORS["bodies"], ids=vector_ids(VECTORS["bodies"]))
def test_body_vectors(vector: dict[str, Any]) -> None:
    msg = build_body(vector["type"], vector["value"])
    assert encode_body(msg).hex() == vector["hex"]
    assert decode_body(MessageType[vector["type"]], bytes.fromhex(vector["hex"])) == msg


@pytest.mark.parametrize("vector", VECTORS["signed"], ids=vector_ids(VECTORS["signed"]))
def test_signed_bytes_vectors(vector: dict[str, Any]) -> None:
    body = next(b for b in VECTORS["bodies"] if b["name"] == vector["body"])
    msg = build_body(body["type"], body["value"])
    if isinstance(msg, KeyRequest):
        signed = key_request_signed_bytes(msg)
    elif isinstance(msg, RekeyRequest):
        signed = rekey_signed_bytes(msg)
    else:
        assert isinstance(msg, SessionGranted)
        signed = session_granted_signed_bytes(msg, bytes.fromhex(vector["request_nonce"]))
    assert signed.hex() == vector["hex"]


@pytest.mark.parametrize(
    "vector", VECTORS["invalid_envelopes"], ids=vector_ids(VECTORS["invalid_envelopes"])
)
def test_invalid_envelope_vectors(vector: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError, match=vector["error"]):
        decode_envelope(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize("vector", VECTORS["chunk_aad"], ids=vector_ids(VECTORS["chunk_aad"]))
def test_chunk_aad_vectors(vector: dict[str, Any]) -> None:
    transfer_id = bytes.fromhex(vector["transfer_id"])
    codec = Codec[vector["codec"]]
    documented = bytes.fromhex(vector["hex"])
    # The layout docs/protocol.md gives, built here by hand.
    layout = (
        b"\x00cipherdrop-chunk-v1\x00"
        + vector["index"].to_bytes(8, "big")
        + bytes([vector["final"]])
        + transfer_id
        + bytes([codec])
    )
    assert documented == layout
    # A chunk sealed the way the client seals it opens as a plain frame with that AAD.
    key = bytes(range(32))
    blob = seal_chunk(
        key, vector["index"], vector["final"], b"chunk", aad=transfer_id + bytes([codec])
    )
    assert open_sealed(key, blob, documented) == b"chunk"


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869 with L = 32, written out so the check does not depend on the code it checks."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


@pytest.mark.parametrize("vector", VECTORS["session_keys"], ids=vector_ids(VECTORS["session_keys"]))
def test_session_key_vectors(vector: dict[str, Any]) -> None:
    session_key = bytes.fromhex(vector["session_key"])
    session_id = bytes.fromhex(vector["session_id"])
    keys = derive_session_keys(session_key, session_id)
    assert keys.client_to_server.hex() == vector["client_to_server"]
    assert keys.server_to_client.hex() == vector["server_to_client"]
    for direction in ("client-to-server", "server-to-client"):
        info = f"cipherdrop v1 session {direction}".encode()
        expected = hkdf_sha256(session_key, session_id, info)
        assert expected.hex() == vector[direction.replace("-", "_")]


@pytest.mark.parametrize("vector", VECTORS["session_key"], ids=vector_ids(VECTORS["session_key"]))
def test_session_key_derivation_vectors(vector: dict[str, Any]) -> None:
    derived = derive_session_key(
        bytes.fromhex(vector["x25519_shared"]),
        bytes.fromhex(vector["secret"]),
        bytes.fromhex(vector["session_id"]),
    )
    assert derived.hex() == vector["session_key"]


def test_protocol_doc_shows_every_vector() -> None:
    doc = re.sub(r"\s+", "", (ROOT / "docs" / "protocol.md").read_text())
    kinds = ("envelopes", "bodies", "signed", "invalid_envelopes", "chunk_aad")
    missing = [v["name"] for kind in kinds for v in VECTORS[kind] if v["hex"] not in doc]
    for v in VECTORS["session_key"]:
        for part in ("x25519_shared", "secret", "session_id", "session_key"):
            if v[part] not in doc:
                missing.append(f"{v['name']}: {part}")
    for v in VECTORS["session_keys"]:
        for part in ("session_key", "session_id", "client_to_server", "server_to_client"):
            if v[part] not in doc:
                missing.append(f"{v['name']}: {part}")
    assert missing == []
