"""The written-out backward (``--kernels numpy``) against autograd, and how the kernels are chosen."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mtdqn.config import Config, LearnerConfig, NetworkConfig, RunConfig, task_preset
from mtdqn.errors import UserError
from mtdqn.learner import DQNLearner
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.replay import Batch
from mtdqn.tasks import TaskSpec
from mtdqn.transfer import set_shared_trainable

SPECS = [
    TaskSpec("four-obs", 4, 2, 0.9, 10),
    TaskSpec("six-obs", 6, 3, 0.5, 10),
    TaskSpec("five-obs", 5, 2, 0.99, 10),
]

NETWORKS = {
    "deramo": NetworkConfig(width=16),
    "deep-tanh": NetworkConfig(
        width=12, feature_width=7, n_input_layers=2, n_shared_layers=3, n_head_layers=2,
        hidden_activation="tanh", feature_activation="relu",
    ),
    "identity-features": NetworkConfig(width=10, hidden_activation="sigmoid", feature_activation="identity"),
}  # fmt: skip


def _batch(n_members: int, n: int = 9, seed: int = 0) -> Batch:
    """Rows of a packed replay (strided views, as the trainer gives them), padded per task."""
    gen = torch.Generator().manual_seed(seed)
    shape = (n_members, len(SPECS), n)
    rows = torch.randn(*shape, 15, generator=gen)
    for t, spec in enumerate(SPECS):
        rows[:, t, :, spec.obs_dim : 6] = 0
        rows[:, t, :, 6 + spec.obs_dim : 12] = 0
    action = torch.stack([torch.randint(0, s.n_actions, shape[::2], generator=gen) for s in SPECS], 1)
    return Batch(
        obs=rows[..., :6],
        action=action,
        reward=rows[..., 12] * 2,
        next_obs=rows[..., 6:12],
        terminal=(rows[..., 14] > 1.0).float(),
    )


def _learner(kernels: str, network: NetworkConfig, share: bool, n_members: int = 2, **kw) -> DQNLearner:
    net = MultiTaskQNetwork(SPECS, network, share=share, n_members=n_members, seeds=[3, 8, 5][:n_members])
    return DQNLearner(net, [s.gamma for s in SPECS], LearnerConfig(kernels=kernels, batch_size=9, **kw))


@pytest.mark.parametrize("double_dqn", [False, True])
@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_written_out_backward_gives_autograds_gradients(network: str, share: bool, double_dqn: bool) -> None:
    reference = _learner("torch", NETWORKS[network], share, double_dqn=double_dqn, huber_delta=0.5)
    manual = _learner("numpy", NETWORKS[network], share, double_dqn=double_dqn, huber_delta=0.5)
    assert reference.manual is None and manual.manual is not None
    with torch.no_grad():  # a target network unlike the online one, so the target forward is checked
        for lrn in (reference, manual):
            for w in lrn.target.weights:
                w.mul_(-0.7)
    batch = _batch(2)
    for lrn in (reference, manual):
        lrn.update(batch)
    for p_ref, p_man in zip(reference.online.parameters(), manual.online.parameters(), strict=True):
        torch.testing.assert_close(p_man.grad, p_ref.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(p_man, p_ref, rtol=1e-5, atol=1e-6)
    stats_ref, stats_man = reference.pop_stats(), manual.pop_stats()
    for key in ("loss", "mean_q"):
        torch.testing.assert_close(stats_man[key], stats_ref[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("balance", ["feature-norm", "param-norm"])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_written_out_backward_balances_the_tasks_as_autograd_does(network: str, balance: str) -> None:
    """Both --task-balance rules with the numpy kernels: the same gradients, weights and task weights as with
    autograd over three updates (param-norm measuring at updates 0 and 2)."""
    kw = {"task_balance": balance, "task_balance_every": 2}
    reference = _learner("torch", NETWORKS[network], True, **kw)
    manual = _learner("numpy", NETWORKS[network], True, **kw)
    assert manual.manual is not None
    for k in range(3):
        batch = _batch(2, seed=k)
        for lrn in (reference, manual):
            lrn.update(batch)
        for p_ref, p_man in zip(reference.online.parameters(), manual.online.parameters(), strict=True):
            torch.testing.assert_close(p_man.grad, p_ref.grad, rtol=1e-4, atol=1e-7)
            torch.testing.assert_close(p_man, p_ref, rtol=1e-5, atol=1e-6)
    if balance == "param-norm":
        weights = manual.task_weights
        assert weights.measurements == reference.task_weights.measurements == 2
        assert (weights.weight.max() / weights.weight.min()).item() > 1.2  # unequal tasks: weights matter
        torch.testing.assert_close(weights.pull, reference.task_weights.pull, rtol=1e-5, atol=0)
        torch.testing.assert_close(weights.weight, reference.task_weights.weight, rtol=1e-5, atol=0)


def test_padded_inputs_and_padded_actions_get_exactly_zero_gradient() -> None:
    learner = _learner("numpy", NETWORKS["deramo"], share=True)
    learner.update(_batch(2))
    first, head = learner.online.weights[0].grad, learner.online.weights[-1].grad
    assert first[:, 0, :, 4:].abs().max() == 0 and first[:, 2, :, 5:].abs().max() == 0
    assert first[:, 0, :, :4].abs().max() > 0
    assert head[:, 0, 2:].abs().max() == 0 and head[:, 2, 2:].abs().max() == 0
    assert learner.online.biases[-1].grad[:, 0, :, 2:].abs().max() == 0


def test_a_member_gets_the_same_bits_alone_and_in_a_population() -> None:
    alone = _learner("numpy", NETWORKS["deramo"], share=True, n_members=1)
    pair = _learner("numpy", NETWORKS["deramo"], share=True, n_members=2)
    batch = _batch(2)
    first = Batch(*(getattr(batch, f.name)[:1] for f in dataclasses.fields(Batch)))
    for _ in range(3):
        alone.update(first)
        pair.update(batch)
    for p_alone, p_pair in zip(alone.online.parameters(), pair.online.parameters(), strict=True):
        assert torch.equal(p_alone[0], p_pair[0])


def test_frozen_layers_get_no_gradient_and_do_not_move() -> None:
    learner = _learner("numpy", NETWORKS["deramo"], share=True)
    set_shared_trainable(learner.online, False)
    shared = [i for i, layer in enumerate(learner.online.plan) if layer.shared]
    before = [learner.online.weights[i].detach().clone() for i in shared]
    learner.update(_batch(2))
    learner.update(_batch(2, seed=1))
    for i, w in zip(shared, before, strict=True):
        assert learner.online.weights[i].grad is None and torch.equal(learner.online.weights[i], w)
        assert learner.optimizer.state.get(learner.online.weights[i]) in (None, {})
    assert learner.online.weights[0].grad is not None
    set_shared_trainable(learner.online, True)
    learner.update(_batch(2, seed=2))
    assert not torch.equal(learner.online.weights[shared[0]], before[0])


def test_the_buffers_follow_the_batch_size() -> None:
    reference, manual = (_learner(k, NETWORKS["deramo"], share=True) for k in ("torch", "numpy"))
    for n in (9, 4, 9):
        batch = _batch(2, n=n, seed=n)
        torch.testing.assert_close(manual.td_target(batch), reference.td_target(batch), rtol=1e-6, atol=1e-6)


def test_auto_picks_numpy_for_float32_control_networks_on_the_cpu_only() -> None:
    assert _learner("auto", NETWORKS["deramo"], share=True).kernels == "numpy"
    assert _learner("auto", NETWORKS["deramo"], share=True, precision="bf16").kernels == "torch"
    assert _learner("torch", NETWORKS["deramo"], share=True).kernels == "torch"
    with pytest.raises(UserError, match="--kernels numpy"):
        _learner("numpy", NETWORKS["deramo"], share=True, precision="bf16")


def _config(**learner) -> Config:
    return Config(
        tasks=task_preset("review-control"),
        learner=LearnerConfig(**learner),
        run=dataclasses.replace(RunConfig(), epochs=1),
    )


def test_a_config_saved_before_kernels_existed_loads_as_torch_with_its_old_fingerprint() -> None:
    saved = _config(kernels="torch").to_dict()
    del saved["learner"]["kernels"]
    old = Config.from_dict(json.loads(json.dumps(saved)))
    assert old.learner.kernels == "torch"
    assert old.learning_fingerprint() == _config(kernels="torch").learning_fingerprint()
    assert _config().learner.kernels == "auto"
    assert _config().learning_fingerprint() != old.learning_fingerprint()


@pytest.mark.parametrize(
    ("learner", "needle"),
    [({"kernels": "blas"}, "unknown kernels 'blas'"), ({"kernels": "numpy", "precision": "bf16"}, "float32")],
)
def test_bad_kernels_are_refused(learner: dict, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        _config(**learner).validate()


def test_members_sliced_over_threads_give_the_same_bits() -> None:
    """With several threads the members' products run in slices at once; each is the same call."""
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            learner = _learner("numpy", NETWORKS["deramo"], share=True, n_members=3)
            for seed in range(3):
                learner.update(_batch(3, seed=seed))
            assert learner.manual._slices.threads == threads
            results.append([p.detach().clone() for p in learner.online.parameters()])
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))
