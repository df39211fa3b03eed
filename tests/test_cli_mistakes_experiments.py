"""Mistakes around experiments and analyses: each is refused with one clear line (exit code 2) before anything
is written, and a start that fails before any epoch leaves nothing that would refuse the corrected command."""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_config

from mtdqn.analysis.config import AnalysisConfig
from mtdqn.analysis.embed import embed
from mtdqn.analysis.metrics import neighbours
from mtdqn.backends import RayBackend, check_ray_address
from mtdqn.cli import main
from mtdqn.config import TaskConfig
from mtdqn.errors import UserError
from mtdqn.experiments import ConfigArm, Experiment, RunOptions
from mtdqn.runner import prepare_folder, run_experiment
from mtdqn.train import Trainer

TINY = ["--epochs", "1", "--set", "run.steps_per_epoch=40", "--set", "replay.warmup=10", "--no-progress"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _experiment(tmp_path: Path, *args: str) -> int:
    with pytest.raises(SystemExit) as exc:  # argparse errors exit by themselves
        raise SystemExit(
            main(["experiment", "deramo-gym", "--seeds", "1", "--out", str(tmp_path), *TINY, *args])
        )
    return int(exc.value.code)


# --- mtdqn experiment: refused before anything is written ------------------------------------------------


@pytest.mark.parametrize(
    "flag", [["--analyze-steps", "50"], ["--analyze-method", "tsne"], ["--analyze-gradient-batches", "5"]]
)
def test_analysis_options_without_analyze_are_refused(flag, tmp_path: Path, capsys) -> None:
    assert _experiment(tmp_path, *flag) == 2
    err = _one_line_error(capsys)
    assert f"{flag[0]} applies to the analysis of --analyze only; add --analyze" in err
    assert list(tmp_path.iterdir()) == []


def test_a_tsne_analysis_with_too_few_states_is_refused_before_training(tmp_path: Path, capsys) -> None:
    code = _experiment(tmp_path, "--analyze", "--analyze-method", "tsne", "--analyze-steps", "10")
    assert code == 2
    err = _one_line_error(capsys)
    # perplexity 30 needs 91 states; 10 steps x 5 tasks give 50
    assert "needs at least 91 states" in err and "--analyze-steps 19 or more, or --analyze-method pca" in err
    assert list(tmp_path.iterdir()) == []


def test_a_nan_override_is_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    assert _experiment(tmp_path, "--set", "learner.lr=nan") == 2
    assert "--set learner.lr=nan: give a finite number" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_without_cuda_is_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    assert _experiment(tmp_path, "--device", "cuda") == 2
    assert "PyTorch sees no CUDA GPU" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []  # no experiment.json that would refuse the corrected command


# --- Ray: an address where no cluster answers ------------------------------------------------------------


class Joined(Exception):
    """Raised by :class:`FakeRay` when it is asked to join a cluster."""


class FakeRay:
    """Just enough of the ``ray`` module to see whether the backend tries to join a cluster."""

    def __init__(self) -> None:
        self.addresses: list[str | None] = []

    def is_initialized(self) -> bool:
        return False

    def init(self, address=None, **kwargs) -> None:
        self.addresses.append(address)
        raise Joined


def _closed_port() -> int:
    """A local TCP port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_ray_address_where_no_cluster_answers_is_refused_at_once(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    address = f"127.0.0.1:{_closed_port()}"
    assert _experiment(tmp_path, "--backend", "ray", "--ray-address", address) == 2
    err = _one_line_error(capsys)
    assert f"no Ray cluster answers at {address}" in err and "ray start --head" in err
    assert fake.addresses == [] and list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="no Ray cluster answers"):  # the backend itself checks before joining
        RayBackend(address).run([object()], print)
    assert fake.addresses == []


def test_ray_addresses_that_answer_or_that_ray_resolves_are_joined(monkeypatch) -> None:
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        check_ray_address(address)
        check_ray_address(f"ray://{address}")
        for given in (address, "auto", None):
            with pytest.raises(Joined):
                RayBackend(given).run([object()], print)
    assert fake.addresses == [address, "auto", None]
    with pytest.raises(UserError, match="is not auto, HOST:PORT or ray://HOST:PORT"):
        check_ray_address("headnode")


# --- a start that fails, a rerun with other options ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FailingStartArm(ConfigArm):
    """Starts its run folder, then fails (after recording epoch 0 when ``learnt``)."""

    learnt: bool = False

    def run(self, seeds: list[int], run_dir: Path, options: RunOptions) -> None:
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text("{}")
        if self.learnt:
            (run_dir / "metrics.csv").write_text("epoch,seed,task\n0,0,0\n")
        raise UserError("the first group failed")


@pytest.mark.parametrize("learnt", [False, True])
def test_a_failed_start_leaves_nothing_that_refuses_the_corrected_command(
    tmp_path: Path, learnt: bool
) -> None:
    experiment = Experiment("failing", "its group fails", arms=(FailingStartArm("A", small_config, learnt),))
    folder = tmp_path / "exp"
    options = RunOptions(epochs=1, overrides={"run.eval_steps": "30"}, progress=False)
    messages: list[str] = []
    with pytest.raises(UserError, match="the first group failed"):
        run_experiment(experiment, folder, [0], options, log=messages.append)
    corrected = dataclasses.replace(options, overrides={"run.eval_steps": "31"})
    if learnt:  # an epoch was recorded: kept, and only the same options continue it
        assert (folder / "experiment.json").is_file()
        with pytest.raises(UserError, match=r"other overrides \(run.eval_steps: 30, now 31\)"):
            run_experiment(experiment, folder, [0], corrected, log=messages.append)
    else:
        assert not folder.exists() and "nothing was learnt yet" in messages[-1]
        with pytest.raises(UserError, match="the first group failed"):  # started afresh, not refused
            run_experiment(experiment, folder, [0], corrected, log=messages.append)


def test_a_refused_rerun_names_every_differing_setting(tmp_path: Path) -> None:
    overrides = {f"learner.{k}": "8" for k in ("batch_size", "target_update_every", "train_frequency")}
    overrides |= {"replay.warmup": "10", "run.eval_steps": "30", "run.steps_per_epoch": "50"}
    arms = [{"name": "A", "config": {"learner": {"lr": 0.001, "batch_size": 8}}}]
    old = {"experiment": "x", "epochs": 2, "overrides": overrides, "arms": arms}
    prepare_folder(tmp_path / "exp", old)
    new = json.loads(json.dumps(old))
    new["overrides"]["run.eval_steps"] = "31"
    del new["overrides"]["replay.warmup"]
    with pytest.raises(UserError) as exc:
        prepare_folder(tmp_path / "exp", new)
    assert "other overrides (replay.warmup: 10, now not set; run.eval_steps: 30, now 31)" in str(exc.value)
    new = json.loads(json.dumps(old))
    new["arms"][0]["config"]["learner"]["lr"] = 0.002
    with pytest.raises(UserError, match=r"other arms \(A.config.learner.lr: 0.001, now 0.002\)"):
        prepare_folder(tmp_path / "exp", new)


# --- mtdqn analyze ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """An untrained (epoch 0) run on three tasks and one on Car-On-Hill alone (shares one task with it)."""
    root = tmp_path_factory.mktemp("runs")
    three = small_config(epochs=0)
    one = small_config(epochs=0)
    one.tasks = [TaskConfig("mtdqn/CarOnHill-v0", gamma=0.95, horizon=100)]
    for name, config in (("three", three), ("one", one)):
        Trainer.create(config, root / name, progress=False).run()
    return {"three": root / "three", "one": root / "one"}


def _analyze(runs: dict[str, Path], *args: str) -> int:
    return main(["analyze", str(runs["three"]), "--steps", "20", *args])


def test_analyze_into_a_file_is_refused(runs, tmp_path: Path, capsys) -> None:
    (tmp_path / "realfile").write_text("mine")
    assert _analyze(runs, "--method", "pca", "--out", str(tmp_path / "realfile")) == 2
    assert "output folder" in (err := _one_line_error(capsys)) and "is a file; give --out a folder" in err
    assert _analyze(runs, "--method", "pca", "--out", str(tmp_path / "realfile" / "sub")) == 2
    assert "lies in" in _one_line_error(capsys)
    assert (tmp_path / "realfile").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "needle"),
    [  # 20 steps x 3 tasks = 60 states
        (["--perplexity", "500"], "needs at least 1501 states (3 x perplexity + 1), but it would embed 60"),
        (["--perplexity", "20"], "give --perplexity 19 or less, or --steps 21 or more"),
        (["--method", "pca", "--neighbours", "500"], "give --neighbours 59 or less, or --steps 167 or more"),
        (["--method", "pca", "--neighbours", "60"], "k-NN of 60 neighbours needs more than 60 states"),
        # the comparison embeds only the 20 states of the one task the two runs share
        (["--perplexity", "10", "--compare", "{one}"], "it would embed 20 (20 steps x 1 task(s))"),
    ],
)
def test_analysis_settings_the_states_cannot_support_are_refused(
    runs, args, needle, tmp_path, capsys
) -> None:
    out = tmp_path / "an"
    args = [a.replace("{one}", str(runs["one"])) for a in args]
    assert _analyze(runs, *args, "--out", str(out)) == 2
    assert needle in _one_line_error(capsys)
    assert not out.exists()  # refused before the rollout: no config.json that records the impossible value


def test_embedding_and_neighbours_refuse_instead_of_lowering_silently() -> None:
    x = np.random.default_rng(0).normal(size=(40, 5))
    assert embed(x, AnalysisConfig(perplexity=13, tsne_iterations=20), seed=0).shape == (40, 2)
    with pytest.raises(UserError, match=r"perplexity 13\.5 needs at least 42 states"):
        embed(x, AnalysisConfig(perplexity=13.5, tsne_iterations=20), seed=0)
    assert neighbours(x, 39)[0].shape == (40, 39)
    with pytest.raises(UserError, match="40 nearest neighbours need more than 40 states"):
        neighbours(x, 40)
