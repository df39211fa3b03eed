"""The evaluation protocol: greedy play for a fixed number of steps per task, scored as the paper does.

After every epoch (and once before learning) each task plays ``eval_steps`` steps from a freshly reset,
seeded environment with epsilon = ``eval_epsilon`` (0: greedy). Scores per task:

* ``J``: mean discounted return sum_k gamma_t^k r_k over the episodes that *ended* (terminal or horizon)
  within the evaluation; the unfinished last episode is dropped and J = 0 if no episode ended (the rule of
  the MushroomRL version behind the paper's published numbers, spec section 1.9);
* ``return``: mean undiscounted return of the same episodes (0 if none), as CleanRL/SB3 report;
* ``episodes``: how many episodes ended.

Evaluation never changes the learner, so it runs on a snapshot of the parameters, in a second process
while the next epoch trains (``background_eval``); both placements give identical numbers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from mtdqn.config import TaskConfig
from mtdqn.policy import epsilon_greedy, masked_greedy, q_values
from mtdqn.seeding import derive_rng, derive_seed
from mtdqn.tasks import make_env


class ScoreKeeper:
    """Accumulates one environment's rewards into the scores of its completed episodes."""

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma
        self.discounted: list[float] = []
        self.undiscounted: list[float] = []
        self._g = 0.0
        self._r = 0.0
        self._discount = 1.0

    def add(self, reward: float, episode_over: bool) -> None:
        self._g += self._discount * reward
        self._r += reward
        self._discount *= self.gamma
        if episode_over:
            self.discounted.append(self._g)
            self.undiscounted.append(self._r)
            self._g, self._r, self._discount = 0.0, 0.0, 1.0

    def result(self) -> tuple[float, float, int]:
        """(J, mean undiscounted return, completed episodes); partial episode dropped, 0 if none."""
        n = len(self.discounted)
        if n == 0:
            return 0.0, 0.0, 0
        return float(np.mean(self.discounted)), float(np.mean(self.undiscounted)), n


@dataclass
class EvalJob:
    """Everything an evaluation needs; picklable, so it can run in another process."""

    tasks: list[TaskConfig]
    params: list[tuple[np.ndarray, np.ndarray]]
    kinds: list[tuple[str, bool]]
    action_mask: np.ndarray
    obs_max: int
    n_steps: int
    epsilon: float
    seed: int
    epoch: int


@dataclass
class EvalResult:
    """Scores per (member, task): arrays of shape ``(S, T)``."""

    epoch: int
    j: np.ndarray
    ret: np.ndarray
    episodes: np.ndarray


def run_evaluation(job: EvalJob) -> EvalResult:
    """Play ``job.n_steps`` steps in every task of every member and score them."""
    n_members = job.params[0][0].shape[0]
    n_tasks = len(job.tasks)
    envs = [[make_env(task) for task in job.tasks] for _ in range(n_members)]
    keepers = [[ScoreKeeper(task.gamma) for task in job.tasks] for _ in range(n_members)]
    rngs = [derive_rng(job.seed, m, "eval-explore", job.epoch) for m in range(n_members)]
    n_actions = job.action_mask.sum(-1)
    obs = np.zeros((n_members, n_tasks, 1, job.obs_max), dtype=np.float32)
    for m in range(n_members):
        for t, env in enumerate(envs[m]):
            o, _ = env.reset(seed=derive_seed(job.seed, m, "eval", job.epoch, t))
            obs[m, t, 0, : o.shape[0]] = o
    for _ in range(job.n_steps):
        actions = masked_greedy(q_values(job.params, job.kinds, obs)[:, :, 0], job.action_mask)
        for m in range(n_members):
            if job.epsilon > 0:
                actions[m] = epsilon_greedy(actions[m], job.epsilon, n_actions, rngs[m])
            for t, env in enumerate(envs[m]):
                o, r, terminated, truncated, _ = env.step(int(actions[m, t]))
                done = terminated or truncated
                keepers[m][t].add(float(r), done)
                if done:
                    o, _ = env.reset()
                obs[m, t, 0, : o.shape[0]] = o
    for row in envs:
        for env in row:
            env.close()
    scores = np.array([[k.result() for k in row] for row in keepers], dtype=np.float64)
    return EvalResult(job.epoch, scores[..., 0], scores[..., 1], scores[..., 2].astype(np.int64))


def _lower_priority() -> None:
    """Let the learner win the cores: the evaluation has a whole epoch to finish."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)


class Evaluator:
    """Runs evaluations inline or in one background process; results come back as futures."""

    def __init__(self, background: bool) -> None:
        self._pool = None
        if background:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority
            )

    def submit(self, job: EvalJob) -> Future:
        if self._pool is not None:
            return self._pool.submit(run_evaluation, job)
        future: Future = Future()
        future.set_result(run_evaluation(job))
        return future

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
