"""Many small files: ``cipherdrop put -r`` and ``get -r`` against ``scp -r``, same run.

Run as root: ``python bench/smallfiles.py [--files 1000] [--size 4096] [--runs 3]``.

A directory of ``--files`` random files of ``--size`` bytes each goes up and comes back
with ours, on the integration tests' ``Stack`` on 127.0.0.1 (broker, one register and
one key worker, two file workers), first with ``client.parallel_files`` = 1 (every file
alone) and then at its default, and with ``scp -r -c aes256-gcm`` through a private sshd
on 127.0.0.1, in turns, round by round. Each copy is compared with the source, untimed,
and the disk is synced before every timed run. Printed: seconds and files per second of
each, the medians, and last the ratios ours / scp (files per second). Needs root
(the private sshd lets root in with a key made for the run) and OpenSSH.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.installed import compile_sources  # noqa: E402
from bench.slowlink import SSHD, private_sshd  # noqa: E402
from tests.integration.stack import Stack  # noqa: E402

HOST = "127.0.0.1"


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    os.sync()  # a quiet disk to start from, for both tools alike
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return seconds


def same_tree(one: Path, other: Path) -> bool:
    compared = filecmp.dircmp(one, other)
    names = sorted(p.name for p in one.iterdir())
    equal, _, _ = filecmp.cmpfiles(one, other, names, shallow=False)
    return not compared.left_only and not compared.right_only and len(equal) == len(names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096, help="bytes per file")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0 or not Path(SSHD).exists() or shutil.which("scp") is None:
        print("smallfiles.py needs root, sshd and scp", file=sys.stderr)
        return 2
    compile_sources(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        source = base / "many"
        source.mkdir()
        for i in range(args.files):
            (source / f"f{i:05d}.bin").write_bytes(os.urandom(args.size))
        stack = Stack(base / "stack", rsa_bits=3072, heartbeat=(2.5, 3))
        try:
            home = base / "home"
            registered = stack.client(home, "register", "bench")
            if registered.returncode != 0:
                raise RuntimeError(registered.stderr)
            env = stack.client_env(home, {"CIPHERDROP_CLIENT_REQUEST_TIMEOUT": "60"})
            alone = {**env, "CIPHERDROP_CLIENT_PARALLEL_FILES": "1"}  # for the lanes' effect
            ours = [sys.executable, "-m", "client"]

            def get(into: Path) -> list[str]:
                return [*ours, "get", "-q", "-r", "many", "-o", str(into)]

            seconds: dict[str, list[float]] = {}
            with private_sshd(base / "sshd", HOST) as scp:
                for run in range(args.runs):
                    copies = base / f"run{run}"
                    copies.mkdir()
                    remote = f"root@{HOST}:{copies / 'up'}"
                    put = [*ours, "put", "-q", "-r", str(source)]
                    steps = {  # (command, its environment, removes what the last put stored)
                        "ours put, 1 at a time": (put, alone, True),
                        "ours get, 1 at a time": (get(copies / "alone"), alone, False),
                        "ours put": (put, env, True),
                        "ours get": (get(copies / "ours"), env, False),
                        "scp put": (["scp", "-r", *scp, str(source), remote], None, False),
                        "scp get": (["scp", "-r", *scp, remote, str(copies / "down")], None, False),
                    }
                    for step, (argv, step_env, fresh) in steps.items():
                        if fresh:  # untimed, as scp puts into a new directory
                            stack.client(home, "rm", "-r", "many")
                        seconds.setdefault(step, []).append(timed(argv, step_env))
                    for copy in ("alone/many", "ours/many", "up", "down"):
                        if not same_tree(source, copies / copy):
                            raise RuntimeError(f"{copies / copy} differs from {source}")
                    shutil.rmtree(copies)
        finally:
            stack.stop()
    print(f"{args.files} files of {args.size} bytes; median of {args.runs} rounds")
    rate = {}
    for step, runs in seconds.items():
        rate[step] = args.files / statistics.median(runs)
        shown = ", ".join(f"{s:.2f}" for s in runs)
        median = statistics.median(runs)
        print(f"  {step:<21} {median:7.2f} s  {rate[step]:7.0f} files/s  (runs: {shown})")
    print(
        f"ratios ours / scp -r (files per second): put {rate['ours put'] / rate['scp put']:.2f}x,"
        f" get {rate['ours get'] / rate['scp get']:.2f}x; one at a time: put"
        f" {rate['ours put, 1 at a time'] / rate['scp put']:.2f}x,"
        f" get {rate['ours get, 1 at a time'] / rate['scp get']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
