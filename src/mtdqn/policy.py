"""Acting: the epsilon schedule, masked greedy actions and a numpy forward pass of the Q-network.

Acting needs one forward pass per joint step on a handful of rows; numpy on views of the live parameters
does that several times faster than eager PyTorch and needs no copy after an update. Evaluation workers use
the same code on a snapshot of the parameters, so training and evaluation choose actions identically.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtdqn.config import ExplorationConfig

Params = Sequence[tuple[np.ndarray, np.ndarray]]
LayerKinds = Sequence[tuple[str, bool]]


def epsilon(step: int, cfg: ExplorationConfig) -> float:
    """Epsilon at a task's ``step``-th learning step (1-based): linear to ``eps_end``, then held there."""
    frac = min(step / cfg.eps_decay_steps, 1.0)
    return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "relu":
        return np.maximum(x, 0.0, out=x)
    if activation == "sigmoid":
        np.negative(x, out=x)
        with np.errstate(over="ignore"):  # exp(large) = inf gives 1 / (1 + inf) = 0, as it should
            np.exp(x, out=x)
        x += 1.0
        return np.reciprocal(x, out=x)
    if activation == "tanh":
        return np.tanh(x, out=x)
    return x


def q_values(params: Params, kinds: LayerKinds, obs: np.ndarray) -> np.ndarray:
    """Q values ``(S, T, B, A_max)`` of padded observations ``(S, T, B, obs_max)`` (float32)."""
    return activations(params, kinds, obs, len(params))


def activations(params: Params, kinds: LayerKinds, obs: np.ndarray, n_layers: int) -> np.ndarray:
    """Output ``(S, T, B, width)`` of the first ``n_layers`` layers on padded observations."""
    x = obs
    for (w, b), (activation, shared) in zip(params[:n_layers], kinds[:n_layers], strict=True):
        if shared:
            s, t, n, d = x.shape
            y = np.matmul(x.reshape(s, t * n, d), w.swapaxes(-1, -2)).reshape(s, t, n, w.shape[-2])
            y += b[:, None]
        else:
            y = np.matmul(x, w.swapaxes(-1, -2))
            y += b
        x = _activate(y, activation)
    return x


def masked_greedy(q: np.ndarray, action_mask: np.ndarray) -> np.ndarray:
    """Argmax over each task's valid actions (the lowest index among ties); ``q`` is ``(..., T, A_max)``."""
    return np.where(action_mask, q, -np.inf).argmax(axis=-1)


def epsilon_greedy(
    greedy: np.ndarray, eps: float, n_actions: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Replace each greedy action by a uniform valid one with probability ``eps``.

    Always two draws per task, whatever ``eps`` is, so the random stream does not depend on the schedule.
    """
    explore = rng.random(greedy.shape) < eps
    random_actions = (rng.random(greedy.shape) * n_actions).astype(np.int64)
    return np.where(explore, random_actions, greedy)
