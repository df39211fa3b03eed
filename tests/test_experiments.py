"""Experiments: results.csv rows, kill and resume, refused re-runs, one-line errors, the Ray backend."""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import alive, default_sigint, fake_reference, sigterm_when

import mtdqn.train
from mtdqn.cli import main
from mtdqn.errors import UserError
from mtdqn.experiments import ConfigArm, Experiment, RunOptions, deramo_gym_config
from mtdqn.reference import DERAMO_GYM_TASKS, ENV_VAR
from mtdqn.runner import run_experiment
from mtdqn.train import Trainer

OVERRIDES = {
    "run.steps_per_epoch": "40",
    "run.eval_steps": "30",
    "replay.warmup": "10",
    "learner.batch_size": "8",
    "run.background_eval": "false",
}
TINY = [arg for key, value in OVERRIDES.items() for arg in ("--set", f"{key}={value}")] + ["--no-progress"]


def _experiment(out: Path, *extra: str) -> int:
    """The tiny experiment; later options (``extra``) replace earlier ones."""
    args = ["experiment", "deramo-gym", "--seeds", "2", "--epochs", "2", "--group-size", "1"]
    return main([*args, "--out", str(out), *TINY, *extra])


def _no_run_plots(mp: pytest.MonkeyPatch) -> None:
    """Skip every run's own PNGs (2.5 s a run here; the report's figures are still drawn)."""
    mp.setattr(mtdqn.train, "plot_learning_curves", lambda run_dir: [])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """deramo-gym, 2 seeds x 2 epochs, one group per seed, tiny steps, run once for the module."""
    root = tmp_path_factory.mktemp("experiments")
    runs = np.linspace(-1, 1, 3)[:, None, None] * np.ones((1, 5, 51))
    ref = fake_reference(root / "ref", {"MDQN": runs, "DQN": runs + 1})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_VAR, str(ref))
        _no_run_plots(mp)
        assert _experiment(root) == 0
    return root / "deramo-gym"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_results_hold_one_row_per_arm_seed_task_and_epoch(finished: Path) -> None:
    rows = _rows(finished / "results.csv")
    expected = [
        (arm, str(seed), task, str(epoch))
        for arm in ("MDQN", "DQN")
        for seed in (0, 1)
        for task in DERAMO_GYM_TASKS
        for epoch in (0, 1, 2)
    ]
    assert [(r["arm"], r["seed"], r["task"], r["epoch"]) for r in rows] == expected
    columns = ["arm", "seed", "task", "task_index", "epoch", "J", "return", "episodes", "mean_q", "group"]
    assert list(rows[0]) == columns
    for r in rows:  # the numbers are the runs' own
        metrics = _rows(finished / "runs" / r["group"] / "metrics.csv")
        match = [
            m
            for m in metrics
            if (m["task_name"], m["epoch"], m["seed"]) == (r["task"], r["epoch"], r["seed"])
        ]
        numbers = ("J", "return", "episodes", "mean_q")
        assert [tuple(m[k] for k in numbers) for m in match] == [tuple(r[k] for k in numbers)]
    assert all((r["mean_q"] == "nan") == (r["epoch"] == "0") for r in rows)  # learning batches from epoch 1
    manifest = json.loads((finished / "experiment.json").read_text())
    assert manifest["experiment"] == "deramo-gym" and manifest["epochs"] == 2 and manifest["seeds"] == [0, 1]
    assert [g["folder"] for g in manifest["groups"]] == [
        "runs/MDQN-seed0",
        "runs/MDQN-seed1",
        "runs/DQN-seed0",
        "runs/DQN-seed1",
    ]
    assert [a["config"]["mode"] for a in manifest["arms"]] == ["multi", "single"]
    report = finished / "report"
    for name in ("report.md", "summary.md", "summary.csv", "learning_curves.png", "J_Cart-Pole.png"):
        assert (report / name).stat().st_size > 100
    assert "MDQN (paper, 3 runs)" not in (report / "report.md").read_text()  # legends are in the figures
    assert "for DQN, MDQN" in (report / "report.md").read_text()


