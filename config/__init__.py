"""Typed settings: defaults < TOML file < CIPHERDROP_* environment < command-line flags.

Entry points call :func:`load_settings` once and hand plain values from the resulting
:class:`Settings` to everything else.
"""

from config.sections import (
    BrokerSettings,
    ClientSettings,
    CryptoSettings,
    LogSettings,
    Settings,
    StoreSettings,
    WorkerSettings,
)
from config.settings import env_name, load_settings, unknown_variables

__all__ = [
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
