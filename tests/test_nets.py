"""The network: parameter counts, padding, masking, head isolation, shared gradients, member independence."""

from __future__ import annotations

import pytest
import torch

from mtdqn.config import ARCH_PRESETS, TASK_PRESETS, NetworkConfig
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.tasks import TaskSpec, task_specs


@pytest.fixture(scope="module")
def deramo_specs() -> list[TaskSpec]:
    return task_specs(TASK_PRESETS["deramo-gym"])


def test_paper_parameter_counts(deramo_specs: list[TaskSpec]) -> None:
    net = MultiTaskQNetwork(deramo_specs, NetworkConfig())
    # Spec 1.4: 1,680 (input layers) + 12,960 (shared) + 1,215 (heads with A_max = 3 outputs each).
    assert net.parameter_count(count_padded_actions=True) == 15_855
    assert net.parameter_count() == 15_855 - 81 * 2  # Cart-Pole and Car-On-Hill have no third action
    single = {
        "Cart-Pole": 13_522,
        "Acrobot": 13_763,
        "Mountain-Car": 13_443,
        "Car-On-Hill": 13_362,
        "Inverted-Pendulum": 13_443,
    }
    for spec in deramo_specs:
        assert MultiTaskQNetwork([spec], NetworkConfig()).parameter_count() == single[spec.name]
    alone = MultiTaskQNetwork(deramo_specs, NetworkConfig(), share=False)
    assert alone.parameter_count() == sum(single.values())


def test_review_counts(deramo_specs: list[TaskSpec]) -> None:
    cartpole = deramo_specs[0]
    assert MultiTaskQNetwork([cartpole], ARCH_PRESETS["tiny"]).parameter_count() == 130
    # The review's control replica R1 (spec review-code 3.4): 14,808 for CartPole, Acrobot, MountainCar.
    assert MultiTaskQNetwork(deramo_specs[:3], NetworkConfig()).parameter_count() == 14_808


def test_feature_width_shrinks_only_the_feature_layer(deramo_specs: list[TaskSpec]) -> None:
    """The review's failing variant: 10 shared features. Inputs 1,200 + shared 80x80 6,480 + 80->10 810 +
    heads 11 x (2 + 3 + 3) = 88."""
    net = MultiTaskQNetwork(deramo_specs[:3], NetworkConfig(feature_width=10))
    assert net.parameter_count() == 8_578
    obs = torch.zeros(1, 3, 4, net.obs_max)
    assert net.features(obs).shape == (1, 3, 4, 10) and net(obs).shape == (1, 3, 4, 3)
    default = NetworkConfig()
    assert default.n_features == 80
    from mtdqn.config import Config

    # runs from before the option keep their fingerprint; a set width is part of it
    tasks = TASK_PRESETS["review-control"]
    plain = Config(tasks=tasks).learning_fingerprint()
    assert plain == Config(tasks=tasks, network=NetworkConfig(feature_width=0)).learning_fingerprint()
    assert plain != Config(tasks=tasks, network=NetworkConfig(feature_width=10)).learning_fingerprint()


def _obs(net: MultiTaskQNetwork, batch: int = 5, members: int = 1) -> torch.Tensor:
    obs = torch.randn(members, net.n_tasks, batch, net.obs_max)
    for t, d in enumerate(net.obs_dims):
        obs[:, t, :, d:] = 0.0
    return obs


def test_padding_columns_are_never_read(deramo_specs: list[TaskSpec]) -> None:
    net = MultiTaskQNetwork(deramo_specs, NetworkConfig(), seeds=1)
    obs = _obs(net)
    garbage = obs.clone()
    for t, d in enumerate(net.obs_dims):
        garbage[:, t, :, d:] = 1e3 * torch.randn_like(garbage[:, t, :, d:])
    torch.testing.assert_close(net(obs), net(garbage), rtol=0, atol=0)
    for t, d in enumerate(net.obs_dims):
        assert torch.count_nonzero(net.weights[0][0, t, :, d:]) == 0


def test_init_is_the_papers_xavier(deramo_specs: list[TaskSpec]) -> None:
    net = MultiTaskQNetwork(deramo_specs, NetworkConfig(), seeds=0)
    shared = net.weights[1][0]  # 80 -> 80, gain sqrt(2): bound sqrt(2) * sqrt(6 / 160)
    bound = 2**0.5 * (6 / 160) ** 0.5
    assert shared.abs().max() <= bound
    assert shared.abs().max() > 0.95 * bound
    assert shared.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
    head = net.weights[3][0]  # 80 -> 3, gain 1
    assert head.abs().max() <= (6 / 83) ** 0.5


def test_members_are_initialised_independently(deramo_specs: list[TaskSpec]) -> None:
    pop = MultiTaskQNetwork(deramo_specs, NetworkConfig(), n_members=3, seeds=7)
    for k in range(3):
        alone = MultiTaskQNetwork(deramo_specs, NetworkConfig(), n_members=k + 1, seeds=7)
        for w_pop, w_alone in zip(pop.weights, alone.weights, strict=True):
            torch.testing.assert_close(w_pop[k], w_alone[k], rtol=0, atol=0)
    assert not torch.equal(pop.weights[1][0], pop.weights[1][1])


def _task_loss_grads(net: MultiTaskQNetwork, task: int) -> list[torch.Tensor]:
    net.zero_grad(set_to_none=False)
    q = net(_obs(net))
    q[:, task, :, : net.n_actions[task]].sum().backward()
    return [w.grad.clone() for w in net.weights]


def test_head_isolation_and_shared_gradients(deramo_specs: list[TaskSpec]) -> None:
    net = MultiTaskQNetwork(deramo_specs, NetworkConfig(), seeds=2)
    for task in range(net.n_tasks):
        grads = _task_loss_grads(net, task)
        input_grad, shared1, shared2, head_grad = grads
        for other in range(net.n_tasks):
            if other != task:  # task's loss leaves every other task's input layer and head unchanged
                assert torch.count_nonzero(head_grad[0, other]) == 0
                assert torch.count_nonzero(input_grad[0, other]) == 0
        assert torch.count_nonzero(head_grad[0, task]) > 0
        # Every task's gradient reaches both shared layers.
        assert shared1.abs().sum() > 0 and shared2.abs().sum() > 0
        # Padded actions of the task's head get no gradient from its valid outputs.
        assert torch.count_nonzero(head_grad[0, task, net.n_actions[task] :]) == 0


def test_single_mode_shares_nothing(deramo_specs: list[TaskSpec]) -> None:
    net = MultiTaskQNetwork(deramo_specs, NetworkConfig(), share=False, seeds=2)
    assert all(not layer.shared for layer in net.plan)
    grads = _task_loss_grads(net, 1)
    for g in grads:
        for other in (0, 2, 3, 4):
            assert torch.count_nonzero(g[0, other]) == 0
        assert torch.count_nonzero(g[0, 1]) > 0


def test_features_are_the_last_shared_layer(deramo_specs: list[TaskSpec]) -> None:
    net = MultiTaskQNetwork(deramo_specs, NetworkConfig(), seeds=2)
    feats = net.features(_obs(net, batch=4))
    assert feats.shape == (1, 5, 4, 80)
    assert feats.min() > 0 and feats.max() < 1  # sigmoid features
