"""Benchmark of the file lifecycle: download speed against OpenSSH, resume, memory, many clients.

Runs a real stack (broker, two workers of each kind) on 127.0.0.1 and prints:

1. download MB/s of ``cipherdrop get`` (median of ``--runs``) on a random file of
   ``--compare-size`` bytes, next to the ``scp-get-aes256-gcm`` line (scp -c aes256-gcm,
   remote to local) of the OpenSSH baseline script run on the same file in the same run
   (``../shared/peers/openssh-baseline.sh`` next to the repository, or ``--peer``), and
   the ratio; acceptance is >= 1.0x (these runs are timed plainly, without the RSS
   watch of section 3, which costs the command itself a few percent). The two take
   turns: each round is one ``get`` of ours, then one run of the OpenSSH script, so a
   change in the machine's load between the first and the last minute of the comparison
   weighs on both sides alike; the medians of the rounds are compared;
2. resume savings: an upload and a download of ``--resume-size`` bytes killed (SIGKILL)
   once half the chunks are stored / received, then run again: chunks sent again;
3. peak RSS of client, broker and file workers for a 1 MiB and a ``--size`` (default
   5 GiB) round trip: memory must not grow with the file;
4. the totals of ``--clients`` clients (default 50) uploading and downloading
   ``--files`` files each at once: files, bytes, failures (must be 0) and wall time.

MB = 10^6 bytes. ``--size 1G`` or smaller makes a quick run. The machine is shared and
noisy: compare only figures from the same run. Each timed download starts right after
the previous output is removed and the disk synced, untimed, as each copy of the OpenSSH
script starts right after its previous copy is removed (the script's run is synced
before too): no run pays for writing back files written before it (the test file, the
upload), and both write into memory just freed (see :func:`download_speeds`). Our
``get`` still syncs its own output before it returns; scp does not.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.installed import compile_sources  # noqa: E402
from bench.procstat import peak_rss, reset_peak  # noqa: E402
from common.log import configure_logging  # noqa: E402
from common.messages import MessageType  # noqa: E402
from tests.integration.stack import Stack  # noqa: E402
from tests.integration.test_many_clients import FILES, Outcome, run_client  # noqa: E402
from tests.integration.test_resume import CountingRelay as Relay  # noqa: E402
from tests.integration.test_resume import chunks_held, chunks_received  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB
PEER = ROOT.parent / "shared" / "peers" / "openssh-baseline.sh"
_UNITS = {"": 1, "K": 1024, "M": MIB, "G": GIB}


def size_arg(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)(i?B)?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 5G, 300M)")
    return int(match[1]) * _UNITS[match[2].upper()]


def make_random(path: Path, size: int) -> Path:
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(MIB, left))
            out.write(block)
            left -= len(block)
    return path


def client(stack: Stack, home: Path, *args: str, watch_rss: bool = True) -> tuple[float, int]:
    """Run one ``cipherdrop`` command: (seconds, its peak RSS bytes); raises on failure.

    The peak is VmHWM read while it runs (every 20 ms; the peak is monotone), not the
    rusage of wait4, which also counts the parent's pages the child held before exec.
    Reading it slows the command (a 1 GiB ``get`` by ~6% here: 3.97 vs 3.74 s, medians
    of six alternated runs), so runs timed against the peer pass ``watch_rss=False``
    (peak reported as 0), as the OpenSSH script's copies are not watched either.
    """
    argv = [sys.executable, "-m", "client", *args]
    env = stack.client_env(home, {"CIPHERDROP_CLIENT_REQUEST_TIMEOUT": "60"})
    pace = threading.Event()
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        while watch_rss and proc.poll() is None:
            with contextlib.suppress(OSError, StopIteration):
                peak = max(peak, peak_rss(proc.pid))
            pace.wait(0.02)
        proc.wait(timeout=3600)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {err.read().decode()}")
    return elapsed, peak


def mb_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def download_speeds(
    stack: Stack, home: Path, source: Path, out: Path, peer: Path | None, runs: int
) -> tuple[list[float], list[float]]:
    """MB/s of our ``get`` and of ``scp-get-aes256-gcm``, one of each per round.

    Each timed ``get`` starts right after the previous one's output is removed, as each
    copy of the OpenSSH script starts right after its previous copy is removed
    (``rm -f "$DST"``): on these VMs a gigabyte written into memory freed long before
    costs more than into memory just freed (a ``get`` 2.29 vs 1.59 s when our output was
    removed before the script ran rather than after it; docs/performance.md, "Freed
    memory"). An untimed ``get`` first makes that previous output for the first round,
    and reads the stored file once, as the script reads its source once before timing.
    """
    client(stack, home, "put", "-q", str(source), "--name", "compare.bin")
    client(stack, home, "get", "-q", "compare.bin", "-o", str(out), watch_rss=False)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(runs):
        out.unlink()  # before the clock starts: the deletion is not the download's work
        # Nor does it pay for writing back what came before (the test file, the upload):
        # the disk starts quiet, as it does for the OpenSSH runs (synced the same way).
        os.sync()
        seconds, _ = client(
            stack, home, "get", "-q", "compare.bin", "-o", str(out), watch_rss=False
        )
        ours.append(mb_s(source.stat().st_size, seconds))
        if peer is not None and (rate := scp_get(peer, source)) is not None:
            theirs.append(rate)
    out.unlink()
    return ours, theirs


def rounds(rates: list[float]) -> str:
    return " (rounds: " + ", ".join(f"{rate:.1f}" for rate in rates) + ")"


def scp_get(peer: Path, source: Path) -> float | None:
    """One run of the OpenSSH script (every method once); its scp-get-aes256-gcm MB/s."""
    os.sync()  # a quiet disk to start from, as for our runs
    proc = subprocess.run(
        ["bash", str(peer), str(source), "1"], capture_output=True, text=True, check=False
    )
    match = re.search(r"^scp-get-aes256-gcm\s+([\d.]+) MB/s", proc.stdout, re.MULTILINE)
    if not match:
        print(f"  openssh baseline failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return float(match[1])


def killed_half_way(stack: Stack, home: Path, args: list[str], half: Callable[[], bool]) -> None:
    proc = stack.spawn_client(home, *args)
    pace = threading.Event()
    deadline = time.monotonic() + 600
    while not half() and proc.poll() is None and time.monotonic() < deadline:
        pace.wait(0.005)
    proc.kill()
    proc.communicate(timeout=30)


def resume(stack: Stack, home: Path, work: Path, size: int) -> tuple[str, str]:
    chunks = -(-size // MIB)
    source = make_random(work / "resume.bin", size)
    relay = Relay(stack.endpoint)
    try:
        argv = ["put", "-q", str(source), "--server", relay.endpoint]
        killed_half_way(stack, home, argv, lambda: chunks_held(stack, "resume.bin") >= chunks // 2)
    finally:
        relay.close()
    again = Relay(stack.endpoint)
    try:
        client(stack, home, "put", "-q", str(source), "--server", again.endpoint)
    finally:
        again.close()
    up = f"put: sent {again.counts[MessageType.UPLOAD_CHUNK]} of {chunks} chunks again"
    target = work / "resume.out"
    relay = Relay(stack.endpoint)
    try:
        argv = ["get", "-q", "resume.bin", "-o", str(target), "--server", relay.endpoint]
        killed_half_way(stack, home, argv, lambda: chunks_received(target) >= chunks // 2)
    finally:
        relay.close()
    again = Relay(stack.endpoint)
    try:
        client(
            stack, home, "get", "-q", "resume.bin", "-o", str(target), "--server", again.endpoint
        )
    finally:
        again.close()
    down = f"get: fetched {again.counts[MessageType.DOWNLOAD_CHUNK]} of {chunks} chunks again"
    if not filecmp.cmp(target, source, shallow=False):
        raise RuntimeError("the resumed download differs from the source")
    target.unlink()
    source.unlink()
    return up, down


def round_trip_rss(stack: Stack, home: Path, work: Path, size: int, label: str) -> str:
    source = make_random(work / f"rss-{label}.bin", size)
    servers = [stack.broker, *stack.workers["file"]]
    for proc in servers:
        reset_peak(proc.pid)
    up, put_rss = client(stack, home, "put", "-q", str(source))
    target = work / f"rss-{label}.out"
    down, get_rss = client(stack, home, "get", "-q", source.name, "-o", str(target))
    server = max(peak_rss(proc.pid) for proc in servers)
    target.unlink()
    source.unlink()
    return (
        f"{label:>8}: put {mb_s(size, up):7.1f} MB/s, get {mb_s(size, down):7.1f} MB/s;"
        f" peak RSS put {put_rss / MIB:5.1f} MiB, get {get_rss / MIB:5.1f} MiB,"
        f" servers {server / MIB:5.1f} MiB"
    )


def many_clients(stack: Stack, work: Path, clients: int) -> str:
    outcome = Outcome()
    base = work / "many"
    base.mkdir()
    started = time.perf_counter()
    pool = [
        threading.Thread(target=run_client, args=(stack, base, n, outcome)) for n in range(clients)
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - started
    for error in outcome.errors[:5]:
        print(f"    {error}", file=sys.stderr)
    return (
        f"{clients} clients x {FILES} files: {outcome.verified} files verified,"
        f" {outcome.bytes / 1e6:.1f} MB each way, failures {len(outcome.errors)},"
        f" wall {wall:.1f} s (including registration)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=size_arg, default=5 * GIB, help="big round trip")
    parser.add_argument("--compare-size", type=size_arg, default=GIB, help="vs scp")
    parser.add_argument("--resume-size", type=size_arg, default=256 * MIB)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peer", type=Path, default=PEER, help="openssh-baseline.sh path")
    parser.add_argument("--no-peer", action="store_true", help="skip the OpenSSH baseline")
    parser.add_argument("--tmp", type=Path, default=None, help="work directory")
    args = parser.parse_args()
    compile_sources(ROOT)
    configure_logging("warning")  # the in-process clients of the many-clients run
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="cipherdrop-lifecycle-") as tmp:
        work = Path(tmp)
        stack = Stack(work / "stack", file_workers=2, log_level="warning")
        try:
            stack.start_worker("register")
            stack.start_worker("key")
            home = work / "home"
            subprocess.run(
                [sys.executable, "-m", "client", "register", "bench"],
                cwd=ROOT,
                env=stack.client_env(home),
                check=True,
                capture_output=True,
            )
            print("download vs OpenSSH (MB = 10^6 bytes):")
            compare = make_random(work / "compare.bin", args.compare_size)
            peer = None if args.no_peer else args.peer
            ours, theirs = download_speeds(
                stack, home, compare, work / "compare.out", peer, args.runs
            )
            ours_mb, size = statistics.median(ours), f"{args.compare_size / MIB:.0f} MiB"
            print(f"  cipherdrop get          {ours_mb:8.1f} MB/s ({size}){rounds(ours)}")
            if theirs:
                theirs_mb = statistics.median(theirs)
                print(f"  scp-get-aes256-gcm      {theirs_mb:8.1f} MB/s{rounds(theirs)}")
                print(f"  ratio                   {ours_mb / theirs_mb:8.2f}x (target >= 1.0x)")
            compare.unlink()
            print("resume after SIGKILL at half way:")
            for line in resume(stack, home, work, args.resume_size):
                print(f"  {line}")
            print("peak RSS, round trips:")
            print("  " + round_trip_rss(stack, home, work, MIB, "1 MiB"))
            print("  " + round_trip_rss(stack, home, work, args.size, f"{args.size / GIB:.2f} GiB"))
            print("many clients:")
            print("  " + many_clients(stack, work, args.clients))
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
