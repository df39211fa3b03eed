"""The deramo-transfer and feature-width experiments: staged arms, transfer sources, resume, sweep reports."""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fake_reference

import mtdqn.backends
import mtdqn.train
from mtdqn.best_shared import BEST_SHARED_FILE, snapshot_shared, weights_digest
from mtdqn.cli import main
from mtdqn.config import Config
from mtdqn.experiments import (
    EXPERIMENTS,
    FEATURE_WIDTHS,
    ConfigArm,
    Experiment,
    RunOptions,
    Sweep,
    feature_width_config,
    get_experiment,
    parse_override,
    transfer_target_config,
)
from mtdqn.reference import ENV_VAR
from mtdqn.runner import run_experiment
from mtdqn.train import Trainer

OVERRIDES = {
    "run.steps_per_epoch": "40",
    "run.eval_steps": "30",
    "replay.warmup": "10",
    "learner.batch_size": "8",
    "run.background_eval": "false",
    "run.torch_threads": "1",
}
TINY = [arg for key, value in OVERRIDES.items() for arg in ("--set", f"{key}={value}")] + ["--no-progress"]
SOURCE_TASKS = ["Cart-Pole", "Mountain-Car", "Car-On-Hill", "Inverted-Pendulum"]
TRANSFER_ARMS = {"unfreeze0": 0, "unfreeze10": 10, "unfreeze-never": None}
REVIEW_TASKS = ["CartPole", "Acrobot", "MountainCar"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _transfer(out: Path, *extra: str) -> int:
    return main(
        ["experiment", "deramo-transfer", "--seeds", "2", "--epochs", "2", "--out", str(out), *TINY, *extra]
    )


class ShippingBackend:
    """Runs each stage here, each job as the Ray backend ships it (pickled, absolute run folder), and
    records which arms every stage held."""

    def __init__(self) -> None:
        self.stages: list[list[str]] = []

    def run(self, jobs: list, log) -> None:
        self.stages.append([job.group.arm for job in jobs])
        for job in jobs:
            pickle.loads(pickle.dumps(dataclasses.replace(job, run_dir=job.run_dir.absolute())))()


def _record_transfer_starts(mp: pytest.MonkeyPatch) -> dict[str, list[torch.Tensor]]:
    """Shared layers of every transfer run as its warm-up starts (after the source was loaded)."""
    starts: dict[str, list[torch.Tensor]] = {}
    original = Trainer._warmup

    def warmup(self) -> None:
        if self.config.transfer is not None:
            starts[self.run_dir.name] = snapshot_shared(self.net)
        original(self)

    mp.setattr(Trainer, "_warmup", warmup)
    return starts


@pytest.fixture(scope="module")
def transfer(tmp_path_factory) -> tuple[Path, ShippingBackend, dict[str, list[torch.Tensor]]]:
    """deramo-transfer, 2 seeds x 2 epochs, tiny steps, shipped as Ray would ship it."""
    root = tmp_path_factory.mktemp("transfer")
    runs = np.linspace(-1, 1, 3)[:, None, None]
    ref = fake_reference(
        root / "ref",
        {
            "DQN": runs * np.ones((1, 5, 51)),
            **{a: runs * np.ones((1, 1, 51)) - k for k, a in enumerate(TRANSFER_ARMS)},
        },
    )
    backend = ShippingBackend()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_VAR, str(ref))
        mp.setattr(mtdqn.train, "plot_learning_curves", lambda run_dir: [])
        mp.setattr(mtdqn.backends, "make_backend", lambda *args: backend)
        starts = _record_transfer_starts(mp)
        assert _transfer(root) == 0
    return root / "deramo-transfer", backend, starts


