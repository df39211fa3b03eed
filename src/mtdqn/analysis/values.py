"""How right the values are: V on the recorded states against the discounted returns that followed them.

A Q-network can pick good actions while its values are far off (overestimated, or diverging), and a
diverging task drags the shared layers with its large TD errors. The rollout of :mod:`mtdqn.analysis.rollout`
records, per state, the learning reward of the step taken and whether bootstrapping ended there, so the
return that actually followed each state is known, up to the part of its episode the rollout did not see:

    G_i = r_i + gamma * G_{i+1}, cut at a terminal (nothing follows) or at a horizon cut or the end of the
    rollout (what follows is unknown; its weight in G_i is gamma ** (steps to the cut)).

States whose unknown part weighs at most ``max_tail`` (default 1%) are compared: the mean of V - G (the bias;
> 0 = overestimation) and the mean |V - G| as a fraction of the largest return the task's recorded rewards
allow (``max |r| / (1 - gamma)``; undiscounted: ``max |r|`` x the longest compared chain; a unit reward when
every recorded reward is 0): 0 = V is the return the greedy policy gets, 1 = off by as much as any return
could be. With ``--epsilon`` > 0 the returns are those of the epsilon-greedy policy, which V = max_a Q does
not estimate.
"""

from __future__ import annotations

import numpy as np

MAX_TAIL = 0.01
"""States whose return misses a part of weight above this (``gamma ** steps-to-the-cut``) are not compared."""


def returns_to_go(
    reward: np.ndarray, terminal: np.ndarray, ended: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step of one task's rollout (time order): the discounted return to the end of what was recorded,
    the weight ``gamma ** d`` of the unrecorded rest (0 when a terminal comes first) and the chain length d
    (steps to that terminal or cut)."""
    n = len(reward)
    g = np.zeros(n)
    tail = np.zeros(n)
    length = np.zeros(n, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        if terminal[i]:
            g[i], tail[i], length[i] = reward[i], 0.0, 1
        elif ended[i] or i == n - 1:  # a horizon cut, or the rollout stops: V(s_{i+1}) is not known
            g[i], tail[i], length[i] = reward[i], gamma, 1
        else:
            g[i] = reward[i] + gamma * g[i + 1]
            tail[i], length[i] = gamma * tail[i + 1], length[i + 1] + 1
    return g, tail, length


def value_vs_return(
    value: np.ndarray,
    task: np.ndarray,
    reward: np.ndarray,
    terminal: np.ndarray,
    ended: np.ndarray,
    gammas: list[float],
    names: list[str],
    max_tail: float = MAX_TAIL,
) -> dict:
    """Per task (by name) ``states`` compared, mean ``value`` and ``return`` over them, ``bias`` = mean(V - G)
    and ``error`` = mean |V - G| / the largest return the rewards allow (NaN when no state qualifies); and
    ``value_error_max``, the largest ``error`` over the tasks."""
    per_task = {}
    for t, (name, gamma) in enumerate(zip(names, gammas, strict=True)):
        rows = np.flatnonzero(task == t)
        g, tail, length = returns_to_go(reward[rows], terminal[rows], ended[rows], gamma)
        ok = tail <= max_tail
        v = value[rows][ok].astype(np.float64)
        entry = {"states": int(ok.sum()), "value": np.nan, "return": np.nan, "bias": np.nan, "error": np.nan}
        if ok.any():
            longest = int(length[ok].max())
            reach = 1 / (1 - gamma) if gamma < 1 else float(longest)  # undiscounted: the longest chain
            scale = (float(np.abs(reward[rows]).max()) or 1.0) * reach  # all rewards 0: a unit reward
            diff = v - g[ok]
            entry.update(
                {
                    "value": float(v.mean()),
                    "return": float(g[ok].mean()),
                    "bias": float(diff.mean()),
                    "error": float(np.abs(diff).mean() / scale),
                }
            )
        per_task[name] = entry
    errors = [e["error"] for e in per_task.values() if np.isfinite(e["error"])]
    return {"value_vs_return": per_task, "value_error_max": max(errors) if errors else float("nan")}


def possible_values(
    reward_min: np.ndarray, reward_max: np.ndarray, gamma: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The interval every value lies in when rewards lie in ``[r_min, r_max]``:
    ``[min(r_min, 0), max(r_max, 0)] / (1 - gamma)`` (``(0, 0)`` for gamma 1, where no bound exists)."""
    gamma = np.asarray(gamma, dtype=np.float64)
    horizon = np.where(gamma < 1, 1 / np.maximum(1 - gamma, 1e-12), 0.0)
    return np.minimum(reward_min, 0) * horizon, np.maximum(reward_max, 0) * horizon


def diverged(
    mean_q: np.ndarray, reward_min: np.ndarray, reward_max: np.ndarray, gamma: np.ndarray
) -> np.ndarray:
    """Where a mean Q value lies so far outside what the rewards allow that the values must be diverging.

    Flagged is a mean Q beyond :func:`possible_values` by more than that interval's width (or by
    ``1 / (1 - gamma)`` when every reward is 0), far past any overestimation of a converging learner.
    Undiscounted tasks are never flagged. All arrays broadcast together (e.g. ``(S, T)`` per member and task).
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    low, high = possible_values(reward_min, reward_max, gamma)
    unit = possible_values(0.0, 1.0, gamma)[1]  # 1 / (1 - gamma): the margin when every reward is 0
    margin = np.where(high > low, high - low, unit)
    with np.errstate(invalid="ignore"):
        out = (mean_q > high + margin) | (mean_q < low - margin)
    return out & np.isfinite(mean_q) & (gamma < 1)
