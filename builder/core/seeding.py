"""Seeds: every random stream in the project derives from one base seed and a path of names.

``derive_seed(seed, "epoch", 3)`` and ``numpy_rng(seed, "split")`` hash the base seed and the
path with ``numpy.random.SeedSequence`` (the library's own mixing, not hand-made constants such
as ``seed * 1000 + r``, which collide: seed 1 round 0 equals seed 0 round 1000). Different paths
give independent streams; the same path always gives the same one, so a resumed run replays
exactly what an uninterrupted one drew.

A path of ints only is passed to ``SeedSequence`` as is, so ``numpy_rng(seed, i, 7)`` is
``np.random.default_rng([seed, i, 7])``: code that already seeded that way keeps its streams.
Names (strings) enter as a stable 64-bit hash of their UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np

MAX_SEED = 2**63 - 1  # fits every consumer: torch.manual_seed, random.seed, numpy, int64 fields


def _word(part: int | str) -> int:
    if isinstance(part, str):
        return int.from_bytes(hashlib.blake2b(part.encode("utf-8"), digest_size=8).digest(), "little")
    if isinstance(part, (bool, np.bool_)) or not isinstance(part, (int, np.integer)):
        raise TypeError(f"seed path parts are ints or strings, got {type(part).__name__}")
    # SeedSequence takes non-negative ints only; fold negatives into the unsigned 64-bit range
    return int(part) % 2**64 if part < 0 else int(part)


def seed_sequence(seed: int, *path: int | str) -> np.random.SeedSequence:
    """The ``SeedSequence`` for ``seed`` and ``path`` (the root of every helper here)."""
    return np.random.SeedSequence([_word(seed), *map(_word, path)])


def derive_seed(seed: int, *path: int | str) -> int:
    """An int seed in ``[0, 2**63)`` for the stream named by ``path`` under ``seed``.

    ``derive_seed(seed)`` with no path is a (mixed) function of ``seed`` too, never ``seed``
    itself, so base and derived streams do not coincide.
    """
    return int(seed_sequence(seed, *path).generate_state(1, np.uint64)[0]) & MAX_SEED


def numpy_rng(seed: int, *path: int | str) -> np.random.Generator:
    """A numpy ``Generator`` for ``path`` under ``seed``."""
    return np.random.default_rng(seed_sequence(seed, *path))


def python_rng(seed: int, *path: int | str) -> random.Random:
    """A ``random.Random`` for ``path`` under ``seed``."""
    return random.Random(derive_seed(seed, *path))


def torch_generator(seed: int, *path: int | str, device: str = "cpu"):
    """A ``torch.Generator`` (on ``device``) for ``path`` under ``seed``."""
    import torch

    return torch.Generator(device).manual_seed(derive_seed(seed, *path))


def seed_everything(seed: int, *path: int | str) -> int:
    """Seed the global generators (python ``random``, numpy's legacy one, torch on every device)
    from ``path`` under ``seed``; returns the derived seed.

    With no path the seed is used as given (``torch.manual_seed(seed)``), so models built after
    ``seed_everything(seed)`` keep the initial weights they had when code called
    ``torch.manual_seed(seed)`` directly.
    """
    value = derive_seed(seed, *path) if path else _word(seed) & MAX_SEED
    random.seed(value)
    np.random.seed(value % 2**32)  # the legacy global generator takes 32 bits
    try:
        import torch
    except ImportError:  # numpy-only users
        return value
    torch.manual_seed(value)
    return value
