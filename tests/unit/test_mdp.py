"""Majordomo framing: builders are byte-exact, parsers accept the spec and nothing else."""

from __future__ import annotations

import contextlib

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from common import mdp
from common.errors import RemoteProtocolError


def test_constants_match_spec_7() -> None:
    assert (mdp.MDPC01, mdp.MDPW01) == (b"MDPC01", b"MDPW01")
    commands = [mdp.READY, mdp.REQUEST, mdp.REPLY, mdp.HEARTBEAT, mdp.DISCONNECT]
    assert commands == [b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"]


def test_builders_are_byte_exact() -> None:
    assert mdp.client_request(b"svc", [b"a", b"b"]) == [b"", b"MDPC01", b"svc", b"a", b"b"]
    assert mdp.ready(b"svc") == [b"", b"MDPW01", b"\x01", b"svc"]
    assert mdp.request(b"cid", [b"x"]) == [b"", b"MDPW01", b"\x02", b"cid", b"", b"x"]
    assert mdp.reply(b"cid", [b"x"]) == [b"", b"MDPW01", b"\x03", b"cid", b"", b"x"]
    assert mdp.heartbeat() == [b"", b"MDPW01", b"\x04"]
    assert mdp.disconnect() == [b"", b"MDPW01", b"\x05"]
    assert mdp.status_reply(b"svc", b"503", "queue full", b"env") == [
        b"",
        b"MDPC01",
        b"svc",
        b"503",
        b"queue full",
        b"env",
    ]


def test_builders_pass_body_frames_through_untouched() -> None:
    frame = zmq.Frame(b"x" * 100_000)
    assert mdp.client_request(b"svc", [frame])[3] is frame
    assert mdp.reply(b"cid", [frame])[5] is frame


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        (mdp.ready(b"svc"), mdp.WorkerCommand(mdp.READY, service=b"svc")),
        (mdp.heartbeat(), mdp.WorkerCommand(mdp.HEARTBEAT)),
        (mdp.disconnect(), mdp.WorkerCommand(mdp.DISCONNECT)),
        (
            mdp.request(b"c", [b"a", b"b"]),
            mdp.WorkerCommand(mdp.REQUEST, client=b"c", body=(b"a", b"b")),
        ),
        (mdp.reply(b"c", [b"a"]), mdp.WorkerCommand(mdp.REPLY, client=b"c", body=(b"a",))),
    ],
)
def test_parse_worker_round_trips(frames: list[bytes], expected: mdp.WorkerCommand) -> None:
    assert mdp.parse_worker(frames) == expected


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b"", b"MDPW01"],
        [b"x", b"MDPW01", b"\x04"],
        [b"", b"MDPC01", b"\x04"],
        [b"", b"MDPW01", b"\x06"],
        [b"", b"MDPW01", b"\x04", b"extra"],
        [b"", b"MDPW01", b"\x01"],
        [b"", b"MDPW01", b"\x01", b"a", b"b"],
        [b"", b"MDPW01", b"\x03", b"c", b""],
        [b"", b"MDPW01", b"\x03", b"c", b"not empty", b"body"],
    ],
)
def test_parse_worker_rejects_what_the_spec_does_not_allow(frames: list[bytes]) -> None:
    with pytest.raises(RemoteProtocolError):
        mdp.parse_worker(frames)


def test_parse_client_and_status() -> None:
    message = mdp.parse_client([b"", b"MDPC01", b"svc", b"503", b"queue full", b"env"])
    assert message.service == b"svc"
    assert mdp.parse_status(message.body) == mdp.BrokerStatus(b"503", "queue full", b"env")
    assert mdp.parse_status([b"200"]) == mdp.BrokerStatus(b"200", "", b"")
    assert mdp.parse_status([b"\x93envelope", b"payload"]) is None
    assert mdp.parse_status([]) is None
    with pytest.raises(RemoteProtocolError):
        mdp.parse_status([b"503", b"reason"])


def test_is_status_only_for_three_ascii_digits() -> None:
    assert mdp.is_status(b"404")
    for frame in (b"40", b"4044", b"40x", "٤٠٤".encode(), b"\x93\x01\x02"):
        assert not mdp.is_status(frame)


def test_service_names() -> None:
    assert mdp.valid_service_name(b"cipherdrop.file")
    for bad in (b"", b"a b", b"\x00", b"x" * 256, "é".encode()):
        assert not mdp.valid_service_name(bad)


def test_as_bytes_reads_frames() -> None:
    assert mdp.as_bytes(zmq.Frame(b"abc")) == b"abc"
    assert mdp.as_bytes(b"abc") == b"abc"


_frame = st.one_of(
    st.sampled_from([b"", b"MDPC01", b"MDPW01", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"]),
    st.binary(max_size=12),
)


@given(st.lists(_frame, max_size=8))
def test_parsers_raise_only_protocol_errors(frames: list[bytes]) -> None:
    for parse in (mdp.parse_worker, mdp.parse_client, mdp.parse_status):
        with contextlib.suppress(RemoteProtocolError):
            parse(frames)
