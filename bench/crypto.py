"""Throughput of the per-chunk pipeline stages: AES-GCM, compression and cksum.

Run as ``python bench/crypto.py``. Prints MB/s (10^6 bytes per second; the median of
five runs) for sealing and opening 1 MiB chunks, compressing 1 MiB of text and of
random bytes, and the POSIX cksum, each next to a slower peer measured in the same run
(a pure-Python cksum table, a pure-Python AES-GCM, zlib on a whole random chunk), and the
stdlib methods these stages replaced (zlib's own deflate level 1 and inflate on the same
text; the cksum as ``zlib.crc32`` over bit-reversed bytes), then a table of ratios with
the acceptance targets of the foundation issue:

* cksum at least 500 MB/s;
* on random 1 MiB chunks the compression step (probe and skip) costs under 50% of the
  AES-GCM seal time.

Each figure is given twice: per second of this thread's CPU time, and per second of wall
time. The targets are judged on CPU time: on a shared 2-core machine what the pipeline
costs is CPU milliseconds per MB (see the performance budget), and CPU time does not
swing with whatever else the machine runs at that moment, while wall time does.

The pure-Python AES-GCM is checked against a published known answer and against
pycryptodome's output before it is timed, so the ratio compares two correct ciphers.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.cksum import cksum  # noqa: E402
from common.compress import Codec, compress_chunk, decompress_chunk  # noqa: E402
from common.crypto import _seal_with_nonce, open_sealed, random_key, seal  # noqa: E402

MIB = 1024 * 1024
RUNS = 5
CKSUM_TARGET_MBPS = 500.0
PROBE_TARGET_PERCENT = 50.0


# --- slow peers ------------------------------------------------------------------------


def _pure_cksum_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CKSUM_TABLE = _pure_cksum_table()


def pure_cksum(data: bytes) -> int:
    """The textbook table-driven POSIX cksum, one byte per Python loop step."""
    crc, table = 0, _CKSUM_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    length = len(data)
    while length:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ (length & 0xFF)]
        length >>= 8
    return ~crc & 0xFFFFFFFF


def _aes_tables() -> tuple[list[int], list[list[int]]]:
    sbox = [0] * 256
    p = q = 1
    while True:  # walk GF(2^8) by a generator; q is p's inverse
        p = (p ^ (p << 1) ^ (0x1B if p & 0x80 else 0)) & 0xFF
        q ^= q << 1
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        rot = q ^ ((q << 1) | (q >> 7)) ^ ((q << 2) | (q >> 6)) ^ ((q << 3) | (q >> 5))
        sbox[p] = (rot ^ ((q << 4) | (q >> 4)) ^ 0x63) & 0xFF
        if p == 1:
            break
    sbox[0] = 0x63
    te0 = []
    for s in sbox:
        s2 = ((s << 1) ^ (0x1B if s & 0x80 else 0)) & 0xFF
        te0.append((s2 << 24) | (s << 16) | (s << 8) | (s2 ^ s))
    rotations = [te0]
    for _ in range(3):
        rotations.append([((t >> 8) | (t << 24)) & 0xFFFFFFFF for t in rotations[-1]])
    return sbox, rotations


_SBOX, (_TE0, _TE1, _TE2, _TE3) = _aes_tables()


def _expand_key(key: bytes) -> list[int]:
    words = [int.from_bytes(key[i : i + 4], "big") for i in range(0, 32, 4)]
    rcon = 1
    for i in range(8, 60):
        t = words[i - 1]
        if i % 8 == 0:
            t = ((t << 8) | (t >> 24)) & 0xFFFFFFFF
            t = int.from_bytes(bytes(_SBOX[b] for b in t.to_bytes(4, "big")), "big")
            t ^= rcon << 24
            rcon = ((rcon << 1) ^ (0x1B if rcon & 0x80 else 0)) & 0xFF
        elif i % 8 == 4:
            t = int.from_bytes(bytes(_SBOX[b] for b in t.to_bytes(4, "big")), "big")
        words.append(words[i - 8] ^ t)
    return words


def _encrypt_block(rk: list[int], block: int) -> int:
    s0, s1, s2, s3 = (((block >> (96 - 32 * i)) & 0xFFFFFFFF) ^ rk[i] for i in range(4))
    for r in range(1, 14):
        k = 4 * r
        s0, s1, s2, s3 = (
            _TE0[s0 >> 24] ^ _TE1[(s1 >> 16) & 255] ^ _TE2[(s2 >> 8) & 255] ^ _TE3[s3 & 255]
            ^ rk[k],
            _TE0[s1 >> 24] ^ _TE1[(s2 >> 16) & 255] ^ _TE2[(s3 >> 8) & 255] ^ _TE3[s0 & 255]
            ^ rk[k + 1],
            _TE0[s2 >> 24] ^ _TE1[(s3 >> 16) & 255] ^ _TE2[(s0 >> 8) & 255] ^ _TE3[s1 & 255]
            ^ rk[k + 2],
            _TE0[s3 >> 24] ^ _TE1[(s0 >> 16) & 255] ^ _TE2[(s1 >> 8) & 255] ^ _TE3[s2 & 255]
            ^ rk[k + 3],
        )  # fmt: skip
    s, out = _SBOX, 0
    for i, (a, b, c, d) in enumerate(((s0, s1, s2, s3), (s1, s2, s3, s0), (s2, s3, s0, s1),
                                       (s3, s0, s1, s2))):  # fmt: skip
        word = (s[a >> 24] << 24) | (s[(b >> 16) & 255] << 16) | (s[(c >> 8) & 255] << 8)
        out = (out << 32) | ((word | s[d & 255]) ^ rk[56 + i])
    return out


def _gf_mul(x: int, y: int) -> int:
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ (0xE1 << 120) if v & 1 else v >> 1
    return z


def pure_aes_gcm(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Textbook AES-256-GCM (NIST SP 800-38D) in Python: ``nonce || ciphertext || tag``."""
    rk = _expand_key(key)
    h = _encrypt_block(rk, 0)
    j0 = (int.from_bytes(nonce, "big") << 32) | 1
    out = bytearray()
    for n, start in enumerate(range(0, len(plaintext), 16), start=1):
        block = plaintext[start : start + 16]
        stream = _encrypt_block(rk, (j0 & ~0xFFFFFFFF) | ((j0 + n) & 0xFFFFFFFF))
        out += bytes(a ^ b for a, b in zip(block, stream.to_bytes(16, "big"), strict=False))
    ghash = 0
    for data in (aad, bytes(out)):
        for start in range(0, len(data), 16):
            block = data[start : start + 16].ljust(16, b"\0")
            ghash = _gf_mul(ghash ^ int.from_bytes(block, "big"), h)
    ghash = _gf_mul(ghash ^ ((len(aad) * 8) << 64 | len(out) * 8), h)
    tag = (_encrypt_block(rk, j0) ^ ghash).to_bytes(16, "big")
    return nonce + bytes(out) + tag


