"""Deterministic seeds for every random stream of a run.

Each stream is derived from a member's seed and a path of names and numbers (purpose, epoch, task), so a
stream never depends on how many other streams were used before it: resuming at an epoch boundary needs no
saved random state, and the member with seed s of a population draws exactly what a run with seed s alone
draws.
"""

from __future__ import annotations

import zlib

import numpy as np


def _key(part: int | str) -> int:
    return zlib.crc32(part.encode()) if isinstance(part, str) else int(part)


_LAYOUT = 0
"""Version of the stream layout, part of every stream's key (bump it to change every stream)."""


def derive_seed(seed: int, *path: int | str) -> int:
    """A 63-bit integer seed for the stream named by ``path`` under the member ``seed``."""
    seq = np.random.SeedSequence([int(seed), _LAYOUT, *(_key(p) for p in path)])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def derive_rng(seed: int, *path: int | str) -> np.random.Generator:
    """A numpy Generator for the stream named by ``path`` under the member ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _LAYOUT, *(_key(p) for p in path)]))