def test_transfer_results_hold_every_arm_and_the_pretraining_runs_first(transfer) -> None:
    folder, backend, _ = transfer
    assert backend.stages == [["pretrain", "DQN"], list(TRANSFER_ARMS)]
    rows = _rows(folder / "results.csv")
    expected = [("pretrain", str(s), t, str(e)) for s in (0, 1) for t in SOURCE_TASKS for e in (0, 1, 2)]
    expected += [
        (a, str(s), "Acrobot", str(e)) for a in ("DQN", *TRANSFER_ARMS) for s in (0, 1) for e in (0, 1, 2)
    ]
    assert [(r["arm"], r["seed"], r["task"], r["epoch"]) for r in rows] == expected
    manifest = json.loads((folder / "experiment.json").read_text())
    assert manifest["baseline"] == "DQN" and manifest["sweep"] is None
    arms = {a["name"]: a for a in manifest["arms"]}
    assert [t["name"] for t in arms["pretrain"]["config"]["tasks"]] == SOURCE_TASKS
    assert arms["DQN"]["config"]["mode"] == "single" and arms["DQN"]["config"]["tasks"][0]["horizon"] == 1000
    for name, unfreeze in TRANSFER_ARMS.items():
        assert arms[name]["kind"] == "transfer" and arms[name]["source_arm"] == "pretrain"
        assert arms[name]["unfreeze_epoch"] == unfreeze
    # the report draws the published transfer curves by arm name, and compares every arm with DQN
    summary = {(r["task"], r["arm"]): r for r in _rows(folder / "report" / "summary.csv")}
    assert {a: summary[("Acrobot", a)]["paper_n"] for a in ("DQN", *TRANSFER_ARMS)} == dict.fromkeys(
        ("DQN", *TRANSFER_ARMS), "3"
    )
    paper_auc = float(summary[("Acrobot", "unfreeze10")]["paper_AUC_mean"])
    assert paper_auc == pytest.approx(-2.0)  # the fake unfreeze10 runs average -1, over epochs 0-2
    assert [summary[("Acrobot", a)]["baseline"] for a in TRANSFER_ARMS] == ["DQN"] * 3
    assert summary[("Cart-Pole", "pretrain")]["paper_n"] == "0"
    assert (folder / "report" / "J_Acrobot.png").stat().st_size > 100


def test_transfer_runs_start_from_the_pretraining_run_of_their_seeds(transfer) -> None:
    folder, _, starts = transfer
    source = folder / "runs" / "pretrain-seeds0-1"
    best = torch.load(source / BEST_SHARED_FILE, weights_only=True)
    best_weights = best["weights"] + best["biases"]
    assert best["seeds"] == [0, 1]
    for name, unfreeze in TRANSFER_ARMS.items():
        run = folder / "runs" / f"{name}-seeds0-1"
        transfer_config = json.loads((run / "config.json").read_text())["config"]["transfer"]
        assert Path(transfer_config["source"]).resolve() == source.resolve()
        assert transfer_config["unfreeze_epoch"] == unfreeze
        assert transfer_config["source_seeds"] == [0, 1]  # seed s starts from the source's seed s
        assert transfer_config["source_fingerprint"] == weights_digest(best_weights)
        assert all(torch.equal(a, b) for a, b in zip(starts[run.name], best_weights, strict=True)), name
        end = snapshot_shared(Trainer.load(run, progress=False).net)
        frozen = unfreeze is None or unfreeze > 2  # frozen during both epochs: bit-identical at the end
        assert all(torch.equal(a, b) for a, b in zip(end, best_weights, strict=True)) == frozen, name


