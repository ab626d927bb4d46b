"""Assembling a worker: open the data dir and store, check the master key, build a service.

Kept apart from the command line so tests build exactly what the command runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from common.errors import ConfigError, IntegrityError
from config import Settings
from config.sections import MAX_CHUNK_SIZE
from workers import files, keyx, register
from workers.blobs import Blobs
from workers.datadir import DataDir, open_data_dir
from workers.service import Dispatcher
from workers.store import Store

__all__ = ["SERVICES", "Server", "build_service", "open_server"]

# Command-line name -> MDP service name.
SERVICES = {"register": register.SERVICE, "key": keyx.SERVICE, "file": files.SERVICE}
MASTER_CHECK_KEY = "master_check"
MASTER_CHECK_CONTEXT = b"master-check"


@dataclass(frozen=True, slots=True)
class Server:
    data: DataDir
    store: Store


def open_server(settings: Settings, env: Mapping[str, str] = os.environ) -> Server:
    """Open (creating on first start) the data dir and the store; ConfigError if the
    master key is not the one the database was created with."""
    data = open_data_dir(settings.store.data_dir, settings.crypto.rsa_bits, env)
    store = Store.open(data.db_path, settings.store.busy_timeout)
    # The first process stores a value only the right master key opens; later ones check it.
    check = store.meta_once(MASTER_CHECK_KEY, data.master.wrap(bytes(32), MASTER_CHECK_CONTEXT))
    try:
        data.master.unwrap(check, MASTER_CHECK_CONTEXT)
    except IntegrityError:
        store.close()
        raise ConfigError(
            f"the master key does not match the database in {data.path}"
            " (check master.key or CIPHERDROP_MASTER_KEY)"
        ) from None
    return Server(data, store)


def build_service(name: str, server: Server, settings: Settings) -> Dispatcher:
    """The dispatcher of ``name`` (a key of :data:`SERVICES`)."""
    if name == "register":
        invites_only = settings.store.registration == "invite"
        return register.register_service(server.store, server.data, invites_only=invites_only)
    if name == "key":
        return keyx.key_service(server.store, server.data, settings.crypto.session_ttl)
    if name == "file":
        Blobs(server.data.blobs_path).sweep(server.store.transfer_ids)
        return files.file_service(
            server.store,
            server.data,
            MAX_CHUNK_SIZE,
            upload_expiry=settings.store.upload_expiry,
            min_free_space=settings.store.min_free_space,
            quota=settings.store.quota,
        )
    raise ConfigError(f"unknown service {name!r}: use one of {', '.join(SERVICES)}")
