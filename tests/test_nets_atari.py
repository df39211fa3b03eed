"""Atari networks: spec parameter counts, batching over games and members, masking, a learning step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtdqn.config import LearnerConfig
from mtdqn.config_atari import ATARI_ARCHS, AtariNetworkConfig
from mtdqn.errors import UserError
from mtdqn.learner import DQNLearner
from mtdqn.nets_atari import AtariQNetwork
from mtdqn.policy import masked_greedy
from mtdqn.replay_frames import FrameBatch, FrameReplay

BREAKOUT_PONG = [4, 6]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny batches: one intra-op thread avoids OpenMP barrier waits on a busy 2-core machine (~50x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net(arch: str, actions=BREAKOUT_PONG, **kwargs) -> AtariQNetwork:
    conv_mode = kwargs.pop("conv_mode", "auto")
    return AtariQNetwork(actions, AtariNetworkConfig(arch=arch, conv_mode=conv_mode), **kwargs)


def _frames(s: int, t: int, b: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (s, t, b, 4, 84, 84), dtype=torch.uint8, generator=gen)


def test_spec_parameter_counts() -> None:
    # Spec review-code 3.3: v1 with Breakout + Pong, v5 with Breakout + Pong and with the HEAD game set.
    assert _net("review-exp1").parameter_count() == 1_828_930
    assert _net("review-mtqn").parameter_count() == 7_286_730
    assert _net("review-mtqn", [18, 6, 6]).parameter_count() == 10_586_558  # Centipede, SpaceInvaders, Demon
    # Spec review-code 3.2: the Nature network for 4, 6 and 18 actions.
    for n, count in ((4, 1_686_180), (6, 1_687_206), (18, 1_693_362)):
        assert _net("nature", [n]).parameter_count() == count
    # Spec deramo2020 1.4: per-game conv stacks (77,984 each), shared 3136->512, per-game 512->A heads.
    assert _net("deramo-atari").parameter_count() == 2 * 77_984 + 3136 * 512 + 512 + 513 * 10
    assert _net("deramo-atari-2018").parameter_count() == 2 * 8_224 + 69_760 + 3136 * 512 + 512 + 513 * 10
    # Single mode: one Nature network per game; heads with A_max outputs when padding is counted.
    assert _net("nature", share=False).parameter_count() == 1_686_180 + 1_687_206
    assert _net("review-exp1").parameter_count(count_padded_actions=True) == 1_828_930 + 2 * 11
    net = _net("review-mtqn", n_members=3)
    assert sum(p.numel() for p in net.parameters()) == 3 * net.parameter_count(count_padded_actions=True)


def _reference_q(net: AtariQNetwork, obs: torch.Tensor, n_layers: int | None = None) -> torch.Tensor:
    """Q values computed game by game and member by member with plain convolutions and matmuls."""
    acts = {"relu": F.relu, "lrelu": lambda x: F.leaky_relu(x, 0.01), "sigmoid": torch.sigmoid}
    n_layers = len(net.plan) if n_layers is None else n_layers
    out = []
    for s in range(obs.shape[0]):
        row = []
        for t in range(obs.shape[1]):
            x = obs[s, t].float() / 255.0
            for layer, w, b in zip(net.plan[:n_layers], net.weights, net.biases, strict=False):
                w, b = (w[s], b[s]) if layer.shared else (w[s, t], b[s, t])
                if layer.is_conv:
                    x = F.conv2d(x, w, b, stride=layer.stride)
                else:
                    x = F.linear(x.flatten(1), w, b.reshape(-1))
                x = acts.get(layer.activation, lambda v: v)(x)
            row.append(x)
        out.append(torch.stack(row))
    return torch.stack(out)


@pytest.mark.parametrize("arch", ATARI_ARCHS)
def test_batched_forward_equals_game_by_game_computation(arch: str) -> None:
    obs = _frames(2, 2, 3)
    for share in (True, False):
        for mode in ("grouped", "loop"):
            net = _net(arch, n_members=2, seeds=[3, 8], share=share, conv_mode=mode)
            with torch.no_grad():
                torch.testing.assert_close(net(obs), _reference_q(net, obs), rtol=1e-5, atol=1e-5)
                features = net.features(obs)
                torch.testing.assert_close(features, _reference_q(net, obs, net.feature_layer + 1))
    assert features.shape[:3] == (2, 2, 3)


@pytest.mark.parametrize("arch", ["review-exp1", "review-mtqn"])
def test_batched_gradients_equal_game_by_game_gradients(arch: str) -> None:
    """Every parameter's gradient (the dense ones computed feature-major) matches the plain computation."""
    obs = _frames(2, 2, 3)
    for share in (True, False):
        net = _net(arch, n_members=2, seeds=[4, 7], share=share)
        grads = []
        for forward in (net, lambda o, net=net: _reference_q(net, o)):
            net.zero_grad(set_to_none=True)
            forward(obs).square().sum().backward()
            grads.append([p.grad.clone() for p in net.parameters()])
        for ours, reference in zip(*grads, strict=True):
            torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6)


