"""The commands about the client itself: ``rekey`` (a new key pair, moved to on the server),
``passphrase`` (the private key's, local only), ``trust`` (pin a server key changed
without an endorsement) and ``whoami``. Like every command, each is a function of the
invocation and the settings; failures are raised, for :func:`client.cli.main` to report.
"""

from __future__ import annotations

from pathlib import Path

from client.connection import Connection
from client.identity import (
    NEXT_KEY_FILE,
    PRIVATE_KEY_FILE,
    ServerKeyMismatchError,
    adopt_next_key,
    is_encrypted_pem,
    keep_source_secret,
    load_identity,
    load_next_key,
    load_private_key,
    replace_server,
    save_next_key,
    save_private_key,
    update_server_fingerprint,
)
from client.invocation import (
    NEW_PASSPHRASE_VARIABLE,
    PASSPHRASE_VARIABLE,
    Invocation,
    ask_passphrase,
    explicit_server,
    open_account,
    transport_options,
)
from common import keys
from common.errors import ConfigError
from config import Settings

__all__ = ["passphrase", "rekey", "trust", "whoami"]


def _key_fingerprint(ctx: Invocation, home: Path) -> str:
    """The fingerprint of this client's public key, as ``cipherdrop-admin clients --json``
    shows the one the server holds; a key under a passphrase needs CIPHERDROP_PASSPHRASE."""
    words = ctx.env.get(PASSPHRASE_VARIABLE) or None
    if words is None and is_encrypted_pem(home):
        return f"(under a passphrase: set {PASSPHRASE_VARIABLE} to show it)"
    return keys.fingerprint(keys.public_key_der(load_private_key(home, words)))


def rekey(ctx: Invocation, settings: Settings) -> None:
    """A new key pair for this client: kept as ``private_key.pem.next`` first, then sent,
    signed by the old key and the new, and put in the old one's place once the server has
    moved the client to it. Run again after an interruption, it finishes with the same key."""
    home = settings.client.home
    with open_account(ctx, settings) as account:
        new_key = load_next_key(home, ctx.passphrase)
        if new_key is None:
            ctx.say(f"generating a {settings.crypto.rsa_bits}-bit RSA key...")
            new_key = keys.generate_private_key(settings.crypto.rsa_bits)
            save_next_key(home, new_key, ctx.passphrase)
        else:
            ctx.say("finishing the key change begun before")
        keep_source_secret(home, account.source_secret)  # tokens of files put so far stay
        ended = account.rekey(new_key)
    adopt_next_key(home)
    fingerprint = keys.fingerprint(keys.public_key_der(new_key))
    print(f"new key {fingerprint}; {ended} session(s) ended", file=ctx.out)


def passphrase(ctx: Invocation, settings: Settings) -> None:
    """Put the private key under a new passphrase (or none, with ``--remove``). Local
    only: the key itself, and so the server's view of the client, does not change."""
    home = settings.client.home
    load_identity(home)
    if (home / NEXT_KEY_FILE).exists():
        raise ConfigError("a key change was begun and not finished: run 'cipherdrop rekey' first")
    current = ask_passphrase(ctx.env, False, is_encrypted_pem(home), False, ctx.err)
    private_key = load_private_key(home, current)
    new = None
    if not ctx.args.remove:
        new = ask_passphrase(
            ctx.env, True, True, True, ctx.err, NEW_PASSPHRASE_VARIABLE, "new passphrase: "
        )
    save_private_key(home, private_key, new)
    state = "now under the new passphrase" if new else "no longer under a passphrase"
    print(f"{home / PRIVATE_KEY_FILE}: {state}", file=ctx.out)


def trust(ctx: Invocation, settings: Settings) -> None:
    """Pin the key the server now presents, given its fingerprint as the operator
    published it: for a server key that changed without an endorsement this client can
    check. The identity (id, key, files) stays; a fingerprint that does not match the
    server's key changes nothing."""
    home = settings.client.home
    identity = load_identity(home)
    ctx.endpoint = explicit_server(settings) or identity.server
    conn = Connection(ctx.endpoint, transport_options(settings))
    try:
        der = conn.server_key().public_key
    finally:
        conn.close()
    actual = keys.fingerprint(der)
    if keys.fingerprint_digest(der) != ctx.args.fingerprint:
        raise ServerKeyMismatchError(
            f"the server at {ctx.endpoint} presents {actual}, not the fingerprint given;"
            " nothing changed"
        )
    replace_server(home, ctx.endpoint, actual)
    update_server_fingerprint(identity, actual)
    print(f"trusting {actual} for {ctx.endpoint}", file=ctx.out)


def whoami(ctx: Invocation, settings: Settings) -> None:
    identity = load_identity(settings.client.home)
    print(f"name         {identity.name}", file=ctx.out)
    print(f"client id    {identity.client_id.hex()}", file=ctx.out)
    print(f"key          {_key_fingerprint(ctx, settings.client.home)}", file=ctx.out)
    print(f"server       {identity.server}", file=ctx.out)
    print(f"fingerprint  {identity.server_fingerprint}", file=ctx.out)
    print(f"home         {identity.home}", file=ctx.out)
