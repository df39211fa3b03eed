"""`--task-balance`: param-norm (loss weights equalising the tasks' gradient norms on the shared layers) and
feature-norm (each task's gradient at the shared features rescaled to the tasks' mean norm)."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
from conftest import small_config

from mtdqn.analysis.gradients import replay_batch, task_gradients
from mtdqn.cli import main
from mtdqn.config import Config, LearnerConfig, NetworkConfig
from mtdqn.config_atari import AtariNetworkConfig
from mtdqn.errors import UserError
from mtdqn.learner import DQNLearner
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.nets_atari import AtariQNetwork
from mtdqn.replay import Batch
from mtdqn.seeding import derive_rng
from mtdqn.task_balance import (
    PULL_DECAY,
    ParamNormWeights,
    equal_feature_pull,
    equalising_factors,
    feature_norm_scales,
    per_task_gradients,
    shared_parameters,
)
from mtdqn.tasks import TaskSpec
from mtdqn.train import Trainer
from mtdqn.transfer import set_shared_trainable

SPECS = [TaskSpec("two-actions", 4, 2, 0.9, 10), TaskSpec("three-actions", 6, 3, 0.5, 10)]


def test_the_factors_of_known_gradients():
    g = torch.zeros(2, 3, 1, 2)  # two members, three tasks, one sample, two features
    g[0, 0, 0] = torch.tensor([3.0, 4.0])  # norm 5
    g[0, 1, 0] = torch.tensor([0.0, 1.0])  # norm 1
    g[0, 2, 0] = torch.tensor([0.0, 3.0])  # norm 3: mean 3
    g[1, 0, 0] = torch.tensor([2.0, 0.0])  # norm 2; task 1 zero; task 2 norm 6: mean over the non-zero ones 4
    g[1, 2, 0] = torch.tensor([0.0, -6.0])
    expected = torch.tensor([[3 / 5, 3.0, 1.0], [2.0, 1.0, 4 / 6]])
    torch.testing.assert_close(feature_norm_scales(g), expected, rtol=1e-7, atol=0)
    only = torch.zeros(1, 2, 1, 2)
    only[0, 1, 0, 0] = 7.0  # one task's gradient alone (the analysis' per-task backward): left as it is
    assert feature_norm_scales(only).tolist() == [[1.0, 1.0]]
    assert feature_norm_scales(torch.zeros(1, 2, 3, 4)).tolist() == [[1.0, 1.0]]


def test_forward_is_the_identity_and_backward_equalises_the_task_blocks():
    x = torch.randn(2, 3, 5, 4, requires_grad=True)
    y = equal_feature_pull(x)
    assert torch.equal(y, x)
    upstream = torch.randn(2, 3, 5, 4) * torch.tensor([1.0, 10.0, 0.1]).reshape(1, 3, 1, 1)
    (grad,) = torch.autograd.grad(y, x, upstream)
    raw = upstream.norm(dim=(2, 3))
    balanced = grad.norm(dim=(2, 3))
    torch.testing.assert_close(balanced, raw.mean(1, keepdim=True).expand(2, 3), rtol=1e-5, atol=0)
    for s in range(2):  # directions unchanged: each block only rescaled
        for t in range(3):
            cos = torch.nn.functional.cosine_similarity(grad[s, t].flatten(), upstream[s, t].flatten(), dim=0)
            assert cos.item() == pytest.approx(1.0, abs=1e-6)


def _control_batch(n_members: int, n: int = 8) -> Batch:
    gen = torch.Generator().manual_seed(3)
    obs, next_obs = torch.randn(2, n_members, 2, n, 6, generator=gen)
    obs[:, 0, :, 4:] = next_obs[:, 0, :, 4:] = 0
    action = torch.stack([torch.randint(0, k, (n_members, n), generator=gen) for k in (2, 3)], dim=1)
    reward = torch.randn(n_members, 2, n, generator=gen) * torch.tensor([1.0, 20.0]).reshape(1, 2, 1)
    terminal = (torch.rand(n_members, 2, n, generator=gen) < 0.3).float()
    return Batch(obs, action, reward, next_obs, terminal)


def _atari_batch(n: int = 3) -> Batch:
    gen = torch.Generator().manual_seed(4)
    obs, next_obs = torch.randint(0, 256, (2, 1, 2, n, 4, 84, 84), dtype=torch.uint8, generator=gen)
    action = torch.stack([torch.randint(0, k, (1, n), generator=gen) for k in (4, 6)], dim=1)
    reward = torch.tensor([0.0, 5.0]).reshape(1, 2, 1).expand(1, 2, n).contiguous()
    return Batch(obs, action, reward, next_obs, torch.zeros(1, 2, n))


def _expected_balanced_grads(learner: DQNLearner, batch: Batch) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The gradient of every parameter by the rule, written out: each task's gradient (its term of the joint
    loss, taken alone), times the mean over tasks of the norms at the features over its own norm, on
    every parameter but its heads'; and those factors ``(S, T)``."""
    feats: list[torch.Tensor] = []

    def keep(x: torch.Tensor) -> torch.Tensor:
        feats.append(x)
        return x

    params = list(learner.online.parameters())
    _, per_task, _ = learner.loss(batch, feature_hook=keep)
    n_tasks = per_task.shape[1]
    per_task_grads, norms = [], []
    for t in range(n_tasks):
        at_features, *grads = torch.autograd.grad(per_task[:, t].sum() / n_tasks, [feats[0], *params],
                                                  retain_graph=True)  # fmt: skip
        norms.append(at_features[:, t].flatten(1).norm(dim=1))
        per_task_grads.append(grads)
    norm = torch.stack(norms, dim=1)  # (S, T)
    factor = norm.mean(1, keepdim=True) / norm
    heads = {id(w) for layer, w, b in zip(learner.online.plan, learner.online.weights, learner.online.biases,
                                          strict=True) if layer.role == "head" for w in (w, b)}  # fmt: skip
    expected = []
    for i, p in enumerate(params):
        total = torch.zeros_like(p)
        for t in range(n_tasks):
            g = per_task_grads[t][i]
            if id(p) not in heads:  # a parameter's leading dimension is the member's
                g = g * factor[:, t].reshape(-1, *[1] * (g.dim() - 1))
            total += g
        expected.append(total)
    return expected, factor


