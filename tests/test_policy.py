"""Acting: the epsilon schedule, masked greedy choice, exploration draws, numpy forward = torch forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtdqn.config import ExplorationConfig, NetworkConfig
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.policy import epsilon, epsilon_greedy, masked_greedy, q_values
from mtdqn.tasks import TaskSpec


def test_epsilon_schedule_is_linear_then_floored() -> None:
    cfg = ExplorationConfig()  # 1 -> 0.01 over 5000 steps
    assert epsilon(0, cfg) == 1.0
    assert epsilon(1, cfg) == pytest.approx(1 - 0.99 / 5000, abs=1e-15)
    assert epsilon(2500, cfg) == pytest.approx(0.505, abs=1e-15)
    assert epsilon(5000, cfg) == pytest.approx(0.01, abs=1e-15)
    # Held at the floor (the review's schedule went negative here: 1 - 1.98e-4 * 50000 = -8.9).
    assert epsilon(50_000, cfg) == pytest.approx(0.01, abs=1e-15)


def test_masked_greedy_never_picks_a_padded_action() -> None:
    mask = np.array([[True, True, False], [True, True, True]])
    q = np.array([[1.0, 2.0, 100.0], [1.0, 2.0, 100.0]])
    assert masked_greedy(q, mask).tolist() == [1, 2]


def test_exploration_draws_only_valid_actions_with_the_right_frequency() -> None:
    rng = np.random.default_rng(0)
    n_actions = np.array([2, 3])
    greedy = np.zeros(2, dtype=np.int64)
    draws = np.stack([epsilon_greedy(greedy, 1.0, n_actions, rng) for _ in range(20_000)])
    assert set(draws[:, 0]) == {0, 1}
    assert set(draws[:, 1]) == {0, 1, 2}
    assert np.bincount(draws[:, 1]) / len(draws) == pytest.approx([1 / 3] * 3, abs=0.02)
    half = np.stack([epsilon_greedy(greedy + 1, 0.5, n_actions, rng) for _ in range(20_000)])
    # With eps 0.5 and 2 actions, the greedy action 1 is taken 0.5 + 0.5 * 0.5 = 75% of the time.
    assert (half[:, 0] == 1).mean() == pytest.approx(0.75, abs=0.02)


@pytest.mark.parametrize("share", [True, False])
def test_numpy_forward_equals_torch_forward(share: bool) -> None:
    specs = [TaskSpec("a", 4, 2, 0.99, 10), TaskSpec("b", 6, 3, 0.99, 10)]
    net = MultiTaskQNetwork(specs, NetworkConfig(), share=share, n_members=2, seeds=3)
    obs = torch.randn(2, 2, 7, 6)
    obs[:, 0, :, 4:] = 0.0
    expected = net(obs).detach().numpy()
    got = q_values(net.numpy_params(), net.layer_kinds(), obs.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
