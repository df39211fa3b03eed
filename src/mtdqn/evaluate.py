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
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from mtdqn.config import TaskConfig
from mtdqn.policy import epsilon_greedy, masked_greedy, q_values
from mtdqn.processes import ChildProcess
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


def _serve(conn: Connection) -> None:
    """The background evaluation process: run each job received, send back its result or its error."""
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the learner's end is closed
            return
        if job is None:
            return
        try:
            reply = ("ok", job.run())
        except Exception as exc:
            exc.add_note("raised in the background evaluation process:\n" + traceback.format_exc())
            reply = ("error", exc)
        try:
            conn.send(reply)
        except Exception:  # an error that cannot be pickled: send its text
            conn.send(("error", RuntimeError(traceback.format_exc())))


class EvalHandle:
    """An evaluation's result, to be taken with :meth:`result` (once)."""

    def __init__(self, evaluator: Evaluator | None = None, result: EvalResult | None = None) -> None:
        self._evaluator = evaluator
        self._result = result

    def result(self, timeout: float | None = None) -> EvalResult:
        if self._evaluator is not None:
            self._result = self._evaluator._receive(timeout)
            self._evaluator = None
        assert self._result is not None
        return self._result


class Evaluator:
    """Runs evaluations inline or, one at a time, in a background process (lower priority: it has a whole
    epoch to finish); results come back as :class:`EvalHandle` objects."""

    def __init__(self, background: bool) -> None:
        self._background = background
        self._child: ChildProcess | None = None
        self._in_flight = False

    def submit(self, job) -> EvalHandle:
        """Evaluate ``job`` (anything with a ``run()`` returning an :class:`EvalResult`)."""
        if not self._background:
            return EvalHandle(result=job.run())
        if self._in_flight:
            raise RuntimeError("one background evaluation at a time: take the last one's result first")
        if self._child is None:
            self._child = ChildProcess(_serve, name="mtdqn-eval", niceness=10, daemon=True)
        self._child.conn.send(job)
        self._in_flight = True
        return EvalHandle(self)

    def _receive(self, timeout: float | None) -> EvalResult:
        assert self._child is not None and self._in_flight
        conn = self._child.conn
        if timeout is not None and not conn.poll(timeout):
            raise TimeoutError(f"the background evaluation did not finish within {timeout} s")
        try:
            status, payload = conn.recv()
        except (EOFError, OSError):
            code = self._child.process.exitcode
            raise RuntimeError(
                f"the background evaluation process ended (exit code {code}) before sending its result; "
                "run again (the run resumes) or pass --no-background-eval to evaluate in this process"
            ) from None
        self._in_flight = False
        if status == "error":
            raise payload
        return payload

    def close(self) -> None:
        """End the background process: at once if an evaluation is still running (a resumed run evaluates
        that epoch again), else after telling it to finish."""
        child, self._child = self._child, None
        if child is None:
            return
        if self._in_flight:
            child.stop(grace_s=5.0)
            return
        with contextlib.suppress(OSError):
            child.conn.send(None)
        child.stop(grace_s=10.0, terminate=False)
