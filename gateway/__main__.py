"""``cipherdrop-gateway`` / ``python -m gateway``: serve clients of the legacy TCP protocol.

Off by default: nothing else starts it, and it says loudly at start that it speaks a weak
protocol (RSA-1024, AES-CBC with a zero IV, CRC only). The port is ``--listen``'s, else the
integer in ``port.info`` in the working directory, else the dialect's original default; a
missing or bad ``port.info`` is a warning, never a failure. The gateway's own key lives in
``--dir`` (0600); the server trusts it only once an operator lists its fingerprint, shown
by ``--print-fingerprint``, in ``<data_dir>/trusted_gateways`` (docs/legacy.md).

Exit status: 0 on SIGINT/SIGTERM, 2 for a bad setting, 1 if the server cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from client import session as native
from client.async_transport import AsyncTransport
from common import keys
from common.errors import CipherdropError, ConfigError
from common.log import configure_logging
from common.memory import keep_freed_buffers
from gateway.backend import REGISTER_SERVICE, Backend
from gateway.connection import Limits
from gateway.identity import load_identity, pin_server
from gateway.server import GatewayServer, ServerOptions
from gateway.wire import DIALECTS, Dialect

PORT_FILE = "port.info"
_DEFAULTS = Limits()
WARNING = (
    "LEGACY GATEWAY ENABLED: it speaks the original protocol with RSA-1024, AES-CBC with an"
    " all-zero IV and a CRC as the only check. Anyone on the network path can read and alter"
    " what legacy clients send. Run it only while old clients must be served."
)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cipherdrop-gateway",
        description="Serve clients of the legacy TCP protocol (weak crypto; off by default).",
    )
    parser.add_argument("--dialect", choices=sorted(DIALECTS), default="a")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on")
    parser.add_argument("--broker", default="tcp://127.0.0.1:5555", metavar="ENDPOINT")
    parser.add_argument("--dir", type=Path, default=Path("var/gateway"), help="gateway key dir")
    parser.add_argument("--spool-dir", type=Path, help="where received files wait (default: --dir)")
    parser.add_argument("--server-fingerprint", help="the server key fingerprint to pin")
    parser.add_argument("--rsa-bits", type=int, default=keys.DEFAULT_RSA_BITS)
    parser.add_argument("--max-file-size", type=int, default=_DEFAULTS.max_file, metavar="BYTES")
    parser.add_argument(
        "--max-packet-size", type=int, default=_DEFAULTS.max_packet, metavar="BYTES"
    )
    parser.add_argument("--idle-timeout", type=float, default=_DEFAULTS.idle_timeout)
    parser.add_argument("--total-timeout", type=float, default=_DEFAULTS.total_timeout)
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--max-per-address", type=int, default=16)
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
    parser.add_argument(
        "--print-fingerprint", action="store_true", help="print the gateway key's fingerprint"
    )
    return parser.parse_args(argv)


def port_from_file(path: Path, default: int) -> tuple[int, str | None]:
    """The port in ``path`` (one integer), or ``default`` and a warning saying why."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return default, f"{path} not found; using the default port {default}"
    except (OSError, UnicodeDecodeError) as exc:
        return default, f"{path} unreadable ({exc}); using the default port {default}"
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        return default, f"{path} does not hold a port number; using the default port {default}"
    return int(text), None


def listen_address(
    spec: str | None, dialect: Dialect, port_file: Path
) -> tuple[str, int, str | None]:
    """``(host, port, warning)`` from ``--listen``, else ``port.info``, else the default."""
    if spec is None:
        port, warning = port_from_file(port_file, dialect.default_port)
        return "0.0.0.0", port, warning  # noqa: S104 (legacy clients come from the network)
    host, sep, port_text = spec.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--listen: expected HOST:PORT, got {spec!r}")
    return host.strip("[]") or "0.0.0.0", int(port_text), None  # noqa: S104


def _limits(args: argparse.Namespace) -> Limits:
    for name in ("max_file_size", "max_packet_size", "max_connections", "max_per_address"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be at least 1")
    for name in ("idle_timeout", "total_timeout", "request_timeout"):
        if not getattr(args, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')}: must be positive")
    return Limits(args.max_file_size, args.max_packet_size, args.idle_timeout, args.total_timeout)


async def _run(args: argparse.Namespace, options: ServerOptions) -> int:
    log = structlog.get_logger()
    identity = load_identity(args.dir, args.rsa_bits)
    transport = AsyncTransport(args.broker, timeout=args.request_timeout, retries=3, window=16)
    try:
        req = native.server_key_request()
        try:
            answer = native.open_server_key(
                req, await transport.request(REGISTER_SERVICE, req.frames)
            )
        except CipherdropError as exc:
            print(
                f"cipherdrop-gateway: cannot reach the server at {args.broker}: {exc}",
                file=sys.stderr,
            )
            return 1
        server_der = answer.public_key
        endorsement = native.endorsement_of(answer)
        pin = pin_server(args.dir, server_der, args.server_fingerprint, endorsement)
        if pin.followed:
            detail = "the pinned key endorsed the new one"
            if args.server_fingerprint:
                detail += "; update --server-fingerprint"
            log.warning(
                "gateway.server_key_followed",
                previous=pin.followed,
                fingerprint=pin.fingerprint,
                detail=detail,
            )
        backend = Backend(transport, identity, keys.load_public_key(server_der))
        server = GatewayServer(options, backend)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):  # before "listening" is said
            loop.add_signal_handler(signum, stop.set)
        host, port = await server.start()
        log.info(
            "gateway.listening",
            host=host,
            port=port,
            dialect=options.dialect.name,
            broker=args.broker,
            gateway_fingerprint=keys.fingerprint(identity),
            server_fingerprint=pin.fingerprint,
        )
        serving = asyncio.ensure_future(server.serve())
        await stop.wait()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        log.info("gateway.stopped")
        return 0
    finally:
        transport.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    keep_freed_buffers()
    try:
        configure_logging(args.log_level, args.log_format)
        if args.print_fingerprint:
            print(keys.fingerprint(load_identity(args.dir, args.rsa_bits)))
            return 0
        dialect = DIALECTS[args.dialect]
        host, port, warning = listen_address(args.listen, dialect, Path(PORT_FILE))
        options = ServerOptions(
            host,
            port,
            dialect,
            _limits(args),
            args.max_connections,
            args.max_per_address,
            args.spool_dir or args.dir,
        )
        log = structlog.get_logger()
        log.warning("gateway.legacy_protocol", warning=WARNING)
        print(f"WARNING: {WARNING}", file=sys.stderr)
        if warning is not None:
            log.warning("gateway.port_info", warning=warning)
        return asyncio.run(_run(args, options))
    except ConfigError as exc:
        print(f"cipherdrop-gateway: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
