"""The ``cipherdrop`` command line: argument errors, exit statuses, one-line errors.

Run in-process through ``client.cli.main`` with captured streams and an explicit
environment; the only socket opened (the unreachable-server case) is closed with linger 0
by the client itself and points at a port where nothing listens.
"""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from client import cli, identity
from client.cli import ExitStatus, exit_status_for
from common import keys
from common.errors import (
    BrokerUnavailable,
    ConfigError,
    FileAccessError,
    IntegrityError,
    InvalidNameError,
    RefusedError,
    RemoteProtocolError,
    Timeout,
)

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], home: Path, **env: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    environ = {"CIPHERDROP_HOME": str(home), **env}
    code = cli.main(argv, environ, out, err)
    return code, out.getvalue(), err.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def private_key() -> keys.RsaKey:
    return keys.generate_private_key(2048)


@pytest.fixture
def registered(tmp_path: Path, private_key: keys.RsaKey) -> Path:
    home = tmp_path / "home"
    saved = identity.Identity(
        "alice", bytes(range(16)), f"tcp://127.0.0.1:{free_port()}", "SHA256:ab", home
    )
    identity.save_identity(saved, private_key, None)
    return home


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (KeyboardInterrupt(), ExitStatus.INTERRUPTED),
        (identity.ServerKeyMismatchError("x"), ExitStatus.SERVER_KEY_MISMATCH),
        (identity.NotRegisteredError("x"), ExitStatus.NOT_REGISTERED),
        (InvalidNameError("x"), ExitStatus.USAGE),
        (ConfigError("x"), ExitStatus.CONFIG),
        (BrokerUnavailable("x"), ExitStatus.UNREACHABLE),
        (Timeout("x"), ExitStatus.UNREACHABLE),
        (RefusedError("503", "no worker"), ExitStatus.UNREACHABLE),
        (RefusedError("unknown-client", "x"), ExitStatus.NOT_REGISTERED),
        (RefusedError("name-taken", "x"), ExitStatus.REFUSED),
        (RefusedError("bad-proof", "x"), ExitStatus.REFUSED),
        (FileAccessError("x"), ExitStatus.FILE_ERROR),
        (IntegrityError(), ExitStatus.INTEGRITY),
        (RemoteProtocolError("x"), ExitStatus.ERROR),
        (RuntimeError("x"), ExitStatus.ERROR),
    ],
)
def test_every_error_has_its_exit_status(error: BaseException, status: ExitStatus) -> None:
    assert exit_status_for(error) == status