def test_a_killed_experiment_keeps_finished_groups_and_completes_the_rest(
    tmp_path: Path, finished: Path, monkeypatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(finished.parent / "ref"))
    _no_run_plots(monkeypatch)
    original = Trainer._step_envs

    def killed_in_dqn_seed0_epoch2(self, actions):
        if self.run_dir.name == "DQN-seed0" and self.env_steps == 60:  # epoch 2 = steps 41..80
            raise KeyboardInterrupt
        return original(self, actions)

    monkeypatch.setattr(Trainer, "_step_envs", killed_in_dqn_seed0_epoch2)
    with pytest.raises(SystemExit) as exc:
        _experiment(tmp_path)
    assert exc.value.code == 130
    folder = tmp_path / "deramo-gym"
    assert not (folder / "results.csv").exists()
    assert not (folder / "runs" / "DQN-seed1").exists()
    kept = {p: p.stat().st_mtime_ns for p in (folder / "runs").glob("MDQN-seed*/*") if p.is_file()}
    assert len(kept) >= 6

    monkeypatch.setattr(Trainer, "_step_envs", original)
    assert _experiment(tmp_path) == 0
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished groups untouched
    assert (folder / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--epochs", "3"], "other epochs (2, now 3)"),
        (["--seeds", "3"], "other seeds"),
        (["--group-size", "2"], "other group size"),
        (["--set", "run.eval_steps=31"], "other overrides (run.eval_steps: 30, now 31)"),
    ],
)
def test_a_rerun_with_other_options_is_refused(finished: Path, extra, needle, capsys) -> None:
    before = {p: p.stat().st_mtime_ns for p in finished.rglob("*") if p.is_file()}
    code = _experiment(finished.parent, *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert needle in err[-1] and "choose another --name" in err[-1]
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("*") if p.is_file()} == before


def _copy_of(finished: Path, tmp_path: Path, mp: pytest.MonkeyPatch) -> Path:
    """A copy of the finished experiment under ``tmp_path / "out"``, ready to be run again."""
    out = tmp_path / "out"
    shutil.copytree(finished, out / "deramo-gym")
    mp.setenv(ENV_VAR, str(finished.parent / "ref"))
    _no_run_plots(mp)
    return out


