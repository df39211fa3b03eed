"""MemberwiseAdam: a member's step is the same, bit for bit, alone and beside other members."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from mtdqn.adam import VECTOR_FLOATS, MemberwiseAdam, whole_vectors
from mtdqn.config import LearnerConfig, arch_preset, task_preset
from mtdqn.learner import DQNLearner
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.replay import Batch
from mtdqn.tasks import task_specs


def _step(params: list[torch.Tensor], grads, exp_avgs, exp_avg_sqs, n_members: int, step: int) -> list:
    """One MemberwiseAdam step from the given state; the parameters and both moments after it."""
    params = [p.clone().requires_grad_(True) for p in params]
    opt = MemberwiseAdam(params, n_members, lr=1e-3, eps=1e-8)
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        p.grad = g.clone()
        opt.state[p] = {"step": torch.tensor(float(step)), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    opt.step()
    return [t.detach() for p in params for t in (p, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"])]


@pytest.mark.parametrize("block", [(5, 1, 3), (7,), (3, 37), (2, 8), (4, 80)])
def test_a_members_step_does_not_depend_on_the_members_beside_it(block: tuple[int, ...]) -> None:
    """Random states at a late step (where fused Adam's scalar tail, computed in double, rounds otherwise than
    its vectors): member 1 of 3 gets exactly the step it gets alone, for ragged and whole-vector blocks."""
    gen = torch.Generator().manual_seed(sum(block))
    shape = (3, *block)
    for trial in range(20):
        scale = 10 ** torch.empty(shape).uniform_(-4, 0, generator=gen)
        grads = torch.randn(shape, generator=gen) * scale
        exp_avgs = torch.randn(shape, generator=gen) * 1e-2
        exp_avg_sqs = torch.rand(shape, generator=gen) * 1e-4
        params = torch.randn(shape, generator=gen)
        step = int(torch.randint(1, 200, (), generator=gen))
        together = _step([params], [grads], [exp_avgs], [exp_avg_sqs], 3, step)
        alone = _step([params[1:2]], [grads[1:2]], [exp_avgs[1:2]], [exp_avg_sqs[1:2]], 1, step)
        for t, a in zip(together, alone, strict=True):
            assert torch.equal(t[1:2], a), (block, trial)


def test_whole_vector_blocks_take_the_fused_kernel_and_the_rest_foreach() -> None:
    assert VECTOR_FLOATS == 16
    assert whole_vectors(torch.zeros(3, 4, 80), 3) and whole_vectors(torch.zeros(1, 16), 1)
    assert not whole_vectors(torch.zeros(3, 5, 1, 3), 3) and not whole_vectors(torch.zeros(2, 24), 2)
    weight, bias = torch.zeros(2, 4, 80, requires_grad=True), torch.zeros(2, 1, 3, requires_grad=True)
    opt = MemberwiseAdam([{"params": [weight, bias], "lr": 0.5}], 2, lr=1e-3, eps=1e-8)
    parts = opt._kernel_groups(opt.param_groups[0])
    assert [(len(p["params"]), p["fused"], p["foreach"], p["lr"]) for p in parts] == [
        (1, True, None, 0.5),
        (1, False, True, 0.5),
    ]
    assert parts[0]["params"][0] is weight and parts[1]["params"][0] is bias
    opt.step()  # no gradients yet: nothing moves, and the groups given stay the groups of the state dict
    assert len(opt.param_groups) == 1 and opt.state_dict()["param_groups"][0]["params"] == [0, 1]


@pytest.mark.parametrize(("share", "kernels"), [(True, "numpy"), (True, "torch"), (False, "torch")])
def test_a_seed_steps_the_same_alone_and_in_a_population_of_the_paper_tasks(
    share: bool, kernels: str
) -> None:
    """The ``deramo-gym`` networks (five tasks: 15 head biases per member, a ragged block): member 0 of a
    population of two and the same seed alone keep bit-identical weights and Adam moments over 30 updates
    (with torch's fused Adam alone they differ from the second update on)."""
    specs = task_specs(task_preset("deramo-gym"))
    cfg = LearnerConfig(batch_size=8, kernels=kernels, target_update_every=10)
    learners = {
        n: DQNLearner(
            MultiTaskQNetwork(specs, arch_preset("deramo"), share=share, n_members=n, seeds=[0, 1][:n]),
            [s.gamma for s in specs],
            cfg,
        )
        for n in (1, 2)
    }
    gen = torch.Generator().manual_seed(3)
    net = learners[2].online
    for _ in range(30):
        shape = (2, len(specs), cfg.batch_size)
        batch = Batch(
            obs=torch.randn(*shape, net.obs_max, generator=gen),
            action=torch.randint(0, min(net.n_actions), shape, generator=gen),
            reward=torch.randn(*shape, generator=gen),
            next_obs=torch.randn(*shape, net.obs_max, generator=gen),
            terminal=(torch.rand(*shape, generator=gen) < 0.1).float(),
        )
        learners[2].update(batch)
        learners[1].update(Batch(*(getattr(batch, f.name)[:1] for f in fields(Batch))))
    pair, alone = learners[2], learners[1]
    for p_pair, p_alone in zip(pair.online.parameters(), alone.online.parameters(), strict=True):
        assert torch.equal(p_pair[:1], p_alone)
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(pair.optimizer.state[p_pair][key][:1], alone.optimizer.state[p_alone][key])
    for p_pair, p_alone in zip(pair.target.parameters(), alone.target.parameters(), strict=True):
        assert torch.equal(p_pair[:1], p_alone)
