"""cipherdrop-admin's command line: bad values are usage errors (exit 2), before any work."""

from __future__ import annotations

import io

import pytest

from workers import admin


@pytest.mark.parametrize(
    "argv",
    [
        ["ping", "--timeout", "0"],
        ["ping", "--timeout", "-1"],
        ["ping", "--timeout", "nan"],
        ["ping", "--timeout", "3601"],
        ["ping", "--timeout", "soon"],
        ["invite", "--valid", "0"],
        ["invite", "--valid", "inf"],
        ["invite", "--valid", "31536001"],
        ["quota", "alice", "-5"],
        ["quota", "alice", "lots"],
        ["quota", "alice", str((1 << 62) + 1)],
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        admin.main(argv, env={}, stdout=io.StringIO(), stderr=io.StringIO())
    assert stopped.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_good_values_parse() -> None:
    parser = admin.build_parser()
    assert parser.parse_args(["ping", "--timeout", "0.5"]).timeout == 0.5
    assert parser.parse_args(["invite"]).valid == 7 * 86400
    assert parser.parse_args(["invite", "--valid", "31536000"]).valid == 31536000
    assert parser.parse_args(["quota", "alice", "default"]).value == "default"
    assert parser.parse_args(["quota", "alice", "0"]).value == 0
    assert parser.parse_args(["quota", "alice"]).value is None
