"""Deterministic seeds for every random stream of a run.

Each stream is derived from the run seed and a path of names and numbers (member, stream, epoch, task), so
a stream never depends on how many other streams were used before it: resuming at an epoch boundary needs
no saved random state, and member k of a population gets the same streams alone or in a batch.
"""

from __future__ import annotations

import zlib

import numpy as np


def _key(part: int | str) -> int:
    return zlib.crc32(part.encode()) if isinstance(part, str) else int(part)


def derive_seed(seed: int, *path: int | str) -> int:
    """A 63-bit integer seed for the stream named by ``path`` under the run ``seed``."""
    seq = np.random.SeedSequence([int(seed), *(_key(p) for p in path)])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def derive_rng(seed: int, *path: int | str) -> np.random.Generator:
    """A numpy Generator for the stream named by ``path`` under the run ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(_key(p) for p in path)]))
