"""The legacy protocol's bytes: dialect tables, headers, string fields, file headers,
the connection state table and port.info."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import wire
from gateway.__main__ import listen_address, port_from_file
from gateway.machine import TRANSITIONS, State, next_state
from gateway.wire import DIALECTS, LegacyFormatError, Request, Response

EXPECTED_CODES = {
    "a": ([1100, 1101, 1102, 1103, 1104, 1105, 1106], 2100, 1234, 16),
    "b": ([1025, 1026, 1027, 1028, 1029, 1030, 1031], 2100, 1357, 16),
    "c": ([1025, 1026, 1027, 1028, 1029, 1030, 1031], 1600, 1256, 32),
    "d": ([825, 826, 827, 828, 900, 901, 902], 1600, 1256, 32),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CODES))
def test_dialect_table(name: str) -> None:
    requests, first_response, port, key_size = EXPECTED_CODES[name]
    dialect = DIALECTS[name]
    assert [dialect.request_code(r) for r in Request] == requests
    assert [dialect.code_of(r) for r in Response] == list(range(first_response, first_response + 8))
    assert (dialect.default_port, dialect.aes_key_size, dialect.packets) == (
        port,
        key_size,
        name in "cd",
    )


def test_header_bytes() -> None:
    raw = bytes(range(16)) + b"\x03" + struct.pack("<H", 1101) + struct.pack("<I", 415)
    header = wire.parse_header(DIALECTS["a"], raw)
    assert (header.client_id, header.request, header.payload_size) == (
        bytes(range(16)),
        Request.PUBLIC_KEY,
        415,
    )
    assert wire.encode_response(DIALECTS["c"], Response.THANKS, b"x" * 16) == (
        b"\x03" + (1604).to_bytes(2, "little") + (16).to_bytes(4, "little") + b"x" * 16
    )


@pytest.mark.parametrize(
    "raw",
    [
        bytes(16) + b"\x02" + struct.pack("<HI", 1100, 255),  # another version
        bytes(16) + b"\x03" + struct.pack("<HI", 1025, 255),  # dialect B's code, on A
        bytes(22),
    ],
)
def test_bad_headers(raw: bytes) -> None:
    with pytest.raises(LegacyFormatError):
        wire.parse_header(DIALECTS["a"], raw)


@given(st.binary(min_size=23, max_size=23))
def test_any_header_parses_or_is_one_error(raw: bytes) -> None:
    for dialect in DIALECTS.values():
        try:
            header = wire.parse_header(dialect, raw)
        except LegacyFormatError:
            continue
        assert dialect.request_code(header.request) == struct.unpack("<H", raw[17:19])[0]


def test_string_fields() -> None:
    assert wire.parse_name(b"alice\0" + b"\xff" * 249) == "alice"  # garbage after the NUL
    assert wire.parse_name(b'"a b.txt"\0'.ljust(255, b"\0"), strip_quotes=True) == "a b.txt"
    assert wire.parse_name(b'""x""\0'.ljust(255, b"\0"), strip_quotes=True) == '"x"'  # one pair
    assert wire.string_field("bob") == b"bob".ljust(255, b"\0")
    for bad in (b"x" * 255, b"\0" * 255, b"\xff\xfe\0".ljust(255, b"\0"), b"short\0"):
        with pytest.raises(LegacyFormatError):
            wire.parse_name(bad)


def test_file_headers() -> None:
    name = b'"f.bin"\0'.ljust(255, b"\0")
    a = wire.parse_file_header(DIALECTS["a"], struct.pack("<I", 32) + name, 259 + 32)
    assert (a.content_size, a.name, a.data_size, a.total) == (32, "f.bin", 32, 1)
    with pytest.raises(LegacyFormatError):
        wire.parse_file_header(DIALECTS["a"], struct.pack("<I", 32) + name, 259 + 31)
    c = wire.parse_file_header(DIALECTS["c"], struct.pack("<IIHH", 48, 40, 1, 2) + name, 267 + 16)
    assert (c.content_size, c.original_size, c.packet, c.total, c.data_size) == (48, 40, 1, 2, 16)
    with pytest.raises(LegacyFormatError):
        wire.parse_file_header(DIALECTS["c"], struct.pack("<IIHH", 48, 40, 1, 0) + name, 267)


def test_state_table() -> None:
    assert next_state(State.START, Request.PUBLIC_KEY) is None  # no key before a name
    assert next_state(State.START, Request.SEND_FILE) is None
    assert next_state(State.REGISTERED, Request.PUBLIC_KEY) is State.KEYED
    assert next_state(State.KEYED, Request.SEND_FILE) is State.VERDICT
    assert next_state(State.VERDICT, Request.CRC_RETRY) is State.KEYED
    assert next_state(State.KEYED, Request.CRC_OK) is None  # no verdict without a file
    assert all(state is not State.START for state in TRANSITIONS.values())


def test_port_info(tmp_path: Path) -> None:
    path = tmp_path / "port.info"
    assert port_from_file(path, 1234)[0] == 1234 and "not found" in str(
        port_from_file(path, 1234)[1]
    )
    path.write_text("4321\n")
    assert port_from_file(path, 1234) == (4321, None)
    for bad in ("", "port", "70000", "-5", "12 34", "\xff"):
        path.write_text(bad)
        port, warning = port_from_file(path, 1256)
        assert port == 1256 and warning is not None
    path.write_bytes(b"\xff\xfe")
    assert port_from_file(path, 1256)[0] == 1256
    assert listen_address("127.0.0.1:0", DIALECTS["a"], path)[:2] == ("127.0.0.1", 0)
    path.write_text("5000")
    assert listen_address(None, DIALECTS["a"], path)[1] == 5000