@pytest.mark.parametrize("kind", ["control", "atari"])
def test_the_update_gives_every_parameter_the_balanced_gradient(kind):
    torch.manual_seed(0)
    if kind == "control":
        nets = [MultiTaskQNetwork(SPECS, NetworkConfig(width=16), n_members=2, seeds=[0, 5]) for _ in "ab"]
        batch, gammas = _control_batch(2), [0.9, 0.5]
    else:
        nets = [AtariQNetwork([4, 6], AtariNetworkConfig(arch="review-exp1")) for _ in "ab"]
        batch, gammas = _atari_batch(), [0.99, 0.99]
    plain = DQNLearner(nets[0], gammas, LearnerConfig(kernels="torch"))
    balanced = DQNLearner(nets[1], gammas, LearnerConfig(task_balance="feature-norm", kernels="torch"))
    assert balanced.manual is None  # autograd's backward through the hook (the numpy kernels: test_backprop)
    expected, factor = _expected_balanced_grads(plain, batch)
    assert (factor.max() / factor.min()).item() > 1.2  # the tasks pulled unequally: the rule does something
    torch.testing.assert_close(balanced.online(batch.obs), plain.online(batch.obs), rtol=0, atol=0)
    loss_plain = plain.loss(batch)[0]
    loss, _, _ = balanced.loss(batch)
    assert loss.item() == loss_plain.item()  # the loss is the paper's; only its backward is reshaped
    loss.backward()
    for p, e in zip(balanced.online.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=2e-4, atol=1e-7)


def test_the_analysis_measures_the_gradients_the_shared_layers_receive(tmp_path):
    config = small_config(epochs=1, seeds=[0, 1], torch_threads=1)
    config.learner.task_balance = "feature-norm"
    trainer = Trainer.create(config, tmp_path / "run", progress=False)
    trainer.run()
    batch = replay_batch(trainer, [derive_rng(s, "test") for s in trainer.seeds], 16)
    grads = task_gradients(trainer.learner, batch)
    trainer.learner.feature_hook = None  # the same weights, measured as an unbalanced run would be
    raw = task_gradients(trainer.learner, batch)
    feats: list[torch.Tensor] = []
    _, per_task, _ = trainer.learner.loss(batch, feature_hook=lambda x: feats.append(x) or x)
    (at_features,) = torch.autograd.grad(per_task.sum(), feats[0])
    norm = at_features.norm(dim=(2, 3))
    factor = norm.mean(1, keepdim=True) / norm
    assert (factor.max() / factor.min()).item() > 1.2
    torch.testing.assert_close(grads, raw * factor.unsqueeze(-1), rtol=1e-5, atol=1e-8)


