"""Settings: defaults, precedence, conversion, and a ConfigError naming the setting for
every bad value from every source."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ConfigError
from common.keys import fingerprint, fingerprint_digest, parse_fingerprint
from config import ClientSettings, Settings, env_name, load_settings, unknown_variables
from config.sections import CHUNK_OVERHEAD, FIELDS, BrokerSettings, flatten

MIB = 1024 * 1024
DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def toml_value(value: object) -> str:
    """A Python value as a TOML literal (JSON strings are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def write_toml(tmp_path: Path, settings_: dict[str, object]) -> Path:
    tables: dict[str, list[str]] = {}
    for name, value in settings_.items():
        section, key = name.split(".")
        tables.setdefault(section, []).append(f"{key} = {toml_value(value)}")
    text = "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in tables.items())
    file = tmp_path / "cipherdrop.toml"
    file.write_text(text, encoding="utf-8")
    return file


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    s = load_settings(env={})
    assert s.broker.endpoint == "tcp://127.0.0.1:5555"
    assert (s.broker.heartbeat_interval, s.broker.heartbeat_liveness) == (2.5, 3)
    assert (s.broker.request_expiry, s.broker.queue_per_service) == (10.0, 1000)
    assert (s.broker.queue_total, s.broker.max_message_size, s.broker.hwm) == (
        10000,
        16 * MIB,
        10000,
    )
    assert (s.worker.broker, s.worker.heartbeat_interval) == ("tcp://127.0.0.1:5555", 2.5)
    assert (s.worker.heartbeat_liveness, s.worker.reconnect_min) == (3, 0.1)
    assert s.worker.reconnect_max == 5.0
    assert s.client.server == "tcp://127.0.0.1:5555"
    assert s.client.home == Path("/home/someone/.cipherdrop")
    assert (s.client.server_fingerprint, s.client.chunk_size, s.client.window) == ("", MIB, 8)
    assert s.client.parallel_files == 4
    assert (s.client.request_timeout, s.client.retries) == (10.0, 3)
    assert (s.client.compression, s.client.compression_level) == ("zlib", 1)
    assert s.client.sha256 is False
    assert (s.store.data_dir, s.store.busy_timeout) == (Path("var"), 30.0)
    assert (s.store.min_free_space, s.store.quota) == (256 * MIB, 0)
    assert s.store.registration == "open"
    assert (s.crypto.rsa_bits, s.crypto.session_ttl) == (3072, 3600.0)
    assert (s.log.level, s.log.format) == ("info", "auto")
    assert s == Settings()


def test_settings_are_frozen_and_slotted() -> None:
    s = load_settings(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.client.window = 3  # type: ignore[misc]
    assert not hasattr(s.client, "__dict__")


def test_env_name() -> None:
    assert env_name("client.chunk_size") == "CIPHERDROP_CLIENT_CHUNK_SIZE"
    assert env_name("broker.endpoint") == "CIPHERDROP_BROKER_ENDPOINT"


# Each level overrides the one below it; the same setting is given at every level up to it.
@pytest.mark.parametrize("top", ["file", "env", "flag"])
def test_each_level_overrides_the_one_below(tmp_path: Path, top: str) -> None:
    levels = ["file", "env", "flag"][: ["file", "env", "flag"].index(top) + 1]
    window = {"file": 11, "env": 22, "flag": 33}
    path = write_toml(tmp_path, {"client.window": window["file"]})
    env = {"CIPHERDROP_CLIENT_WINDOW": str(window["env"])} if "env" in levels else {}
    flags = {"client.window": window["flag"]} if "flag" in levels else {}
    assert load_settings(path, env=env, flags=flags).client.window == window[top]


def test_file_overrides_defaults_and_leaves_the_rest(tmp_path: Path) -> None:
    path = write_toml(tmp_path, {"broker.endpoint": "tcp://*:7000", "log.format": "json"})
    s = load_settings(path, env={})
    assert (s.broker.endpoint, s.log.format) == ("tcp://*:7000", "json")
    assert s.client == Settings().client


def test_none_flag_means_not_given() -> None:
    s = load_settings(env={"CIPHERDROP_CLIENT_WINDOW": "5"}, flags={"client.window": None})
    assert s.client.window == 5


def test_given_names_the_settings_set_by_file_environment_or_flag(tmp_path: Path) -> None:
    assert load_settings(env={}).given == frozenset()
    default_server = Settings().client.server
    # Set to its default value in the file: still given, which is what tells them apart.
    path = write_toml(tmp_path, {"client.server": default_server, "client.window": 4})
    env = {"CIPHERDROP_CLIENT_RETRIES": "5", "CIPHERDROP_HOME": "/h", "CIPHERDROP_CONFIG": ""}
    flags = {"log.level": "debug", "client.server_fingerprint": None}
    s = load_settings(path, env=env, flags=flags)
    assert s.client.server == default_server
    assert s.given == {
        "client.server",
        "client.window",
        "client.retries",
        "client.home",
        "log.level",
    }


def test_given_file_from_the_environment_and_equality(tmp_path: Path) -> None:
    path = write_toml(tmp_path, {"client.window": Settings().client.window})
    s = load_settings(env={"CIPHERDROP_CONFIG": str(path)})
    assert s.given == {"client.window"}
    assert s == Settings()  # the same values; where they came from is not compared
    with pytest.raises(ConfigError, match=r"client\.nope"):
        Settings(given=frozenset({"client.nope"}))


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write_toml(tmp_path, {"client.retries": 7})
    assert load_settings(env={"CIPHERDROP_CONFIG": str(path)}).client.retries == 7
    # An explicit path wins over the variable; an empty variable means no file.
    (tmp_path / "other").mkdir()
    other = write_toml(tmp_path / "other", {"client.retries": 5})
    assert load_settings(other, env={"CIPHERDROP_CONFIG": str(path)}).client.retries == 5
    assert load_settings(env={"CIPHERDROP_CONFIG": ""}).client.retries == 3


def test_aliases_and_tilde(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    s = load_settings(env={"CIPHERDROP_DATA": "/srv/drop", "CIPHERDROP_HOME": "~/keys"})
    assert s.store.data_dir == Path("/srv/drop")
    assert s.client.home == Path("/home/someone/keys")


def test_full_name_wins_over_alias() -> None:
    env = {"CIPHERDROP_DATA": "/a", "CIPHERDROP_STORE_DATA_DIR": "/b"}
    assert load_settings(env=env).store.data_dir == Path("/b")


def test_text_is_converted_to_the_setting_type() -> None:
    env = {
        "CIPHERDROP_CLIENT_WINDOW": " 16 ",
        "CIPHERDROP_BROKER_HEARTBEAT_INTERVAL": "1e1",
        "CIPHERDROP_CRYPTO_SESSION_TTL": "60",
        "CIPHERDROP_LOG_LEVEL": "DEBUG",
        "CIPHERDROP_CLIENT_SERVER_FINGERPRINT": "AB:" * 31 + "AB",
        "CIPHERDROP_CLIENT_COMPRESSION": " None ",
        "CIPHERDROP_CLIENT_SHA256": " Yes ",
    }
    s = load_settings(env=env)
    assert s.client.window == 16
    assert s.broker.heartbeat_interval == 10.0
    assert s.crypto.session_ttl == 60.0 and isinstance(s.crypto.session_ttl, float)
    assert s.log.level == "debug"
    assert s.client.server_fingerprint == "ab" * 32
    assert s.client.compression == "none"
    assert s.client.sha256 is True


def test_fingerprint_as_the_server_shows_it_is_accepted() -> None:
    key_der = b"not really a key, but any bytes have a fingerprint"
    shown = fingerprint(key_der)
    s = load_settings(env={"CIPHERDROP_CLIENT_SERVER_FINGERPRINT": shown})
    assert s.client.server_fingerprint == fingerprint_digest(key_der).hex()
    assert parse_fingerprint(s.client.server_fingerprint) == fingerprint_digest(key_der)


@pytest.mark.parametrize(
    ("name", "endpoint"),
    [
        ("broker.endpoint", "tcp://127.0.0.1:*"),
        ("broker.endpoint", "tcp://*:5555"),
        ("broker.endpoint", "tcp://[::1]:5555"),
        ("broker.endpoint", "ipc:///run/cipherdrop/broker.sock"),
        ("worker.broker", "tcp://broker.example:5555"),
        ("client.server", "ipc://broker.sock"),
    ],
)
def test_good_endpoints(name: str, endpoint: str) -> None:
    assert flatten(load_settings(env={env_name(name): endpoint}))[name] == endpoint


BAD_VALUES: list[tuple[str, object]] = [
    ("client.chunk_size", "abc"),
    ("client.chunk_size", 4095),
    ("client.chunk_size", 8 * MIB + 1),
    ("client.chunk_size", 65536.0),
    ("client.chunk_size", True),
    ("client.window", 0),
    ("client.window", 257),
    ("client.parallel_files", 0),
    ("client.parallel_files", 65),
    ("client.parallel_files", "four"),
    ("client.retries", -1),
    ("client.compression", "gzip"),
    ("client.compression_level", 4),
    ("client.compression_level", -1),
    ("client.sha256", "maybe"),
    ("client.sha256", 2),
    ("client.sha256", ""),
    ("client.server_fingerprint", "abc"),
    ("client.request_timeout", "nan"),
    ("broker.heartbeat_interval", 0),
    ("broker.heartbeat_interval", -1.5),
    ("broker.heartbeat_interval", "inf"),
    ("broker.heartbeat_liveness", 0),
    ("broker.queue_total", 0),
    ("broker.hwm", 0),
    ("broker.max_message_size", 1000),
    ("broker.endpoint", "localhost:5555"),
    ("broker.endpoint", "http://host:80"),
    ("broker.endpoint", "tcp://host:65536"),
    ("broker.endpoint", 5555),
    ("worker.broker", "tcp://*:5555"),
    ("worker.broker", "tcp://127.0.0.1:*"),
    ("worker.heartbeat_liveness", "three"),
    ("crypto.rsa_bits", 1024),
    ("crypto.rsa_bits", 3000),
    ("crypto.rsa_bits", 16384),
    ("client.server_fingerprint", "SHA256:" + "ab" * 31),
    ("crypto.session_ttl", "1h"),
    ("store.data_dir", ""),
    ("store.busy_timeout", 0),
    ("store.quota", -1),
    ("store.quota", (1 << 62) + 1),
    ("store.quota", "10G"),
    ("store.registration", "closed"),
    ("store.registration", ""),
    ("store.min_free_space", -1),
    ("log.level", "verbose"),
    ("log.format", "xml"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
@pytest.mark.parametrize("source", ["file", "env", "flag"])
def test_bad_value_names_setting_and_source(
    tmp_path: Path, name: str, value: object, source: str
) -> None:
    path = write_toml(tmp_path, {name: value}) if source == "file" else None
    env = {env_name(name): str(value)} if source == "env" else {}
    flags = {name: value} if source == "flag" else {}
    where = {"file": f"config file {path}", "env": env_name(name), "flag": "the command line"}
    with pytest.raises(ConfigError, match="must be") as caught:
        load_settings(path, env=env, flags=flags)
    assert str(caught.value).startswith(f"{name} from {where[source]}: ")


def test_example_message_from_the_brief() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"CIPHERDROP_CLIENT_CHUNK_SIZE": "abc"})
    assert str(caught.value) == (
        "client.chunk_size from CIPHERDROP_CLIENT_CHUNK_SIZE: "
        "must be an integer between 4096 and 8388608, got 'abc'"
    )


def test_bad_value_is_rejected_even_when_overridden(tmp_path: Path) -> None:
    path = write_toml(tmp_path, {"client.window": 0})
    with pytest.raises(ConfigError, match=r"^client\.window from config file"):
        load_settings(path, env={"CIPHERDROP_CLIENT_WINDOW": "4"})


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"worker.reconnect_min": 6.0}, "worker.reconnect_min from the command line"),
        ({"broker.queue_per_service": 20000}, "broker.queue_per_service from the command line"),
        ({"broker.max_message_size": MIB}, "broker.max_message_size from the command line"),
    ],
)
def test_related_settings_are_checked_together(given: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=f"^{named}: must be at") as caught:
        load_settings(env={}, flags=given)
    assert str(caught.value).endswith("from the default")  # the other setting and its source


