"""Transfers over a rate-limited link: ``cipherdrop`` against OpenSSH, in the same run.

Run as root: ``python bench/slowlink.py [--rate 100mbit] [--size 128M] [--runs 3]``.

On loopback, compressing a chunk only costs CPU; on a link slower than the CPU it is what
moves a compressible file faster. This script makes such a link: a network namespace
joined to the host by a veth pair, both ends shaped by a token bucket (``tc`` ``tbf``)
to ``--rate``. No delay is added (this kernel has no ``netem``): the link is slow, not
far. The server (broker, one worker of each kind plus a second file worker: the
integration tests' ``Stack``) and a private sshd listen on the host's end; the client
and ``scp`` run inside the namespace, so every byte between them crosses the link, while
the broker and its workers talk on the host as they would on one server.

Each round puts and then gets a random file and a compressible text file (the one
``bench/upload.py`` uses) with ours, ``scp -c aes256-gcm`` and ``scp -C -c aes256-gcm``
(OpenSSH's own zlib compression), one after the other; the medians of the rounds are
compared. Before each timed transfer the previous copy is removed and the disk synced,
untimed, for every tool alike; each copy is compared with its source, untimed.

Printed per file, direction and tool: MB/s of file data (MB = 10^6 bytes) and the bytes
that crossed the link, both ways, read from the veth's counters; last, the ratios ours /
scp and ours / scp -C. Needs root, iproute2's ``ip`` and ``tc``, and OpenSSH's ``sshd``,
``scp`` and ``ssh-keygen``.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.installed import compile_sources  # noqa: E402
from bench.lifecycle import size_arg  # noqa: E402
from bench.upload import make_random, make_text  # noqa: E402
from tests.integration.procs import free_port  # noqa: E402
from tests.integration.stack import Stack  # noqa: E402

TOOLS = ("ours", "scp", "scp -C")
NEEDED = ("ip", "tc", "scp", "ssh-keygen")
SSHD = "/usr/sbin/sshd"
CLIENT_ENV = {"CIPHERDROP_CLIENT_REQUEST_TIMEOUT": "60"}


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class Link:
    """A namespace behind a veth pair shaped at both ends; ``host`` and ``far``
    are the addresses of the host's end and of the namespace's."""

    def __init__(self, rate: str) -> None:
        tag = os.getpid() % 100_000
        self.netns = f"cdslow{tag}"
        self.device, far_device = f"cds{tag}h", f"cds{tag}n"
        self.host, self.far = f"10.213.{tag % 250}.1", f"10.213.{tag % 250}.2"
        run("ip", "netns", "add", self.netns)
        try:
            run("ip", "link", "add", self.device, "type", "veth", "peer", "name", far_device)
            run("ip", "link", "set", far_device, "netns", self.netns)
            run("ip", "addr", "add", f"{self.host}/30", "dev", self.device)
            run("ip", "link", "set", self.device, "up")
            inside = ("ip", "netns", "exec", self.netns)
            run(*inside, "ip", "addr", "add", f"{self.far}/30", "dev", far_device)
            run(*inside, "ip", "link", "set", far_device, "up")
            run(*inside, "ip", "link", "set", "lo", "up")
            # A token bucket: bursts of at most 256 KiB, packets queued up to 100 ms.
            shape = ("root", "tbf", "rate", rate, "burst", "256kb", "latency", "100ms")
            run("tc", "qdisc", "add", "dev", self.device, *shape)
            run(*inside, "tc", "qdisc", "add", "dev", far_device, *shape)
        except BaseException:
            self.close()
            raise

    def inside(self, *argv: str) -> list[str]:
        """``argv`` run in the namespace, on the far side of the link."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def bytes_crossed(self) -> int:
        """Bytes the host's end has sent and received so far."""
        stats = Path("/sys/class/net") / self.device / "statistics"
        return sum(int((stats / name).read_text()) for name in ("rx_bytes", "tx_bytes"))

    def close(self) -> None:
        # Deleting the namespace deletes its end of the pair, and with it the host's.
        subprocess.run(["ip", "netns", "del", self.netns], check=False, capture_output=True)


@contextlib.contextmanager
def private_sshd(base: Path, host: str) -> Iterator[list[str]]:
    """An sshd on ``host`` that lets root in with a key made here; yields scp's options."""
    base.mkdir()
    for name in ("host", "user"):
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name))
    shutil.copy(base / "user.pub", base / "authorized_keys")
    (base / "authorized_keys").chmod(0o600)
    port = free_port(host)
    (base / "sshd_config").write_text(
        f"Port {port}\nListenAddress {host}\nHostKey {base / 'host'}\n"
        f"PidFile {base / 'sshd.pid'}\nPermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"AuthorizedKeysFile {base / 'authorized_keys'}\nLogLevel ERROR\n"
        "Subsystem sftp internal-sftp\n"  # scp speaks SFTP since OpenSSH 9.0
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    sshd = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(base / "sshd_config")], stderr=subprocess.DEVNULL
    )
    try:
        _wait_listening(host, port, sshd)
        yield [
            *("-P", str(port), "-i", str(base / "user"), "-F", "/dev/null"),
            *("-o", f"UserKnownHostsFile={base / 'known_hosts'}"),
            *("-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes"),
            *("-o", "LogLevel=ERROR", "-c", "aes256-gcm@openssh.com"),
        ]
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    pace = threading.Event()  # never set: a bounded pause between attempts
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 1):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the private sshd did not start")
        pace.wait(0.05)