def test_features_are_the_last_shared_layer() -> None:
    obs = _frames(1, 2, 2)
    widths = {
        "review-exp1": 256,
        "review-mtqn": 128,
        "deramo-atari": 512,
        "deramo-atari-2018": 512,
        "nature": 512,
    }
    for arch, width in widths.items():
        assert _net(arch).features(obs).shape == (1, 2, 2, width)
    with torch.no_grad():  # sigmoid features of review-mtqn and deramo-atari lie in (0, 1)
        feats = _net("review-mtqn").features(obs)
    assert feats.min() > 0 and feats.max() < 1


def test_grouped_and_loop_convolutions_give_the_same_gradients() -> None:
    obs = _frames(2, 2, 3)
    grads = []
    for mode in ("grouped", "loop"):
        net = _net("review-mtqn", n_members=2, seeds=[1, 2], conv_mode=mode)
        net(obs).square().sum().backward()
        grads.append([p.grad for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_inputs_are_scaled_inside_the_network() -> None:
    net = _net("nature", [4])
    black, white = torch.zeros(1, 1, 1, 4, 84, 84, dtype=torch.uint8), torch.full((1, 1, 1, 4, 84, 84), 255)
    with torch.no_grad():
        q_white = net(white.to(torch.uint8))
        reference = _reference_q(net, white.to(torch.uint8))  # the reference divides by 255 itself
    torch.testing.assert_close(q_white, reference)
    assert q_white.abs().max() < 10 and not torch.equal(q_white, net(black))


def test_members_and_games_do_not_interact() -> None:
    obs = _frames(2, 2, 4)
    net = _net("review-exp1", n_members=2, seeds=[5, 9])
    alone = _net("review-exp1", n_members=1, seeds=[9])
    with torch.no_grad():
        torch.testing.assert_close(net(obs)[1:], alone(obs[1:]))  # member 1 is the net of seed 9
        other = obs.clone()
        other[:, 1] = _frames(2, 1, 4, seed=1)[:, 0]  # new Pong frames: Breakout's Q values stay
        torch.testing.assert_close(net(other)[:, 0], net(obs)[:, 0])
        assert not torch.equal(net(other)[:, 1], net(obs)[:, 1])


def test_actions_a_game_lacks_are_masked() -> None:
    net = _net("review-exp1")
    assert net.action_mask.tolist() == [[True] * 4 + [False] * 2, [True] * 6]
    with torch.no_grad():
        net.biases[-1][0, 0, 0, 4:] = 1e6  # Breakout's padded outputs would win an unmasked argmax
        q = net(_frames(1, 2, 16)).numpy()
    greedy = masked_greedy(q.transpose(0, 2, 1, 3), net.action_mask.numpy())  # (S, B, T)
    assert greedy[..., 0].max() < 4 and (q[0, 0].argmax(-1) >= 4).all()


def test_unknown_architecture_or_option_is_a_user_error() -> None:
    with pytest.raises(UserError):
        _net("alexnet")
    with pytest.raises(UserError):
        AtariQNetwork([4], AtariNetworkConfig(arch="review-exp1", feature_activation="relu"))
    with pytest.raises(UserError):
        AtariQNetwork([4], AtariNetworkConfig(arch="nature", conv_mode="fast"))
    relu = AtariQNetwork([4], AtariNetworkConfig(arch="deramo-atari", feature_activation="relu"))
    assert relu.plan[relu.feature_layer].activation == "relu"


@pytest.mark.parametrize("arch", ATARI_ARCHS)
def test_a_dqn_update_on_a_frame_batch(arch: str) -> None:
    """Forward/backward smoke step: the generic learner (Huber, masked targets, fused Adam) on frames."""
    replay = FrameReplay(1, 2, 40, check_memory=False)
    rng = np.random.default_rng(0)
    for step in range(40):
        frame = rng.integers(0, 256, (1, 2, 84, 84), dtype=np.uint8)
        actions = np.stack([rng.integers(0, n, 1) for n in BREAKOUT_PONG], axis=1)
        replay.add(
            frame,
            actions,
            rng.choice([-1.0, 0.0, 1.0], (1, 2)),
            rng.random((1, 2)) < 0.05,
            [[step % 15 == 0] * 2],
        )
    net = _net(arch, seeds=[0])
    learner = DQNLearner(net, [0.99, 0.99], LearnerConfig(lr=1e-4, batch_size=32, target_update_every=2))
    before = [p.detach().clone() for p in net.parameters()]
    for _ in range(2):
        learner.update(replay.sample(rng, 32))
    stats = learner.pop_stats()
    assert torch.isfinite(stats["loss"]).all() and stats["loss"].shape == (1, 2)
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    for a, b in zip(learner.target.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(a, b)  # copied after the second update


def test_zero_q_layer_starts_q_at_zero_and_keeps_every_other_layers_init() -> None:
    """``zero_q_layer``: Q is exactly 0 for any frames; the other layers are those of the same seed without
    it; the first update moves only the Q layer (every lower gradient passes through its zero weights)."""
    cfg = AtariNetworkConfig(arch="review-mtqn", init="xavier")
    plain = AtariQNetwork(BREAKOUT_PONG, cfg, n_members=2, seeds=[3, 4])
    zero = AtariQNetwork(
        BREAKOUT_PONG, dataclasses.replace(cfg, zero_q_layer=True), n_members=2, seeds=[3, 4]
    )
    assert torch.equal(zero(_frames(2, 2, 5)), torch.zeros(2, 2, 5, 6))
    for a, b in zip(
        [*plain.weights[:-1], *plain.biases[:-1]], [*zero.weights[:-1], *zero.biases[:-1]], strict=True
    ):
        assert torch.equal(a, b)
    assert torch.equal(zero.weights[-1], torch.zeros_like(zero.weights[-1])) and not zero.biases[-1].any()
    assert not plain.weights[-1].detach().eq(0).any()  # without the option the Q layer is not zero
    learner = DQNLearner(zero, [0.99, 0.99], LearnerConfig(lr=1e-4))
    batch = FrameBatch(
        obs=_frames(2, 2, 8),
        action=torch.zeros(2, 2, 8, dtype=torch.long),
        reward=torch.ones(2, 2, 8),
        next_obs=_frames(2, 2, 8, seed=1),
        terminal=torch.zeros(2, 2, 8),
    )
    learner.update(batch)
    assert all(torch.equal(w.grad, torch.zeros_like(w)) for w in zero.weights[:-1])
    assert zero.weights[-1].grad.abs().sum() > 0 and zero.weights[-1].detach().ne(0).any()


def test_init_option_overrides_the_architectures_own() -> None:
    """review-mtqn keeps PyTorch's default init unless told; ``init="xavier"`` gives Xavier bounds."""

    def bound(net: AtariQNetwork, i: int) -> float:
        return float(net.weights[i].detach().abs().max())

    fan_in, fan_out = 3136, 1024  # the 3136 -> 1024 sigmoid layer (index 3, after three convolutions)
    torch_net = _net("review-mtqn")
    xavier = AtariQNetwork(BREAKOUT_PONG, AtariNetworkConfig(arch="review-mtqn", init="xavier"))
    assert torch_net.init == "torch" and xavier.init == "xavier"
    assert 0.99 / fan_in**0.5 < bound(torch_net, 3) <= 1 / fan_in**0.5
    xavier_bound = 2**0.5 * (6 / (fan_in + fan_out)) ** 0.5
    assert 0.99 * xavier_bound < bound(xavier, 3) <= xavier_bound
    assert AtariQNetwork([6], AtariNetworkConfig(arch="nature", init="xavier")).init == "xavier"
    with pytest.raises(UserError, match="unknown init 'he'"):
        AtariQNetwork(BREAKOUT_PONG, AtariNetworkConfig(arch="review-mtqn", init="he"))
