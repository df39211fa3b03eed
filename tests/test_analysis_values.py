"""V against the returns that followed: the return chains and the comparison, on hand-made rollouts."""

from __future__ import annotations

import numpy as np
import pytest

from mtdqn.analysis.values import diverged, returns_to_go, value_vs_return


def test_returns_stop_at_a_terminal_and_count_the_unseen_rest_after_a_cut():
    # steps 0-2 end in a terminal; 3-4 in a horizon cut; 5-7 end in a lost life (a terminal for the
    # learner while the episode goes on); step 8 is cut by the end of the rollout.
    reward = np.array([1, 1, 1, 1, 1, 2, 1, -1, 4], dtype=np.float32)
    terminal = np.array([0, 0, 1, 0, 0, 0, 0, 1, 0], dtype=bool)
    ended = np.array([0, 0, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    g, tail, length = returns_to_go(reward, terminal, ended, gamma=0.5)
    np.testing.assert_allclose(g, [1.75, 1.5, 1.0, 1.5, 1.0, 2.0 + 0.5 * 0.5, 1.0 + 0.5 * -1.0, -1.0, 4.0])
    np.testing.assert_allclose(tail, [0, 0, 0, 0.25, 0.5, 0, 0, 0, 0.5])
    np.testing.assert_array_equal(length, [3, 2, 1, 2, 1, 3, 2, 1, 1])


def test_value_against_return_per_task_exactly():
    gamma = 0.5
    # task 0: one episode of three steps ending in a terminal, V overestimates each return by 1
    # task 1: a single cut step (its rest weighs gamma = 0.5 > 1%): nothing to compare
    reward = np.array([1, 1, 1, 3], dtype=np.float32)
    terminal = np.array([0, 0, 1, 0], dtype=bool)
    ended = np.array([0, 0, 1, 1], dtype=bool)
    task = np.array([0, 0, 0, 1])
    value = np.array([2.75, 2.5, 2.0, 0.0])
    out = value_vs_return(value, task, reward, terminal, ended, [gamma, gamma], ["a", "b"])
    a = out["value_vs_return"]["a"]
    assert a["states"] == 3
    assert a["value"] == pytest.approx(np.mean([2.75, 2.5, 2.0]))
    assert a["return"] == pytest.approx(np.mean([1.75, 1.5, 1.0]))
    assert a["bias"] == pytest.approx(1.0)
    # the largest return the rewards allow: 1 / (1 - 0.5)
    assert a["error"] == pytest.approx(1.0 / 2.0)
    b = out["value_vs_return"]["b"]
    assert b["states"] == 0 and np.isnan(b["error"]) and np.isnan(b["bias"])
    assert out["value_error_max"] == pytest.approx(1.0 / 2.0)
    # a cut whose rest is discounted below the tolerance counts; above it, not
    long_reward = np.ones(12, dtype=np.float32)
    cut = np.zeros(12, dtype=bool)
    cut[-1] = True
    g, tail, _ = returns_to_go(long_reward, np.zeros(12, dtype=bool), cut, gamma)
    counted = value_vs_return(
        g, np.zeros(12, dtype=int), long_reward, np.zeros(12, dtype=bool), cut, [gamma], ["c"]
    )
    assert counted["value_vs_return"]["c"]["states"] == int((tail <= 0.01).sum()) == 6  # 0.5**7 <= 0.01
    assert counted["value_vs_return"]["c"]["bias"] == 0.0 and counted["value_error_max"] == 0.0


def test_undiscounted_tasks_and_zero_rewards_have_a_finite_scale():
    reward = np.zeros(4, dtype=np.float32)
    terminal = np.array([0, 0, 0, 1], dtype=bool)
    out = value_vs_return(
        np.array([2.0, 2.0, 2.0, 2.0]), np.zeros(4, dtype=int), reward, terminal, terminal, [1.0], ["z"]
    )
    z = out["value_vs_return"]["z"]
    # gamma 1: the longest chain is 4 steps, and all-zero rewards count as a unit reward: scale 4
    assert z["states"] == 4 and z["bias"] == 2.0 and z["error"] == pytest.approx(0.5)


def test_diverging_values_are_those_beyond_the_possible_range_by_its_width():
    # Mountain-Car (rewards -1, gamma 0.99): values in [-100, 0], flagged beyond [-200, 100]
    # Cart-Pole (rewards +1): [0, 100], flagged beyond [-100, 200]; all-zero rewards, gamma 0.95: [0, 0] and a
    # margin of 1 / (1 - gamma) = 20; an undiscounted task and an undefined mean are never flagged.
    mean_q = np.array([100.5, 99.5, -200.5, -199.5, 200.5, 199.5, -100.5, 20.5, 19.5, 1e9, np.nan])
    r_min = np.array([-1, -1, -1, -1, 1, 1, 1, 0, 0, -1, -1.0])
    r_max = np.array([-1, -1, -1, -1, 1, 1, 1, 0, 0, -1, -1.0])
    gamma = np.array([0.99] * 7 + [0.95, 0.95, 1.0, 0.99])
    flagged = diverged(mean_q, r_min, r_max, gamma)
    np.testing.assert_array_equal(flagged, [1, 0, 1, 0, 1, 0, 1, 1, 0, 0, 0])
