"""Echo throughput through our broker, next to a direct echo and the majortomo broker.

Run ``python bench/broker.py``. Each peer is measured in the same run, on the same
machine, with the same payloads and the same number of echo workers (2):

- ``direct``: a DEALER client and a ROUTER echo server, no broker at all;
- ``ours``: ``python -m broker`` with raw 7/MDP echo workers and a raw DEALER client;
- ``majortomo``: majortomo 0.2.0's broker, driven by its own Client and Worker classes
  (its wire format is MDP 0.2, not spec 7, so our client cannot talk to it).

Modes: 1 KiB requests one at a time, 1 KiB with 8 in flight, 1 MiB one at a time and
1 MiB with 8 in flight. Majortomo's client allows one request per client, so "8 in
flight" uses 8 of its clients. Figures are MB/s of request payload, median of 3 runs;
the last line prints the ratios the acceptance criteria are stated in.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import mdp  # noqa: E402

SERVICE = b"echo"
WORKERS = 2
RUNS = 3
KIB, MIB = 1024, 1024 * 1024
MODES = [
    ("1KiB x1", KIB, 1, 4000),
    ("1KiB x8", KIB, 8, 8000),
    ("1MiB x1", MIB, 1, 300),
    ("1MiB x8", MIB, 8, 400),
]
TIMEOUT_MS = 20_000
_MORE = int(zmq.SNDMORE)  # plain ints: pyzmq's flag enums are slow on small messages
_BIG = 64 * KIB  # bytes at least this long are sent without a copy


def send_parts(sock: zmq.Socket[bytes], parts: list[Any]) -> None:
    """send_multipart without its per-frame enum arithmetic; zero-copy for big frames.

    copy=True is pyzmq's fast path for small bytes; a zmq.Frame is never copied.
    """
    last = len(parts) - 1
    for index, part in enumerate(parts):
        big = isinstance(part, bytes) and len(part) >= _BIG
        sock.send(part, _MORE if index < last else 0, copy=not big)


def recv_parts(sock: zmq.Socket[bytes]) -> list[zmq.Frame]:
    frame = sock.recv(0, copy=False)
    parts = [frame]
    while frame.more:
        frame = sock.recv(0, copy=False)
        parts.append(frame)
    return parts


# -- servers (run in child processes) ------------------------------------------------------


def direct_server(endpoint: str) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    while True:
        send_parts(sock, recv_parts(sock))


def mdp_worker(endpoint: str) -> None:
    """A minimal 7/MDP echo worker: READY, then echo REQUESTs and answer heartbeats."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sock.send_multipart(mdp.ready(SERVICE))
    reply_header = [b"", mdp.MDPW01, mdp.REPLY]
    while True:
        frames = recv_parts(sock)
        command = frames[2].bytes
        if command == mdp.REQUEST:
            send_parts(sock, reply_header + frames[3:])
        elif command == mdp.HEARTBEAT:
            sock.send_multipart(mdp.heartbeat())
        else:
            return


def majortomo_broker(endpoint: str) -> None:
    from majortomo.broker import Broker

    Broker(bind=endpoint).run()  # type: ignore[no-untyped-call]


def majortomo_worker(endpoint: str) -> None:
    from majortomo import Worker, WorkerRequestsIterator

    worker_iter = WorkerRequestsIterator(Worker(endpoint, SERVICE))
    for request in worker_iter:
        worker_iter.send_reply_final(request)  # type: ignore[no-untyped-call]


# -- clients (run here) ------------------------------------------------------------------


