"""Where tasks overlap, found in the shared-feature space rather than picked by eye in a 2-D picture.

For a pair of tasks ``(a, b)``, every state of either task is scored by the fraction of its k nearest
neighbours (shared-feature space, all tasks) that belong to the other task, then by the distance to its
nearest state of the other task. The best-scored states are the overlap states; each comes with its
partner, the nearest state of the other task, to be drawn beside it. When no state has a foreign neighbour
the ranking still returns the closest cross-task pairs (with a foreign fraction of 0), so the pictures show
how close the tasks come.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OverlapState:
    """One state of task ``task`` close to task ``other`` in shared-feature space."""

    row: int
    partner: int
    """The nearest state of ``other`` to ``row``."""
    task: int
    other: int
    foreign_fraction: float
    """Fraction of the row's k nearest neighbours that belong to ``other``."""
    distance: float
    """Feature-space distance from the row to its partner."""


def _nearest_in(x: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``rows``, the nearest of ``targets`` and the distance to it."""
    from sklearn.neighbors import NearestNeighbors

    dist, idx = NearestNeighbors(n_neighbors=1).fit(x[targets]).kneighbors(x[rows])
    return targets[idx[:, 0]], dist[:, 0]


def overlap_states(
    x: np.ndarray, task: np.ndarray, nn_idx: np.ndarray, per_pair: int
) -> dict[tuple[int, int], list[OverlapState]]:
    """For every pair ``(a, b)`` with ``a < b``: its top ``per_pair`` states from either side, each state
    drawn once (a partner may recur: several states can share the same nearest foreign state)."""
    tasks = np.unique(task)
    found: dict[tuple[int, int], list[OverlapState]] = {}
    for ia, a in enumerate(tasks):
        for b in tasks[ia + 1 :]:
            candidates = []
            for own, other in ((a, b), (b, a)):
                rows = np.flatnonzero(task == own)
                frac = (task[nn_idx[rows]] == other).mean(axis=1)
                partner, dist = _nearest_in(x, rows, np.flatnonzero(task == other))
                candidates += [
                    OverlapState(int(r), int(p), int(own), int(other), float(f), float(d))
                    for r, p, f, d in zip(rows, partner, frac, dist, strict=True)
                ]
            candidates.sort(key=lambda c: (-c.foreign_fraction, c.distance, c.row))
            chosen: list[OverlapState] = []
            shown: set[int] = set()  # states already drawn as the main state or as a partner's pair
            for c in candidates:
                if len(chosen) == per_pair:
                    break
                if c.row in shown:
                    continue
                chosen.append(c)
                shown.update((c.row, c.partner) if c.foreign_fraction == 0 else (c.row,))
            found[(int(a), int(b))] = chosen
    return found
