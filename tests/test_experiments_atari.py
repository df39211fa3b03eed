"""The Atari experiments: their arms are the README's Pong + Breakout runs; end to end on a tiny budget."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import pytest

from mtdqn.cli import build_parser, config_from_args, main
from mtdqn.experiments import RunOptions, get_experiment

TINY = {
    "run.steps_per_epoch": "24",
    "run.eval_steps": "16",
    "replay.warmup": "8",
    "replay.capacity": "64",
    "learner.batch_size": "4",
    "exploration.eps_decay_steps": "16",
    "run.background_eval": "false",
    "run.torch_threads": "1",
}
TINY_ARGS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")] + ["--no-progress"]

README_RUNS = {
    # README, "Learning: review-exp1 on Pong + Breakout" (its command, seed 0)
    ("atari-review-exp1", "joint"): "--arch review-exp1 --precision bf16",
    ("atari-review-exp1", "param-norm"): "--arch review-exp1 --precision bf16 --task-balance param-norm",
    # README, "Learning: review-mtqn": the run that learns both games (seed 0), and the review's init in fp32
    ("atari-review-mtqn", "remedies"): "--arch review-mtqn --precision fp32 --init xavier --lr-fan-in 256 "
    "--lr-fan-in-conv channels --zero-q-layer --task-balance param-norm",
    ("atari-review-mtqn", "review"): "--arch review-mtqn --precision fp32",
}
BUDGET = (
    "train --preset review-exp1 --protocol review --batch-size 32 --eps-decay-steps 100000 --warmup 20000 "
    "--capacity 100000 --life-loss-terminal --steps-per-epoch 25000 --epochs 14 --eval-steps 12500"
)


@pytest.mark.parametrize(("experiment", "arm"), sorted(README_RUNS))
def test_each_arm_is_the_readme_command(experiment: str, arm: str) -> None:
    config = get_experiment(experiment).arm(arm).config([3], RunOptions(epochs=14))
    args = build_parser().parse_args(shlex.split(f"{BUDGET} {README_RUNS[experiment, arm]} --seed 3"))
    assert config.to_dict() == config_from_args(args).to_dict()


def test_an_atari_experiment_runs_and_reports_raw_scores(tmp_path: Path, capsys) -> None:
    args = ["experiment", "atari-review-exp1", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path)]
    assert main([*args, *TINY_ARGS, "--set", "atari.noop_max=0"]) == 0
    folder = tmp_path / "atari-review-exp1"
    with (folder / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted({(r["arm"], r["task"], r["epoch"]) for r in rows}) == [
        (arm, task, epoch)
        for arm in ("joint", "param-norm")
        for task in ("Breakout", "Pong")
        for epoch in "01"
    ]
    manifest = json.loads((folder / "experiment.json").read_text())
    assert manifest["metric"] == "return" and manifest["check_epochs"] == [7, 14]
    run = json.loads((folder / "runs" / "param-norm-seed0" / "config.json").read_text())["config"]
    assert run["atari"]["noop_max"] == 0 and run["learner"]["task_balance"] == "param-norm"
    md = (folder / "report" / "summary.md").read_text()
    assert "| task | arm | n | return ep7 | return ep14 | return ep1 |" in md
    assert (folder / "report" / "return_Pong.png").is_file()
    capsys.readouterr()
    for bad, needle in [
        (["atari-review-exp1", "--set", "atari.nope=1"], "atari has no field 'nope'"),
        (["deramo-gym", "--set", "atari.noop_max=0"], "this experiment's runs are not Atari runs"),
    ]:
        out = tmp_path / "other"
        assert main(["experiment", *bad, "--seeds", "1", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1
        assert not out.exists()
