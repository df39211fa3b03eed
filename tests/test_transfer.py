"""Best-epoch shared weights and transfer: selection, freezing, fresh layers, resume, bad sources."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from mtdqn.best_shared import BEST_SHARED_FILE, BestShared, snapshot_shared
from mtdqn.config import (
    Config,
    ExplorationConfig,
    LearnerConfig,
    ReplayConfig,
    RunConfig,
    TaskConfig,
)
from mtdqn.train import Trainer

TIMING = {"steps_per_s", "wall_s"}


def tiny_config(tasks: list[TaskConfig], epochs: int = 3, seeds: list[int] | None = None, **kw) -> Config:
    return Config(
        tasks=[TaskConfig(t.env_id, t.gamma, t.horizon) for t in tasks],
        replay=ReplayConfig(capacity=100, warmup=20),
        learner=LearnerConfig(batch_size=16, target_update_every=10),
        exploration=ExplorationConfig(eps_decay_steps=50),
        run=RunConfig(  # one learner thread: a population's automatic "all cores" crawls on a busy machine
            epochs=epochs,
            steps_per_epoch=60,
            eval_steps=50,
            seeds=seeds or [0],
            background_eval=False,
            torch_threads=1,
        ),
        **kw,
    )


def source_config(epochs: int = 3) -> Config:
    """Two tasks, two members."""
    tasks = [TaskConfig("CartPole-v1", 0.99, 500), TaskConfig("mtdqn/CarOnHill-v0", 0.95, 100)]
    return tiny_config(tasks, epochs=epochs, seeds=[0, 1])


class SharedRecorder:
    """Records the shared layers of a Trainer at the end of every learning epoch."""

    def __init__(self, mp: pytest.MonkeyPatch) -> None:
        self.after_epoch: dict[int, list[torch.Tensor]] = {}
        self.trainer: Trainer | None = None
        original = Trainer._train_epoch

        def wrapped(trainer: Trainer, epoch: int, bar) -> float:
            out = original(trainer, epoch, bar)
            self.after_epoch[epoch] = snapshot_shared(trainer.net)
            self.trainer = trainer
            return out

        mp.setattr(Trainer, "_train_epoch", wrapped)


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _best(run_dir: Path) -> dict:
    return torch.load(run_dir / BEST_SHARED_FILE, weights_only=True)


def _assert_same_best(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], list) and a[key] and torch.is_tensor(a[key][0]):
            assert all(torch.equal(x, y) for x, y in zip(a[key], b[key], strict=True)), key
        elif torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, dict[int, list[torch.Tensor]]]:
    """A finished 3-epoch multi-task source run and its shared layers at the end of every epoch."""
    run_dir = tmp_path_factory.mktemp("src") / "source"
    with pytest.MonkeyPatch.context() as mp:
        recorder = SharedRecorder(mp)
        Trainer.create(source_config(), run_dir, progress=False).run()
    return run_dir, recorder.after_epoch


# --- best-epoch shared weights --------------------------------------------------------------------------


def test_best_epoch_is_the_latest_argmax_of_the_summed_J() -> None:
    # Two members, two tasks; J per epoch 1..5. Member 0: sums 1, 3, 2, 3, 0 -> epoch 4 (tie: later wins);
    # member 1: sums -5, -1, -3, -2, -4 -> epoch 2 (raw sums: no normalisation across tasks).
    j = {
        1: [[0.5, 0.5], [-4.0, -1.0]],
        2: [[2.0, 1.0], [0.0, -1.0]],
        3: [[1.0, 1.0], [-2.0, -1.0]],
        4: [[1.5, 1.5], [-1.0, -1.0]],
        5: [[0.0, 0.0], [-2.0, -2.0]],
    }
    best = BestShared(n_members=2)
    assert not best.consider(0, np.array([[99.0, 99.0], [99.0, 99.0]]), [torch.zeros(2, 3)]).any()
    for epoch, values in j.items():
        best.consider(epoch, np.array(values), [torch.full((2, 3), float(epoch))])
    sums = np.array([np.array(j[e]).sum(1) for e in sorted(j)])  # (epochs, members)
    latest_argmax = [max(e for e in j if sums[e - 1, m] == sums[:, m].max()) for m in range(2)]
    assert list(best.epoch) == latest_argmax == [4, 2]
    assert list(best.score) == [3.0, -1.0]
    assert torch.equal(best.weights[0], torch.tensor([[4.0] * 3, [2.0] * 3]))
    assert not best.consider(3, np.array([[9.0, 9.0], [9.0, 9.0]]), [torch.zeros(2, 3)]).any()  # judged


def test_a_run_keeps_the_shared_weights_of_each_members_best_epoch(source) -> None:
    run_dir, after_epoch = source
    best = _best(run_dir)  # weights_only: tensors and plain containers only
    rows = _metrics(run_dir)
    for m, seed in enumerate(best["seeds"]):
        sums = {
            e: sum(float(r["J"]) for r in rows if int(r["epoch"]) == e and int(r["member"]) == m)
            for e in (1, 2, 3)
        }
        chosen = max(e for e in sums if sums[e] == max(sums.values()))
        assert int(best["epoch"][m]) == chosen and float(best["score"][m]) == sums[chosen]
        for k, tensor in enumerate(best["weights"] + best["biases"]):
            expected = after_epoch[chosen][k][m]  # snapshotted at the end of the epoch, not later
            assert torch.equal(tensor[m], expected), (seed, k)
    assert best["seeds"] == [0, 1] and best["through_epoch"] == 3 and len(best["weights"]) == 2
    assert best["tasks"] == ["CartPole-v1", "mtdqn/CarOnHill-v0"]
    assert best["shared_spec"]["activations"] == ["relu", "sigmoid"]


@pytest.mark.parametrize("kill", ["mid-epoch", "after-recording-before-checkpoint"])
def test_a_killed_run_resumes_to_the_same_best_shared(source, tmp_path: Path, monkeypatch, kill) -> None:
    straight, _ = source
    crashing = Trainer.create(source_config(), tmp_path / "crashed", progress=False)
    if kill == "mid-epoch":
        original = Trainer._step_envs

        def crash(self, actions):
            if self.env_steps == 150:  # inside epoch 3
                raise KeyboardInterrupt
            return original(self, actions)

        monkeypatch.setattr(Trainer, "_step_envs", crash)
    else:  # epoch 2's J is in metrics.csv and judged, but checkpoint 3 is never written
        import mtdqn.train

        assert 2 in _best(straight)["epoch"].tolist()  # epoch 2 is a member's best: its judgement matters
        original = mtdqn.train.save_checkpoint

        def crash(path, state):
            if state["epoch"] == 3:
                raise KeyboardInterrupt
            return original(path, state)

        monkeypatch.setattr(mtdqn.train, "save_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        crashing.run()
    monkeypatch.undo()
    resumed = Trainer.resume(tmp_path / "crashed", progress=False)
    assert resumed.epoch == 2
    resumed.run()
    assert _metrics(straight) == _metrics(resumed.run_dir)
    _assert_same_best(_best(straight), _best(resumed.run_dir))
