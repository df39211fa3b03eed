"""The update: TD targets (terminal, per-task gamma, masking, Double DQN), target cadence, independence."""

from __future__ import annotations

import copy

import pytest
import torch

from mtdqn.config import LearnerConfig, NetworkConfig
from mtdqn.learner import DQNLearner
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.replay import Batch
from mtdqn.tasks import TaskSpec

SPECS = [TaskSpec("two-actions", 4, 2, 0.9, 10), TaskSpec("three-actions", 6, 3, 0.5, 10)]


def _batch(net: MultiTaskQNetwork, n: int = 8, seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(1, 2, n, 6, generator=gen)
    next_obs = torch.randn(1, 2, n, 6, generator=gen)
    obs[:, 0, :, 4:] = 0
    next_obs[:, 0, :, 4:] = 0
    action = torch.stack([torch.randint(0, k, (n,), generator=gen) for k in net.n_actions]).unsqueeze(0)
    reward = torch.randn(1, 2, n, generator=gen)
    terminal = (torch.rand(1, 2, n, generator=gen) < 0.3).float()
    return Batch(obs, action, reward, next_obs, terminal)


def _learner(share: bool = True, **kw) -> DQNLearner:
    net = MultiTaskQNetwork(SPECS, NetworkConfig(width=16), share=share, seeds=0)
    return DQNLearner(net, [s.gamma for s in SPECS], LearnerConfig(**kw))


def test_td_target_uses_task_gamma_terminal_and_valid_actions_only() -> None:
    learner = _learner()
    with torch.no_grad():  # make the padded action of task 0 the largest Q by far
        learner.target.biases[-1][0, 0, 0, 2] = 1e6
    batch = _batch(learner.online)
    y = learner.td_target(batch)
    q_next = learner.target(batch.next_obs)
    for t, spec in enumerate(SPECS):
        v = q_next[0, t, :, : spec.n_actions].max(-1).values
        expected = batch.reward[0, t] + spec.gamma * (1 - batch.terminal[0, t]) * v
        torch.testing.assert_close(y[0, t], expected)
    assert y[0, 0].abs().max() < 1e3  # the padded action never entered the target
    terminal = batch.terminal.bool()
    torch.testing.assert_close(y[terminal], batch.reward[terminal], rtol=0, atol=0)


def test_double_dqn_target_takes_the_online_argmax_and_the_target_value() -> None:
    learner = _learner(double_dqn=True)
    with torch.no_grad():
        for w in learner.target.weights:
            w.mul_(-1.5)  # target and online now disagree
        learner.online.biases[-1][0, 0, 0, 2] = 1e6  # padded action: never the argmax
    batch = _batch(learner.online)
    y = learner.td_target(batch)
    q_online, q_target = learner.online(batch.next_obs), learner.target(batch.next_obs)
    for t, spec in enumerate(SPECS):
        a = q_online[0, t, :, : spec.n_actions].argmax(-1)
        v = q_target[0, t].gather(-1, a[:, None]).squeeze(-1)
        expected = batch.reward[0, t] + spec.gamma * (1 - batch.terminal[0, t]) * v
        torch.testing.assert_close(y[0, t], expected)


def test_target_network_is_copied_every_c_updates() -> None:
    learner = _learner(target_update_every=5)
    batch = _batch(learner.online)
    initial = [p.clone() for p in learner.target.parameters()]
    for _ in range(4):
        learner.update(batch)
    for p, p0 in zip(learner.target.parameters(), initial, strict=True):
        assert torch.equal(p, p0)  # untouched before the 5th update
    learner.update(batch)
    snapshot = [p.clone() for p in learner.online.parameters()]
    for p, q in zip(learner.target.parameters(), snapshot, strict=True):
        assert torch.equal(p, q)  # exact copy at the 5th
    for _ in range(4):
        learner.update(batch)
    for p, q in zip(learner.target.parameters(), snapshot, strict=True):
        assert torch.equal(p, q)  # held until the 10th
    assert not all(torch.equal(p, q) for p, q in zip(learner.online.parameters(), snapshot, strict=True))


def test_loss_is_the_mean_huber_over_the_multitask_batch() -> None:
    learner = _learner(lr=1e-12)
    batch = _batch(learner.online)
    y = learner.td_target(batch)
    q = learner.online(batch.obs).gather(-1, batch.action.unsqueeze(-1)).squeeze(-1)
    err = (q - y).abs()
    huber = torch.where(err < 1, 0.5 * err**2, err - 0.5)
    learner.update(batch)
    stats = learner.pop_stats()
    torch.testing.assert_close(stats["loss"], huber.mean(-1).detach())
    torch.testing.assert_close(stats["mean_q"], q.mean(-1).detach())


def test_padded_head_outputs_are_never_trained() -> None:
    learner = _learner()
    before = learner.online.weights[-1][0, 0, 2].clone()
    for seed in range(20):
        learner.update(_batch(learner.online, seed=seed))
    assert torch.equal(learner.online.weights[-1][0, 0, 2], before)
    assert not torch.equal(learner.online.weights[-1][0, 0, 1], learner.target.weights[-1][0, 0, 1] * 0)


@pytest.mark.parametrize("share", [False, True])
def test_task_zero_learning_depends_on_task_one_data_only_when_shared(share: bool) -> None:
    """Single-task mode: T independent DQNs. Shared mode: task 1's data moves task 0's Q function."""
    runs = []
    for other_seed in (1, 2):
        learner = _learner(share=share)
        for step in range(10):
            a, b = (
                _batch(learner.online, seed=100 + step),
                _batch(learner.online, seed=other_seed * 1000 + step),
            )
            mixed = Batch(
                *(
                    torch.cat([x[:, :1], y[:, 1:]], dim=1)
                    for x, y in zip(vars(a).values(), vars(b).values(), strict=True)
                )
            )
            learner.update(mixed)
        runs.append(learner.online(_batch(learner.online, seed=7).obs)[0, 0].detach())
    assert torch.equal(runs[0], runs[1]) is (not share)


def test_single_mode_equals_an_independent_single_task_learner() -> None:
    pair = _learner(share=False)
    alone_net = MultiTaskQNetwork(SPECS[:1], NetworkConfig(width=16), share=False, seeds=0)
    with torch.no_grad():
        for w_alone, w_pair in zip(alone_net.parameters(), pair.online.parameters(), strict=True):
            w_alone.copy_(w_pair[:, :1, ..., : w_alone.shape[-2], : w_alone.shape[-1]])
    alone = DQNLearner(alone_net, [SPECS[0].gamma], LearnerConfig())
    alone.target = copy.deepcopy(alone_net).requires_grad_(False)
    for step in range(5):
        batch = _batch(pair.online, seed=step)
        pair.update(batch)
        alone.update(
            Batch(
                batch.obs[:, :1, :, :4],
                batch.action[:, :1],
                batch.reward[:, :1],
                batch.next_obs[:, :1, :, :4],
                batch.terminal[:, :1],
            )
        )
    q_pair = pair.online(_batch(pair.online, seed=9).obs)[0, 0, :, :2]
    q_alone = alone.online(_batch(pair.online, seed=9).obs[:, :1, :, :4])[0, 0, :, :2]
    torch.testing.assert_close(q_pair, q_alone, rtol=1e-5, atol=1e-6)


def test_rmsprop_centered_is_a_learner_option() -> None:
    learner = _learner(optimizer="rmsprop-centered", adam_eps=0.01, rmsprop_decay=0.9)
    group = learner.optimizer.param_groups[0]
    assert isinstance(learner.optimizer, torch.optim.RMSprop)
    assert group["centered"] and (group["alpha"], group["eps"], group["momentum"]) == (0.9, 0.01, 0)
    assert isinstance(_learner().optimizer, torch.optim.Adam)


def test_bf16_target_weights_give_the_targets_autocast_gives_float32_weights() -> None:
    """bf16 keeps the target network in bfloat16 (cast once per sync): TD targets are bit-identical."""
    learner = _learner(precision="bf16", target_update_every=2)
    batch = _batch(learner.online)
    learner.update(batch)
    learner.update(batch)  # synced: target = the online weights after two updates, cast to bfloat16
    assert all(p.dtype == torch.bfloat16 for p in learner.target.parameters())
    y_cached = learner.td_target(batch)
    learner.target = copy.deepcopy(learner.online).requires_grad_(False)  # float32, cast by autocast
    assert torch.equal(learner.td_target(batch), y_cached)


def test_lr_fan_in_gives_each_layer_its_own_rate_and_adams_first_step_moves_by_it() -> None:
    """``lr_fan_in=N``: layer i learns at lr * min(1, N / fan_in); Adam's first step moves a weight with a
    gradient far above eps by its layer's rate, whatever the gradient's size."""
    base = _learner(lr=1e-3)
    assert len(base.optimizer.param_groups) == 1  # off: one rate
    learner = _learner(lr=1e-3, lr_fan_in=8)
    in_dims = [layer.in_dim for layer in learner.online.plan]
    assert in_dims == [6, 16, 16, 16]  # padded input, two shared layers, the head (width 16)
    rates = [g["lr"] for g in learner.optimizer.param_groups]
    assert rates == [1e-3, 1e-3 * 8 / 16, 1e-3 * 8 / 16, 1e-3 * 8 / 16]
    before = [w.detach().clone() for w in learner.online.weights]
    learner.update(_batch(learner.online))
    for rate, w0, w in zip(rates, before, learner.online.weights, strict=True):
        g = w.grad
        moved = (w.detach() - w0)[g.abs() > 1e-4]  # Adam: |step| = lr |g| / (|g| + eps) with eps 1e-8
        assert moved.numel() > 0
        torch.testing.assert_close(moved.abs(), torch.full_like(moved, rate), rtol=1e-3, atol=0)


def test_lr_fan_in_counts_a_convolutions_kernel_area() -> None:
    from mtdqn.config_atari import AtariNetworkConfig
    from mtdqn.nets_atari import AtariQNetwork

    net = AtariQNetwork([6, 4], AtariNetworkConfig(arch="review-mtqn", init="xavier"), seeds=0)
    learner = DQNLearner(net, [0.99, 0.99], LearnerConfig(lr=1e-4, lr_fan_in=256))
    fan_ins = [4 * 64, 32 * 16, 64 * 9, 3136, 1024, 512, 256, 128, 64]  # 3 convolutions, 6 dense layers
    expected = [1e-4 * min(1.0, 256 / f) for f in fan_ins]
    assert [g["lr"] for g in learner.optimizer.param_groups] == pytest.approx(expected, rel=1e-12)


def test_lr_fan_in_conv_channels_counts_a_convolutions_in_channels_only() -> None:
    """``lr_fan_in_conv="channels"``: the convolutions' fan-ins are their in-channels (4, 32, 64), so with
    N = 64 they keep ``lr``; the dense layers' rates are those of the default count."""
    from mtdqn.config_atari import AtariNetworkConfig
    from mtdqn.nets_atari import AtariQNetwork

    net = AtariQNetwork([6, 4], AtariNetworkConfig(arch="review-mtqn", init="xavier"), seeds=0)
    rates = {}
    for count in ("kernel", "channels"):
        cfg = LearnerConfig(lr=1e-4, lr_fan_in=64, lr_fan_in_conv=count)
        rates[count] = [g["lr"] for g in DQNLearner(net, [0.99, 0.99], cfg).optimizer.param_groups]
    dense = [1e-4 * min(1.0, 64 / f) for f in (3136, 1024, 512, 256, 128, 64)]
    assert rates["channels"] == pytest.approx([1e-4, 1e-4, 1e-4, *dense], rel=1e-12)
    convs = [1e-4 * 64 / 256, 1e-4 * 64 / 512, 1e-4 * 64 / 576]  # 4 x 8 x 8, 32 x 4 x 4, 64 x 3 x 3 inputs
    assert rates["kernel"] == pytest.approx([*convs, *dense], rel=1e-12)


@pytest.mark.parametrize("kernels", ["torch", "numpy"])
def test_clip_targets_clamps_into_the_values_the_rewards_seen_allow(kernels: str) -> None:
    """``clip_targets``: y is clamped into [min(r_min, 0), max(r_max, 0)] / (1 - gamma_t), the rewards'
    extremes per (member, task) over the batches of the updates so far, the current batch included."""
    learner = _learner(clip_targets=True, kernels=kernels, target_update_every=1000)
    batch = _batch(learner.online)
    batch.reward.copy_(torch.tensor([[-2.0], [3.0]]).expand(2, 8).unsqueeze(0))  # task 0: -2, task 1: +3
    batch.reward[0, 1, 0] = -0.5
    learner.update(batch)
    low, high = learner.value_bounds()
    torch.testing.assert_close(low, torch.tensor([[-2.0 / 0.1, -0.5 / 0.5]]), rtol=1e-6, atol=0)
    torch.testing.assert_close(high, torch.tensor([[0.0, 3.0 / 0.5]]), rtol=0, atol=0)
    with torch.no_grad():  # the target network's values far above and below anything the rewards allow
        learner.target.biases[-1][..., :3] = 1e6
    y = learner.td_target(batch)
    alive = batch.terminal == 0
    assert torch.equal(y[0, 0][alive[0, 0]], torch.zeros_like(y[0, 0][alive[0, 0]]))  # at max(r_max, 0) = 0
    torch.testing.assert_close(y[0, 1][alive[0, 1]], torch.full_like(y[0, 1][alive[0, 1]], 6.0))
    ends = batch.terminal.bool()
    assert torch.equal(y[ends], batch.reward[ends])  # a terminal's target is its reward: never cut
    with torch.no_grad():
        learner.target.biases[-1][..., :3] = -1e6
    y = learner.td_target(batch)
    torch.testing.assert_close(y[0, 0][alive[0, 0]], torch.full_like(y[0, 0][alive[0, 0]], -20.0))
    torch.testing.assert_close(y[0, 1][alive[0, 1]], torch.full_like(y[0, 1][alive[0, 1]], -1.0))
    # a later batch with a larger reward widens task 1's interval; the bounds are part of the state
    batch.reward[0, 1, 3] = 7.0
    learner.update(batch)
    assert learner.value_bounds()[1][0, 1].item() == pytest.approx(14.0)
    fresh = _learner(clip_targets=True, kernels=kernels)
    fresh.load_state_dict(learner.state_dict())
    assert torch.equal(fresh.reward_bounds, learner.reward_bounds)
    assert torch.equal(fresh.td_target(batch), learner.td_target(batch))


def test_clip_targets_off_changes_nothing_and_saves_nothing() -> None:
    learner = _learner()
    batch = _batch(learner.online)
    with torch.no_grad():
        learner.target.biases[-1][..., :3] = 1e6
    learner.update(batch)
    assert learner.reward_bounds is None and "reward_bounds" not in learner.state_dict()
    assert learner.td_target(batch).max() > 1e5


def test_clip_targets_with_gamma_one_bounds_only_the_side_without_rewards() -> None:
    net = MultiTaskQNetwork(SPECS, NetworkConfig(width=16), seeds=0)
    learner = DQNLearner(net, [1.0, 0.5], LearnerConfig(clip_targets=True))
    batch = _batch(net)
    batch.reward.fill_(-1.0)
    learner.update(batch)
    low, high = learner.value_bounds()
    assert low[0, 0].item() == -torch.inf and high[0, 0].item() == 0.0  # undiscounted: no lower bound
    assert low[0, 1].item() == -2.0 and high[0, 1].item() == 0.0