def test_a_rerun_may_change_settings_that_change_no_number(
    finished: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = _copy_of(finished, tmp_path, monkeypatch)
    runs = out / "deramo-gym" / "runs"
    before = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    code = _experiment(out, "--set", "run.torch_threads=1", "--set", "run.background_eval=true")
    assert code == 0
    assert capsys.readouterr().err.count("complete, kept") == 4
    assert {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()} == before
    assert (out / "deramo-gym" / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()


def test_an_experiment_from_before_kernels_continues_with_torch_kernels_only(
    finished: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = _copy_of(finished, tmp_path, monkeypatch)
    manifest_path = out / "deramo-gym" / "experiment.json"
    manifest = json.loads(manifest_path.read_text())
    for arm in manifest["arms"]:  # as an older mtdqn wrote it
        del arm["config"]["learner"]["kernels"]
    manifest_path.write_text(json.dumps(manifest))
    assert _experiment(out) == 2
    assert "add --set learner.kernels=torch" in capsys.readouterr().err
    assert _experiment(out, "--set", "learner.kernels=torch") == 0
    assert capsys.readouterr().err.count("complete, kept") == 4


def test_an_experiment_from_before_later_fields_continues(
    finished: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Fields added to the configuration after an experiment was started (task balance, gradient batches)
    take the values that reproduce it, so the same command keeps its finished groups."""
    out = _copy_of(finished, tmp_path, monkeypatch)
    manifest_path = out / "deramo-gym" / "experiment.json"
    manifest = json.loads(manifest_path.read_text())
    for arm in manifest["arms"]:  # as mtdqn wrote it before these fields
        for key in ("task_balance", "task_balance_every", "task_balance_max_weight"):
            del arm["config"]["learner"][key]
        del arm["config"]["run"]["gradient_batches"]
    manifest_path.write_text(json.dumps(manifest))
    assert _experiment(out) == 0
    assert capsys.readouterr().err.count("complete, kept") == 4
    for arm in manifest["arms"]:  # a param-norm experiment from before the bound on its weights
        if arm["config"]["mode"] == "multi":
            arm["config"]["learner"]["task_balance"] = "param-norm"
    manifest["overrides"]["learner.task_balance"] = "param-norm"
    manifest_path.write_text(json.dumps(manifest))
    assert _experiment(out, "--set", "learner.task_balance=param-norm") == 2
    assert "add --set learner.task_balance_max_weight=0 to continue it" in capsys.readouterr().err
    bound = ["--set", "learner.task_balance_max_weight=0"]
    assert _experiment(out, "--set", "learner.task_balance=param-norm", *bound) == 0
    assert capsys.readouterr().err.count("complete, kept") == 4


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nope", "--seeds", "2"], "invalid choice"),
        (["deramo-gym"], "required: --seeds"),
        (["deramo-gym", "--seeds", "0"], "not a positive seed count"),
        (["deramo-gym", "--seeds", "x"], "not a seed list"),
        (["deramo-gym", "--seeds", "2", "--group-size", "0"], "not a positive integer"),
        (["deramo-gym", "--seeds", "2", "--set", "steps=4"], "SECTION.FIELD=VALUE"),
        (["deramo-gym", "--seeds", "2", "--set", "run.seeds=3"], "use --seeds"),
        (["deramo-gym", "--seeds", "2", "--set", "run.nope=1"], "run has no field 'nope'"),
        (["deramo-gym", "--seeds", "2", "--set", "run.eval_steps=x"], "'x' is not a valid int"),
        (["deramo-gym", "--seeds", "2", "--set", "learner.batch_size=0"], "batch size is 0"),
        (["deramo-gym", "--seeds", "2", "--ray-address", "auto"], "needs --backend ray"),
        (["deramo-gym", "--seeds", "2", "--name", "taken"], "is not an experiment folder"),
        (["deramo-gym", "--seeds", "2", "--backend", "ray"], 'pip install "mtdqn[ray]"'),
        (["deramo-gym", "--seeds", "2", "--backend", "ray", "--jobs", "2"], "--jobs is for --backend local"),
        (["deramo-gym", "--seeds", "2", "--jobs", "0"], "not a positive integer"),
        (["deramo-gym", "--seeds", "2", "--gpus-per-group", "1"], "--gpus-per-group is for --backend ray"),
        (["deramo-gym", "--seeds", "2", "--cpus-per-group", "2"], "--cpus-per-group is for --backend ray"),
        (["deramo-gym", "--seeds", "2", "--gpus-per-group", "-1"], "is not a non-negative"),
        (
            ["deramo-gym", "--seeds", "2", "--backend", "ray", "--gpus-per-group", "1"],
            "reserves GPUs for groups that learn on the CPU",
        ),
        (
            ["deramo-gym", "--seeds", "2", "--backend", "ray", "--device", "cuda", "--gpus-per-group", "0"],
            "Ray hides the GPUs from a task that reserves none",
        ),
    ],
)
def test_experiment_mistakes_give_one_line_and_exit_code_2(
    args: list[str], needle: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(["experiment", *args, "--out", str(tmp_path), "--no-progress"]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["notes.txt", "taken"]  # nothing written


def test_ray_groups_reserve_the_gpus_their_device_needs() -> None:
    pytest.importorskip("ray")
    from mtdqn.backends import RayBackend

    default = RayBackend()
    assert [default.gpus_for("cpu", gpus) for gpus in (0, 4)] == [0, 0]
    assert [default.gpus_for("cuda", 4), default.gpus_for("auto", 4), default.gpus_for("auto", 0)] == [
        1,
        1,
        0,
    ]
    assert RayBackend(gpus_per_group=0.25).gpus_for("auto", 1) == 0.25
    with pytest.raises(
        UserError, match=re.escape("each group would reserve 1 GPU(s) but the Ray cluster has 0")
    ):
        default.gpus_for("cuda", 0)
    with pytest.raises(UserError, match=re.escape("reserve 2 GPU(s) but the Ray cluster has 1")):
        RayBackend(gpus_per_group=2).gpus_for("auto", 1)
    with pytest.raises(UserError, match="learn on the CPU"):
        RayBackend(gpus_per_group=1).gpus_for("cpu", 4)


@dataclasses.dataclass(frozen=True)
class LoseWorkerOnceArm(ConfigArm):
    """A ConfigArm whose first run trains one epoch, then kills its own process (a lost Ray worker); the
    marker file it leaves holds the worker's ``CUDA_VISIBLE_DEVICES`` (the GPUs Ray gave the task)."""

    marker: str = ""

    def run(self, seeds: list[int], run_dir: Path, options: RunOptions) -> None:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().run(seeds, run_dir, options)
        os.write(fd, os.environ.get("CUDA_VISIBLE_DEVICES", "unset").encode())
        os.close(fd)
        super().run(seeds, run_dir, dataclasses.replace(options, epochs=1))
        os._exit(1)


def test_ray_backend_runs_each_group_as_a_task_and_retries_a_lost_worker(
    tmp_path: Path, finished: Path, monkeypatch, one_ray_instance
) -> None:
    ray = pytest.importorskip("ray")
    from mtdqn.backends import RayBackend

    tests = str(Path(__file__).parent)
    path = os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # A declared (logical) GPU, as on a cluster with GPUs: each group reserves half of it. --device auto
    # then learns on the CPU (PyTorch finds no CUDA here), with the same numbers.
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    messages: list[str] = []
    try:
        experiment = Experiment(
            "deramo-gym",
            "as the registered one, with a DQN worker lost once",
            arms=(
                ConfigArm("MDQN", functools.partial(deramo_gym_config, "multi")),
                LoseWorkerOnceArm(
                    "DQN", functools.partial(deramo_gym_config, "single"), marker=str(tmp_path / "lost")
                ),
            ),
        )
        options = RunOptions(epochs=2, overrides=dict(OVERRIDES), device="auto", progress=False)
        backend = RayBackend(cpus_per_group=1, gpus_per_group=0.5)
        # one group per arm (both seeds): an agent's numbers do not depend on the seeds beside it
        folder = tmp_path / "exp"
        results = run_experiment(experiment, folder, [0, 1], options, 2, backend, log=messages.append)
    finally:
        ray.shutdown()
    assert "submitted 2 groups to Ray, 1 CPU(s) and 0.5 GPU(s) each" in messages
    assert (tmp_path / "lost").read_text() == "0"  # the task saw the GPU it reserved
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["DQN-seeds0-1", "MDQN-seeds0-1"]
    ours, local = _rows(results), _rows(finished / "results.csv")
    assert [r.pop("group") for r in ours] == [f"{r.pop('group').split('-')[0]}-seeds0-1" for r in local]
    # the same numbers, mean Q of the learning batches included, as the local one-seed groups: a seed learns
    # bit for bit the same in a group of two (mtdqn.adam) and in a Ray worker
    assert ours == local


def test_local_backend_with_two_jobs_gives_the_same_results(tmp_path: Path, finished: Path, monkeypatch):
    """Four groups, two at a time in worker processes with one learner thread each: same numbers."""
    monkeypatch.setenv(ENV_VAR, str(finished.parent / "ref"))
    assert _experiment(tmp_path, "--jobs", "2") == 0
    folder = tmp_path / "deramo-gym"
    assert (folder / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()


def test_a_partial_report_covers_the_finished_groups_only(tmp_path: Path, finished: Path, capsys) -> None:
    import shutil

    folder = tmp_path / "deramo-gym"
    shutil.copytree(finished, folder)
    (folder / "results.csv").unlink()
    unfinished = folder / "runs" / "DQN-seed1" / "metrics.csv"
    lines = unfinished.read_text().splitlines()
    unfinished.write_text("\n".join(line for line in lines if not line.startswith("2,")) + "\n")  # no epoch 2
    assert main(["report", str(folder), "--partial", "--no-reference"]) == 0
    want = [r for r in _rows(finished / "results.csv") if r["group"] != "DQN-seed1"]
    assert _rows(folder / "partial" / "results.csv") == want
    report = (folder / "partial" / "report" / "report.md").read_text()
    assert "Partial report: 3 of 4 groups finished" in report and "DQN (1 seed)" in report
    assert (folder / "partial" / "report" / "summary.csv").is_file()
    assert not (folder / "results.csv").exists()  # the full results are not written by a partial report

    for group in ("MDQN-seed0", "MDQN-seed1", "DQN-seed0"):
        (folder / "runs" / group / "metrics.csv").unlink()
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(["report", str(folder), "--partial"]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no group of" in err and "has finished yet (0 of 4)" in err


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("to_group", [False, True], ids=["sigterm-to-driver", "ctrl-c-to-process-group"])
def test_a_stop_signal_stops_every_worker_and_keeps_finished_epochs(tmp_path: Path, to_group: bool) -> None:
    """A scheduler's SIGTERM reaches the driver only: it stops its workers. Ctrl-C in a terminal reaches the
    whole process group: the workers unwind by themselves. Either way each keeps its last epoch."""
    args = ["experiment", "deramo-gym", "--seeds", "2", "--epochs", "500", "--group-size", "1", "--jobs", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtdqn.cli", *args, "--out", str(tmp_path), *TINY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=to_group,
        preexec_fn=default_sigint,
    )
    runs = tmp_path / "deramo-gym" / "runs"
    started = ("MDQN-seed0", "MDQN-seed1")
    ready = lambda: all((runs / g / "metrics.csv").exists() for g in started)  # noqa: E731
    err, workers = sigterm_when(proc, ready, group_sigint=to_group)
    assert len(workers) >= 2
    assert proc.returncode == (130 if to_group else 143), err[-2000:]
    assert "interrupted; finished epochs and analyses are saved" in err
    assert "Traceback" not in err and "killed" not in err
    time.sleep(1)
    assert not [pid for pid in workers if alive(pid)]
    for group in started:
        epoch = torch.load(runs / group / "checkpoint.pt", weights_only=True)["epoch"]
        epochs = {int(row["epoch"]) for row in _rows(runs / group / "metrics.csv")}
        # every epoch up to the checkpoint's is recorded (its own evaluation runs again on resume)
        assert epoch < 500 and epochs == set(range(max(epochs) + 1)) and epoch - 1 <= max(epochs) <= epoch


def test_gradient_batches_set_on_an_experiment_measure_its_multi_task_arms_only() -> None:
    from mtdqn.experiments import arm_config

    options = RunOptions(epochs=3, overrides={"run.gradient_batches": "20"})
    mdqn = arm_config(functools.partial(deramo_gym_config, "multi"), [0, 1], options)
    dqn = arm_config(functools.partial(deramo_gym_config, "single"), [0, 1], options)  # not refused
    assert (mdqn.run.gradient_batches, dqn.run.gradient_batches) == (20, 0)
    with pytest.raises(UserError, match="is not a valid int"):
        arm_config(functools.partial(deramo_gym_config, "single"), [0], RunOptions(
            epochs=3, overrides={"run.gradient_batches": "many"}))  # fmt: skip


def test_task_balance_set_on_an_experiment_balances_its_multi_task_arms_only() -> None:
    from mtdqn.experiments import arm_config

    options = RunOptions(epochs=3, overrides={"learner.task_balance": "feature-norm"})
    mdqn = arm_config(functools.partial(deramo_gym_config, "multi"), [0, 1], options)
    dqn = arm_config(functools.partial(deramo_gym_config, "single"), [0, 1], options)  # not refused
    assert (mdqn.learner.task_balance, dqn.learner.task_balance) == ("feature-norm", "none")
    mdqn.validate()
    dqn.validate()
    with pytest.raises(UserError, match="use one of none, param-norm, feature-norm"):
        arm_config(functools.partial(deramo_gym_config, "single"), [0], RunOptions(
            epochs=3, overrides={"learner.task_balance": "norm"}))  # fmt: skip
