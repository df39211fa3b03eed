"""`mtdqn train --gradient-batches N`: each task's pull on the shared layers measured after every epoch."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_config

from mtdqn.analysis.gradients import gradient_sharing, measure_sharing, shared_parameters
from mtdqn.cli import main
from mtdqn.runlog import GRADIENT_COLUMNS, read_metrics
from mtdqn.train import Trainer
from mtdqn.transfer import set_shared_trainable

BATCHES = 3


def _config(epochs: int = 2, gradient_batches: int = BATCHES):
    return small_config(epochs=epochs, seeds=[0, 1], torch_threads=1, gradient_batches=gradient_batches)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same 2-member, 2-epoch run without and with the measurement."""
    root = tmp_path_factory.mktemp("runs")
    for name, batches in (("plain", 0), ("measured", BATCHES)):
        Trainer.create(_config(gradient_batches=batches), root / name, progress=False).run()
    return {"plain": root / "plain", "measured": root / "measured"}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_measuring_changes_no_learning_number(runs):
    timing = ("steps_per_s", "wall_s")
    plain, measured = (_rows(runs[k] / "metrics.csv") for k in ("plain", "measured"))
    assert len(plain) == len(measured) == 3 * 2 * 3  # epochs 0-2 x members x tasks
    for a, b in zip(plain, measured, strict=True):
        assert {k: a[k] for k in a if k not in timing} == {k: b[k] for k in b if k not in timing}
    nets = [Trainer.load(runs[k], progress=False).net.state_dict() for k in ("plain", "measured")]
    assert all(torch.equal(nets[0][key], nets[1][key]) for key in nets[0])
    assert not (runs["plain"] / "gradients.csv").exists()
    assert (runs["measured"] / "plots" / "gradients.png").stat().st_size > 0


def test_an_epochs_rows_are_what_analyze_reports_on_its_checkpoint(runs):
    g = read_metrics(runs["measured"] / "gradients.csv", GRADIENT_COLUMNS)
    assert sorted(set(g["epoch"])) == [0.0, 1.0, 2.0]  # after the warm-up and after each epoch
    assert g["epoch"].size == 3 * 2 * 3 and set(g["batches"]) == {BATCHES}
    for epoch in (0, 1, 2):
        for member in (0, 1):
            rows = (g["epoch"] == epoch) & (g["member"] == member)
            assert g["contribution"][rows].sum() == pytest.approx(1.0, abs=1e-9)
    # the last epoch's checkpoint is the run's: its analysis with --seed 2 draws the same batches
    reported = gradient_sharing(runs["measured"], BATCHES, seed=2)
    last = g["epoch"] == 2
    for i in np.flatnonzero(last):
        numbers = reported[int(g["seed"][i])][str(g["task_name"][i])]
        for key in ("norm", "contribution", "cosine_with_others", "split_half_cosine"):
            assert g[key][i] == pytest.approx(numbers[key], rel=1e-12, abs=1e-15)
    assert gradient_sharing(runs["measured"], BATCHES, seed=1) != reported  # another stream, other batches


def test_a_resumed_run_has_the_rows_of_an_uninterrupted_one(runs, tmp_path):
    """Killed after measuring epoch 2 but before its checkpoint: the resumed run measures epoch 2 again
    (the same numbers) instead of keeping the lost future's rows twice."""
    run_dir = tmp_path / "killed"
    Trainer.create(_config(epochs=1), run_dir, progress=False).run()
    # the rows of epoch 2, whose checkpoint was never written
    shutil.copy(runs["measured"] / "gradients.csv", run_dir / "gradients.csv")
    Trainer.resume(run_dir, progress=False, epochs=2).run()
    assert _rows(run_dir / "gradients.csv") == _rows(runs["measured"] / "gradients.csv")


def test_frozen_shared_layers_are_measured_and_stay_frozen(runs):
    trainer = Trainer.load(runs["measured"], progress=False)
    free = measure_sharing(trainer, 2, seed=5)
    set_shared_trainable(trainer.net, False)
    frozen = measure_sharing(trainer, 2, seed=5)
    assert not any(p.requires_grad for p in shared_parameters(trainer.net))
    for key in free:
        np.testing.assert_array_equal(free[key], frozen[key])
    assert all(p.grad is None for p in trainer.net.parameters())


def test_train_takes_the_flag_and_refuses_it_where_it_cannot_apply(tmp_path, capsys):
    base = ["train", "--task", "CartPole-v1", "--task", "Acrobot-v1", "--epochs", "1",
            "--steps-per-epoch", "30", "--eval-steps", "20", "--warmup", "20", "--batch-size", "8",
            "--no-progress", "--no-background-eval", "--runs-dir", str(tmp_path)]  # fmt: skip
    assert main([*base, "--gradient-batches", "2", "--name", "m"]) == 0
    g = read_metrics(tmp_path / "m" / "gradients.csv", GRADIENT_COLUMNS)
    assert list(g["epoch"]) == [0, 0, 1, 1] and list(g["task_name"]) == ["CartPole-v1", "Acrobot-v1"] * 2
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "m")]) == 0
    assert "gradients.png" in capsys.readouterr().out

    assert main([*base, "--gradient-batches", "2", "--mode", "single", "--name", "s"]) == 2
    err = capsys.readouterr().err
    assert "single-task baseline (--mode single) has none" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()

    assert main(["train", "--resume", str(tmp_path / "m"), "--gradient-batches", "4"]) == 2
    err = capsys.readouterr().err
    assert "drop --gradient-batches" in err and "Traceback" not in err
