"""The settings object: one frozen section per part of the product, always valid.

Each setting is one line of a section class: its type, its default and the converter
(from :mod:`config.checks`) that every value for it goes through. Building a section,
by hand or through :func:`config.settings.load_settings`, converts and checks every
field; building :class:`Settings` also checks the rules that tie two settings together.
So holding a :class:`Settings` means holding valid settings. Failures raise
:class:`~common.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from common.compress import LEVELS as COMPRESSION_LEVELS
from common.errors import ConfigError
from common.keys import MAX_RSA_BITS, MIN_RSA_BITS
from common.log import LEVELS, LogFormat
from config import checks
from config.checks import Check, Invalid

Compression = Literal["none", "zlib"]
Registration = Literal["open", "invite"]

KIB = 1024
MIB = 1024 * KIB
MIN_CHUNK_SIZE = 4 * KIB
MAX_CHUNK_SIZE = 8 * MIB
# Room around one chunk in a message: MDP frames, the envelope, nonce and tag.
CHUNK_OVERHEAD = 64 * KIB
_COUNT = 2**31 - 1  # ZeroMQ and SQLite take these as C ints
_HOUR = 3600.0
_DAY = 24 * _HOUR
# The longest session a key worker may grant (crypto.session_ttl); recorded replies are
# kept longer than that (workers/files.py).
MAX_SESSION_TTL = 30 * _DAY
_ENDPOINT = "tcp://127.0.0.1:5555"


def _checked(check: Check) -> Mapping[str, Check]:
    return {"check": check}


@dataclass(frozen=True, slots=True)
class _Section:
    """Base of the sections: converts and checks every field when built."""

    section: ClassVar[str]

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            name = f"{self.section}.{spec.name}"
            value = convert(name, spec.metadata["check"], getattr(self, spec.name), None)
            object.__setattr__(self, spec.name, value)


@dataclass(frozen=True, slots=True)
class BrokerSettings(_Section):
    """The broker: where it binds and how it bounds its queues and messages."""

    section: ClassVar[str] = "broker"
    endpoint: str = field(default=_ENDPOINT, metadata=_checked(checks.endpoint(bind=True)))
    heartbeat_interval: float = field(default=2.5, metadata=_checked(checks.seconds(_HOUR)))
    heartbeat_liveness: int = field(default=3, metadata=_checked(checks.integer(1, 1000)))
    request_expiry: float = field(default=10.0, metadata=_checked(checks.seconds(_DAY)))
    queue_per_service: int = field(default=1000, metadata=_checked(checks.integer(1, _COUNT)))
    queue_total: int = field(default=10000, metadata=_checked(checks.integer(1, _COUNT)))
    max_message_size: int = field(
        default=16 * MIB,
        metadata=_checked(checks.integer(MIN_CHUNK_SIZE + CHUNK_OVERHEAD, _COUNT)),
    )
    hwm: int = field(default=10000, metadata=_checked(checks.integer(1, _COUNT)))


@dataclass(frozen=True, slots=True)
class WorkerSettings(_Section):
    """A worker process: which broker it serves and how it keeps the link alive."""

    section: ClassVar[str] = "worker"
    broker: str = field(default=_ENDPOINT, metadata=_checked(checks.endpoint(bind=False)))
    heartbeat_interval: float = field(default=2.5, metadata=_checked(checks.seconds(_HOUR)))
    heartbeat_liveness: int = field(default=3, metadata=_checked(checks.integer(1, 1000)))
    reconnect_min: float = field(default=0.1, metadata=_checked(checks.seconds(_HOUR)))
    reconnect_max: float = field(default=5.0, metadata=_checked(checks.seconds(_HOUR)))


@dataclass(frozen=True, slots=True)
class ClientSettings(_Section):
    """The client: which server it trusts, where it keeps its keys, how it uploads."""

    section: ClassVar[str] = "client"
    server: str = field(default=_ENDPOINT, metadata=_checked(checks.endpoint(bind=False)))
    home: Path = field(default=Path("~/.cipherdrop"), metadata=_checked(checks.path))
    server_fingerprint: str = field(default="", metadata=_checked(checks.fingerprint))
    chunk_size: int = field(
        default=MIB, metadata=_checked(checks.integer(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE))
    )
    window: int = field(default=8, metadata=_checked(checks.integer(1, 256)))
    # Files of at most one chunk in flight at once, each on a connection of its own.
    parallel_files: int = field(default=4, metadata=_checked(checks.integer(1, 64)))
    request_timeout: float = field(default=10.0, metadata=_checked(checks.seconds(_DAY)))
    retries: int = field(default=3, metadata=_checked(checks.integer(0, 100)))
    compression: Compression = field(
        default="zlib", metadata=_checked(checks.choice("none", "zlib"))
    )
    compression_level: int = field(
        default=1,
        metadata=_checked(checks.integer(COMPRESSION_LEVELS[0], COMPRESSION_LEVELS[-1])),
    )
    # Record each uploaded file's SHA-256 (put --sha256 / --no-sha256 decide per command).
    sha256: bool = field(default=False, metadata=_checked(checks.boolean()))


@dataclass(frozen=True, slots=True)
class StoreSettings(_Section):
    """The SQLite store and the directory that holds it and the file contents."""

    section: ClassVar[str] = "store"
    data_dir: Path = field(default=Path("var"), metadata=_checked(checks.path))
    busy_timeout: float = field(default=30.0, metadata=_checked(checks.seconds(_HOUR)))
    # An upload still unfinished this long after it began is discarded, its space reclaimed.
    upload_expiry: float = field(default=_DAY, metadata=_checked(checks.seconds(365 * _DAY)))
    # A new upload that would leave less than this many bytes free is refused (no-space).
    min_free_space: int = field(default=256 * MIB, metadata=_checked(checks.integer(0, 1 << 62)))
    # Most bytes (file sizes) one client may keep, unfinished uploads included; 0: no limit.
    quota: int = field(default=0, metadata=_checked(checks.integer(0, 1 << 62)))
    # Who may register: anyone who reaches the broker, or only with an operator's invite.
    registration: Registration = field(
        default="open", metadata=_checked(checks.choice("open", "invite"))
    )


@dataclass(frozen=True, slots=True)
class CryptoSettings(_Section):
    """Key sizes and lifetimes."""

    section: ClassVar[str] = "crypto"
    rsa_bits: int = field(
        default=3072, metadata=_checked(checks.integer(MIN_RSA_BITS, MAX_RSA_BITS, step=256))
    )
    session_ttl: float = field(default=3600.0, metadata=_checked(checks.seconds(MAX_SESSION_TTL)))


@dataclass(frozen=True, slots=True)
class LogSettings(_Section):
    """Log verbosity and format (``auto``: console on a terminal, JSON lines otherwise)."""

    section: ClassVar[str] = "log"
    level: str = field(default="info", metadata=_checked(checks.choice(*LEVELS)))
    format: LogFormat = field(
        default="auto", metadata=_checked(checks.choice("auto", "json", "console"))
    )


SECTIONS: Mapping[str, type[_Section]] = MappingProxyType(
    {
        cls.section: cls
        for cls in (
            BrokerSettings,
            WorkerSettings,
            ClientSettings,
            StoreSettings,
            CryptoSettings,
            LogSettings,
        )
    }
)
# Every setting by its full name, "section.field", in the order of the classes above.
FIELDS: Mapping[str, dataclasses.Field[Any]] = MappingProxyType(
    {f"{s}.{spec.name}": spec for s, cls in SECTIONS.items() for spec in dataclasses.fields(cls)}
)
# Rules tying two settings together: (setting, other, requirement, test(setting, other)).
RELATIONS: tuple[tuple[str, str, str, Callable[[Any, Any], bool]], ...] = (
    ("worker.reconnect_min", "worker.reconnect_max", "must be at most {}", operator.le),
    ("broker.queue_per_service", "broker.queue_total", "must be at most {}", operator.le),
    (
        "broker.max_message_size",
        "client.chunk_size",
        f"must be at least {{}} + {CHUNK_OVERHEAD} (room for one chunk and its framing)",
        lambda size, chunk: size >= chunk + CHUNK_OVERHEAD,
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """All settings of cipherdrop, one section per part of the product."""

    broker: BrokerSettings = field(default_factory=BrokerSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    client: ClientSettings = field(default_factory=ClientSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    crypto: CryptoSettings = field(default_factory=CryptoSettings)
    log: LogSettings = field(default_factory=LogSettings)
    # Which settings ("section.field") a file, the environment or a flag set, as opposed to
    # left at their defaults: a setting given on purpose may override a value saved
    # elsewhere (the client's registered endpoint) where a default must not. Not a value,
    # so not part of equality.
    given: frozenset[str] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        unknown = sorted(self.given - FIELDS.keys())
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r} in Settings.given")
        check_relations(flatten(self), {})


def flatten(settings: Settings) -> dict[str, Any]:
    """Every setting's value by its full name, ``"section.field"``."""
    return {
        name: getattr(getattr(settings, name.partition(".")[0]), name.partition(".")[2])
        for name in FIELDS
    }


