"""Length-prefixed JSON frames between the host and a worker (plain data only, never pickles).

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON holding one
object. The host reads and writes with deadlines (``poll`` plus a non-blocking write end), so
a worker that stops reading or writing can never block a host thread past its run's limit.
The worker side uses plain blocking I/O without deadlines: the host is trusted.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time

HEADER = struct.Struct(">I")


class FrameError(RuntimeError):
    """The other side closed, sent garbage, or sent more than allowed."""


def encode(message: dict) -> bytes:
    """Serialise one message as a frame (raises ``ValueError``/``TypeError`` on non-plain data)."""
    data = json.dumps(message, allow_nan=False, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(len(data)) + data


def _wait(fd: int, events: int, deadline: float | None) -> None:
    """Block until ``fd`` is ready for ``events`` or raise ``TimeoutError`` past ``deadline``."""
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    # poll, not select: select fails on descriptor numbers above 1024, common in big hosts.
    poller = select.poll()
    poller.register(fd, events | select.POLLHUP | select.POLLERR)
    if not poller.poll(max(1, int(remaining * 1000 + 0.999))):
        raise TimeoutError


def write_frame(fd: int, message: dict, deadline: float | None = None) -> None:
    """Write one frame; with a ``deadline`` the descriptor must be non-blocking."""
    write_bytes(fd, encode(message), deadline)


def write_bytes(fd: int, data: bytes, deadline: float | None = None) -> None:
    """Write all of ``data``, raising ``TimeoutError`` past ``deadline`` (a monotonic time)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            _wait(fd, select.POLLOUT, deadline)
            continue
        view = view[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        _wait(fd, select.POLLIN, deadline)
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise FrameError("the other side closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None, max_bytes: int = 64 << 20) -> dict:
    """Read one frame; ``TimeoutError`` past ``deadline``, ``FrameError`` on anything malformed."""
    (size,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline))
    if size > max_bytes:
        raise FrameError(f"message of {size} bytes is over the {max_bytes}-byte limit")
    data = _read_exact(fd, size, deadline)
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as e:  # bad UTF-8/JSON, over-long integers, deep nesting
        raise FrameError(f"malformed message ({type(e).__name__})") from None
    if not isinstance(message, dict):
        raise FrameError("malformed message (not an object)")
    return message
