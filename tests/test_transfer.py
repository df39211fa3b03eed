"""Best-epoch shared weights and transfer: selection, freezing, fresh layers, resume, bad sources."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtdqn.best_shared import BEST_SHARED_FILE, BestShared, snapshot_shared
from mtdqn.cli import main
from mtdqn.config import (
    Config,
    ExplorationConfig,
    LearnerConfig,
    ReplayConfig,
    RunConfig,
    TaskConfig,
)
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.tasks import task_specs
from mtdqn.train import Trainer
from mtdqn.transfer import default_source_seeds, make_transfer_config, shared_frozen

TIMING = {"steps_per_s", "wall_s"}
ACROBOT = TaskConfig("Acrobot-v1", gamma=0.99, horizon=1000)


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
    """Two source tasks (Acrobot held out), two members."""
    tasks = [TaskConfig("CartPole-v1", 0.99, 500), TaskConfig("mtdqn/CarOnHill-v0", 0.95, 100)]
    return tiny_config(tasks, epochs=epochs, seeds=[0, 1])


def target_config(source: Path, epochs: int = 3, seeds: list[int] | None = None, unfreeze=0) -> Config:
    return make_transfer_config(tiny_config([ACROBOT], epochs=epochs, seeds=seeds), source, unfreeze)


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


# --- transfer -------------------------------------------------------------------------------------------


def test_shared_frozen_schedule() -> None:
    assert [shared_frozen(e, 0) for e in (1, 2, 50)] == [False, False, False]
    assert [shared_frozen(e, 1) for e in (1, 2)] == [False, False]
    assert [shared_frozen(e, 10) for e in (1, 9, 10, 11)] == [True, True, False, False]  # the paper's
    assert [shared_frozen(e, None) for e in (1, 50, 10**6)] == [True, True, True]
    assert default_source_seeds([0, 1, 2], [2, 7, 9, 0]) == [2, 1, 0, 0]  # same seed, else seed mod 3


def test_transfer_starts_from_the_source_shared_and_fresh_task_layers(source, tmp_path: Path) -> None:
    src, _ = source
    best = _best(src)
    trainer = Trainer.create(target_config(src, epochs=0, seeds=[1, 4]), tmp_path / "t", progress=False)
    assert trainer.config.transfer.source_seeds == [1, 0]  # seed 1 is in the source; 4 mod 2 = member 0
    trainer.run()  # warm-up and the evaluation of epoch 0 only
    net = trainer.net
    scratch = MultiTaskQNetwork(task_specs([ACROBOT]), trainer.config.network, n_members=2, seeds=[1, 4])
    shared = [i for i, layer in enumerate(net.plan) if layer.role == "shared"]
    for i in range(len(net.plan)):
        if i in shared:
            k = shared.index(i)
            for m, src_member in enumerate([1, 0]):
                assert torch.equal(net.weights[i][m], best["weights"][k][src_member])
                assert torch.equal(net.biases[i][m], best["biases"][k][src_member])
            # As in the paper's code, the target network keeps the fresh shared layers until its first copy.
            assert torch.equal(trainer.learner.target.weights[i], scratch.weights[i])
        else:  # fresh from the run's own seeds, exactly a from-scratch network's
            assert torch.equal(net.weights[i], scratch.weights[i])
            assert torch.equal(net.biases[i], scratch.biases[i])
    config = json.loads((tmp_path / "t" / "config.json").read_text())["config"]
    assert config["transfer"]["source"] == str(src)
    assert config["transfer"]["unfreeze_epoch"] == 0
    assert len(config["transfer"]["source_fingerprint"]) == 16


@pytest.mark.parametrize(("unfreeze", "frozen_epochs"), [(0, set()), (3, {1, 2}), (None, {1, 2, 3})])
def test_frozen_shared_layers_stay_bit_identical(
    source, tmp_path: Path, monkeypatch, unfreeze, frozen_epochs
) -> None:
    src, _ = source
    best = _best(src)
    start = [w[[0]] for w in best["weights"] + best["biases"]]  # seed 0 takes source member 0
    recorder = SharedRecorder(monkeypatch)
    trainer = Trainer.create(target_config(src, unfreeze=unfreeze), tmp_path / "t", progress=False)
    trainer.run()
    before = start
    for epoch in (1, 2, 3):
        after = recorder.after_epoch[epoch]
        same = all(torch.equal(a, b) for a, b in zip(after, before, strict=True))
        assert same == (epoch in frozen_epochs), epoch
        before = after
    shared = snapshot_shared(trainer.net)
    adam_state = [trainer.learner.optimizer.state.get(p, {}) for p in trainer.net.parameters()]
    n_with_state = sum(1 for s in adam_state if s)
    n_params = len(adam_state)
    assert n_with_state == (n_params - len(shared) if unfreeze is None else n_params)
    head = trainer.net.weights[-1]
    assert not torch.equal(head, MultiTaskQNetwork(task_specs([ACROBOT]), trainer.config.network).weights[-1])


@pytest.mark.parametrize("kill", ["warmup", "mid-epoch"])
def test_a_killed_transfer_run_resumes_exactly(source, tmp_path: Path, monkeypatch, kill) -> None:
    src, _ = source
    straight = Trainer.create(target_config(src, unfreeze=2), tmp_path / "straight", progress=False)
    straight.run()
    crashing = Trainer.create(target_config(src, unfreeze=2), tmp_path / "crashed", progress=False)
    if kill == "warmup":  # before the first checkpoint: the resumed run reads the source again

        def crash(self):
            raise KeyboardInterrupt

        monkeypatch.setattr(Trainer, "_warmup", crash)
    else:
        original = Trainer._step_envs

        def crash(self, actions):
            if self.env_steps == 90:  # inside epoch 2, the first unfrozen one
                raise KeyboardInterrupt
            return original(self, actions)

        monkeypatch.setattr(Trainer, "_step_envs", crash)
    with pytest.raises(KeyboardInterrupt):
        crashing.run()
    monkeypatch.undo()
    # `mtdqn train --resume` on a transfer run
    assert main(["train", "--resume", str(tmp_path / "crashed"), "--no-progress"]) == 0
    resumed = Trainer.load(tmp_path / "crashed", progress=False)
    assert _metrics(straight.run_dir) == _metrics(resumed.run_dir)
    for a, b in ((straight.net, resumed.net), (straight.learner.target, resumed.learner.target)):
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(p, q)
    _assert_same_best(_best(straight.run_dir), _best(resumed.run_dir))


# --- the command line -----------------------------------------------------------------------------------

TINY = ["--epochs", "1", "--steps-per-epoch", "40", "--eval-steps", "30", "--warmup", "10"]
TINY += ["--batch-size", "8"]
QUIET = ["--no-progress", "--no-background-eval", "--threads", "1"]


def test_transfer_command_end_to_end(source, tmp_path: Path, capsys) -> None:
    src, _ = source
    args = ["transfer", "--from", str(src), "--task", "Acrobot-v1", "--horizon", "1000"]
    assert main([*args, "--unfreeze-epoch", "never", "--runs-dir", str(tmp_path), *TINY, *QUIET]) == 0
    run = tmp_path / "Acrobot-v1-multi-from-source-unfreezenever-seed0"
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["transfer"]["unfreeze_epoch"] is None and config["tasks"][0]["horizon"] == 1000
    assert config["network"] == json.loads((src / "config.json").read_text())["config"]["network"]
    assert (run / BEST_SHARED_FILE).is_file() and (run / "plots" / "learning_curves.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epoch"] == 1
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0  # extend it


def _write_source(folder: Path, **config_changes) -> Path:
    """A source run folder with only its config.json (no epoch trained, so no best_shared.pt)."""
    config = source_config()
    for key, value in config_changes.items():
        setattr(config, key, value)
    Trainer.create(config, folder, progress=False)
    return folder


@pytest.mark.parametrize(
    ("make_source", "extra", "needle"),
    [
        (lambda tmp, src: tmp / "missing", [], "is not a folder"),
        (lambda tmp, src: _write_source(tmp / "new"), [], "has no best_shared.pt"),
        (lambda tmp, src: _write_source(tmp / "single", mode="single"), [], "single-task baseline"),
        (lambda tmp, src: src, ["--width", "64"], "(width 80, 2 shared layers"),
        (lambda tmp, src: src, ["--feature-activation", "relu"], "do not match this run's"),
        (lambda tmp, src: tmp / "corrupt", [], "corrupt"),
        (lambda tmp, src: None, [], "no source run given"),
    ],
)
def test_bad_sources_give_one_line_and_exit_code_2(
    source, tmp_path: Path, capsys, make_source, extra, needle
) -> None:
    src, _ = source
    folder = make_source(tmp_path, src)
    if folder is not None and folder.name == "corrupt":
        _write_source(folder)
        (folder / BEST_SHARED_FILE).write_bytes(b"not a checkpoint")
    runs = tmp_path / "runs"
    args = ["transfer", "--task", "Acrobot-v1", "--runs-dir", str(runs), *extra, *TINY, *QUIET]
    if folder is not None:
        args += ["--from", str(folder)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    if "--width" in extra:
        assert "(width 64, 2 shared layers" in err  # names both networks
    assert not runs.exists()  # nothing written
