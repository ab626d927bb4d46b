"""A tiny MDP echo worker for the integration tests: replies with the request body.

    python tests/integration/echo_worker.py ENDPOINT [--service S] [--announce]
        [--delay-file PATH | --hang] [--heartbeat-interval S] [--heartbeat-liveness N]
        [--reconnect-min S] [--reconnect-max S] [--inline-prefix P]

``--inline-prefix P`` handles requests whose last frame starts with P on the worker's I/O
thread (``run_worker``'s ``inline``). A request whose last frame ends with ``thread?`` is
answered with the name of the thread that handled it appended. ``--announce`` prints
``request <first body frame, hex>`` on stdout (flushed) as soon as a request arrives, so a
test knows which worker holds which request. ``--delay-file PATH`` waits the number of
seconds written in PATH (read at every request; no file = no delay) before replying (the
worker keeps heartbeating meanwhile). ``--hang`` stops the whole process (SIGSTOP) at its
first request: a hung worker, which sends nothing at all, not even heartbeats. A request
whose last frame is ``b"raise"`` makes the handler raise, to exercise the error policy.
SIGTERM/SIGINT stop the worker cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import zmq

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import mdp  # noqa: E402
from common.log import configure_logging  # noqa: E402
from common.mdp import Part  # noqa: E402
from workers.loop import run_worker  # noqa: E402
from workers.runtime import BodyPart  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    parser.add_argument("--service", default="echo")
    parser.add_argument("--announce", action="store_true")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--delay-file", type=Path)
    mode.add_argument("--hang", action="store_true")
    parser.add_argument("--heartbeat-interval", type=float, default=2.5)
    parser.add_argument("--heartbeat-liveness", type=int, default=3)
    parser.add_argument("--reconnect-min", type=float, default=0.1)
    parser.add_argument("--reconnect-max", type=float, default=5.0)
    parser.add_argument("--inline-prefix", type=os.fsencode)
    return parser.parse_args()


def make_handler(
    args: argparse.Namespace, stop: threading.Event
) -> Callable[[list[zmq.Frame]], list[BodyPart]]:
    def handle(body: list[zmq.Frame]) -> list[BodyPart]:
        if args.announce:
            print("request", body[0].bytes.hex() if body else "", flush=True)
        if args.hang:
            os.kill(os.getpid(), signal.SIGSTOP)  # frozen until killed
        if args.delay_file is not None and args.delay_file.exists():
            time.sleep(float(args.delay_file.read_text() or 0))  # simulated work
        if body and body[-1].bytes == b"raise":
            raise RuntimeError("asked to fail")
        if body and body[-1].bytes.endswith(b"thread?"):
            return [*body, threading.current_thread().name.encode()]
        return list(body)

    return handle


def main() -> None:
    args = parse_args()
    configure_logging("info", "json")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_worker(
        args.endpoint,
        args.service,
        make_handler(args, stop),
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_liveness=args.heartbeat_liveness,
        reconnect_min=args.reconnect_min,
        reconnect_max=args.reconnect_max,
        stop=stop,
        inline=None if args.inline_prefix is None else starts_with(args.inline_prefix),
    )


def starts_with(prefix: bytes) -> Callable[[Sequence[Part]], bool]:
    return lambda body: bool(body) and mdp.as_bytes(body[-1]).startswith(prefix)


if __name__ == "__main__":
    main()
