"""A short tour of what cipherdrop's core does today, run by ``scripts/demo``.

It loads the settings (defaults < ``CIPHERDROP_CONFIG`` file < ``CIPHERDROP_*``
environment), makes an RSA identity and prints its fingerprint, seals one chunk with
AES-256-GCM and opens it again, shows that a single flipped bit is refused, and checks
that the POSIX cksum of a file equals what the ``cksum`` command prints.

    scripts/demo [FILE]    # FILE defaults to a temporary file of random bytes

Exit status: 0 when every check holds, 1 when one does not (or FILE cannot be read),
2 on a configuration error.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.cksum import Cksum
from common.crypto import open_sealed, random_key, seal
from common.errors import ConfigError, IntegrityError
from common.keys import fingerprint, generate_private_key, public_key_der
from config import Settings, load_settings

_READ_SIZE = 1024 * 1024
_SAMPLE_SIZE = 8 * 1024 * 1024


def show_identity(settings: Settings) -> None:
    bits = settings.crypto.rsa_bits
    started = time.perf_counter()
    key = generate_private_key(bits)
    elapsed = time.perf_counter() - started
    print(f"RSA-{bits} key pair made in {elapsed:.2f} s")
    print(f"  public key: {len(public_key_der(key))} bytes of SubjectPublicKeyInfo DER")
    print(f"  fingerprint: {fingerprint(key)}")


def show_sealing(settings: Settings) -> bool:
    chunk = secrets.token_bytes(settings.client.chunk_size)
    envelope = b"demo envelope: bound to the chunk as associated data"
    key = random_key()
    started = time.perf_counter()
    sealed = seal(key, chunk, envelope)
    opened = open_sealed(key, sealed, envelope)
    elapsed = time.perf_counter() - started
    print(f"AES-256-GCM: sealed and opened a {len(chunk)}-byte chunk in {elapsed * 1000:.1f} ms")
    print(f"  sealed size: {len(sealed)} bytes (nonce and tag add {len(sealed) - len(chunk)})")
    tampered = bytearray(sealed)
    tampered[len(tampered) // 2] ^= 0x01
    try:
        open_sealed(key, bytes(tampered), envelope)
        refused = False
    except IntegrityError:
        refused = True
    print(f"  round trip intact: {opened == chunk}; one flipped bit refused: {refused}")
    return opened == chunk and refused


def show_cksum(file: Path) -> bool:
    total = Cksum()
    started = time.perf_counter()
    with file.open("rb") as stream:
        while block := stream.read(_READ_SIZE):
            total.update(block)
    elapsed = time.perf_counter() - started
    ours = total.digest()
    speed = ""
    if total.length >= _READ_SIZE:  # a rate over a few bytes would only measure overhead
        speed = f" at {total.length / elapsed / 1e6:.0f} MB/s"
    print(f"cksum of {file} ({total.length} bytes): {ours}{speed}")
    command = shutil.which("cksum")
    if command is None:
        print("  the cksum command is not installed: nothing to compare with")
        return True
    output = subprocess.run([command, str(file)], capture_output=True, text=True, check=True)
    theirs = int(output.stdout.split()[0])
    print(f"  the cksum command says: {theirs}; equal: {ours == theirs}")
    return ours == theirs


def main(argv: list[str]) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"cipherdrop demo: {exc}", file=sys.stderr)
        return 2
    show_identity(settings)
    sealed_ok = show_sealing(settings)
    if len(argv) > 1:
        try:
            cksum_ok = show_cksum(Path(argv[1]))
        except OSError as exc:
            print(f"cipherdrop demo: cannot read {argv[1]}: {exc.strerror}", file=sys.stderr)
            return 1
    else:
        with tempfile.TemporaryDirectory() as scratch:
            sample = Path(scratch) / "random.bin"
            sample.write_bytes(os.urandom(_SAMPLE_SIZE))
            cksum_ok = show_cksum(sample)
    ok = sealed_ok and cksum_ok
    print("all checks passed" if ok else "A CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