def run_dealer(endpoint: str, header: list[bytes], size: int, window: int, count: int) -> float:
    """Seconds to echo ``count`` requests of ``size`` bytes with ``window`` in flight."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    payload = os.urandom(size)
    try:
        sent = received = 0
        started = time.perf_counter()
        while received < count:
            while sent < count and sent - received < window:
                send_parts(sock, [*header, sent.to_bytes(8, "big"), payload])
                sent += 1
            if not sock.poll(TIMEOUT_MS):
                raise RuntimeError("echo timed out")
            reply = recv_parts(sock)
            if len(reply[-1]) != size:
                raise RuntimeError(f"bad echo: {[f.bytes[:20] for f in reply[:-1]]}")
            received += 1
        return time.perf_counter() - started
    finally:
        sock.close(linger=0)
        context.term()


def run_majortomo(endpoint: str, size: int, window: int, count: int) -> float:
    from majortomo import Client

    clients = [Client(endpoint) for _ in range(window)]
    payload = os.urandom(size)
    for client in clients:
        client.connect()
    try:
        sent = received = 0
        started = time.perf_counter()
        for client in clients:  # fill the window, then replace each answer with a request
            client.send(SERVICE, sent.to_bytes(8, "big"), payload)
            sent += 1
        while received < count:
            for client in clients:
                if received == count or not client._expect_reply:
                    continue
                reply = client.recv_all_as_list(timeout=TIMEOUT_MS / 1000)
                if len(reply[-1]) != size:
                    raise RuntimeError("bad echo from majortomo")
                received += 1
                if sent < count:
                    client.send(SERVICE, sent.to_bytes(8, "big"), payload)
                    sent += 1
        return time.perf_counter() - started
    finally:
        for client in clients:
            client.close()  # type: ignore[no-untyped-call]


# -- orchestration -----------------------------------------------------------------------


def free_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def start(target: Callable[[str], None], endpoint: str) -> mp.process.BaseProcess:
    process = mp.get_context("spawn").Process(target=target, args=(endpoint,), daemon=True)
    process.start()
    return process


def start_our_broker() -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERDROP_")}
    env["PYTHONPATH"] = str(ROOT)
    argv = [
        sys.executable,
        "-m",
        "broker",
        "--endpoint",
        "tcp://127.0.0.1:*",
        "--log-format",
        "json",
    ]
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    assert process.stderr is not None
    line = json.loads(process.stderr.readline())
    if line.get("event") != "broker.listening":
        raise RuntimeError(f"unexpected first line from the broker: {line}")
    return process, str(line["endpoint"])


class Peer:
    """One setup under test: its processes, and how to echo through it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.processes: list[mp.process.BaseProcess] = []
        self.broker: subprocess.Popen[bytes] | None = None
        self.run: Callable[[int, int, int], float] = lambda size, window, count: 0.0

    def close(self) -> None:
        for process in self.processes:
            process.kill()
        if self.broker is not None:
            self.broker.terminate()
            self.broker.communicate(timeout=10)


def direct() -> Peer:
    peer, endpoint = Peer("direct"), free_endpoint()
    peer.processes.append(start(direct_server, endpoint))
    peer.run = lambda size, window, count: run_dealer(endpoint, [], size, window, count)
    return peer


def ours() -> Peer:
    peer = Peer("ours")
    peer.broker, endpoint = start_our_broker()
    peer.processes += [start(mdp_worker, endpoint) for _ in range(WORKERS)]
    header = [b"", mdp.MDPC01, SERVICE]
    peer.run = lambda size, window, count: run_dealer(endpoint, header, size, window, count)
    return peer


def majortomo() -> Peer:
    peer, endpoint = Peer("majortomo"), free_endpoint()
    peer.processes.append(start(majortomo_broker, endpoint))
    peer.processes += [start(majortomo_worker, endpoint) for _ in range(WORKERS)]
    peer.run = lambda size, window, count: run_majortomo(endpoint, size, window, count)
    return peer


def main() -> None:
    print(f"echo, {WORKERS} workers, median of {RUNS} interleaved runs; MB/s of request payload")
    peers = [direct(), ours(), majortomo()]
    try:
        for peer in peers:
            peer.run(KIB, 8, 500)  # warm up: workers registered, connections made
        rates: dict[tuple[str, str], list[float]] = {}
        for mode, size, window, count in MODES:
            for _ in range(RUNS):  # interleaved, so that noise hits every peer alike
                for peer in peers:
                    seconds = peer.run(size, window, count)
                    rates.setdefault((peer.name, mode), []).append(size * count / seconds / 1e6)
    finally:
        for peer in peers:
            peer.close()
    figure = {key: statistics.median(values) for key, values in rates.items()}
    for peer in peers:
        for mode, *_ in MODES:
            runs = [round(r, 1) for r in rates[(peer.name, mode)]]
            print(f"{peer.name:10} {mode:8} {figure[(peer.name, mode)]:9.1f} MB/s   runs {runs}")
    vs_majortomo = " ".join(
        f"{m}={figure[('ours', m)] / figure[('majortomo', m)]:.2f}x" for m, *_ in MODES
    )
    vs_direct = " ".join(
        f"{m}={figure[('ours', m)] / figure[('direct', m)]:.0%}" for m, *_ in MODES
    )
    print(f"ratios: ours/majortomo {vs_majortomo} | ours/direct {vs_direct}")


if __name__ == "__main__":
    main()