def test_a_one_task_dqn_learns_as_a_one_task_mdqn(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(mtdqn.train, "plot_learning_curves", lambda run_dir: [])
    options = ["run.steps_per_epoch=40", "run.eval_steps=30", "replay.warmup=10", "learner.batch_size=8"]
    rows = {}
    for mode in ("single", "multi"):
        arm = ConfigArm(mode, functools.partial(transfer_target_config, mode))
        overrides = dict(parse_override(o) for o in options) | {"run.background_eval": "false"}
        arm.run([0, 3], tmp_path / mode, RunOptions(epochs=1, overrides=overrides, progress=False))
        rows[mode] = [
            {k: v for k, v in r.items() if k not in ("steps_per_s", "wall_s")}
            for r in _rows(tmp_path / mode / "metrics.csv")
        ]
    assert rows["single"] == rows["multi"]


def test_a_killed_transfer_experiment_keeps_finished_groups_and_completes_the_rest(
    tmp_path: Path, transfer, monkeypatch
) -> None:
    folder, _, _ = transfer
    monkeypatch.setenv(ENV_VAR, str(folder.parent / "ref"))
    monkeypatch.setattr(mtdqn.train, "plot_learning_curves", lambda run_dir: [])
    step, warmup = Trainer._step_envs, Trainer._warmup

    def killed_in_unfreeze10_epoch2(self, actions):
        if self.run_dir.name == "unfreeze10-seeds0-1" and self.env_steps == 60:  # after its first checkpoint
            raise KeyboardInterrupt
        return step(self, actions)

    def killed_in_never_warmup(self):
        if self.run_dir.name == "unfreeze-never-seeds0-1":  # before its first checkpoint
            raise KeyboardInterrupt
        return warmup(self)

    monkeypatch.setattr(Trainer, "_step_envs", killed_in_unfreeze10_epoch2)
    with pytest.raises(SystemExit) as exc:
        _transfer(tmp_path)
    assert exc.value.code == 130
    runs = tmp_path / "deramo-transfer" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [
        "DQN-seeds0-1",
        "pretrain-seeds0-1",
        "unfreeze0-seeds0-1",
        "unfreeze10-seeds0-1",
    ]
    monkeypatch.setattr(Trainer, "_step_envs", step)
    monkeypatch.setattr(Trainer, "_warmup", killed_in_never_warmup)
    with pytest.raises(SystemExit):
        _transfer(tmp_path)
    assert (runs / "unfreeze-never-seeds0-1" / "config.json").is_file()
    assert not (runs / "unfreeze-never-seeds0-1" / "checkpoint.pt").exists()
    kept = {p: p.stat().st_mtime_ns for p in runs.glob("*/*") if p.is_file() and "never" not in str(p)}
    monkeypatch.setattr(Trainer, "_warmup", warmup)
    assert _transfer(tmp_path) == 0
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished groups untouched
    ours = _rows(tmp_path / "deramo-transfer" / "results.csv")
    assert ours == _rows(folder / "results.csv")  # relative source paths here, absolute in the fixture


# --- feature width ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def widths(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("widths")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mtdqn.train, "plot_learning_curves", lambda run_dir: [])
        args = ["experiment", "feature-width-review", "--seeds", "2", "--epochs", "1", "--out", str(root)]
        assert main([*args, *TINY]) == 0
    return root / "feature-width-review"


def test_feature_width_report_draws_every_task_against_the_width(widths: Path) -> None:
    manifest = json.loads((widths / "experiment.json").read_text())
    assert manifest["sweep"] == {
        "parameter": "network.feature_width",
        "label": "shared feature width",
        "values": {f"w{w}": w for w in FEATURE_WIDTHS},
    }
    for w in FEATURE_WIDTHS:
        config = json.loads((widths / "runs" / f"w{w}-seeds0-1" / "config.json").read_text())["config"]
        assert config["network"]["feature_width"] == w and config["network"]["width"] == 80
    best = torch.load(widths / "runs" / "w10-seeds0-1" / BEST_SHARED_FILE, weights_only=True)
    assert best["weights"][-1].shape == (2, 10, 80)  # two members, 10 feature units
    rows = _rows(widths / "report" / "sweep.csv")
    got = [(r["task"], r["value"], r["arm"], r["n"]) for r in rows]
    ordered = sorted(FEATURE_WIDTHS)
    assert got == [(t, str(w), f"w{w}", "2") for t in REVIEW_TASKS for w in ordered]
    assert all(r["auc_epochs"] == "0-1" and r["Jlast_mean"] != "" for r in rows)
    report = (widths / "report" / "report.md").read_text()
    assert "## Against the shared feature width" in report and "![sweep](sweep.png)" in report
    assert "| CartPole | 5 | w5 | 2 |" in report
    assert (widths / "report" / "sweep.png").stat().st_size > 1000
    assert not (widths / "report" / "sharing.csv").exists()


@pytest.mark.parametrize("tasks", ["review", "deramo"])
def test_the_relu_width_sweeps_differ_from_the_sigmoid_ones_only_in_the_feature_activation(tasks) -> None:
    sigmoid, relu = get_experiment(f"feature-width-{tasks}"), get_experiment(f"feature-width-{tasks}-relu")
    assert [a.name for a in relu.arms] == [a.name for a in sigmoid.arms] == [f"w{w}" for w in FEATURE_WIDTHS]
    for s_arm, r_arm in zip(sigmoid.arms, relu.arms, strict=True):
        s_cfg, r_cfg = s_arm.factory().to_dict(), r_arm.factory().to_dict()
        assert s_cfg["network"]["feature_activation"] == "sigmoid"
        assert r_cfg["network"]["feature_activation"] == "relu"
        r_cfg["network"]["feature_activation"] = "sigmoid"
        assert r_cfg == s_cfg
    assert relu.sweep == sigmoid.sweep and "(relu)" in relu.description


def test_the_swept_setting_cannot_be_overridden(tmp_path: Path, capsys) -> None:
    args = ["experiment", "feature-width-deramo", "--seeds", "2", "--out", str(tmp_path)]
    assert main([*args, "--set", "network.feature_width=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "it is the setting experiment feature-width-deramo varies" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def _two_tasks(feature_width: int) -> Config:
    """CartPole and Acrobot of the review's preset (one pair of tasks: fewer overlap pictures to draw)."""
    config = feature_width_config("review-control", feature_width)
    config.tasks = config.tasks[:2]
    return config


def test_analyze_adds_the_sharing_metrics_against_the_width(tmp_path: Path, monkeypatch) -> None:
    """A two-width sweep (the registered ones have five) with --analyze, then again: analyses are kept."""
    monkeypatch.setattr(mtdqn.train, "plot_learning_curves", lambda run_dir: [])
    arms = tuple(ConfigArm(f"w{w}", functools.partial(_two_tasks, w)) for w in (80, 5))
    sweep = Sweep("network.feature_width", "shared feature width", {"w80": 80, "w5": 5})
    experiment = Experiment("two-widths", "w80 vs w5", arms, baseline="w80", sweep=sweep)
    monkeypatch.setitem(EXPERIMENTS, experiment.name, experiment)
    args = ["experiment", "two-widths", "--seeds", "2", "--epochs", "1", "--out", str(tmp_path), *TINY]
    args += ["--analyze", "--analyze-steps", "20", "--analyze-gradient-batches", "2"]
    assert main(args) == 0
    folder = tmp_path / "two-widths"
    rows = _rows(folder / "sharing.csv")
    metrics = {r["metric"] for r in rows}
    assert {"task_probe_accuracy", "knn_task_mixing", "effective_rank", "dead_unit_fraction"} <= metrics
    assert {"value_r2_cross_offdiag", "gradient_cosine_offdiag", "gradient_contribution_max"} <= metrics
    assert {(r["arm"], r["seed"]) for r in rows} == {(a, s) for a in ("w80", "w5") for s in ("0", "1")}
    member = json.loads((folder / "runs" / "w5-seeds0-1" / "analysis" / "seed1" / "metrics.json").read_text())
    cross = np.array(member["metrics"]["value_r2_cross"])
    offdiag = [
        float(r["value"])
        for r in rows
        if (r["arm"], r["seed"], r["metric"]) == ("w5", "1", "value_r2_cross_offdiag")
    ]
    assert offdiag == [pytest.approx(cross[~np.eye(2, dtype=bool)].mean())]
    gradients = member["metrics"]["gradient_sharing"]  # two tasks: one cosine, contributions c and 1 - c
    w5_seed1 = {r["metric"]: float(r["value"]) for r in rows if (r["arm"], r["seed"]) == ("w5", "1")}
    assert w5_seed1["gradient_cosine_offdiag"] == pytest.approx(gradients["cosine"][0][1])
    top = max(v["contribution"] for v in gradients.values() if isinstance(v, dict))
    assert w5_seed1["gradient_contribution_max"] == pytest.approx(top) and top >= 0.5
    summary = _rows(folder / "report" / "sharing.csv")
    probe = [(r["arm"], r["value"], r["n"]) for r in summary if r["metric"] == "task_probe_accuracy"]
    assert probe == [("w5", "5", "2"), ("w80", "80", "2")]
    report = (folder / "report" / "report.md").read_text()
    assert "## Sharing metrics of the shared features" in report and "| w5 | 5 | 2 |" in report
    assert "gradient_cosine_offdiag" in report
    assert (folder / "report" / "sharing.png").stat().st_size > 1000

    analysed = {p: p.stat().st_mtime_ns for p in (folder / "runs").rglob("metrics.json")}
    assert main(args) == 0  # groups and analyses kept
    assert {p: p.stat().st_mtime_ns for p in analysed} == analysed
    assert _rows(folder / "sharing.csv") == rows


def test_the_sharing_summary_leaves_out_the_seeds_where_a_metric_is_undefined() -> None:
    from mtdqn.sweep_report import sharing_markdown, sharing_rows

    sharing = {"w5": {"gradient_cosine_offdiag": np.array([0.1, np.nan, 0.3]), "effective_rank": np.ones(3)}}
    rows = sharing_rows(sharing, {"values": {"w5": 5}, "label": "width"})
    cosine = next(r for r in rows if r["metric"] == "gradient_cosine_offdiag")
    assert (cosine["n"], cosine["defined"]) == (3, 2)
    assert cosine["mean"] == pytest.approx(0.2) and cosine["ci95"] == pytest.approx(12.706 * 0.1, rel=1e-4)
    assert "| w5 | 5 | 3 | 1 ± 0 | 0.2 ± 1.3 |" in sharing_markdown(rows, "width")


def test_ray_runs_the_transfer_arms_after_the_pretraining(tmp_path: Path, transfer, one_ray_instance) -> None:
    ray = pytest.importorskip("ray")
    from mtdqn.backends import RayBackend

    folder, _, _ = transfer
    ray.init(num_cpus=2, include_dashboard=False)
    messages: list[str] = []
    try:
        options = RunOptions(epochs=2, overrides=dict(OVERRIDES), progress=False)
        results = run_experiment(
            get_experiment("deramo-transfer"),
            tmp_path / "exp",
            [0, 1],
            options,
            None,
            RayBackend(None, 1),
            messages.append,
        )
    finally:
        ray.shutdown()
    stages = [m for m in messages if m.startswith("stage")]
    assert stages == [
        "stage 1/2: arms pretrain, DQN",
        "stage 2/2: arms unfreeze0, unfreeze10, unfreeze-never",
    ]
    assert _rows(results) == _rows(folder / "results.csv")
