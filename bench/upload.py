"""Upload throughput of the real ``cipherdrop put`` against OpenSSH, in the same run.

Run as ``python bench/upload.py [--size BYTES] [--runs N] [--file-workers N] [--peer PATH]``.

It starts the whole server as real processes on 127.0.0.1 (broker, one register and one
key worker, ``--file-workers`` file workers; the integration tests' ``Stack``), registers
a client, makes a random file and a compressible text file of ``--size`` bytes (1 GiB by
default), uploads each ``--runs`` times with the real client command and reports the
median MB/s (MB = 10^6 bytes). The OpenSSH baseline script (by default
``../shared/peers/openssh-baseline.sh`` next to the repository) runs on the same files in
turns with ours: each round is one upload of ours per file, then one run of the script
per file (every method once), and medians of the rounds are compared. The last line
prints the ratios ours / ``scp -c aes256-gcm`` with the acceptance targets (random >=
1.0x, text >= 0.6x).

With each of our figures comes the CPU the upload cost, in ms per MB, per process (client,
broker, file workers): on a 2-core machine every process shares the same CPU, so their sum
decides the rate. ``--chunk-size`` and ``--window`` set the client's settings (default:
the product's defaults).

Before each timed upload of ours and before the OpenSSH script, the disk is synced,
untimed: no run pays for writing back what earlier steps wrote (the test files, the last
run). Our upload still syncs what it stored before it reports success; scp does not.

Also printed: the bytes our client sent to the broker in one upload (counted by a relay
in an extra, untimed upload), scp's being the file size plus its framing (OpenSSH does
not compress by default); and the peak RSS of the client and of
each file worker for a 1 MiB and a full-size upload (the peaks are reset before each).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.installed import compile_sources  # noqa: E402
from bench.procstat import cpu_seconds, peak_rss, reset_peak  # noqa: E402
from tests.integration.relay import Relay  # noqa: E402
from tests.integration.stack import Stack  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB
PEER = ROOT.parent / "shared" / "peers" / "openssh-baseline.sh"
TARGETS = {"random": 1.0, "text": 0.6}
_WORDS = [
    *("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "encrypted", "file"),
    *("drop", "broker", "worker", "chunk", "session", "key", "server", "client", "upload"),
    *("verified", "checksum", "lorem", "ipsum", "dolor", "sit", "amet", "consectetur"),
]


def make_random(path: Path, size: int) -> None:
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 8 * MIB))
            out.write(block)
            left -= len(block)


def make_text(path: Path, size: int) -> None:
    """Log-like lines of common words: compresses about 3-4x with zlib level 1."""
    rng = random.Random(1)
    block = "".join(
        f"{i:08d} {' '.join(rng.choices(_WORDS, k=rng.randint(6, 14)))}\n" for i in range(60_000)
    ).encode()
    with path.open("wb") as out:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            out.write(piece)
            left -= len(piece)


class ByteCounter:
    """Relay hooks that add up the bytes forwarded each way, without copying frames."""

    def __init__(self) -> None:
        self.sent = self.received = 0

    def request(self, frames: list[zmq.Frame]) -> list[zmq.Frame]:
        self.sent += sum(len(f.buffer) for f in frames)
        return frames

    def reply(self, frames: list[zmq.Frame]) -> list[zmq.Frame]:
        self.received += sum(len(f.buffer) for f in frames)
        return frames


CLIENT_ENV: dict[str, str] = {"CIPHERDROP_CLIENT_REQUEST_TIMEOUT": "60"}


def put(stack: Stack, home: Path, path: Path, name: str, *extra: str) -> tuple[float, int]:
    """One upload: (seconds, client peak RSS bytes). Raises if it does not verify."""
    seconds, peak, _ = put_measured(stack, home, path, name, *extra)
    return seconds, peak


def put_measured(
    stack: Stack, home: Path, path: Path, name: str, *extra: str
) -> tuple[float, int, dict[str, float]]:
    """One upload: seconds, client peak RSS and CPU seconds per process."""
    argv = [sys.executable, "-m", "client", "put", str(path), "--name", name, "--quiet", *extra]
    env = stack.client_env(home, CLIENT_ENV)
    servers = [stack.broker, *stack.workers["file"]]
    before = {proc.name: cpu_seconds(proc.pid) for proc in servers}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"upload failed ({proc.returncode}): {err.read().decode()}")
    cpu = {"client": usage.ru_utime + usage.ru_stime}
    cpu.update({p.name: cpu_seconds(p.pid) - before[p.name] for p in servers})
    return elapsed, usage.ru_maxrss * 1024, cpu


def timed_put(
    stack: Stack, home: Path, path: Path, name: str
) -> tuple[float, int, dict[str, float]]:
    """``put_measured`` right after removing the previous copy, untimed, as the OpenSSH
    script removes its destination right before each copy: a run then times an upload,
    not also the deletion of the last run's gigabyte, and both write into memory just
    freed, which costs less here than memory freed long before (docs/performance.md,
    "Freed memory"). :func:`main` makes the first copy, untimed."""
    stack.client(home, "rm", name)
    # Nor does it pay for writing back what came before (the test files, the last run):
    # the disk starts quiet, as it does for the OpenSSH runs (synced the same way).
    os.sync()
    return put_measured(stack, home, path, name)


def peer_round(peer: Path, path: Path) -> dict[str, float]:
    """One run of the OpenSSH script on ``path`` (every method once): MB/s by method."""
    os.sync()  # a quiet disk to start from, as for our runs
    proc = subprocess.run(
        ["bash", str(peer), str(path), "1"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        print(f"peer failed on {path.name}: {proc.stderr.strip()}", file=sys.stderr)
        return {}
    rates = {}
    for line in proc.stdout.splitlines():
        if match := re.match(r"(\S+)\s+([\d.]+) MB/s", line):
            rates[match[1]] = float(match[2])
    return rates


def shown(rates: list[float]) -> str:
    return ", ".join(f"{rate:.0f}" for rate in rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=GIB, help="bytes per test file")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--file-workers", type=int, default=2)
    parser.add_argument("--peer", type=Path, default=PEER, help="openssh-baseline.sh path")
    parser.add_argument("--no-peer", action="store_true", help="skip the OpenSSH baseline")
    parser.add_argument("--tmp", type=Path, default=None, help="directory for the test files")
    parser.add_argument("--chunk-size", type=int, help="client.chunk_size (bytes)")
    parser.add_argument("--window", type=int, help="client.window (chunks in flight)")
    args = parser.parse_args()
    compile_sources(ROOT)
    if args.chunk_size:
        CLIENT_ENV["CIPHERDROP_CLIENT_CHUNK_SIZE"] = str(args.chunk_size)
    if args.window:
        CLIENT_ENV["CIPHERDROP_CLIENT_WINDOW"] = str(args.window)

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        base = Path(tmp)
        files = {"random": base / "random.bin", "text": base / "text.txt"}
        make_random(files["random"], args.size)
        make_text(files["text"], args.size)
        small = base / "small.bin"
        make_random(small, MIB)
        # Default settings, as a user gets them (heartbeat 2.5 s x 3, 3072-bit keys).
        stack = Stack(
            base / "stack", file_workers=args.file_workers, rsa_bits=3072, heartbeat=(2.5, 3)
        )
        try:
            home = base / "home"
            result = stack.client(home, "register", "bench")
            if result.returncode != 0:
                raise RuntimeError(result.stderr)
            workers = stack.workers["file"]
            print(f"cipherdrop upload, {args.size / 1e6:.0f} MB files, {len(workers)} file workers")
            # Ours and the OpenSSH script take turns, round by round, so that a change in
            # the machine's load during the benchmark weighs on both sides alike.
            timed: dict[str, list[tuple[float, int, dict[str, float]]]] = {k: [] for k in files}
            peer: dict[str, dict[str, list[float]]] = {kind: {} for kind in files}
            for kind, path in files.items():  # untimed: the copy the first round replaces
                put(stack, home, path, kind)
            for _ in range(args.runs):
                for kind, path in files.items():
                    timed[kind].append(timed_put(stack, home, path, kind))
                for kind, path in files.items():
                    rates = {} if args.no_peer else peer_round(args.peer, path)
                    for method, rate in rates.items():
                        peer[kind].setdefault(method, []).append(rate)
            ours: dict[str, float] = {}
            for kind, runs in timed.items():
                rates = [args.size / seconds / 1e6 for seconds, _, _ in runs]
                ours[kind] = statistics.median(rates)
                print(f"  ours, {kind} file: {ours[kind]:8.1f} MB/s (runs: {shown(rates)})")
                names = list(runs[0][2])
                per_mb = {
                    n: statistics.median(c[n] for _, _, c in runs) * 1e9 / args.size for n in names
                }
                parts = ", ".join(f"{n} {v:.2f}" for n, v in per_mb.items())
                print(f"    CPU ms/MB (median): total {sum(per_mb.values()):.2f} = {parts}")
            for kind, path in files.items():
                wire = ByteCounter()
                # Not timed: the relay costs a hop.
                relay = Relay(stack.endpoint, wire.request, wire.reply, copy=False)
                try:
                    put(stack, home, path, f"{kind}-wire", "--server", relay.endpoint)
                finally:
                    relay.close()
                print(
                    f"  wire bytes, client -> broker, {kind} file: {wire.sent / 1e6:.1f} MB"
                    f" ({wire.sent / args.size:.3f}x the file), replies {wire.received / 1e6:.2f}"
                    f" MB; scp: {args.size / 1e6:.1f} MB + framing (OpenSSH compresses nothing"
                    " by default)"
                )
            for label, path in (("1 MiB", small), (f"{args.size / MIB:.0f} MiB", files["random"])):
                for proc in workers:
                    reset_peak(proc.pid)
                _, client_peak = put(stack, home, path, f"rss-{label}")
                peaks = ", ".join(f"{proc.name} {peak_rss(proc.pid) / MIB:.1f}" for proc in workers)
                print(f"  peak RSS, {label} upload (MiB): client {client_peak / MIB:.1f}, {peaks}")
            for kind, methods in peer.items():
                if methods:
                    print(f"  openssh, {kind} file (median of the rounds):")
                for method, rates in methods.items():
                    median = statistics.median(rates)
                    print(f"    {method:<24} {median:8.1f} MB/s (runs: {shown(rates)})")
        finally:
            stack.stop()
    ratios = []
    for kind, target in TARGETS.items():
        scp = statistics.median(peer[kind]["scp-aes256-gcm"]) if peer[kind] else None
        if scp:
            ratios.append(f"{kind} {ours[kind] / scp:.2f}x (target {target}x)")
        else:
            ratios.append(f"{kind} n/a (no scp-aes256-gcm figure)")
    print("ratios ours / scp-aes256-gcm: " + ", ".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
