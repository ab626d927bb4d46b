"""The gateway's messages in the codec: known-answer bodies and signed bytes, round trips,
and hostile bytes that decode to one protocol error and nothing else."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.body_schema import gateway_signed_bytes, legacy_grant_signed_bytes
from common.codec import decode_body, encode_body
from common.errors import LocalProtocolError, RemoteProtocolError
from common.messages import (
    LegacyKeyRequest,
    LegacyRegistered,
    LegacyRegisterRequest,
    LegacySessionGranted,
    Message,
    MessageType,
    reply_type,
    type_of,
)

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "legacy_frames.json").read_text())
DOCS = re.sub(r"\s+", "", (ROOT / "docs" / "protocol.md").read_text())

ID = bytes(range(16))
NONCE = bytes(range(0x40, 0x50))
SESSION = bytes(range(0x10, 0x20))
GATEWAY = b"\x30" * 16
LEGACY = b"\x30\x81" + b"\x9d" * 14
T = 1_700_000_000_000
MESSAGES: dict[str, Message] = {
    "legacy register request": LegacyRegisterRequest(GATEWAY, "alice", T, NONCE, b"\x01" * 4),
    "legacy registered": LegacyRegistered(ID),
    "legacy key request": LegacyKeyRequest(GATEWAY, ID, "alice", LEGACY, T, NONCE, b"\x01" * 4),
    "legacy reconnect": LegacyKeyRequest(GATEWAY, b"", "alice", b"", T, NONCE, b"\x01" * 4),
    "legacy session granted": LegacySessionGranted(
        ID, LEGACY, SESSION, b"\xa5" * 8, T + 360_000, b"\x02" * 4
    ),
}


@pytest.mark.parametrize("vector", VECTORS["bodies"], ids=lambda v: v["name"])
def test_known_answer_bodies(vector: dict[str, object]) -> None:
    expected = MESSAGES[str(vector["name"])]
    data = bytes.fromhex(str(vector["hex"]))
    assert type_of(expected) == MessageType(int(str(vector["type"])))
    assert encode_body(expected) == data
    assert decode_body(type_of(expected), data) == expected
    assert str(vector["hex"]) in DOCS  # docs/protocol.md shows the same bytes


@pytest.mark.parametrize("vector", VECTORS["signed"], ids=lambda v: v["name"])
def test_known_answer_signed_bytes(vector: dict[str, str]) -> None:
    msg = MESSAGES[vector["name"]]
    if isinstance(msg, LegacySessionGranted):
        signed = legacy_grant_signed_bytes(msg, bytes.fromhex(vector["nonce"]))
    else:
        assert isinstance(msg, LegacyRegisterRequest | LegacyKeyRequest)
        signed = gateway_signed_bytes(msg)
    assert signed.hex() == vector["hex"]
    assert vector["hex"] in DOCS


def test_reply_types_follow_the_rule() -> None:
    assert reply_type(MessageType.LEGACY_REGISTER_REQUEST) is MessageType.LEGACY_REGISTERED
    assert reply_type(MessageType.LEGACY_KEY_REQUEST) is MessageType.LEGACY_SESSION_GRANTED


def test_signatures_cover_every_field_but_the_signature() -> None:
    request = MESSAGES["legacy key request"]
    assert isinstance(request, LegacyKeyRequest)
    base = gateway_signed_bytes(request)
    assert gateway_signed_bytes(dataclasses.replace(request, signature=b"\x09")) == base
    for change in ({"name": "bob"}, {"client_id": b""}, {"timestamp": T + 1}, {"nonce": ID}):
        assert gateway_signed_bytes(dataclasses.replace(request, **change)) != base  # type: ignore[arg-type]
    register = MESSAGES["legacy register request"]
    assert isinstance(register, LegacyRegisterRequest)
    assert gateway_signed_bytes(register) != base  # contexts differ


@pytest.mark.parametrize(
    "bad",
    [
        LegacyKeyRequest(GATEWAY, b"\x01" * 5, "alice", b"", T, NONCE, b"\x01"),
        LegacyKeyRequest(GATEWAY, ID, "al\x00ice", LEGACY, T, NONCE, b"\x01"),
        LegacyRegisterRequest(b"", "alice", T, NONCE, b"\x01"),
        LegacySessionGranted(ID, b"", SESSION, b"\x01", T, b"\x01"),
    ],
)
def test_invalid_messages_are_not_sent(bad: Message) -> None:
    with pytest.raises(LocalProtocolError):
        encode_body(bad)


@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_message_or_one_protocol_error(data: bytes) -> None:
    for msg_type in (
        MessageType.LEGACY_REGISTER_REQUEST,
        MessageType.LEGACY_REGISTERED,
        MessageType.LEGACY_KEY_REQUEST,
        MessageType.LEGACY_SESSION_GRANTED,
    ):
        try:
            msg = decode_body(msg_type, data)
        except RemoteProtocolError:
            continue
        assert encode_body(msg) == data
