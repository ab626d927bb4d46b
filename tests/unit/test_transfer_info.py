"""``transfer.info``, the original client's configuration: strict parsing, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client.transfer_info import MAX_SIZE, TransferInfo, parse_transfer_info, read_transfer_info
from common.errors import ConfigError

WHERE = Path("/srv/legacy/transfer.info")


def test_the_three_lines() -> None:
    info = parse_transfer_info("127.0.0.1:1234\nalice\nreport.txt\n", WHERE)
    assert info == TransferInfo("tcp://127.0.0.1:1234", "alice", WHERE.parent / "report.txt")


@pytest.mark.parametrize(
    ("text", "endpoint", "name", "path"),
    [
        # Windows line endings, spaces around, blank lines at the end
        (
            "  drop.example.org:5555 \r\n bob \r\n/data/x.bin\r\n\r\n\n",
            "tcp://drop.example.org:5555",
            "bob",
            "/data/x.bin",
        ),
        # no final newline; a quoted path loses one pair of quotes
        ('[::1]:7\ncarol\n"my file.txt"', "tcp://[::1]:7", "carol", "/srv/legacy/my file.txt"),
        # a leading zero in the port is just a number
        ("host:05555\ndave\nsub/dir/f", "tcp://host:5555", "dave", "/srv/legacy/sub/dir/f"),
    ],
)
def test_accepted_forms(text: str, endpoint: str, name: str, path: str) -> None:
    assert parse_transfer_info(text, WHERE) == TransferInfo(endpoint, name, Path(path))


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "line 1 (host:port) is missing"),
        ("\n\n", "line 1 (host:port) is missing"),
        ("127.0.0.1:1234\n", "line 2 (client name) is missing"),
        ("127.0.0.1:1234\nalice\n", "line 3 (file path) is missing"),
        ("127.0.0.1:1234\nalice\nf\nextra\n", "line 4"),
        ("127.0.0.1\nalice\nf", "line 1 (host:port)"),
        ("127.0.0.1:0\nalice\nf", "line 1 (host:port)"),
        ("127.0.0.1:65536\nalice\nf", "line 1 (host:port)"),
        ("127.0.0.1:http\nalice\nf", "line 1 (host:port)"),
        ("tcp://127.0.0.1:1234\nalice\nf", "line 1 (host:port)"),
        ("bad host:1234\nalice\nf", "line 1 (host:port)"),
        (":1234\nalice\nf", "line 1 (host:port)"),
        ("127.0.0.1:1234\n\nf", "line 2 (client name)"),
        ("127.0.0.1:1234\n../alice\nf", "line 2 (client name)"),
        ("127.0.0.1:1234\n" + "a" * 300 + "\nf", "line 2 (client name)"),
        ('127.0.0.1:1234\nalice\n""', "line 3 (file path)"),
    ],
)
def test_refused_forms_name_the_line(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_transfer_info(text, WHERE)
    message = str(refused.value)
    assert message.startswith(f"{WHERE}: ") and complaint in message
    assert "\n" not in message


def write_info(directory: Path, text: str | bytes) -> Path:
    path = directory / "transfer.info"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def test_read_checks_the_file_it_names(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"x")
    info = read_transfer_info(write_info(tmp_path, "localhost:1256\nalice\ndata.bin\n"))
    assert info.path == tmp_path / "data.bin"  # relative to the transfer.info's directory
    assert info.path.read_bytes() == b"x"


def test_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    path = write_info(tmp_path, "\ufefflocalhost:1256\nalice\nf\n".encode())
    assert read_transfer_info(path).endpoint == "tcp://localhost:1256"


@pytest.mark.parametrize("target", ["missing.bin", ".", "fifo"])
def test_a_file_that_cannot_be_uploaded_is_refused(tmp_path: Path, target: str) -> None:
    os.mkfifo(tmp_path / "fifo")  # must not block the reader
    path = write_info(tmp_path, f"localhost:1256\nalice\n{target}\n")
    with pytest.raises(ConfigError, match=r"line 3 \(file path\)"):
        read_transfer_info(path)


def test_a_file_that_cannot_be_opened_is_refused(tmp_path: Path) -> None:
    # Failures that file permissions cannot cause for every user alike (tests may run as
    # root): a symbolic link loop, and a path through a regular file.
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "plain").write_bytes(b"x")
    for target in (tmp_path / "loop", tmp_path / "plain" / "child"):
        with pytest.raises(ConfigError, match="cannot read") as refused:
            read_transfer_info(write_info(tmp_path, f"localhost:1256\nalice\n{target}\n"))
        assert "line 3 (file path)" in str(refused.value)


@pytest.mark.parametrize(
    "contents", [b"\xff\xfe\x00garbage\n", b"x" * (MAX_SIZE + 1)], ids=["binary", "huge"]
)
def test_what_is_not_a_transfer_info_is_refused(tmp_path: Path, contents: bytes) -> None:
    with pytest.raises(ConfigError, match=r"transfer\.info"):
        read_transfer_info(write_info(tmp_path, contents))


def test_a_missing_transfer_info_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_transfer_info(tmp_path / "transfer.info")
