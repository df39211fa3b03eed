"""`mtdqn analyze --gradient-batches`: each task's gradient on the shared layers, its numbers and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_config

from mtdqn.analysis.gradients import (
    gradient_sharing,
    replay_batch,
    shared_parameters,
    sharing_of,
    task_gradients,
)
from mtdqn.cli import main
from mtdqn.seeding import derive_rng
from mtdqn.train import Trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A 2-seed multi-task run and a single-task baseline (3 tasks, one epoch)."""
    root = tmp_path_factory.mktemp("runs")
    for name, mode in (("multi", "multi"), ("single", "single")):
        config = small_config(epochs=1, seeds=[0, 1])
        config.mode = mode
        Trainer.create(config, root / name, progress=False).run()
    return {"multi": root / "multi", "single": root / "single"}


def test_the_tasks_gradients_add_up_to_the_joint_losss_on_the_shared_layers(runs):
    trainer = Trainer.load(runs["multi"], progress=False)
    batch = replay_batch(trainer, [derive_rng(s, "test") for s in trainer.seeds], 16)
    grads = task_gradients(trainer.learner, batch)
    shared = shared_parameters(trainer.net)
    per_member = sum(p[0].numel() for p in shared)
    assert grads.shape == (2, 3, per_member)
    assert per_member == 2 * (80 * 80 + 80)  # the two shared 80->80 layers of the paper's control net only
    joint = torch.autograd.grad(trainer.learner.loss(batch)[0], shared)
    expected = torch.cat([g.reshape(2, -1) for g in joint], dim=1)
    torch.testing.assert_close(grads.sum(1), expected, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in trainer.net.parameters())  # the optimiser's gradients are untouched


def test_the_numbers_of_known_gradients():
    g = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 0.0]]])  # one member, three tasks
    out = sharing_of(g)
    np.testing.assert_allclose(out["norm"], [[1.0, 1.0, 3.0]])
    # joint gradient (4, 1), |.|^2 = 17: contributions 4/17, 1/17, 12/17
    np.testing.assert_allclose(out["contribution"], [[4 / 17, 1 / 17, 12 / 17]])
    # task 0 vs the others' sum (3, 1); task 1 vs (4, 0); task 2 vs (1, 1)
    np.testing.assert_allclose(out["cosine_with_others"], [[3 / math.sqrt(10), 0.0, 1 / math.sqrt(2)]])
    np.testing.assert_allclose(out["cosine"][0], [[1, 0, 1], [0, 1, 0], [1, 0, 1]], atol=1e-15)
    opposed = sharing_of(torch.tensor([[[1.0, 2.0], [-1.0, -2.0]]]))  # they cancel: no joint direction
    assert np.isnan(opposed["contribution"]).all()
    np.testing.assert_allclose(opposed["cosine_with_others"], [[-1.0, -1.0]])


def test_analyze_reports_the_gradients_of_each_member(runs, tmp_path):
    out = tmp_path / "analysis"
    args = ["analyze", str(runs["multi"]), "--steps", "20", "--method", "pca", "--out", str(out)]
    assert main([*args, "--gradient-batches", "3"]) == 0
    numbers = []
    for seed in (0, 1):
        metrics = json.loads((out / f"seed{seed}" / "metrics.json").read_text())
        grad = metrics["metrics"]["gradient_sharing"]
        assert grad["batches"] == 3 and grad["transitions_per_task"] == 48
        names = metrics["tasks"]
        assert sum(grad[n]["contribution"] for n in names) == pytest.approx(1.0, abs=1e-9)
        assert all(grad[n]["norm"] > 0 for n in names)
        np.testing.assert_allclose(np.diag(grad["cosine"]), 1.0, atol=1e-9)
        assert "gradient_sharing" in metrics["meanings"]
        assert "gradient_sharing" in (out / f"seed{seed}" / "report.html").read_text()
        numbers.append(grad)
    assert numbers[0] != numbers[1]  # each member its own network and replay
    # seeded: the same numbers again, other ones with another --seed
    assert gradient_sharing(runs["multi"], 3)[1] == numbers[1]
    assert gradient_sharing(runs["multi"], 3, seed=1)[1] != numbers[1]


