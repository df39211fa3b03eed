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
from mtdqn.tasks import make_vector_task


class ScoreKeeper:
    """Accumulates the rewards of N copies of one task into the scores of their completed episodes."""

    def __init__(self, n: int, gamma: float) -> None:
        self.gamma = gamma
        self._g = np.zeros(n)
        self._r = np.zeros(n)
        self._discount = np.ones(n)
        self._sum_g = np.zeros(n)
        self._sum_r = np.zeros(n)
        self._episodes = np.zeros(n, dtype=np.int64)

    def add(self, reward: np.ndarray, episode_over: np.ndarray) -> None:
        self._g += self._discount * reward
        self._r += reward
        self._discount *= self.gamma
        if episode_over.any():
            self._sum_g += np.where(episode_over, self._g, 0.0)
            self._sum_r += np.where(episode_over, self._r, 0.0)
            self._episodes += episode_over
            self._g[episode_over] = 0.0
            self._r[episode_over] = 0.0
            self._discount[episode_over] = 1.0

    def result(self) -> np.ndarray:
        """(N, 3): J, mean undiscounted return, completed episodes; 0 where no episode ended."""
        n = np.maximum(self._episodes, 1)
        return np.stack([self._sum_g / n, self._sum_r / n, self._episodes.astype(np.float64)], axis=1)


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
    seeds: list[int]
    epoch: int

    def run(self) -> EvalResult:
        return run_evaluation(self)


@dataclass
class EvalResult:
    """Scores per (member, task): arrays of shape ``(S, T)``."""

    epoch: int
    j: np.ndarray
    ret: np.ndarray
    episodes: np.ndarray


def run_evaluation(job: EvalJob) -> EvalResult:
    """Play ``job.n_steps`` steps in every task of every member and score them."""
    n_members, n_tasks = len(job.seeds), len(job.tasks)
    envs = [make_vector_task(task, n_members) for task in job.tasks]
    scores = [ScoreKeeper(n_members, task.gamma) for task in job.tasks]
    rngs = [derive_rng(seed, "eval-explore", job.epoch) for seed in job.seeds]
    n_actions = job.action_mask.sum(-1)
    obs = np.zeros((n_members, n_tasks, 1, job.obs_max), dtype=np.float32)
    for t, env in enumerate(envs):
        o = env.reset([derive_seed(seed, "eval", job.epoch, t) for seed in job.seeds])
        obs[:, t, 0, : o.shape[1]] = o
    for _ in range(job.n_steps):
        actions = masked_greedy(q_values(job.params, job.kinds, obs)[:, :, 0], job.action_mask)
        actions = explore(actions, job.epsilon, n_actions, rngs)
        for t, env in enumerate(envs):
            out = env.step(actions[:, t])
            scores[t].add(out.reward, out.terminated | out.truncated)
            obs[:, t, 0, : out.obs.shape[1]] = out.obs
    for env in envs:
        env.close()
    return scores_result(job.epoch, scores)


def explore(actions: np.ndarray, eps: float, n_actions: np.ndarray, rngs: list) -> np.ndarray:
    """Each member's greedy actions ``(S, T)`` made epsilon-greedy from its own stream (as is at 0)."""
    if eps <= 0:
        return actions
    return np.stack([epsilon_greedy(actions[m], eps, n_actions, rngs[m]) for m in range(len(rngs))])


def scores_result(epoch: int, scores: list[ScoreKeeper]) -> EvalResult:
    """The scores of every task's keeper (one per task, S copies each) as an :class:`EvalResult`."""
    result = np.stack([keeper.result() for keeper in scores], axis=1)  # (S, T, 3)
    return EvalResult(epoch, result[..., 0], result[..., 1], result[..., 2].astype(np.int64))


def _run_job(job) -> EvalResult:
    """Run any evaluation job (an object with ``run()``: :class:`EvalJob`, or the Atari one)."""
    return job.run()


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

    def submit(self, job) -> Future:
        """Evaluate ``job`` (anything with a ``run()`` returning an :class:`EvalResult`)."""
        if self._pool is not None:
            return self._pool.submit(_run_job, job)
        future: Future = Future()
        future.set_result(job.run())
        return future

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