def test_exit_statuses_are_distinct() -> None:
    assert len({int(s) for s in ExitStatus}) == len(ExitStatus)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["put"],
        ["register"],
        ["put", "f", "--bogus"],
        ["--log-level", "loud"],
        ["rekey", "extra"],
        ["passphrase", "--bogus"],
    ],
)
def test_usage_errors_exit_2_without_traceback(argv: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        run(argv, tmp_path)
    assert info.value.code == ExitStatus.USAGE


def test_usage_error_from_the_real_command_prints_usage_only() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "client", "put"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "usage: cipherdrop" in result.stderr
    assert "Traceback" not in result.stderr


def test_whoami_without_identity_is_not_registered(tmp_path: Path) -> None:
    code, out, err = run(["whoami"], tmp_path / "nobody")
    assert code == ExitStatus.NOT_REGISTERED
    assert out == ""
    assert err.startswith("cipherdrop: error: not registered")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_whoami_prints_the_identity(registered: Path, private_key: keys.RsaKey) -> None:
    code, out, err = run(["whoami"], registered)
    assert (code, err) == (ExitStatus.OK, "")
    assert "alice" in out and bytes(range(16)).hex() in out and "SHA256:ab" in out
    assert f"key          {keys.fingerprint(keys.public_key_der(private_key))}\n" in out


def test_whoami_shows_a_key_under_a_passphrase_only_with_it(
    registered: Path, private_key: keys.RsaKey
) -> None:
    run(["passphrase"], registered, CIPHERDROP_NEW_PASSPHRASE="some words")
    code, out, _ = run(["whoami"], registered)
    assert code == ExitStatus.OK and "set CIPHERDROP_PASSPHRASE to show it" in out
    code, out, _ = run(["whoami"], registered, CIPHERDROP_PASSPHRASE="some words")
    assert keys.fingerprint(keys.public_key_der(private_key)) in out
    code, _, err = run(["whoami"], registered, CIPHERDROP_PASSPHRASE="wrong words")
    assert code == ExitStatus.CONFIG and "wrong passphrase" in err


def test_global_flags_work_after_the_command(registered: Path, tmp_path: Path) -> None:
    code, _, _ = run(["whoami", "--home", str(registered)], tmp_path / "elsewhere")
    assert code == ExitStatus.OK


def test_missing_file_exits_7(registered: Path, tmp_path: Path) -> None:
    # The file is checked before anything is sent (the server here does not exist).
    code, _, err = run(["put", str(tmp_path / "missing.bin")], registered)
    assert code == ExitStatus.FILE_ERROR, err
    assert "missing.bin" in err and "Traceback" not in err


def test_directory_is_not_uploadable(registered: Path, tmp_path: Path) -> None:
    code, _, err = run(["put", str(tmp_path)], registered)
    assert code == ExitStatus.FILE_ERROR, err


def test_traversing_name_is_a_usage_error(registered: Path, tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("x")
    code, _, err = run(["put", str(source), "--name", "../../etc/passwd"], registered)
    assert code == ExitStatus.USAGE
    assert "invalid name" in err


def test_unreachable_server_exits_4(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    code, _, err = run(
        ["register", "alice", "--server", endpoint],
        tmp_path / "home",
        CIPHERDROP_CLIENT_REQUEST_TIMEOUT="0.2",
        CIPHERDROP_CLIENT_RETRIES="0",
    )
    assert code == ExitStatus.UNREACHABLE
    assert f"cannot reach the server at {endpoint}" in err
    assert not (tmp_path / "home" / identity.IDENTITY_FILE).exists()


def test_bad_setting_exits_3(tmp_path: Path) -> None:
    code, _, err = run(["whoami"], tmp_path, CIPHERDROP_CLIENT_WINDOW="zero")
    assert code == ExitStatus.CONFIG
    assert "client.window" in err


def test_register_twice_in_one_home_is_refused(registered: Path) -> None:
    code, _, err = run(["register", "bob"], registered)
    assert code == ExitStatus.CONFIG
    assert "already holds the identity 'alice'" in err


def test_encrypted_key_without_passphrase_off_a_terminal(
    tmp_path: Path, private_key: keys.RsaKey
) -> None:
    home = tmp_path / "home"
    saved = identity.Identity("alice", bytes(16), "tcp://127.0.0.1:1", "SHA256:ab", home)
    identity.save_identity(saved, private_key, "secret words")
    source = tmp_path / "a.txt"
    source.write_text("x")
    code, _, err = run(["put", str(source)], home)
    assert code == ExitStatus.CONFIG
    assert "CIPHERDROP_PASSPHRASE" in err


def test_unexpected_error_is_one_line_without_debug(
    registered: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ctx: object, settings: object) -> None:
        raise RuntimeError("something odd")

    monkeypatch.setitem(cli.COMMANDS, "whoami", broken)
    code, _, err = run(["whoami"], registered)
    assert code == ExitStatus.ERROR
    assert err == (
        "cipherdrop: error: unexpected error: RuntimeError: something odd"
        " (run with --debug for details)\n"
    )
    code, _, err = run(["--debug", "whoami"], registered)
    assert code == ExitStatus.ERROR
    assert "Traceback (most recent call last)" in err


def test_interrupt_exits_130(registered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(ctx: object, settings: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "whoami", interrupted)
    code, _, err = run(["whoami"], registered)
    assert code == ExitStatus.INTERRUPTED
    assert err == "cipherdrop: error: interrupted\n"


# --- which server `put` talks to ------------------------------------------------------------

FAST_FAIL = {"CIPHERDROP_CLIENT_REQUEST_TIMEOUT": "0.2", "CIPHERDROP_CLIENT_RETRIES": "0"}


def endpoint_tried(home: Path, tmp_path: Path, *flags: str, **env: str) -> str:
    """The endpoint ``put`` tried (nothing listens anywhere, so it names it in its error)."""
    source = tmp_path / "f.txt"
    source.write_text("x")
    code, _, err = run(["put", str(source), "-q", *flags], home, **FAST_FAIL, **env)
    assert code == ExitStatus.UNREACHABLE, err
    found = re.search(r"cannot reach the server at (\S+):", err)
    assert found, err
    return found[1]


def test_put_endpoint_precedence(registered: Path, tmp_path: Path) -> None:
    saved = identity.load_identity(registered).server
    flag, variable, configured = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    config = tmp_path / "client.toml"
    config.write_text(f'[client]\nserver = "{configured}"\n')
    assert endpoint_tried(registered, tmp_path) == saved
    assert endpoint_tried(registered, tmp_path, CIPHERDROP_CONFIG=str(config)) == configured
    assert endpoint_tried(registered, tmp_path, "--config", str(config)) == configured
    assert endpoint_tried(registered, tmp_path, CIPHERDROP_CLIENT_SERVER=variable) == variable
    both = {"CIPHERDROP_CLIENT_SERVER": variable, "CIPHERDROP_CONFIG": str(config)}
    assert endpoint_tried(registered, tmp_path, **both) == variable
    assert endpoint_tried(registered, tmp_path, "--server", flag, **both) == flag


def test_a_config_file_without_client_server_keeps_the_saved_endpoint(
    registered: Path, tmp_path: Path
) -> None:
    config = tmp_path / "client.toml"
    config.write_text("[client]\nwindow = 4\n")
    saved = identity.load_identity(registered).server
    assert endpoint_tried(registered, tmp_path, CIPHERDROP_CONFIG=str(config)) == saved


# --- put --transfer-info --------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--transfer-info", "t.info", "f.txt"],
        ["--transfer-info", "t.info", "--name", "n"],
        ["--transfer-info", "t.info", "-r"],
        ["--transfer-info", "t.info", "--server", "tcp://h:1"],
    ],
    ids=["nothing", "and-files", "and-name", "and-recursive", "and-server"],
)
def test_transfer_info_usage_errors_exit_2(extra: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        run(["put", *extra], tmp_path)
    assert info.value.code == ExitStatus.USAGE


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("127.0.0.1:1234\nalice\n", "line 3 (file path) is missing"),
        ("127.0.0.1\nalice\nf.txt\n", "line 1 (host:port)"),
        ("127.0.0.1:1234\na/b\nf.txt\n", "line 2 (client name)"),
        ("127.0.0.1:1234\nalice\nnowhere.bin\n", "cannot read"),
    ],
)
def test_a_bad_transfer_info_is_one_line_and_exit_3(
    text: str, complaint: str, tmp_path: Path
) -> None:
    (tmp_path / "f.txt").write_text("x")
    info = tmp_path / "transfer.info"
    info.write_text(text)
    home = tmp_path / "home"
    code, out, err = run(["put", "--transfer-info", str(info)], home)
    assert code == ExitStatus.CONFIG
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("cipherdrop: error: ") and complaint in err
    assert not home.exists()  # nothing registered, nothing created


def test_transfer_info_for_another_name_than_this_homes(registered: Path, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    info = tmp_path / "transfer.info"
    info.write_text(f"127.0.0.1:{free_port()}\nbob\nf.txt\n")
    code, _, err = run(["put", "--transfer-info", str(info)], registered)
    assert code == ExitStatus.CONFIG
    assert "'bob'" in err and "'alice'" in err


def test_transfer_info_endpoint_wins_over_the_environment(registered: Path, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    info = tmp_path / "transfer.info"
    port = free_port()
    info.write_text(f"127.0.0.1:{port}\nalice\nf.txt\n")
    other = f"tcp://127.0.0.1:{free_port()}"
    code, _, err = run(
        ["put", "--transfer-info", str(info)],
        registered,
        **FAST_FAIL,
        CIPHERDROP_CLIENT_SERVER=other,
    )
    assert code == ExitStatus.UNREACHABLE
    assert f"cannot reach the server at tcp://127.0.0.1:{port}:" in err


class _Exited(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Stream(io.StringIO):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.flushed = False

    def flush(self) -> None:
        if self.fail:
            raise BrokenPipeError("closed")
        self.flushed = True


def test_run_flushes_the_output_and_exits_with_the_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, err = _Stream(), _Stream()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(cli, "main", lambda: ExitStatus.FILE_ERROR)

    def exit_now(status: int) -> None:
        raise _Exited(status)

    monkeypatch.setattr(cli.os, "_exit", exit_now)
    with pytest.raises(_Exited) as info:
        cli.run()
    assert info.value.status == ExitStatus.FILE_ERROR
    assert out.flushed and err.flushed


def test_run_returns_the_status_when_the_output_cannot_be_flushed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdout", _Stream(fail=True))
    monkeypatch.setattr(cli, "main", lambda: ExitStatus.OK)
    monkeypatch.setattr(cli.os, "_exit", lambda status: pytest.fail("exited despite a lost flush"))
    assert cli.run() == ExitStatus.OK


def test_a_command_loads_no_transfer_pipeline_it_does_not_run(registered: Path) -> None:
    code = (
        "import sys\n"
        "from client.cli import main\n"
        f"status = main(['whoami', '--home', {str(registered)!r}])\n"
        "heavy = ('client.upload', 'client.download', 'concurrent.futures', 'logging')\n"
        "print(status, sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stderr == "0 []\n"


def test_the_real_command_prints_its_whole_result_before_exiting(registered: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "client", "whoami", "--home", str(registered)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert "alice" in result.stdout and result.stdout.endswith("\n")


class _TerminalIn:
    """Standard input as a terminal: nothing was piped in."""

    buffer = io.BytesIO()

    def isatty(self) -> bool:
        return True


def test_put_from_standard_input_that_is_a_terminal_is_refused(
    registered: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", _TerminalIn())
    code, out, err = run(["put", "-", "--name", "typed.txt"], registered)
    assert code == ExitStatus.FILE_ERROR and out == ""
    assert "standard input is a terminal" in err


# --- passphrase ----------------------------------------------------------------------------


def key_pem(home: Path) -> bytes:
    return (home / identity.PRIVATE_KEY_FILE).read_bytes()


def test_passphrase_puts_the_key_under_one_changes_it_and_removes_it(
    registered: Path, private_key: keys.RsaKey
) -> None:
    der = keys.public_key_der(private_key)
    code, out, err = run(["passphrase"], registered, CIPHERDROP_NEW_PASSPHRASE="first words")
    assert code == ExitStatus.OK, err
    assert "now under the new passphrase" in out
    assert identity.is_encrypted_pem(registered)
    assert (registered / identity.PRIVATE_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert keys.public_key_der(identity.load_private_key(registered, "first words")) == der

    code, _, err = run(
        ["passphrase"],
        registered,
        CIPHERDROP_PASSPHRASE="first words",
        CIPHERDROP_NEW_PASSPHRASE="second words",
    )
    assert code == ExitStatus.OK, err
    with pytest.raises(ConfigError):
        identity.load_private_key(registered, "first words")
    assert keys.public_key_der(identity.load_private_key(registered, "second words")) == der

    code, out, err = run(
        ["passphrase", "--remove"], registered, CIPHERDROP_PASSPHRASE="second words"
    )
    assert code == ExitStatus.OK, err
    assert "no longer under a passphrase" in out
    assert not identity.is_encrypted_pem(registered)
    assert keys.public_key_der(identity.load_private_key(registered, None)) == der


def test_passphrase_with_the_wrong_current_one_changes_nothing(registered: Path) -> None:
    run(["passphrase"], registered, CIPHERDROP_NEW_PASSPHRASE="right words")
    before = key_pem(registered)
    code, _, err = run(
        ["passphrase"],
        registered,
        CIPHERDROP_PASSPHRASE="wrong words",
        CIPHERDROP_NEW_PASSPHRASE="other words",
    )
    assert code == ExitStatus.CONFIG
    assert "wrong passphrase" in err and "Traceback" not in err
    assert key_pem(registered) == before


def test_passphrase_without_a_new_one_off_a_terminal_changes_nothing(registered: Path) -> None:
    before = key_pem(registered)
    code, _, err = run(["passphrase"], registered)
    assert code == ExitStatus.CONFIG
    assert "CIPHERDROP_NEW_PASSPHRASE" in err
    assert key_pem(registered) == before


def test_passphrase_waits_for_an_unfinished_rekey(
    registered: Path, private_key: keys.RsaKey
) -> None:
    identity.save_next_key(registered, private_key, None)
    before = key_pem(registered)
    code, _, err = run(["passphrase"], registered, CIPHERDROP_NEW_PASSPHRASE="new words")
    assert code == ExitStatus.CONFIG
    assert "run 'cipherdrop rekey' first" in err
    assert key_pem(registered) == before


def test_passphrase_of_an_unregistered_home(tmp_path: Path) -> None:
    code, _, err = run(["passphrase"], tmp_path / "nobody", CIPHERDROP_NEW_PASSPHRASE="words")
    assert code == ExitStatus.NOT_REGISTERED
    assert "cipherdrop register" in err