def test_without_the_flag_nothing_is_measured(runs, tmp_path):
    out = tmp_path / "analysis"
    args = ["analyze", str(runs["multi"]), "--steps", "20", "--method", "pca", "--seeds", "0"]
    assert main([*args, "--out", str(out)]) == 0
    assert "gradient_sharing" not in json.loads((out / "seed0" / "metrics.json").read_text())["metrics"]


def test_a_single_task_baseline_has_no_shared_gradients(runs, tmp_path, capsys):
    args = ["analyze", str(runs["single"]), "--steps", "20", "--method", "pca", "--gradient-batches", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "no shared layers" in err and "--mode single" in err and "Traceback" not in err


def test_the_split_half_cosine_says_whether_the_average_is_noise_free(runs, monkeypatch):
    import mtdqn.analysis.gradients as gradients

    one = gradient_sharing(runs["multi"], 1)[0]  # one batch: no halves to compare
    names = [key for key, value in one.items() if isinstance(value, dict)]
    assert len(names) == 3 and all(one[name]["split_half_cosine"] is None for name in names)
    fixed = gradients.replay_batch
    batch = {}

    def same_batch(trainer, rngs, size):  # every batch the first: both halves average the same gradient
        batch.setdefault("b", fixed(trainer, rngs, size))
        return batch["b"]

    monkeypatch.setattr(gradients, "replay_batch", same_batch)
    repeated = gradient_sharing(runs["multi"], 4)[0]
    for name in names:
        assert repeated[name]["split_half_cosine"] == pytest.approx(1.0, abs=1e-6)
        assert repeated[name]["contribution"] == pytest.approx(one[name]["contribution"], rel=1e-5)
    monkeypatch.undo()
    real = gradient_sharing(runs["multi"], 4)[0]  # other batches in the two halves: other gradients
    assert all(real[name]["split_half_cosine"] < 0.999 for name in names)


def test_a_task_cut_off_from_the_shared_layers(runs, tmp_path, monkeypatch):
    """A task whose gradient on the shared layers is exactly zero (its inputs saturate every sigmoid feature
    unit, as at width 5 in feature-width-review) has no cosines; the report and the experiment's per-seed
    numbers leave it out instead of failing."""
    import mtdqn.analysis.gradients as gradients
    from mtdqn.experiment_analysis import member_metrics

    real = gradients.task_gradients

    def second_task_cut_off(learner, batch):
        g = real(learner, batch)
        g[:, 1] = 0.0
        return g

    monkeypatch.setattr(gradients, "task_gradients", second_task_cut_off)
    out = tmp_path / "analysis"
    args = ["analyze", str(runs["multi"]), "--steps", "20", "--method", "pca", "--seeds", "0"]
    assert main([*args, "--out", str(out), "--gradient-batches", "2"]) == 0
    metrics = json.loads((out / "seed0" / "metrics.json").read_text())
    grad = metrics["metrics"]["gradient_sharing"]
    first, cut, third = (grad[name] for name in metrics["tasks"])
    assert cut == {"norm": 0.0, "contribution": 0.0, "cosine_with_others": None, "split_half_cosine": None}
    assert grad["cosine"][1] == [None] * 3 and [row[1] for row in grad["cosine"]] == [None] * 3
    assert first["contribution"] + third["contribution"] == pytest.approx(1.0, abs=1e-9)
    assert "&ndash;" in (out / "seed0" / "report.html").read_text()

    numbers = member_metrics(out / "seed0")
    assert numbers["gradient_zero_tasks"] == 1.0
    assert numbers["gradient_cosine_offdiag"] == pytest.approx(grad["cosine"][0][2])  # the one defined pair
    assert numbers["gradient_contribution_max"] == max(first["contribution"], third["contribution"])
    assert numbers["gradient_split_half_min"] == min(first["split_half_cosine"], third["split_half_cosine"])
