"""Building the settings at an entry point: defaults < TOML file < environment < flags.

:func:`load_settings` starts from the defaults of :mod:`config.sections` and lays on, in
order of increasing precedence, a TOML file (``[broker]``, ``[client]``... tables), the
``CIPHERDROP_<SECTION>_<FIELD>`` environment variables (plus the short aliases
``CIPHERDROP_DATA`` and ``CIPHERDROP_HOME``) and command-line flags. Guarantees:

- every value given, from any source, is converted and checked, even one that a
  higher-precedence source overrides, so a typo in a file does not lie in wait for the
  day the override goes away;
- anything wrong (a bad value, an unknown section or key in the file, a file that cannot
  be read or parsed) raises :class:`~common.errors.ConfigError` whose message names the
  setting and where its value came from; no other exception escapes;
- the result's ``given`` names exactly the settings that a file, a variable or a flag
  set, whatever their value, so a caller can tell "set to the default" from "left alone";
- unknown ``CIPHERDROP_*`` variables are ignored (:func:`unknown_variables` lists them,
  for an entry point that wants to warn about typos).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from common.errors import ConfigError
from config import checks
from config.sections import (
    FIELDS,
    SECTIONS,
    BrokerSettings,
    ClientSettings,
    CryptoSettings,
    LogSettings,
    Settings,
    StoreSettings,
    WorkerSettings,
    check_relations,
    convert,
    unflatten,
)

__all__ = [
    "ALIASES",
    "CONFIG_VARIABLE",
    "BrokerSettings",
    "ClientSettings",
    "CryptoSettings",
    "LogSettings",
    "Settings",
    "StoreSettings",
    "WorkerSettings",
    "env_name",
    "load_settings",
    "unknown_variables",
]

ENV_PREFIX = "CIPHERDROP_"
CONFIG_VARIABLE = "CIPHERDROP_CONFIG"
ALIASES = MappingProxyType({"CIPHERDROP_DATA": "store.data_dir", "CIPHERDROP_HOME": "client.home"})
_MAX_FILE_SIZE = 1024 * 1024
_NO_FLAGS: Mapping[str, object] = MappingProxyType({})
_DEFAULT = "the default"  # the source of a value no file, variable or flag gave


def load_settings(
    path: Path | str | None = None,
    env: Mapping[str, str] = os.environ,
    flags: Mapping[str, object] = _NO_FLAGS,
) -> Settings:
    """Build the settings: defaults < TOML file < environment < flags.

    ``path`` is the TOML file; when None, ``CIPHERDROP_CONFIG`` in ``env`` may name one,
    otherwise there is none. ``flags`` maps ``"section.field"`` to a value, as text or
    already typed; a None value means the flag was not given. The result's ``given``
    names every setting the file, the environment or a flag set. Raises ConfigError.
    """
    values: dict[str, tuple[object, str]] = {}  # full name -> (checked value, its source)

    def put(name: str, raw: object, source: str) -> None:
        values[name] = (convert(name, FIELDS[name].metadata["check"], raw, source), source)

    for name, spec in FIELDS.items():
        put(name, spec.default, _DEFAULT)
    for name, raw, source in _file_values(path, env):
        put(name, raw, source)
    for variable, name in ALIASES.items():
        if variable in env:
            put(name, env[variable], variable)
    for name in FIELDS:  # after the aliases: the full name is the more specific one
        if env_name(name) in env:
            put(name, env[env_name(name)], env_name(name))
    for name, raw in flags.items():
        if raw is not None:
            if name not in FIELDS:
                raise ConfigError(f"unknown setting {name!r} on the command line{_hint(name)}")
            put(name, raw, "the command line")
    checked = {name: value for name, (value, _) in values.items()}
    check_relations(checked, {name: source for name, (_, source) in values.items()})
    given = frozenset(name for name, (_, source) in values.items() if source != _DEFAULT)
    return unflatten(checked, given)


def env_name(name: str) -> str:
    """The variable of a setting: ``client.chunk_size`` -> ``CIPHERDROP_CLIENT_CHUNK_SIZE``."""
    return ENV_PREFIX + name.replace(".", "_").upper()


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """``CIPHERDROP_*`` variables in ``env`` that name no setting (likely typos), sorted."""
    known = {env_name(name) for name in FIELDS} | set(ALIASES) | {CONFIG_VARIABLE}
    return sorted(key for key in env if key.startswith(ENV_PREFIX) and key not in known)


def _file_values(
    path: Path | str | None, env: Mapping[str, str]
) -> Iterator[tuple[str, object, str]]:
    """(setting, raw value, source) for each setting in the TOML file, if there is one."""
    origin = None if path is not None else CONFIG_VARIABLE
    if path is None:
        path = env.get(CONFIG_VARIABLE) or None  # set but empty: no file
    if path is None:
        return
    file = cast(Path, convert("config file", checks.path, path, origin))
    source = f"config file {file}" + (f" (from {origin})" if origin else "")
    for section, table in _read_toml(file, source).items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section [{section}]{_hint(section, SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {section} must be a table [{section}], not a value")
        for key, raw in table.items():
            name = f"{section}.{key}"
            if name not in FIELDS:
                raise ConfigError(f"{source}: unknown setting {name}{_hint(name)}")
            yield name, raw, source


def _read_toml(file: Path, source: str) -> dict[str, Any]:
    try:
        with file.open("rb") as stream:
            data = stream.read(_MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from exc
    if len(data) > _MAX_FILE_SIZE:
        raise ConfigError(f"{source}: larger than {_MAX_FILE_SIZE} bytes, not a config file")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except ValueError as exc:  # TOMLDecodeError, or bytes that are not UTF-8
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc


def _hint(name: str, known: Iterable[str] = FIELDS) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