def _check_pure_aes_gcm() -> None:
    # GCM spec (McGrew and Viega) test case 16.
    key = bytes.fromhex("feffe9928665731c6d6a8f9467308308" * 2)
    nonce = bytes.fromhex("cafebabefacedbaddecaf888")
    aad = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
    plaintext = bytes.fromhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
    )
    tag = pure_aes_gcm(key, nonce, plaintext, aad)[-16:]
    if tag.hex() != "76fc6ece0f4e1768cddf8853bb2d551b":
        raise SystemExit("pure-Python AES-GCM reference is wrong (test case 16)")


# --- measurement -----------------------------------------------------------------------


def per_call(function: Callable[[], object], number: int) -> tuple[float, float]:
    """Median (CPU, wall) seconds per call over RUNS runs of ``number`` calls."""
    cpu, wall = [], []
    for _ in range(RUNS):
        cpu_start, wall_start = time.thread_time(), time.perf_counter()
        for _ in range(number):
            function()
        cpu.append((time.thread_time() - cpu_start) / number)
        wall.append((time.perf_counter() - wall_start) / number)
    return statistics.median(cpu), statistics.median(wall)


_REVERSE_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def translate_cksum_part(data: bytes) -> int:
    """The former cksum method: zlib.crc32 over bit-reversed bytes, in 32 KiB blocks."""
    value = 0xFFFFFFFF
    view = memoryview(data)
    for start in range(0, len(view), 32 * 1024):
        block = bytearray(view[start : start + 32 * 1024])
        value = zlib.crc32(block.translate(_REVERSE_BITS), value)
    return value


