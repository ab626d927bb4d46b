"""The one error tree of cipherdrop.

Every error says whose fault it is::

    CipherdropError
    ├── ConfigError                 a setting is missing or has a bad value (names the setting)
    ├── ProtocolError               bytes that do not follow the protocol
    │   ├── LocalProtocolError      we were about to send something invalid (our bug)
    │   └── RemoteProtocolError     the peer sent something invalid (their bug or an attack)
    │       ├── InvalidNameError    a client or file name breaks the naming rules
    │       └── UnsupportedVersionError   an envelope of a protocol version we do not speak
    ├── IntegrityError              a decryption, signature or checksum failed; deliberately
    │                               opaque, so that it is no oracle for an attacker
    ├── StorageError                the store could not do what was asked
    ├── RefusedError                the server understood the request and said no
    │                               (carries a machine-readable ``code``)
    └── TransportError              the network or the broker let us down
        ├── BrokerUnavailable       nothing answers at the broker endpoint
        └── Timeout                 no answer within the allowed time

Foreign exceptions (``ValueError`` from pycryptodome, ``msgpack`` errors, ``zmq.ZMQError``,
``sqlite3.Error``) are translated at the boundary with ``raise X(...) from exc``.
"""

from __future__ import annotations


class CipherdropError(Exception):
    """Base of every error cipherdrop raises on purpose."""


class ConfigError(CipherdropError):
    """A setting is missing or invalid; the message names the setting."""


class ProtocolError(CipherdropError):
    """Something on the wire does not follow the protocol."""


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class InvalidNameError(RemoteProtocolError):
    """A client or file name breaks the naming rules (answered with ``invalid-name``)."""


class UnsupportedVersionError(RemoteProtocolError):
    """The envelope is of a protocol version this side does not speak."""


class IntegrityError(CipherdropError):
    """Authentication, decryption, signature or checksum failure.

    The message never says which check failed or why.
    """

    def __init__(self, message: str = "integrity check failed") -> None:
        super().__init__(message)


class StorageError(CipherdropError):
    """The store failed to read or write."""


class NoSpaceError(StorageError):
    """The server's file system is full (or its quota reached): retrying at once won't help."""


class FileAccessError(CipherdropError):
    """A local file is missing, unreadable, not a regular file, or changed while read."""


class RefusedError(CipherdropError):
    """The server refused the request; ``code`` says why in a stable, documented word."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TransportError(CipherdropError):
    """The network or the broker failed us."""


class BrokerUnavailable(TransportError):
    """Nothing answers at the broker endpoint."""


class Timeout(TransportError):
    """No answer arrived within the allowed time."""
