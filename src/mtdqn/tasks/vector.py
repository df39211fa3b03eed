"""Many independent copies of one task, stepped together.

A population of S agents (independent seeds) needs S copies of every task. :class:`VectorTask` is the
interface the training and evaluation loops use: copy i has its own random stream, seeded like
``gymnasium`` seeds an environment (``env.reset(seed=s)`` -> ``np.random.default_rng(s)``), and a copy
whose episode ends (terminal or horizon) is reset at once from its own stream, so copy i behaves exactly
like a single Gymnasium environment driven with the same actions, whichever other copies exist.

:class:`GymVectorTask` works for any Gymnasium id (a loop over single environments). The package's own
numpy versions of the paper's five tasks, with no loop over copies, implement the same interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mtdqn.config import TaskConfig


@dataclass
class VectorStep:
    """What one step of N copies returns; arrays have N rows."""

    next_obs: np.ndarray
    """(N, obs_dim) float32: the observation the action led to (the final one where an episode ended)."""
    reward: np.ndarray
    """(N,) float32."""
    terminated: np.ndarray
    """(N,) bool: a true terminal state (no bootstrap)."""
    truncated: np.ndarray
    """(N,) bool: the horizon was reached without a terminal (bootstrapped)."""
    obs: np.ndarray
    """(N, obs_dim) float32: the observation to act on next (a fresh episode's first one where one ended)."""


class VectorTask:
    """Interface: N independent copies of one task with per-copy random streams and auto-reset."""

    n: int
    obs_dim: int
    n_actions: int
    horizon: int

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Seed copy i with ``seeds[i]`` and start a new episode in every copy; returns (N, obs_dim)."""
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> VectorStep:
        """Apply ``actions`` (N,) and reset the copies whose episode ended."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (nothing for numpy implementations)."""


class GymVectorTask(VectorTask):
    """N single Gymnasium environments behind the :class:`VectorTask` interface (works for any id)."""

    def __init__(self, task: TaskConfig, n: int) -> None:
        from mtdqn.tasks.control import make_env

        self.envs = [make_env(task) for _ in range(n)]
        env = self.envs[0]
        self.n = n
        self.obs_dim = int(np.prod(env.observation_space.shape))
        self.n_actions = int(env.action_space.n)
        self.horizon = int(env.spec.max_episode_steps) if env.spec.max_episode_steps else 0

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        return np.stack([env.reset(seed=int(s))[0] for env, s in zip(self.envs, seeds, strict=True)]).astype(
            np.float32, copy=False
        )

    def step(self, actions: np.ndarray) -> VectorStep:
        n, d = self.n, self.obs_dim
        out = VectorStep(
            next_obs=np.empty((n, d), np.float32),
            reward=np.empty(n, np.float32),
            terminated=np.empty(n, bool),
            truncated=np.empty(n, bool),
            obs=np.empty((n, d), np.float32),
        )
        for i, env in enumerate(self.envs):
            o, r, terminated, truncated, _ = env.step(int(actions[i]))
            out.next_obs[i] = o
            out.reward[i] = r
            out.terminated[i] = terminated
            out.truncated[i] = truncated and not terminated
            if terminated or truncated:
                o, _ = env.reset()
            out.obs[i] = o
        return out

    def close(self) -> None:
        for env in self.envs:
            env.close()
