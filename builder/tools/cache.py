"""Tool-result cache on disk, keyed by content: re-running a program only pays for new calls.

The key holds the image content hash, the patch box, the tool, the tool API version, the
engine's backend id and version, and the arguments; a changed image, engine or argument is
a different key, so a stale result is never served. Storage is ``diskcache`` (SQLite), which
is safe across processes and threads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import diskcache
import numpy as np

_MISSING = object()


def image_hash(image: np.ndarray) -> str:
    """Content hash of an image array (pixels and shape)."""
    h = hashlib.sha256()
    h.update(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()[:32]


def cache_key(where: list, tool: str, backend_id: str, engine_version: str, args: Any) -> str:
    """The cache key for one tool call (a hex digest of its canonical JSON description).

    ``where`` lists ``[image content hash, patch box]`` for each patch the call reads.
    """
    from builder.tools.api import TOOL_API_VERSION

    desc = json.dumps(
        [where, tool, TOOL_API_VERSION, backend_id, engine_version, args],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(desc.encode()).hexdigest()


class ToolCache:
    """A persistent key -> plain-JSON-data store with hit/miss counters."""

    def __init__(self, directory: str | Path, size_limit_bytes: int = 2**30):
        self.directory = Path(directory)
        self._store = diskcache.Cache(str(self.directory), size_limit=size_limit_bytes)
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any:
        """The cached value, or ``ToolCache.MISSING``."""
        value = self._store.get(key, default=_MISSING)
        if value is _MISSING:
            self.misses += 1
            return _MISSING
        self.hits += 1
        return json.loads(value)

    def set(self, key: str, value: Any) -> None:
        """Store a plain-data value (JSON text, so nothing is ever unpickled from disk)."""
        self._store.set(key, json.dumps(value))

    def close(self) -> None:
        """Close the disk store."""
        self._store.close()

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Remove every cached value (the hit and miss counters are kept)."""
        self._store.clear()

    MISSING = _MISSING