def unflatten(values: Mapping[str, Any], given: frozenset[str] = frozenset()) -> Settings:
    """The settings holding ``values`` (every setting by its full name); checks them all.

    ``given`` names the settings set on purpose (:attr:`Settings.given`).
    """
    sections: dict[str, Any] = {
        section: cls(
            **{spec.name: values[f"{section}.{spec.name}"] for spec in dataclasses.fields(cls)}
        )
        for section, cls in SECTIONS.items()
    }
    return Settings(**sections, given=given)


def convert(name: str, check: Check, raw: object, source: str | None) -> object:
    """Run one setting's converter; on a bad value raise ConfigError naming it and its source."""
    try:
        return check(raw)
    except Invalid as exc:
        where = f" from {source}" if source else ""
        raise ConfigError(f"{name}{where}: {exc}, got {_shown(raw)}") from None


def check_relations(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """Check :data:`RELATIONS` over checked values; ``sources`` says where each came from."""

    def where(name: str) -> str:
        return f" from {sources[name]}" if name in sources else ""

    for name, other, need, test in RELATIONS:
        if not test(values[name], values[other]):
            raise ConfigError(
                f"{name}{where(name)}: {need.format(other)}, got {values[name]!r}"
                f" while {other} is {values[other]!r}{where(other)}"
            )


def _shown(raw: object) -> str:
    text = repr(str(raw) if isinstance(raw, Path) else raw)
    return text if len(text) <= 80 else text[:77] + "..."