class Transfers:
    """Timed puts and gets of one file by each tool across the link."""

    def __init__(self, link: Link, stack: Stack, home: Path, scp: list[str], work: Path):
        self.link, self.stack, self.home, self.scp, self.work = link, stack, home, scp, work
        self.remote = work / "remote"  # where scp puts, on the host's side
        self.local = work / "local"  # where both tools get to, on the far side
        self.remote.mkdir()
        self.local.mkdir()

    def ours(self, *args: str) -> list[str]:
        return self.link.inside(sys.executable, "-m", "client", *args)

    def register(self) -> None:
        proc = subprocess.run(self.ours("register", "bench"), env=self.env(), capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode())

    def scp_argv(self, tool: str, source: str, target: str) -> list[str]:
        compress = ["-C"] if tool == "scp -C" else []
        return self.link.inside("scp", *compress, *self.scp, source, target)

    def put(self, tool: str, path: Path) -> tuple[float, int]:
        if tool == "ours":
            self._untimed(self.ours("rm", path.name))
            argv = self.ours("put", "--quiet", str(path))
            return self._timed(argv, None, path)
        copy = self.remote / path.name
        copy.unlink(missing_ok=True)
        return self._timed(
            self.scp_argv(tool, str(path), f"root@{self.link.host}:{copy}"), copy, path
        )

    def get(self, tool: str, path: Path) -> tuple[float, int]:
        """Gets what :meth:`put` stored with the same tool."""
        copy = self.local / path.name
        copy.unlink(missing_ok=True)
        if tool == "ours":
            argv = self.ours("get", "--quiet", path.name, "-o", str(copy))
        else:
            argv = self.scp_argv(
                tool, f"root@{self.link.host}:{self.remote / path.name}", str(copy)
            )
        return self._timed(argv, copy, path)

    def _untimed(self, argv: list[str]) -> None:
        subprocess.run(argv, env=self.env(), capture_output=True, check=False)

    def _timed(self, argv: list[str], copy: Path | None, source: Path) -> tuple[float, int]:
        """Seconds and link bytes of one transfer; raises unless it succeeded intact."""
        os.sync()  # a quiet disk to start from, for every tool alike
        crossed = self.link.bytes_crossed()
        started = time.perf_counter()
        proc = subprocess.run(argv, env=self.env(), capture_output=True, check=False)
        seconds = time.perf_counter() - started
        crossed = self.link.bytes_crossed() - crossed
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[4:7]} failed ({proc.returncode}): {proc.stderr[-500:]!r}")
        if copy is not None and not filecmp.cmp(source, copy, shallow=False):
            raise RuntimeError(f"{copy} differs from {source}")
        return seconds, crossed

    def env(self) -> dict[str, str]:
        return self.stack.client_env(self.home, CLIENT_ENV)


Measure = Callable[[str, Path], tuple[float, int]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="100mbit", help="link rate, as tc reads it")
    parser.add_argument("--size", type=size_arg, default=128 * 1024 * 1024, help="e.g. 128M")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=None, help="directory for the test files")
    args = parser.parse_args()
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    missing += [] if Path(SSHD).exists() else [SSHD]
    if os.geteuid() != 0 or missing:
        print(
            "slowlink.py needs root (network namespaces) and "
            + (", ".join(missing) + " (not found)" if missing else "ip, tc, sshd, scp"),
            file=sys.stderr,
        )
        return 2
    compile_sources(ROOT)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        base = Path(tmp)
        files = {"random": base / "random.bin", "text": base / "text.txt"}
        make_random(files["random"], args.size)
        make_text(files["text"], args.size)
        link = Link(args.rate)
        try:
            stack = Stack(
                base / "stack",
                rsa_bits=3072,
                heartbeat=(2.5, 3),
                broker_endpoint=f"tcp://{link.host}:*",
            )
            try:
                with private_sshd(base / "sshd", link.host) as scp:
                    report(args, files, link, stack, scp, base)
            finally:
                stack.stop()
        finally:
            link.close()
    return 0


def report(
    args: argparse.Namespace,
    files: dict[str, Path],
    link: Link,
    stack: Stack,
    scp: list[str],
    base: Path,
) -> None:
    transfers = Transfers(link, stack, base / "home", scp, base)
    transfers.register()
    print(
        f"link: {args.rate} each way (tc tbf on both ends of a veth pair);"
        f" files of {args.size / 1e6:.0f} MB; median of {args.runs} rounds"
    )
    directions: dict[str, Measure] = {"put": transfers.put, "get": transfers.get}
    samples: dict[tuple[str, str, str], list[tuple[float, int]]] = {}
    for _ in range(args.runs):
        for kind, path in files.items():
            for direction, measure in directions.items():
                for tool in TOOLS:
                    samples.setdefault((kind, direction, tool), []).append(measure(tool, path))
    rate: dict[tuple[str, str, str], float] = {}
    print(f"{'file':<8}{'tool':<10}{'put MB/s':>10}{'link MB':>10}{'get MB/s':>10}{'link MB':>10}")
    for kind in files:
        for tool in TOOLS:
            cells = []
            for direction in directions:
                runs = samples[kind, direction, tool]
                rate[kind, direction, tool] = statistics.median(
                    args.size / s / 1e6 for s, _ in runs
                )
                crossed = statistics.median(b for _, b in runs) / 1e6
                cells.append(f"{rate[kind, direction, tool]:>10.1f}{crossed:>10.1f}")
            print(f"{kind:<8}{tool:<10}{''.join(cells)}")
    for peer in TOOLS[1:]:
        ratios = ", ".join(
            f"{direction} {kind} {rate[kind, direction, 'ours'] / rate[kind, direction, peer]:.2f}x"
            for direction in directions
            for kind in files
        )
        print(f"ratios ours / {peer} -c aes256-gcm: {ratios}")


if __name__ == "__main__":
    sys.exit(main())
