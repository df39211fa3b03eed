"""Runs: determinism, resume equality (after a clean stop and after a crash), checkpoint safety."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_config

from mtdqn.config import Config, RunConfig, task_preset
from mtdqn.errors import UserError
from mtdqn.train import Trainer

TIMING = {"steps_per_s", "wall_s"}


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _train(run_dir: Path, **run) -> Trainer:
    trainer = Trainer.create(small_config(**run), run_dir, progress=False)
    trainer.run()
    return trainer


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path: Path) -> None:
    a = _train(tmp_path / "a")
    b = _train(tmp_path / "b")
    c = _train(tmp_path / "c", seeds=[1])
    assert _metrics(a.run_dir) == _metrics(b.run_dir)
    assert len(_metrics(a.run_dir)) == 3 * 3  # epochs 0, 1, 2 x three tasks
    assert _metrics(a.run_dir) != _metrics(c.run_dir)
    for p, q in zip(a.net.parameters(), b.net.parameters(), strict=True):
        assert torch.equal(p, q)
    assert (a.run_dir / "plots" / "learning_curves.png").stat().st_size > 10_000
    assert any((a.run_dir / "tb").iterdir())


def test_background_evaluation_does_not_change_the_run(tmp_path: Path) -> None:
    inline = _train(tmp_path / "inline")
    background = _train(tmp_path / "background", background_eval=True)
    assert _metrics(inline.run_dir) == _metrics(background.run_dir)


def test_resume_after_a_finished_shorter_run_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = _train(tmp_path / "straight", epochs=3)
    _train(tmp_path / "resumed", epochs=1)
    resumed = Trainer.resume(tmp_path / "resumed", epochs=3, progress=False)
    assert resumed.epoch == 1
    resumed.run()
    assert _metrics(straight.run_dir) == _metrics(resumed.run_dir)
    for p, q in zip(straight.net.parameters(), resumed.net.parameters(), strict=True):
        assert torch.equal(p, q)


def test_resume_after_a_crash_mid_epoch_equals_an_uninterrupted_run(tmp_path: Path, monkeypatch) -> None:
    straight = _train(tmp_path / "straight", epochs=3)
    crashing = Trainer.create(small_config(epochs=3), tmp_path / "crashed", progress=False)
    original = Trainer._step_envs

    def crash_in_epoch_three(self, actions):
        if self.env_steps == 150:  # epoch 3 holds learning steps 121..180
            raise KeyboardInterrupt
        return original(self, actions)

    monkeypatch.setattr(Trainer, "_step_envs", crash_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        crashing.run()
    monkeypatch.setattr(Trainer, "_step_envs", original)
    resumed = Trainer.resume(tmp_path / "crashed", progress=False)
    assert resumed.epoch == 2
    resumed.run()
    assert _metrics(straight.run_dir) == _metrics(resumed.run_dir)


def test_corrupt_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    trainer = _train(tmp_path / "run", epochs=1)
    ckpt = trainer.run_dir / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(UserError, match="corrupt"):
        Trainer.resume(trainer.run_dir, progress=False)


def test_checkpoint_of_another_configuration_is_a_user_error(tmp_path: Path) -> None:
    a = _train(tmp_path / "a", epochs=1)
    b = _train(tmp_path / "b", epochs=1, seeds=[5])
    (a.run_dir / "checkpoint.pt").write_bytes((b.run_dir / "checkpoint.pt").read_bytes())
    with pytest.raises(UserError, match="different configuration"):
        Trainer.resume(a.run_dir, progress=False)


def test_checkpoint_holds_no_arbitrary_objects(tmp_path: Path) -> None:
    trainer = _train(tmp_path / "run", epochs=1)
    state = torch.load(trainer.run_dir / "checkpoint.pt", weights_only=True)  # raises on any object
    assert state["epoch"] == 1 and state["env_steps"] == 60


def test_existing_run_folder_is_not_overwritten_without_consent(tmp_path: Path) -> None:
    trainer = _train(tmp_path / "run", epochs=1)
    before = (trainer.run_dir / "metrics.csv").read_bytes()
    with pytest.raises(UserError, match="already exists"):
        Trainer.create(small_config(), trainer.run_dir, progress=False)
    assert (trainer.run_dir / "metrics.csv").read_bytes() == before
    Trainer.create(small_config(), trainer.run_dir, overwrite=True, progress=False)
    assert not (trainer.run_dir / "metrics.csv").exists()


def test_train_frequency_sets_the_update_count_and_resumes_exactly(tmp_path: Path) -> None:
    def config(epochs: int):
        c = small_config(epochs=epochs)
        c.learner.train_frequency = 7  # 60 steps per epoch: updates at learning steps 7, 14, ..., 175
        return c

    straight = Trainer.create(config(3), tmp_path / "straight", progress=False)
    straight.run()
    assert straight.learner.n_updates == 180 // 7
    Trainer.create(config(1), tmp_path / "resumed", progress=False).run()
    resumed = Trainer.resume(tmp_path / "resumed", epochs=3, progress=False)
    resumed.run()
    assert resumed.learner.n_updates == 180 // 7
    assert _metrics(straight.run_dir) == _metrics(resumed.run_dir)


def test_a_seed_learns_the_same_alone_and_inside_a_population(tmp_path: Path) -> None:
    alone = _train(tmp_path / "alone", seeds=[9])
    population = _train(tmp_path / "population", seeds=[4, 9, 2])
    rows = _metrics(population.run_dir)
    assert sorted({r["seed"] for r in rows}) == ["2", "4", "9"]
    nine = [{k: v for k, v in r.items() if k != "member"} for r in rows if r["seed"] == "9"]
    assert nine == [{k: v for k, v in r.items() if k != "member"} for r in _metrics(alone.run_dir)]
    for p_pop, p_alone in zip(population.net.parameters(), alone.net.parameters(), strict=True):
        torch.testing.assert_close(p_pop[1:2], p_alone, rtol=0, atol=0)
    four = [r["J"] for r in rows if r["seed"] == "4"]
    assert four != [r["J"] for r in nine]  # the members are different agents


def test_numpy_vector_tasks_give_the_same_run_as_single_environments(tmp_path: Path, monkeypatch) -> None:
    loop = _train(tmp_path / "loop", seeds=[9, 4])
    monkeypatch.setattr("mtdqn.tasks.control.NUMPY_VECTOR_MIN_COPIES", {"gym": 1, "classic": 1})
    vectorised = _train(tmp_path / "numpy", seeds=[9, 4])
    names = [type(env).__name__ for env in vectorised.envs]
    assert names == ["CartPoleVector", "AcrobotVector", "CarOnHillVector"]
    assert _metrics(loop.run_dir) == _metrics(vectorised.run_dir)


def test_a_run_gives_the_same_weights_with_one_or_two_learner_threads(tmp_path: Path) -> None:
    """What lets a backend pick the thread count (``--jobs``, Ray) without changing any number."""
    weights = []
    for threads in (1, 2):
        config = Config(
            tasks=task_preset("deramo-gym"),
            mode="multi",
            run=dataclasses.replace(
                RunConfig(),
                epochs=1,
                steps_per_epoch=200,
                eval_steps=50,
                seeds=[0, 1, 2],
                torch_threads=threads,
                background_eval=False,
            ),
        )
        trainer = Trainer.create(config, tmp_path / f"threads{threads}", progress=False)
        trainer.run()
        weights.append([p.detach().clone() for p in trainer.net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_acting_with_the_networks_own_forward_gives_the_same_run(tmp_path: Path, monkeypatch) -> None:
    """On a GPU the greedy actions come from the network's forward on the device (no weight copy per step);
    run on the CPU here, that path must act exactly as the numpy forward on the live weights."""
    numpy_actor = _train(tmp_path / "numpy", seeds=[9, 4])
    calls = []

    def device_actor(self):
        calls.append(1)
        return self._greedy_on_device

    monkeypatch.setattr(Trainer, "_greedy_actor", device_actor)
    device = _train(tmp_path / "device", seeds=[9, 4])
    assert len(calls) == 2  # once per epoch
    assert _metrics(numpy_actor.run_dir) == _metrics(device.run_dir)
    for p, q in zip(numpy_actor.net.parameters(), device.net.parameters(), strict=True):
        assert torch.equal(p, q)
    # Padded actions are never chosen, however large their Q values: both actors, on any observation.
    monkeypatch.undo()
    with torch.no_grad():
        head_bias = device.net.biases[-1][:, :, 0]  # (S, T, A_max)
        head_bias.zero_()
        head_bias[:, ~device.net.action_mask] = 1e6
        head_bias[:, [0, 1, 2], [1, 2, 1]] = 1e3  # each task's last valid action
    device._obs[:] = np.random.default_rng(0).normal(size=device._obs.shape)
    expected = np.array([[1, 2, 1], [1, 2, 1]])
    assert np.array_equal(device._greedy_on_device(), expected)
    assert np.array_equal(device._greedy_actor()(), expected)


def test_evaluation_split_over_worker_processes_gives_the_same_run(tmp_path: Path) -> None:
    inline = _train(tmp_path / "inline", seeds=[9, 4, 2])
    split = _train(tmp_path / "split", seeds=[9, 4, 2], background_eval=True, eval_workers=2)
    assert split.eval_workers() == 2
    assert _metrics(inline.run_dir) == _metrics(split.run_dir)
    assert inline.fingerprint == split.fingerprint  # a hardware setting: resumable with another count


def test_automatic_evaluation_workers_follow_the_learners_device(tmp_path: Path, monkeypatch) -> None:
    trainer = Trainer.create(small_config(seeds=list(range(60))), tmp_path / "run", progress=False)
    assert trainer.eval_workers() == 1  # a CPU learner keeps the cores
    monkeypatch.setattr(trainer, "device", torch.device("cuda"))  # as a GPU learner sees it
    monkeypatch.setattr(trainer, "_cores", 16)
    assert trainer.eval_workers() == 3  # one per 25 members
    monkeypatch.setattr(trainer, "_cores", 4)
    assert trainer.eval_workers() == 2  # at most half the cores
    trainer.config.run.eval_workers = 5
    assert trainer.eval_workers() == 5
    trainer.config.run.eval_workers = -1
    with pytest.raises(UserError, match="eval_workers is -1"):
        trainer.config.validate()


def test_diverging_values_are_reported_once_per_member_and_task(tmp_path: Path, capsys) -> None:
    trainer = Trainer.create(small_config(epochs=1, seeds=[0, 1, 2]), tmp_path / "run", progress=False)
    trainer.run()
    capsys.readouterr()
    mean_q = np.zeros((3, 3))  # Cart-Pole's rewards (+1, gamma 0.99) allow values in [0, 100]
    mean_q[1, 0], mean_q[2, 0] = 250.0, -300.0  # beyond [0, 100] by more than its width: diverging
    mean_q[0, 0] = 150.0  # overestimated, not diverging
    bar = trainer._progress_bar()
    trainer._warn_diverging(3, mean_q, bar)
    trainer._warn_diverging(4, mean_q, bar)  # nothing new
    mean_q[0, 0] = 1e4
    trainer._warn_diverging(5, mean_q, bar)  # seed 0 joins
    bar.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert lines == [
        "warning: run: the values of CartPole-v1 are diverging (seeds 1, 2): mean Q -300 at epoch 3, where "
        "its rewards (in [1, 1]) allow values in [0, 100] (--clip-targets keeps them in it)",
        "warning: run: the values of CartPole-v1 are diverging (seed 0): mean Q 1e+04 at epoch 5, where its "
        "rewards (in [1, 1]) allow values in [0, 100] (--clip-targets keeps them in it)",
    ]
    trainer.config.learner.clip_targets = True  # already on: no advice
    trainer._warned.clear()
    trainer._warn_diverging(6, mean_q, trainer._progress_bar())
    err = capsys.readouterr().err
    assert "allow values in [0, 100]\n" in err and "--clip-targets" not in err


def test_clip_targets_from_the_command_line_resumes_exactly_with_its_reward_bounds(tmp_path: Path) -> None:
    """``--clip-targets`` is saved in the config; the rewards' extremes live in the checkpoint, so a resumed
    run equals an uninterrupted one; Cart-Pole (+1 every step) and Acrobot (-1, 0 at the goal) get the
    intervals their rewards allow."""
    from mtdqn.cli import main

    base = ["train", "--task", "CartPole-v1", "--task", "Acrobot-v1", "--steps-per-epoch", "40",
            "--eval-steps", "20", "--warmup", "20", "--batch-size", "8", "--no-progress", "--clip-targets",
            "--no-background-eval", "--threads", "1", "--runs-dir", str(tmp_path)]  # fmt: skip
    assert main([*base, "--epochs", "2", "--name", "straight"]) == 0
    assert main([*base, "--epochs", "1", "--name", "resumed"]) == 0
    assert main(["train", "--resume", str(tmp_path / "resumed"), "--epochs", "2"]) == 0
    assert _metrics(tmp_path / "straight") == _metrics(tmp_path / "resumed")
    trainer = Trainer.load(tmp_path / "straight", progress=False)
    assert trainer.config.learner.clip_targets
    low, high = trainer.learner.value_bounds()
    torch.testing.assert_close(low, torch.tensor([[0.0, -100.0]]), rtol=1e-6, atol=0)
    torch.testing.assert_close(high, torch.tensor([[100.0, 0.0]]), rtol=1e-6, atol=0)