def test_config_refusals_and_fingerprint():
    tasks = small_config().tasks
    plain = Config(tasks=tasks)
    saved = plain.to_dict()
    del saved["learner"]["task_balance"]  # a run saved before the options: same fingerprint, resumable
    del saved["learner"]["task_balance_every"]
    del saved["learner"]["task_balance_max_weight"]
    assert Config.from_dict(saved).learning_fingerprint() == plain.learning_fingerprint()
    balanced = Config(tasks=tasks, learner=LearnerConfig(task_balance="feature-norm"))
    balanced.validate()
    assert balanced.learning_fingerprint() != plain.learning_fingerprint()
    bad = Config(tasks=tasks, mode="single", learner=LearnerConfig(task_balance="feature-norm"))
    with pytest.raises(UserError, match=r"single-task baseline \(--mode single\) has none"):
        bad.validate()
    Config(tasks=tasks, learner=LearnerConfig(task_balance="param-norm", kernels="numpy")).validate()
    with pytest.raises(
        UserError, match="unknown task balance 'norm'; use one of none, param-norm, feature-norm"
    ):
        Config(tasks=tasks, learner=LearnerConfig(task_balance="norm")).validate()
    with pytest.raises(UserError, match="task_balance_every is 0; give a positive number of updates"):
        Config(tasks=tasks, learner=LearnerConfig(task_balance="param-norm", task_balance_every=0)).validate()
    # the interval is part of a param-norm run's fingerprint only
    assert Config(tasks=tasks, learner=LearnerConfig(task_balance_every=5)).learning_fingerprint() == (
        plain.learning_fingerprint()
    )
    param = [Config(tasks=tasks, learner=LearnerConfig(task_balance="param-norm", task_balance_every=n))
             for n in (100, 50)]  # fmt: skip
    assert len({plain.learning_fingerprint(), balanced.learning_fingerprint(),
                *(c.learning_fingerprint() for c in param)}) == 4  # fmt: skip


def test_train_takes_the_flag_saves_it_and_refuses_it_where_it_cannot_apply(tmp_path, capsys):
    base = ["train", "--task", "CartPole-v1", "--task", "Acrobot-v1", "--epochs", "1",
            "--steps-per-epoch", "30", "--eval-steps", "20", "--warmup", "20", "--batch-size", "8",
            "--no-progress", "--no-background-eval", "--threads", "1",
            "--runs-dir", str(tmp_path)]  # fmt: skip
    assert main([*base, "--name", "plain"]) == 0
    assert main([*base, "--task-balance", "feature-norm", "--name", "balanced"]) == 0
    saved = json.loads((tmp_path / "balanced" / "config.json").read_text())
    assert saved["config"]["learner"]["task_balance"] == "feature-norm"
    param = ["--task-balance", "param-norm", "--task-balance-every", "5", "--task-balance-max-weight", "4"]
    assert main([*base, *param, "--name", "param"]) == 0
    saved = json.loads((tmp_path / "param" / "config.json").read_text())["config"]["learner"]
    assert (saved["task_balance"], saved["task_balance_every"], saved["task_balance_max_weight"]) == (
        "param-norm", 5, 4.0)  # fmt: skip
    assert Trainer.load(tmp_path / "param", progress=False).learner.task_weights.max_weight == 4.0
    nets = [Trainer.load(tmp_path / k, progress=False).net.state_dict() for k in ("plain", "balanced")]
    assert not all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])  # it changes the learning
    assert main(["train", "--resume", str(tmp_path / "balanced"), "--epochs", "2"]) == 0
    capsys.readouterr()
    assert main([*base, "--task-balance", "feature-norm", "--mode", "single", "--name", "s"]) == 2
    err = capsys.readouterr().err
    assert "drop --task-balance or use --mode multi" in err and "Traceback" not in err
    assert main([*base, "--task-balance", "param-norm", "--kernels", "numpy", "--name", "n"]) == 0
    assert Trainer.load(tmp_path / "n", progress=False).learner.manual is not None
    assert main(["train", "--resume", str(tmp_path / "plain"), "--task-balance", "feature-norm"]) == 2
    assert "--task-balance" in capsys.readouterr().err


# --- param-norm ------------------------------------------------------------------------------------------


