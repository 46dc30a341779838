"""Length-prefixed JSON frames between the host and a worker (plain data only, never pickles)."""

from __future__ import annotations

import json
import os
import select
import struct
import time

HEADER = struct.Struct(">I")


class FrameError(RuntimeError):
    """The other side closed, sent garbage, or was too slow."""


def encode(message: dict) -> bytes:
    data = json.dumps(message, allow_nan=False, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(len(data)) + data


def write_frame(fd: int, message: dict) -> None:
    """Write one frame to a file descriptor (blocking)."""
    data = memoryview(encode(message))
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise TimeoutError
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise FrameError("the other side closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None, max_bytes: int = 64 << 20) -> dict:
    """Read one frame; ``TimeoutError`` past ``deadline`` (a ``time.monotonic()`` value)."""
    (size,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline))
    if size > max_bytes:
        raise FrameError(f"message of {size} bytes is over the {max_bytes}-byte limit")
    try:
        message = json.loads(_read_exact(fd, size, deadline))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FrameError(f"malformed message ({e})") from None
    if not isinstance(message, dict):
        raise FrameError("malformed message (not an object)")
    return message
