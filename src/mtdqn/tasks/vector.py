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
from gymnasium.utils import seeding

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


class NumpyVectorTask(VectorTask):
    """Base of the numpy implementations: per-copy generators, step counters, horizon and auto-reset.

    A subclass sets ``env_id``, ``default_horizon``, ``state_dim``, ``obs_dim``, ``n_actions`` and defines
    :meth:`_advance` (one step of every copy, no loop over copies) and either :meth:`_draw_start` (one
    copy's start state from its generator) or :meth:`_restart_states` (several at once).
    """

    env_id: str = ""
    default_horizon: int = 0
    state_dim: int = 0

    def __init__(self, n: int, horizon: int | None = None) -> None:
        if int(n) < 1:
            raise ValueError(f"need at least one copy, got n={n}")
        horizon = self.default_horizon if horizon is None else int(horizon)
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.n = int(n)
        self.horizon = horizon
        self.state = np.zeros((self.n, self.state_dim), np.float64)
        """(N, state_dim) float64: the internal state of every copy (the single environment's ``state``)."""
        self.elapsed = np.zeros(self.n, np.int64)
        """(N,) steps taken in each copy's current episode (``TimeLimit``'s counter)."""
        self.rngs: list[np.random.Generator] = []
        """One generator per copy (the single environment's ``np_random``), set by :meth:`reset`."""

    # --- what each task defines ---------------------------------------------------------------------

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Move every copy one step in place; returns (terminated (N,) bool, reward (N,) float32)."""
        raise NotImplementedError

    def _draw_start(self, rng: np.random.Generator) -> np.ndarray:
        """One start state drawn from ``rng`` exactly as the single environment's ``reset`` draws it."""
        raise NotImplementedError

    def _restart_states(self, rows: np.ndarray) -> None:
        """Set ``self.state[rows]`` to fresh start states, each from its copy's own stream."""
        for i in rows:  # only the copies that ended: rare, and each has its own stream
            self.state[i] = self._draw_start(self.rngs[i])

    def _seed(self) -> None:
        """Called by :meth:`reset` once ``self.rngs`` is set (e.g. to pre-draw random numbers)."""

    def _observe(self, state: np.ndarray) -> np.ndarray:
        """Float32 observations of float64 states ``(M, state_dim)``."""
        return state.astype(np.float32)

    def _start_obs(self, rows: np.ndarray) -> np.ndarray:
        """Observations of the freshly drawn start states ``self.state[rows]``."""
        return self._observe(self.state[rows])

    # --- the VectorTask interface --------------------------------------------------------------------

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        seeds = list(seeds)
        if len(seeds) != self.n:
            raise ValueError(f"{type(self).__name__} has {self.n} copies but got {len(seeds)} seeds")
        self.rngs = [seeding.np_random(None if s is None else int(s))[0] for s in seeds]
        self._seed()
        return self._restart(np.arange(self.n))

    def step(self, actions: np.ndarray) -> VectorStep:
        if not self.rngs:
            raise RuntimeError(f"{type(self).__name__}: call reset(seeds) before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.n,):
            raise ValueError(f"expected {self.n} actions of shape ({self.n},), got shape {actions.shape}")
        actions = actions.astype(np.int64, copy=False)
        if actions.min() < 0 or actions.max() >= self.n_actions:
            raise ValueError(f"actions must lie in 0..{self.n_actions - 1}, got {actions}")
        terminated, reward = self._advance(actions)
        next_obs = self._observe(self.state)
        self.elapsed += 1
        at_horizon = self.elapsed >= self.horizon
        ended = terminated | at_horizon
        obs = next_obs.copy()
        if ended.any():
            rows = np.flatnonzero(ended)
            obs[rows] = self._restart(rows)
        return VectorStep(
            next_obs=next_obs,
            reward=reward,
            terminated=terminated,
            truncated=at_horizon & ~terminated,
            obs=obs,
        )

    def _restart(self, rows: np.ndarray) -> np.ndarray:
        """Start new episodes in copies ``rows``; returns their observations."""
        self._restart_states(rows)
        self.elapsed[rows] = 0
        return self._start_obs(rows)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env_id}, n={self.n}, horizon={self.horizon})"
