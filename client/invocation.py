"""What every ``cipherdrop`` command starts from: the invocation, and the registered
client on a connection to its pinned server (:func:`open_account`).

A passphrase is asked at most once per run, from ``CIPHERDROP_PASSPHRASE`` or the
terminal; off a terminal without the variable, a protected key is a clear error.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TextIO

from client.connection import Account, Connection, TransportOptions
from client.identity import (
    NEXT_KEY_FILE,
    is_encrypted_pem,
    load_identity,
    load_private_key,
    load_source_secret,
    update_server_fingerprint,
)
from common.errors import ConfigError
from config import Settings

__all__ = [
    "NEW_PASSPHRASE_VARIABLE",
    "PASSPHRASE_VARIABLE",
    "Invocation",
    "ask_passphrase",
    "explicit_server",
    "open_account",
    "transport_options",
]

PASSPHRASE_VARIABLE = "CIPHERDROP_PASSPHRASE"  # noqa: S105 (a variable name)
NEW_PASSPHRASE_VARIABLE = "CIPHERDROP_NEW_PASSPHRASE"  # noqa: S105 (a variable name)


def ask_passphrase(
    env: Mapping[str, str],
    asked: bool,
    needed: bool,
    confirm: bool,
    stderr: TextIO,
    variable: str = PASSPHRASE_VARIABLE,
    prompt: str = "passphrase for the private key: ",
) -> str | None:
    """The passphrase from ``variable``, else (if ``asked`` or ``needed``) from the
    terminal, typed twice with ``confirm``; None if neither asked nor needed."""
    if env.get(variable):
        return env[variable]
    if not (asked or needed):
        return None
    if not sys.stdin.isatty():
        raise ConfigError(f"a passphrase is needed: set {variable} or use a terminal")
    first = getpass.getpass(prompt, stream=stderr)
    if confirm and getpass.getpass("again: ", stream=stderr) != first:
        raise ConfigError("the two passphrases differ")
    if not first:
        raise ConfigError("empty passphrase")
    return first


def explicit_server(settings: Settings) -> str | None:
    """``client.server`` if it was given on purpose (flag, environment or config file).

    Only then does it override the endpoint an identity saved at registration; the
    default endpoint never does.
    """
    return settings.client.server if "client.server" in settings.given else None


def transport_options(settings: Settings) -> TransportOptions:
    c = settings.client
    return TransportOptions(timeout=c.request_timeout, retries=c.retries, window=c.window)


class Invocation:
    """One run of a command: its arguments, environment and streams, and what it learnt."""

    def __init__(
        self, args: argparse.Namespace, env: Mapping[str, str], out: TextIO, err: TextIO
    ) -> None:
        self.args, self.env, self.out, self.err = args, env, out, err
        self.endpoint: str | None = None
        self.passphrase: str | None = None  # once asked, not asked again in this run

    def say(self, text: str) -> None:
        if not getattr(self.args, "quiet", False):
            print(text, file=self.err, flush=True)


@contextmanager
def open_account(
    ctx: Invocation, settings: Settings, endpoint: str | None = None
) -> Iterator[Account]:
    """The registered client on a connection to its pinned server.

    The endpoint is ``endpoint`` if given (``transfer.info``), else ``client.server`` if
    it was set on purpose (flag, environment, config file), else the one the identity
    saved at registration. Whichever it is, the server there must present the key the
    identity registered with (docs/cli.md, "Which server").
    """
    home = settings.client.home
    identity = load_identity(home)
    if ctx.passphrase is None:
        needed = is_encrypted_pem(home)
        ctx.passphrase = ask_passphrase(ctx.env, ctx.args.passphrase, needed, False, ctx.err)
    private_key = load_private_key(home, ctx.passphrase)
    if (home / NEXT_KEY_FILE).exists() and ctx.args.command != "rekey":
        ctx.say("a key change was begun and not finished: run 'cipherdrop rekey' to finish it")
    ctx.endpoint = endpoint or explicit_server(settings) or identity.server
    conn = Connection(ctx.endpoint, transport_options(settings))
    try:
        server_key, pinned = conn.pinned_server_key(home, identity.server_fingerprint)
        if pinned.followed:
            identity = update_server_fingerprint(identity, pinned.fingerprint)
            print(  # not a progress notice: shown even with --quiet
                f"the server at {ctx.endpoint} changed its key from {pinned.followed} to"
                f" {pinned.fingerprint}; the previous key endorsed it, so it is trusted now",
                file=ctx.err,
                flush=True,
            )
        yield Account(
            conn, identity, private_key, server_key, source_secret=load_source_secret(home)
        )
    finally:
        conn.close()
