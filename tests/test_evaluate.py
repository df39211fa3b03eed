"""Evaluation: the paper's J on hand-made episodes, the protocol's determinism and placement."""

from __future__ import annotations

import numpy as np
import pytest

from mtdqn.config import NetworkConfig, TaskConfig
from mtdqn.evaluate import EvalJob, EvalResult, Evaluator, ScoreKeeper, return_interval, run_evaluation
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.tasks import task_specs


def test_j_is_the_mean_discounted_return_of_completed_episodes() -> None:
    keeper = ScoreKeeper(2, gamma=0.5)
    # Copy 0: episodes [1, 1, 1] and [-2, 4], then an unfinished one; copy 1: one episode [3] then nothing.
    steps = [
        ((1, 3), (False, True)),
        ((1, 0), (False, False)),
        ((1, 0), (True, False)),
        ((-2, 0), (False, False)),
        ((4, 0), (True, False)),
        ((7, 0), (False, False)),
    ]
    for rewards, dones in steps:
        keeper.add(np.array(rewards, float), np.array(dones))
    (j0, ret0, n0), (j1, ret1, n1) = keeper.result()
    # Episode 1: 1 + .5 + .25 = 1.75; episode 2: -2 + .5 * 4 = 0; the unfinished third is dropped.
    assert (n0, n1) == (2, 1)
    assert j0 == pytest.approx((1.75 + 0.0) / 2, abs=1e-15)
    assert ret0 == pytest.approx((3 + 2) / 2, abs=1e-15)
    assert (j1, ret1) == (3.0, 3.0)
    # the spread of the returns 3 and 2 (ddof 1); one episode has none
    sd0, sd1 = keeper.return_sd()
    assert sd0 == pytest.approx(np.sqrt(0.5), abs=1e-15) and np.isnan(sd1)


def test_return_interval_is_the_student_t_half_width() -> None:
    # one member: over its 5 episodes (t_{0.975, 4} = 2.776445105), from their standard deviation 2
    half = return_interval(np.array([1.0]), np.array([2.0]), np.array([5]))
    assert half == pytest.approx(2.776445105 * 2 / np.sqrt(5), rel=1e-9)
    # several members: over their mean returns (sd of 1, 2, 3, 6 = sqrt(14/3); t_{0.975, 3} = 3.182446305)
    half = return_interval(np.array([1.0, 2.0, 3.0, 6.0]), np.full(4, 99.0), np.full(4, 7))
    assert half == pytest.approx(3.182446305 * np.sqrt(14 / 3) / 2, rel=1e-9)
    assert np.isnan(return_interval(np.array([1.0]), np.array([np.nan]), np.array([1])))


def test_j_is_zero_when_no_episode_ends() -> None:
    keeper = ScoreKeeper(1, gamma=0.95)
    for _ in range(2000):
        keeper.add(np.zeros(1), np.zeros(1, bool))
    assert keeper.result().tolist() == [[0.0, 0.0, 0.0]]


def test_cartpole_max_j_is_the_papers_99_343() -> None:
    keeper = ScoreKeeper(1, gamma=0.99)
    for k in range(500):
        keeper.add(np.ones(1), np.array([k == 499]))
    assert keeper.result()[0, 0] == pytest.approx(99.34295, abs=1e-5)  # sum_{t<500} 0.99^t


def _eval_job(tasks: list[TaskConfig], seeds: list[int], net_seeds, **job) -> EvalJob:
    """An evaluation of an untrained network (initialised from ``net_seeds``) for ``seeds``."""
    net = MultiTaskQNetwork(task_specs(tasks), NetworkConfig(), n_members=len(seeds), seeds=net_seeds)
    return EvalJob(
        tasks=tasks,
        params=[(w.copy(), b.copy()) for w, b in net.numpy_params()],
        kinds=net.layer_kinds(),
        action_mask=net.action_mask.numpy(),
        obs_max=net.obs_max,
        seeds=seeds,
        **job,
    )


def _job(epoch: int = 0, n_steps: int = 300) -> EvalJob:
    tasks = [
        TaskConfig("CartPole-v1", gamma=0.99, horizon=500),
        TaskConfig("mtdqn/InvertedPendulumDiscrete-v1", gamma=0.95, horizon=3000),
    ]
    return _eval_job(tasks, [3], 0, n_steps=n_steps, epsilon=0.0, epoch=epoch)


def test_evaluation_is_deterministic_and_counts_only_finished_episodes() -> None:
    a, b = run_evaluation(_job()), run_evaluation(_job())
    np.testing.assert_array_equal(a.j, b.j)
    np.testing.assert_array_equal(a.episodes, b.episodes)
    assert a.episodes[0, 0] >= 1 and a.j[0, 0] > 0
    other = run_evaluation(_job(epoch=1))  # another epoch resets the environments from other seeds
    assert not np.array_equal(a.j, other.j) or not np.array_equal(a.episodes, other.episodes)


def test_background_evaluation_gives_the_same_numbers() -> None:
    inline = Evaluator(background=False).submit(_job(n_steps=100)).result()
    pool = Evaluator(background=True)
    try:
        remote = pool.submit(_job(n_steps=100)).result(timeout=120)
    finally:
        pool.close()
    np.testing.assert_array_equal(inline.j, remote.j)
    np.testing.assert_array_equal(inline.ret, remote.ret)


def _population_job(seeds: list[int], n_steps: int = 300, epsilon: float = 0.1) -> EvalJob:
    tasks = [
        TaskConfig("CartPole-v1", gamma=0.99, horizon=500),
        TaskConfig("mtdqn/CarOnHill-v0", gamma=0.95, horizon=100),
    ]
    return _eval_job(tasks, seeds, seeds, n_steps=n_steps, epsilon=epsilon, epoch=2)


def test_a_split_evaluation_joins_into_the_whole_ones_numbers() -> None:
    job = _population_job([5, 1, 8, 2, 7])
    parts = job.split(3)
    assert [p.seeds for p in parts] == [[5, 1], [8], [2, 7]]
    assert [p.params[1][0].shape[0] for p in parts] == [2, 1, 2]
    whole, joined = run_evaluation(job), EvalResult.join([run_evaluation(p) for p in parts])
    assert whole.j.shape == (5, 2) and (whole.episodes > 0).all()
    for field in ("j", "ret", "episodes", "ret_sd"):
        np.testing.assert_array_equal(getattr(joined, field), getattr(whole, field))
    assert len(job.split(9)) == 5  # at most one job per member


def test_background_evaluation_with_several_workers_gives_the_same_numbers() -> None:
    job = _population_job([5, 1, 8], n_steps=100)
    inline = Evaluator(background=False).submit(job).result()
    pool = Evaluator(background=True, workers=2)
    try:
        first = pool.submit(job).result(timeout=120)
        second = pool.submit(job).result(timeout=120)  # the same processes serve the next epoch
        assert len(pool._children) == 2
    finally:
        pool.close()
    for remote in (first, second):
        np.testing.assert_array_equal(inline.j, remote.j)
        np.testing.assert_array_equal(inline.episodes, remote.episodes)
