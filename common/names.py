"""Rules for the human-readable strings of the protocol: file names, client names, messages.

Guarantees (``docs/protocol.md`` section 3.1 is the reference):

* A valid **file name** is data, not a path on the server, yet it is always a *safe relative
  POSIX path*: ``/`` only separates non-empty components, no component is ``.`` or ``..``,
  there is no ``\\``, so joining it under a directory can never leave that directory.
  This lets ``put -r`` keep relative names while traversal stays impossible.
* No valid string contains a control character (C0, DEL, C1), a surrogate, a line or
  paragraph separator, or a bidirectional control (which can make a name display as
  another one); names neither start nor end with whitespace.
* Lengths count Unicode code points; 255 code points are at most 1020 UTF-8 bytes.

Every check raises :class:`RemoteProtocolError` (for names, its subclass
:class:`InvalidNameError`, which workers answer with the ``invalid-name`` code): the usual
caller validates what a peer sent. The codec turns it into ``LocalProtocolError`` when we
are the sender.
"""

from __future__ import annotations

import re

from common.errors import InvalidNameError, RemoteProtocolError

__all__ = [
    "MAX_NAME_LEN",
    "InvalidNameError",
    "validate_client_name",
    "validate_file_name",
    "validate_text",
]

MAX_NAME_LEN = 255

# C0 controls, DEL and C1 controls; surrogates; LINE/PARAGRAPH SEPARATOR; the bidi marks,
# embeddings, overrides and isolates. A fixed list, so validity does not depend on the
# Unicode database of the Python that checks it.
_FORBIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def validate_text(value: object, field: str, max_len: int) -> str:
    """A str of 1..max_len code points without forbidden characters."""
    if type(value) is not str:
        raise RemoteProtocolError(f"{field}: expected str, got {type(value).__name__}")
    if not 1 <= len(value) <= max_len:
        raise RemoteProtocolError(f"{field}: length {len(value)} outside 1..{max_len}")
    found = _FORBIDDEN.search(value)
    if found is not None:
        raise RemoteProtocolError(f"{field}: forbidden character U+{ord(found.group()):04X}")
    return value


def _name_text(name: object, field: str) -> str:
    try:
        return validate_text(name, field, MAX_NAME_LEN)
    except RemoteProtocolError as exc:
        raise InvalidNameError(str(exc)) from exc


def _check_trimmed(value: str, field: str) -> None:
    if value[0].isspace() or value[-1].isspace():
        raise InvalidNameError(f"{field}: leading or trailing whitespace")


def validate_client_name(name: object, field: str = "name") -> str:
    """A client's display name: 1..255 code points, trimmed, no ``/`` or ``\\``."""
    value = _name_text(name, field)
    _check_trimmed(value, field)
    if "/" in value or "\\" in value:
        raise InvalidNameError(f"{field}: '/' and '\\' are not allowed in client names")
    return value


def validate_file_name(name: object, field: str = "name") -> str:
    """A stored file's name: 1..255 code points, ``/``-separated safe components."""
    value = _name_text(name, field)
    if "\\" in value:
        raise InvalidNameError(f"{field}: '\\' is not allowed in file names")
    for part in value.split("/"):
        if part in ("", ".", ".."):
            raise InvalidNameError(
                f"{field}: empty, '.' or '..' component (absolute or traversing name)"
            )
        _check_trimmed(part, field)
    return value