def test_equalising_factors_of_known_norms():
    norm = torch.tensor([[2.0, 6.0], [0.0, 3.0], [1.0, 1.0]])
    expected = torch.tensor([[2.0, 4 / 6], [1.0, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(equalising_factors(norm), expected, rtol=1e-7, atol=0)


def _param_norm_learner(every: int = 100, kernels: str = "torch") -> DQNLearner:
    net = MultiTaskQNetwork(SPECS, NetworkConfig(width=16), n_members=2, seeds=[0, 5])
    cfg = LearnerConfig(task_balance="param-norm", task_balance_every=every, kernels=kernels)
    return DQNLearner(net, [0.9, 0.5], cfg)


def _shared_norms(learner: DQNLearner, batch: Batch) -> torch.Tensor:
    """Each task's gradient norm on the shared parameters, with the learner's current weights (S, T)."""
    per_task = learner.loss(batch)[1]
    return per_task_gradients(per_task, shared_parameters(learner.online), keep_graph=False).norm(dim=-1)


@pytest.mark.parametrize("kernels", ["torch", "numpy"])
def test_param_norm_weighs_each_task_so_that_their_shared_gradients_are_equal(kernels):
    learner = _param_norm_learner(kernels=kernels)
    batch = _control_batch(2)
    assert learner.kernels == kernels and learner.task_weights.measurements == 0
    params = list(learner.online.parameters())
    per_task = learner.loss(batch)[1]
    per_param = [torch.autograd.grad(per_task[:, t].sum() / 2, params, retain_graph=True) for t in range(2)]
    norm = _shared_norms(learner, batch)
    assert (norm.max(1).values / norm.min(1).values).min().item() > 1.2  # unequal: the rule does something
    learner.update(batch)
    weights = learner.task_weights
    assert weights.measurements == 1
    torch.testing.assert_close(weights.pull, norm, rtol=2e-6, atol=0)
    torch.testing.assert_close(weights.weight, norm.mean(1, keepdim=True) / norm, rtol=2e-6, atol=0)
    for i, p in enumerate(params):  # the step's gradient: sum_t w_t g_t on every parameter, heads included
        w = weights.weight.reshape(2, 2, *[1] * (p.dim() - 1))
        expected = sum(w[:, t] * per_param[t][i] for t in range(2))
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-7)
    pulls = norm * weights.weight  # each task's weighted gradient norm on the shared layers
    torch.testing.assert_close(pulls[:, 0], pulls[:, 1], rtol=2e-6, atol=0)


@pytest.mark.parametrize("kernels", ["torch", "numpy"])
def test_param_norm_measures_every_n_updates_into_a_moving_average(kernels):
    learner = _param_norm_learner(every=2, kernels=kernels)
    batches = [_control_batch(2), _control_batch(2, n=12)]
    first = _shared_norms(learner, batches[0])
    learner.update(batches[0])
    weight = learner.task_weights.weight.clone()
    learner.update(batches[1])  # update 1: no measurement
    assert learner.task_weights.measurements == 1 and torch.equal(learner.task_weights.weight, weight)
    learner.task_weights.weight = torch.ones(2, 2)  # the raw norms of update 2's batch, then its weights
    second = _shared_norms(learner, batches[0])
    learner.task_weights.weight = weight
    learner.update(batches[0])
    pull = first * PULL_DECAY + second * (1 - PULL_DECAY)
    assert learner.task_weights.measurements == 2
    torch.testing.assert_close(learner.task_weights.pull, pull, rtol=2e-6, atol=0)
    weights = learner.task_weights
    torch.testing.assert_close(weights.weight, equalising_factors(weights.pull), rtol=0, atol=0)
    torch.testing.assert_close(weights.weight, equalising_factors(pull), rtol=2e-6, atol=0)


def test_param_norm_weights_are_bounded():
    norm = torch.tensor([[1e-9, 1.0, 3.0], [2.0, 2.0, 2.0]])  # a task whose gradient has all but vanished
    bounded = ParamNormWeights(2, 3, every=1, device=torch.device("cpu"), max_weight=10.0)
    bounded.record(norm)
    mean = (1.0 + 1e-9 + 3.0) / 3
    torch.testing.assert_close(bounded.weight, torch.tensor([[10.0, mean, mean / 3], [1.0, 1.0, 1.0]]))
    unbounded = ParamNormWeights(2, 3, every=1, device=torch.device("cpu"))  # 0: runs saved before the bound
    unbounded.record(norm)
    assert unbounded.weight[0, 0].item() == pytest.approx(mean / 1e-9, rel=1e-5)  # ~1.3e9
    state = bounded.state_dict()
    again = ParamNormWeights(2, 3, every=1, device=torch.device("cpu"), max_weight=10.0)
    again.load_state_dict(state)
    assert torch.equal(again.weight, bounded.weight)


def test_the_bound_is_saved_refused_when_nonsense_and_old_runs_load_unbounded(tmp_path, capsys):
    tasks = small_config().tasks
    param = Config(tasks=tasks, learner=LearnerConfig(task_balance="param-norm"))
    assert param.learner.task_balance_max_weight == 10.0
    saved = param.to_dict()
    del saved["learner"]["task_balance_max_weight"]  # a param-norm run saved before the bound
    old = Config.from_dict(saved)
    assert old.learner.task_balance_max_weight == 0.0
    no_bound = LearnerConfig(task_balance="param-norm", task_balance_max_weight=0)
    unbounded = Config(tasks=tasks, learner=no_bound)
    assert old.learning_fingerprint() == unbounded.learning_fingerprint() != param.learning_fingerprint()
    for bad in (0.5, -1.0, float("nan"), float("inf")):
        with pytest.raises(UserError, match="give a number of at least 1, or 0 for no bound"):
            Config(tasks=tasks, learner=LearnerConfig(task_balance="param-norm", task_balance_max_weight=bad)
                   ).validate()  # fmt: skip
    base = ["train", "--task", "CartPole-v1", "--task", "Acrobot-v1", "--runs-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:  # argparse's own refusal
        main([*base, "--task-balance", "param-norm", "--task-balance-max-weight", "0.5"])
    assert exit_.value.code == 2
    assert "0.5 is not 0 (no bound) or a number of at least 1" in capsys.readouterr().err


def test_param_norm_leaves_frozen_shared_layers_alone():
    weights = ParamNormWeights(2, 3, every=1, device=torch.device("cpu"))
    weights.measure(torch.ones(2, 3), [])
    assert weights.measurements == 0 and torch.equal(weights.weight, torch.ones(2, 3))
    for kernels in ("torch", "numpy"):  # a transfer with frozen shared layers: nothing measured
        learner = _param_norm_learner(every=1, kernels=kernels)
        set_shared_trainable(learner.online, False)
        learner.update(_control_batch(2))
        assert learner.task_weights.measurements == 0
        assert torch.equal(learner.task_weights.weight, torch.ones(2, 2))


def test_param_norm_resumes_with_its_weights(tmp_path):
    def config(epochs: int):
        c = small_config(epochs=epochs, seeds=[0, 1], torch_threads=1)
        c.learner.task_balance, c.learner.task_balance_every = "param-norm", 7
        return c

    Trainer.create(config(2), tmp_path / "straight", progress=False).run()
    Trainer.create(config(1), tmp_path / "split", progress=False).run()
    Trainer.resume(tmp_path / "split", epochs=2, progress=False).run()
    straight = Trainer.load(tmp_path / "straight", progress=False)
    split = Trainer.load(tmp_path / "split", progress=False)
    assert straight.learner.task_weights.measurements > 2
    for a, b in ((straight.learner.task_weights, split.learner.task_weights),):
        assert a.measurements == b.measurements and torch.equal(a.weight, b.weight)
        assert torch.equal(a.pull, b.pull) and not torch.equal(a.weight, torch.ones_like(a.weight))
    nets = straight.net.state_dict(), split.net.state_dict()
    assert all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])
    # task_weights.csv: epochs 0-2 of both members and tasks, the same with and without the resume
    table = (tmp_path / "straight" / "task_weights.csv").read_text()
    assert table == (tmp_path / "split" / "task_weights.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(table)))
    assert [(r["epoch"], r["member"], r["task"]) for r in rows] == [
        (str(e), str(m), str(t)) for e in range(3) for m in range(2) for t in range(3)
    ]
    assert {(r["measurements"], r["weight"]) for r in rows if r["epoch"] == "0"} == {("0", "1.0")}
    last = torch.tensor([float(r["weight"]) for r in rows if r["epoch"] == "2"]).reshape(2, 3)
    assert torch.equal(last, straight.learner.task_weights.weight)
    measured = {int(r["measurements"]) for r in rows if r["epoch"] == "2"}
    assert measured == {straight.learner.task_weights.measurements}
    batch = replay_batch(straight, [derive_rng(s, "test") for s in straight.seeds], 16)
    grads = task_gradients(straight.learner, batch)
    weight = straight.learner.task_weights.weight
    straight.learner.task_weights = None  # the same weights, measured as an unbalanced run would be
    raw = task_gradients(straight.learner, batch)
    torch.testing.assert_close(grads, raw * weight.unsqueeze(-1), rtol=1e-6, atol=0)
