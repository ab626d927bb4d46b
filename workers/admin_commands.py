"""The subcommands of ``cipherdrop-admin``, each a function of the parsed command line.

Each returns an exit status from :class:`workers.admin.ExitStatus` and prints its result
on standard output; failures are raised (the entry point turns them into one line).
Only ``init`` creates a data directory; every other command refuses a directory without
a database, so a mistyped ``--data`` never gives an empty answer that looks right.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from common import keys
from common.errors import CipherdropError, ConfigError
from common.fields import INVITE_LEN
from common.secretfile import read_secret_file
from config import Settings
from workers import admin_backup, admin_check, admin_keys
from workers.admin_store import AdminStore, ClientInfo
from workers.app import SERVICES, open_server
from workers.blobs import Blobs
from workers.datadir import DB_NAME, PREVIOUS_SERVER_KEY_NAME, SERVER_KEY_NAME, DataDir
from workers.mmi_probe import ask_service
from workers.register import invite_digest

__all__ = [
    "COMMANDS",
    "CorruptionError",
    "Invocation",
    "NotFoundError",
    "UnhealthyError",
]


class NotFoundError(CipherdropError):
    """The client named on the command line does not exist."""


class UnhealthyError(CipherdropError):
    """``ping``: the broker is silent or a service has no worker."""


class CorruptionError(CipherdropError):
    """``check`` or ``backup`` found stored files that are damaged."""


@dataclass(frozen=True, slots=True)
class Invocation:
    args: argparse.Namespace  # attributes per subcommand
    settings: Settings
    env: Mapping[str, str]
    out: TextIO
    err: TextIO | None = None  # notes beside the result; standard error when not given

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err or sys.stderr, flush=True)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _data_path(inv: Invocation) -> Path:
    path = inv.settings.store.data_dir
    if not (path / DB_NAME).is_file():
        raise ConfigError(
            f"no cipherdrop database in {path} (check --data / CIPHERDROP_DATA,"
            " or run cipherdrop-admin init)"
        )
    return path


def _open(inv: Invocation) -> tuple[DataDir, AdminStore]:
    """The data dir and an admin store, with the master key checked against the database."""
    path = _data_path(inv)
    try:
        server = open_server(inv.settings, inv.env)
    except ConfigError as exc:
        if admin_keys.pending_key_path(path).exists():
            raise ConfigError(
                f"{exc}; a master key rotation was interrupted: run"
                " cipherdrop-admin rotate-master-key to finish it"
            ) from None
        raise
    server.store.close()
    return server.data, AdminStore.open(server.data.db_path, inv.settings.store.busy_timeout)


def _client(store: AdminStore, ref: str) -> ClientInfo:
    client = store.find_client(ref)
    if client is None:
        raise NotFoundError(f"no client named {ref!r} (nor with that id)")
    return client


def init(inv: Invocation) -> int:
    server = open_server(inv.settings, inv.env)
    server.store.close()
    inv.say(f"data directory {server.data.path.resolve()}")
    inv.say(f"server fingerprint: {server.data.fingerprint}")
    return 0


def fingerprint(inv: Invocation) -> int:
    pem = read_secret_file(_data_path(inv) / SERVER_KEY_NAME)
    inv.say(keys.fingerprint(keys.load_private_key(pem)))
    return 0


def clients(inv: Invocation) -> int:
    _, store = _open(inv)
    with closing(store):
        rows = store.clients()
    if inv.args.json:
        for c in rows:
            record = {
                "name": c.name,
                "id": c.id.hex(),
                "created": _when(c.created_at),
                "last_seen": _when(c.last_seen) if c.last_seen else None,
                "revoked": c.revoked,
                "legacy": c.legacy,
                "files": c.files,
                "used": c.used,
                "quota": c.quota,
                "key": c.key,
            }
            inv.say(json.dumps(record))
        return 0
    inv.say(
        f"{'NAME':20} {'ID':32} {'CREATED':20} {'LAST SEEN':20} FILES {'USED':>14}"
        f" {'QUOTA':>14} REVOKED LEGACY"
    )
    for c in rows:
        revoked, legacy = ("yes" if flag else "no" for flag in (c.revoked, c.legacy))
        quota = "-" if c.quota is None else str(c.quota)
        flags = f"{c.files:5} {c.used:14} {quota:>14} {revoked:7} {legacy}"
        seen = _when(c.last_seen)
        inv.say(f"{c.name:20} {c.id.hex()} {_when(c.created_at):20} {seen:20} {flags}")
    return 0


def files(inv: Invocation) -> int:
    _, store = _open(inv)
    with closing(store):
        ref = inv.args.client
        owner = _client(store, ref).id if ref else None
        rows = store.stored_files(owner)
    for f in rows:
        if inv.args.json:
            record = {
                "client": f.client_name,
                "name": f.name,
                "size": f.size,
                "cksum": f.crc,
                "uploaded": _when(f.uploaded_at),
                "verified": f.verified,
                "chunks": f.chunk_count,
            }
            inv.say(json.dumps(record))
        else:
            inv.say(f"{f.client_name:20} {f.size:>14} {f.crc:>10} {_when(f.uploaded_at)}  {f.name}")
    return 0


def invite(inv: Invocation) -> int:
    """A one-time registration code, valid for ``--valid`` seconds; only its digest is kept."""
    _, store = _open(inv)
    code = secrets.token_bytes(INVITE_LEN)
    now = int(time.time() * 1000)
    expires_at = now + int(inv.args.valid * 1000)
    with closing(store):
        store.create_invite(invite_digest(code), now, expires_at)
    inv.say(code.hex())
    if inv.settings.store.registration != "invite":
        inv.note("note: store.registration is 'open' here; invites matter once it is 'invite'")
    inv.note(f"valid until {_when(expires_at)}, for one registration")
    return 0


def quota(inv: Invocation) -> int:
    """Show a client's quota, or give it its own (bytes; 0: none) or the server's again."""
    _, store = _open(inv)
    with closing(store):
        client = _client(store, inv.args.client)
        if inv.args.value is not None:
            store.set_quota(client.id, None if inv.args.value == "default" else inv.args.value)
            client = _client(store, client.id.hex())
    if client.quota is None:
        limit = inv.settings.store.quota
        which = f"the server's store.quota: {limit} bytes" if limit else "none: store.quota is 0"
    else:
        which = f"its own: {client.quota} bytes" if client.quota else "its own: none (0)"
    inv.say(f"{client.name}: quota {which}; {client.used} bytes in use")
    return 0


def revoke(inv: Invocation) -> int:
    _, store = _open(inv)
    with closing(store):
        client = _client(store, inv.args.client)
        ended = store.revoke(client.id)
    inv.say(f"revoked {client.name} ({client.id.hex()}); {ended} session(s) ended")
    return 0


def _stopped_server_path(inv: Invocation) -> Path:
    """The data dir, if no other process has its database open (workers hold keys)."""
    path = _data_path(inv)
    if admin_keys.database_in_use(path / DB_NAME):
        raise ConfigError(
            "the database is open in another process: stop the server and every worker first"
        )
    return path


def purge(inv: Invocation) -> int:
    data, store = _open(inv)
    with closing(store):
        client = _client(store, inv.args.client)
        transfers = store.purge_client(client.id)
    if transfers is None:
        raise ConfigError(
            f"{client.name} is not revoked: run 'cipherdrop-admin revoke {client.name}' first"
        )
    blobs = Blobs(data.blobs_path)
    try:
        for transfer_id in transfers:
            blobs.remove(transfer_id)
    finally:
        blobs.close()
    inv.say(
        f"purged {client.name} ({client.id.hex()}): {client.files} file(s),"
        f" {client.used} bytes; the name may be registered again"
    )
    return 0


def rotate_server_key(inv: Invocation) -> int:
    path = _stopped_server_path(inv)
    previous, new = admin_keys.rotate_server_key(path, inv.settings.crypto.rsa_bits)
    inv.say(f"new server key {new}")
    inv.say(
        f"the previous key {previous} is kept in {path / PREVIOUS_SERVER_KEY_NAME} and"
        " endorses the new one: clients that pinned it follow on their next command"
        " (remove that file to stop endorsing)"
    )
    return 0


def rotate_master_key(inv: Invocation) -> int:
    path = _stopped_server_path(inv)
    store = AdminStore.open(path / DB_NAME, inv.settings.store.busy_timeout)
    with closing(store):
        what, counts = admin_keys.rotate_master_key(path, store, inv.env)
    inv.say(what)
    if counts:
        inv.say("re-wrapped: " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    return 0


def backup(inv: Invocation) -> int:
    data, store = _open(inv)
    with closing(store):
        result = admin_backup.backup(data, store, Path(inv.args.path), inv.args.with_keys)
    inv.say(f"backed up {result.files} file(s), {result.chunks} chunk(s) to {inv.args.path}")
    for label in result.dropped:
        inv.say(f"changed during backup, left out: {label}")
    inv.say(
        "keys included (keep this copy secret)"
        if result.with_keys
        else "keys NOT included: keep server_key.pem and master.key (or CIPHERDROP_MASTER_KEY)"
        " safe separately, or use --with-keys"
    )
    if result.damaged:
        raise CorruptionError(f"contents missing for: {', '.join(result.damaged)}")
    return 0


def check(inv: Invocation) -> int:
    data, store = _open(inv)
    blobs = Blobs(data.blobs_path)
    bad = 0
    with closing(store):
        for file in store.stored_files():
            report = admin_check.check_file(store, blobs, data.master, file)
            label = f"{file.client_name}/{file.name}"
            if report.ok:
                sha256 = "  sha256 ok" if file.sha256 is not None else ""
                inv.say(f"ok       {label}  {file.size} bytes  cksum {file.crc}{sha256}")
            else:
                bad += 1
                inv.say(f"CORRUPT  {label}: {'; '.join(report.problems)}")
        total = len(store.stored_files())
    inv.say(f"checked {total} file(s): {total - bad} ok, {bad} corrupt")
    if bad:
        raise CorruptionError(f"{bad} corrupt file(s)")
    return 0


def ping(inv: Invocation) -> int:
    endpoint = inv.settings.worker.broker
    timeout: float = inv.args.timeout
    wanted = [SERVICES.get(name, name) for name in inv.args.services]
    answer = ask_service(endpoint, wanted[0] if wanted else SERVICES["register"], timeout)
    if answer is None:
        raise UnhealthyError(f"no answer from the broker at {endpoint} within {timeout:g} s")
    missing = []
    for service in wanted:
        status = answer if service == wanted[0] else ask_service(endpoint, service, timeout)
        inv.say(f"{service}: {'ready' if status == b'200' else 'no worker'}")
        if status != b"200":
            missing.append(service)
    if missing:
        raise UnhealthyError(f"no worker for {', '.join(missing)} at {endpoint}")
    inv.say(f"broker {endpoint}: answering")
    return 0


COMMANDS: dict[str, Callable[[Invocation], int]] = {
    "init": init,
    "fingerprint": fingerprint,
    "clients": clients,
    "files": files,
    "invite": invite,
    "quota": quota,
    "revoke": revoke,
    "purge": purge,
    "rotate-master-key": rotate_master_key,
    "rotate-server-key": rotate_server_key,
    "backup": backup,
    "check": check,
    "ping": ping,
}
