"""Receiving one legacy file into a spool: its request (A, B) or its packets (C, D).

:func:`receive_file` reads the file's fixed header, checks it, and streams the ciphertext
into a :class:`~gateway.spool.Spool` in pieces of at most 64 KiB, so a file is never
held whole in memory. It reads through the connection's exact, idle-bounded read and
header functions, so the connection's timeouts apply to every byte.

Guarantees: a file is accepted only if its name is valid, its content size is a positive
multiple of the block size within ``max_file``, its sizes agree (C, D: the padded
original size), each packet is within ``max_packet``, and its packets are numbered from
0 or 1, consecutive, each repeating the first one's sizes, total and name, with no other
request between them, and add up exactly to the content size. Anything else raises
:class:`Broken`: the framing can no longer be trusted, so the connection answers the
general error and closes. The spool is closed on every failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from common.names import InvalidNameError, validate_file_name
from gateway import wire
from gateway.legacy_crypto import BLOCK, padded_size
from gateway.spool import Spool
from gateway.wire import Dialect, LegacyFormatError, Request, RequestHeader

__all__ = ["Broken", "ReceivedFile", "Receiver", "receive_file"]

_PIECE = 64 * 1024  # file bytes are read from the socket in pieces of at most this


class Broken(Exception):
    """Answer the general error (unless ``silent``) and close the connection."""

    def __init__(self, why: str, *, silent: bool = False) -> None:
        super().__init__(why)
        self.silent = silent


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """The whole ciphertext in ``spool``; ``original_size`` is None in dialects A and B."""

    spool: Spool
    name: str
    original_size: int | None


@dataclass(frozen=True, slots=True)
class Receiver:
    """What receiving needs from the connection: its dialect, limits and reads."""

    dialect: Dialect
    max_file: int
    max_packet: int
    spool_dir: Path | None
    read: Callable[[int], Awaitable[bytes]]  # exactly n bytes, within the idle timeout
    next_header: Callable[[], Awaitable[RequestHeader | None]]  # None: a clean close


async def receive_file(rx: Receiver, first: RequestHeader) -> ReceivedFile:
    """Read the file that ``first`` begins into a spool (the caller closes it).

    Packets are numbered from 0 or from 1 (both kinds of client exist), then one by one;
    each repeats the sizes, total and name of the first, and no other request may come
    between them.
    """
    head = await _file_header(rx, first)
    if head.packet not in (0, 1):
        raise Broken("the first packet must be number 0 or 1")
    spool = Spool(rx.spool_dir, head.content_size)
    try:
        current = head
        while True:
            await _copy(rx, spool, current.data_size)
            last = current.packet == head.packet + head.total - 1
            if last != spool.complete:
                raise Broken("packets do not add up to the content size")
            if last:
                return ReceivedFile(spool, head.name, head.original_size)
            following = await rx.next_header()
            if following is None or following.request is not Request.SEND_FILE:
                raise Broken("expected the next packet")
            after = await _file_header(rx, following)
            if _file_of(after) != _file_of(head) or after.packet != current.packet + 1:
                raise Broken("packet does not continue the file")
            current = after
    except BaseException:
        spool.close()
        raise


async def _file_header(rx: Receiver, header: RequestHeader) -> wire.FileHeader:
    fixed_size = wire.file_header_size(rx.dialect)
    if header.payload_size < fixed_size:
        raise Broken("file request shorter than its header")
    fixed = await rx.read(fixed_size)
    try:
        head = wire.parse_file_header(rx.dialect, fixed, header.payload_size)
        validate_file_name(head.name, "name")
    except (LegacyFormatError, InvalidNameError) as exc:
        raise Broken(str(exc)) from None
    content = head.content_size
    if content > rx.max_file or content < BLOCK or content % BLOCK:
        raise Broken("file size not allowed")  # too large, or not whole CBC blocks
    if head.original_size is not None and padded_size(head.original_size) != content:
        raise Broken("file sizes are inconsistent")
    if rx.dialect.packets and head.data_size > rx.max_packet:
        raise Broken("packet too large")
    return head


async def _copy(rx: Receiver, spool: Spool, size: int) -> None:
    if spool.received + size > spool.content_size:
        raise Broken("more data than the content size")
    while size:
        piece = await rx.read(min(size, _PIECE))
        spool.write(piece)
        size -= len(piece)


def _file_of(head: wire.FileHeader) -> tuple[int, int | None, int, str]:
    return head.content_size, head.original_size, head.total, head.name