def test_max_message_size_fits_a_chunk_plus_overhead() -> None:
    flags = {"client.chunk_size": 8 * MIB, "broker.max_message_size": 8 * MIB + CHUNK_OVERHEAD}
    assert load_settings(env={}, flags=flags).broker.max_message_size == 8 * MIB + CHUNK_OVERHEAD


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[brokr]\nhwm = 5\n", r"unknown section \[brokr\] \(did you mean broker\?\)"),
        ("[client]\nchunksize = 5\n", r"unknown setting client\.chunksize \(did you mean"),
        ("window = 5\n", r"unknown section \[window\]"),
        ("client = 5\n", r"client must be a table"),
        ("[client]\nwindow = \n", r"is not valid TOML"),
        ("[client\n", r"is not valid TOML"),
        ("[client]\nwindow = [1, 2]\n", r"^client\.window from config file .*: must be"),
        ("[client]\nrequest_timeout = 1979-05-27\n", r"^client\.request_timeout from"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_settings(path, env={})


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"cannot read config file .*missing\.toml.*CIPHERDROP_CONFIG"
    ):
        load_settings(env={"CIPHERDROP_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path, env={})
    (tmp_path / "latin1.toml").write_bytes(b'[client]\nserver_fingerprint = "\xe9"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path / "latin1.toml", env={})
    (tmp_path / "huge.toml").write_bytes(b"#" * (2 * MIB))
    with pytest.raises(ConfigError, match="larger than"):
        load_settings(tmp_path / "huge.toml", env={})
    with pytest.raises(ConfigError, match=r"^config file from CIPHERDROP_CONFIG: "):
        load_settings(env={"CIPHERDROP_CONFIG": "a\x00b"})


def test_unknown_flag_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'client\.windw' .*client\.window"):
        load_settings(env={}, flags={"client.windw": 3})


def test_unknown_environment_variables_are_ignored_and_listed() -> None:
    env = {
        "CIPHERDROP_CLIENT_WINDOWS": "x",
        "CIPHERDROP_": "",
        "CIPHERDROP_HOME": "/h",
        "PATH": "/",
    }
    assert load_settings(env=env) == load_settings(env={"CIPHERDROP_HOME": "/h"})
    assert unknown_variables(env) == ["CIPHERDROP_", "CIPHERDROP_CLIENT_WINDOWS"]


def test_sections_built_by_hand_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"^client\.window: must be"):
        ClientSettings(window=0)
    with pytest.raises(ConfigError, match=r"^client\.window: must be"):
        dataclasses.replace(ClientSettings(), window=999)
    assert ClientSettings(window="4").window == 4  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^broker\.max_message_size: must be at least"):
        Settings(broker=BrokerSettings(max_message_size=MIB), client=ClientSettings())


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_window_text_gives_settings_or_config_error(text: str) -> None:
    try:
        s = load_settings(env={"CIPHERDROP_CLIENT_WINDOW": text})
    except ConfigError:
        return
    assert s.client.window == int(text.strip())


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(FIELDS)), st.text())
def test_any_text_for_any_setting_gives_settings_or_config_error(name: str, text: str) -> None:
    try:
        load_settings(env={env_name(name): text})
    except ConfigError as exc:
        assert name in str(exc)


def test_every_setting_is_documented() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for name in FIELDS:
        section, key = name.split(".")
        assert f"`{key}`" in docs and f"[{section}]" in docs, name
        assert f"`{env_name(name)}`" in docs, name
