"""Session lookup for session-protected requests, cached in the worker process.

A file upload is many chunk requests; reading the session row and unwrapping its key for
each would cost a database read and an AES pass per chunk. :class:`SessionCache` keeps
the unwrapped, derived keys of recently used sessions in memory.

Guarantees: :meth:`SessionCache.lookup` returns a session only if it exists, belongs to
the client the envelope names, has not expired at ``now``, and its client was not
revoked when the row was last read. Revocation takes effect at once: every lookup reads
the store's revocation counter (:meth:`Store.revocation_count`, one primary-key read,
bumped in the transaction that revokes) and drops every cached entry when it changed, so
the next request of a revoked client's session finds its row gone. A cached entry is
also re-read at least every ``recheck_ms``, for sessions removed any other way.
Refusals are :class:`RefusedError` with ``unknown-session`` or ``session-expired``; a
session of another client is "unknown", never "expired", so the answer reveals nothing
about other clients' sessions.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from common import crypto
from common.errors import IntegrityError, RefusedError
from common.messages import ErrorCode
from workers.datadir import MasterKey
from workers.protection import SessionKey
from workers.store import Store

__all__ = ["SessionCache", "session_context"]


def session_context(session_id: bytes) -> bytes:
    """The master-key wrapping context of a session key."""
    return b"session:" + session_id


@dataclass(frozen=True, slots=True)
class _Entry:
    session: SessionKey
    expires_at: int
    fresh_until: int


class SessionCache:
    """Sessions by id, read through from the store."""

    def __init__(
        self, store: Store, master: MasterKey, recheck_ms: int = 5_000, max_entries: int = 4096
    ) -> None:
        self._store = store
        self._master = master
        self._recheck_ms = recheck_ms
        self._max = max_entries
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._revocations: int | None = None

    def lookup(self, session_id: bytes, client_id: bytes, now: int) -> SessionKey:
        revocations = self._store.revocation_count()
        if revocations != self._revocations:
            # Something was revoked since the last lookup: which sessions it ended is in
            # the store, so forget them all rather than serve one more request of them.
            self._entries.clear()
            self._revocations = revocations
        entry = self._entries.get(session_id)
        if entry is None or now >= entry.fresh_until:
            entry = self._load(session_id, now)
        else:
            self._entries.move_to_end(session_id)
        if entry.session.client_id != client_id:
            raise RefusedError(ErrorCode.UNKNOWN_SESSION, "no such session for this client")
        if now >= entry.expires_at:
            self._entries.pop(session_id, None)
            raise RefusedError(ErrorCode.SESSION_EXPIRED, "the session has expired; reconnect")
        return entry.session

    def _load(self, session_id: bytes, now: int) -> _Entry:
        self._entries.pop(session_id, None)
        row = self._store.get_session(session_id)
        if row is None or row.revoked:
            raise RefusedError(ErrorCode.UNKNOWN_SESSION, "no such session for this client")
        try:
            key = self._master.unwrap(row.session_key, session_context(session_id))
        except IntegrityError:
            # A row that does not unwrap was not written by us: treat it as absent.
            raise RefusedError(
                ErrorCode.UNKNOWN_SESSION, "no such session for this client"
            ) from None
        keys = crypto.derive_session_keys(key, session_id)
        entry = _Entry(
            SessionKey(session_id, row.client_id, keys),
            row.expires_at,
            min(row.expires_at, now + self._recheck_ms),
        )
        self._entries[session_id] = entry
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return entry