def text_chunk(size: int) -> bytes:
    corpus = b"".join(
        path.read_bytes()
        for pattern in ("*/*.py", "docs/*.md", "*.md")
        for path in sorted(ROOT.glob(pattern))
    )
    return (corpus * (size // max(len(corpus), 1) + 1))[:size]


def main() -> None:
    _check_pure_aes_gcm()
    key, aad = random_key(), b"\x96" + bytes(40)  # an envelope-sized AAD
    text, noise = text_chunk(MIB), os.urandom(MIB)
    sealed = seal(key, noise, aad)
    zipped = compress_chunk(text)[1]
    small, big = os.urandom(256 * 1024), os.urandom(16 * MIB)
    pure_input, nonce = os.urandom(16 * 1024), os.urandom(12)
    if pure_aes_gcm(key, nonce, pure_input, aad) != _seal_with_nonce(key, nonce, pure_input, aad):
        raise SystemExit("pure-Python AES-GCM disagrees with pycryptodome")
    if pure_cksum(small) != cksum(small):
        raise SystemExit("pure-Python cksum disagrees with common.cksum")
    if compress_chunk(noise)[0] is not Codec.NONE or compress_chunk(text)[0] is not Codec.ZLIB:
        raise SystemExit("the probe misjudged text or random data")

    rows = [  # (name, bytes per call, seconds per call)
        ("seal, AES-256-GCM 1 MiB", MIB, per_call(lambda: seal(key, noise, aad), 40)),
        ("open, AES-256-GCM 1 MiB", MIB, per_call(lambda: open_sealed(key, sealed, aad), 40)),
        ("seal, pure-Python AES-GCM 16 KiB", 16 * 1024,
         per_call(lambda: pure_aes_gcm(key, nonce, pure_input, aad), 1)),
        ("compress_chunk text 1 MiB (ISA-L level 1)", MIB,
         per_call(lambda: compress_chunk(text), 20)),
        ("stdlib zlib.compress level 1, same text", MIB,
         per_call(lambda: zlib.compress(text, 1), 5)),
        ("decompress_chunk text 1 MiB (ISA-L)", MIB,
         per_call(lambda: decompress_chunk(Codec.ZLIB, zipped, MIB), 20)),
        ("stdlib zlib.decompress, same stream", MIB, per_call(lambda: zlib.decompress(zipped), 20)),
        ("compress_chunk random 1 MiB (probe, skip)", MIB,
         per_call(lambda: compress_chunk(noise), 200)),
        ("zlib-1 on a whole random 1 MiB (no probe)", MIB,
         per_call(lambda: zlib.compress(noise, 1), 3)),
        ("cksum (fastcrc), 16 MiB", 16 * MIB, per_call(lambda: cksum(big), 20)),
        ("cksum, translate + zlib.crc32, 16 MiB", 16 * MIB,
         per_call(lambda: translate_cksum_part(big), 3)),
        ("cksum, pure-Python table, 256 KiB", 256 * 1024, per_call(lambda: pure_cksum(small), 1)),
    ]  # fmt: skip
    seconds = {name: (size, t[0]) for name, size, t in rows}
    width = max(len(name) for name, _, _ in rows)
    print(f"{'stage':<{width}}  {'MB/s cpu':>9}  {'MB/s wall':>9}  {'cpu ms/MiB':>10}")
    for name, size, (cpu, wall) in rows:
        print(
            f"{name:<{width}}  {size / cpu / 1e6:9.1f}  {size / wall / 1e6:9.1f}"
            f"  {cpu * MIB / size * 1e3:10.3f}"
        )

    def rate(name: str) -> float:
        size, cpu = seconds[name]
        return size / cpu / 1e6

    fast_cksum = rate("cksum (fastcrc), 16 MiB")
    seal_cpu = seconds["seal, AES-256-GCM 1 MiB"][1]
    probe_cpu = seconds["compress_chunk random 1 MiB (probe, skip)"][1]
    whole_cpu = seconds["zlib-1 on a whole random 1 MiB (no probe)"][1]
    aes_ratio = rate("seal, AES-256-GCM 1 MiB") / rate("seal, pure-Python AES-GCM 16 KiB")
    cksum_ratio = fast_cksum / rate("cksum, pure-Python table, 256 KiB")
    probe_percent = 100 * probe_cpu / seal_cpu
    print()
    print("ratios (CPU time) and targets")
    print(f"  cksum, fast / pure-Python table:           {cksum_ratio:8.0f}x")
    print(f"  AES-256-GCM, pycryptodome / pure-Python:   {aes_ratio:8.0f}x")
    print(f"  random 1 MiB, zlib-1 whole / probe-and-skip: {whole_cpu / probe_cpu:6.0f}x")
    for label, ours, stdlib in (
        ("cksum, fastcrc / translate + zlib.crc32:", "cksum (fastcrc), 16 MiB",
         "cksum, translate + zlib.crc32, 16 MiB"),
        ("text deflate, ISA-L / stdlib zlib:", "compress_chunk text 1 MiB (ISA-L level 1)",
         "stdlib zlib.compress level 1, same text"),
        ("text inflate, ISA-L / stdlib zlib:", "decompress_chunk text 1 MiB (ISA-L)",
         "stdlib zlib.decompress, same stream"),
    ):  # fmt: skip
        print(f"  {label:<42} {rate(ours) / rate(stdlib):5.1f}x")
    verdict = "ok" if fast_cksum >= CKSUM_TARGET_MBPS else "BELOW TARGET"
    print(f"  cksum {fast_cksum:.0f} MB/s (target >= {CKSUM_TARGET_MBPS:.0f}): {verdict}")
    verdict = "ok" if probe_percent < PROBE_TARGET_PERCENT else "ABOVE TARGET"
    print(
        f"  probe-and-skip on random 1 MiB costs {probe_percent:.1f}% of an AES-GCM seal"
        f" (target < {PROBE_TARGET_PERCENT:.0f}%): {verdict}"
    )


if __name__ == "__main__":
    main()
