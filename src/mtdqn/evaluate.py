"""The evaluation protocol: greedy play for a fixed number of steps per task, scored as the paper does.

After every epoch (and once before learning) each task plays ``eval_steps`` steps from a freshly reset,
seeded environment with epsilon = ``eval_epsilon`` (0: greedy). Scores per task:

* ``J``: mean discounted return sum_k gamma_t^k r_k over the episodes that *ended* (terminal or horizon)
  within the evaluation; the unfinished last episode is dropped and J = 0 if no episode ended (the rule of
  the MushroomRL version behind the paper's published numbers, spec section 1.9);
* ``return``: mean undiscounted return of the same episodes (0 if none), as CleanRL/SB3 report;
* ``episodes``: how many episodes ended;
* ``return_sd``: the sample standard deviation of those episodes' undiscounted returns (nan with fewer than
  two), from which ``mtdqn evaluate`` states a 95% interval of the mean return.

Evaluation never changes the learner, so it runs on a snapshot of the parameters, in a second process
while the next epoch trains (``background_eval``); both placements give identical numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from mtdqn.config import TaskConfig
from mtdqn.policy import epsilon_greedy, masked_greedy, q_values
from mtdqn.processes import ChildProcess
from mtdqn.runlog import t_half_width, t_half_width_from_sd
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
        self._sum_r2 = np.zeros(n)
        self._episodes = np.zeros(n, dtype=np.int64)

    def add(self, reward: np.ndarray, episode_over: np.ndarray) -> None:
        self._g += self._discount * reward
        self._r += reward
        self._discount *= self.gamma
        if episode_over.any():
            self._sum_g += np.where(episode_over, self._g, 0.0)
            self._sum_r += np.where(episode_over, self._r, 0.0)
            self._sum_r2 += np.where(episode_over, self._r * self._r, 0.0)
            self._episodes += episode_over
            self._g[episode_over] = 0.0
            self._r[episode_over] = 0.0
            self._discount[episode_over] = 1.0

    def result(self) -> np.ndarray:
        """(N, 3): J, mean undiscounted return, completed episodes; 0 where no episode ended."""
        n = np.maximum(self._episodes, 1)
        return np.stack([self._sum_g / n, self._sum_r / n, self._episodes.astype(np.float64)], axis=1)

    def return_sd(self) -> np.ndarray:
        """(N,): sample standard deviation (ddof 1) of the completed episodes' undiscounted returns; nan
        where fewer than two episodes ended."""
        n = self._episodes
        mean = self._sum_r / np.maximum(n, 1)
        var = np.maximum(self._sum_r2 - n * mean * mean, 0.0) / np.maximum(n - 1, 1)
        return np.where(n >= 2, np.sqrt(var), np.nan)


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

    def split(self, n: int) -> list[EvalJob]:
        """The same evaluation as ``n`` jobs (at most one per member) over contiguous slices of the members;
        :meth:`EvalResult.join` of their results equals this job's result (members are independent)."""
        edges = np.linspace(0, len(self.seeds), min(n, len(self.seeds)) + 1).round().astype(int)
        return [
            dataclasses.replace(
                self, params=[(w[lo:hi], b[lo:hi]) for w, b in self.params], seeds=self.seeds[lo:hi]
            )
            for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)
        ]


@dataclass
class EvalResult:
    """Scores per (member, task): arrays of shape ``(S, T)``."""

    epoch: int
    j: np.ndarray
    ret: np.ndarray
    episodes: np.ndarray
    ret_sd: np.ndarray
    """The standard deviation of the returns over each (member, task)'s episodes (nan under two)."""

    @staticmethod
    def join(parts: list[EvalResult]) -> EvalResult:
        """The results of :meth:`EvalJob.split`'s jobs, in order, as one result."""
        return EvalResult(
            parts[0].epoch,
            np.concatenate([p.j for p in parts]),
            np.concatenate([p.ret for p in parts]),
            np.concatenate([p.episodes for p in parts]),
            np.concatenate([p.ret_sd for p in parts]),
        )


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
    sd = np.stack([keeper.return_sd() for keeper in scores], axis=1)
    return EvalResult(epoch, result[..., 0], result[..., 1], result[..., 2].astype(np.int64), sd)


def return_interval(ret: np.ndarray, sd: np.ndarray, episodes: np.ndarray) -> float:
    """Half-width of the 95% Student-t interval of a task's mean return: over the members' mean returns
    when there are several, else over the one member's episodes (from their standard deviation ``sd``);
    nan with fewer than two."""
    if ret.size > 1:
        return float(t_half_width(ret))
    n = int(episodes[0])
    return float(t_half_width_from_sd(sd[0], n)) if n >= 2 else float("nan")


def _serve(conn: Connection) -> None:
    """The background evaluation process: run each job received, send back its result or its error."""
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the learner's end is closed, or the learner is gone (kill -9)
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
        except OSError:  # the learner is gone: nobody to answer
            return
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
    """Runs evaluations inline or, one at a time, in background processes (lower priority: they have a
    whole epoch to finish); results come back as :class:`EvalHandle` objects.

    With ``workers`` > 1 a job that can be split (:meth:`EvalJob.split`) is cut into that many slices of
    members, each played by its own process at once; the joined result is the same."""

    def __init__(self, background: bool, workers: int = 1) -> None:
        self._background = background
        self._workers = max(1, workers)
        self._children: list[ChildProcess] = []
        self._in_flight = 0  # processes working on the current job

    def submit(self, job) -> EvalHandle:
        """Evaluate ``job`` (anything with a ``run()`` returning an :class:`EvalResult`)."""
        if not self._background:
            return EvalHandle(result=job.run())
        if self._in_flight:
            raise RuntimeError("one background evaluation at a time: take the last one's result first")
        parts = job.split(self._workers) if self._workers > 1 and hasattr(job, "split") else [job]
        while len(self._children) < len(parts):
            name = f"mtdqn-eval{len(self._children)}"
            self._children.append(ChildProcess(_serve, name=name, niceness=10, daemon=True))
        for child, part in zip(self._children, parts, strict=False):
            child.conn.send(part)
        self._in_flight = len(parts)
        return EvalHandle(self)

    def _receive(self, timeout: float | None) -> EvalResult:
        assert self._in_flight
        busy = self._children[: self._in_flight]
        deadline = None if timeout is None else time.monotonic() + timeout
        for child in busy:  # wait for every reply before reading any: a timeout leaves the state intact
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not child.conn.poll(left):
                raise TimeoutError(f"the background evaluation did not finish within {timeout} s")
        self._in_flight = 0
        replies = []
        for child in busy:
            try:
                replies.append(child.conn.recv())
            except (EOFError, OSError):
                code = child.process.exitcode
                raise RuntimeError(
                    f"the background evaluation process ended (exit code {code}) before sending its "
                    "result; run again (the run resumes) or pass --no-background-eval to evaluate in this "
                    "process"
                ) from None
        for status, payload in replies:
            if status == "error":
                raise payload
        parts = [payload for _, payload in replies]
        return parts[0] if len(parts) == 1 else EvalResult.join(parts)

    def close(self) -> None:
        """End the background processes: at once if an evaluation is still running (a resumed run
        evaluates that epoch again), else after telling them to finish."""
        children, self._children = self._children, []
        running, self._in_flight = self._in_flight, 0
        if running:
            for child in children:
                child.stop(grace_s=5.0)
            return
        for child in children:
            with contextlib.suppress(OSError):
                child.conn.send(None)
        for child in children:
            child.stop(grace_s=10.0, terminate=False)
