"""The command line: one-line errors with exit code 2, help with defaults, train/evaluate/plot."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRAIN, alive, default_sigint, descendants, sigterm_when

from mtdqn.cli import build_parser, config_from_args, main
from mtdqn.config import atari_run_config
from mtdqn.errors import UserError
from mtdqn.runlog import save_config

TINY = ["--epochs", "1", *TINY_TRAIN]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mtdqn.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--task", "NoSuchEnv-v0"], "unknown environment"),
        (["train", "--task", "Pendulum-v1"], "discrete actions"),
        (["train", "--task", "CartPole-v1", "--epochs", "-1"], "--epochs"),
        (["train", "--task", "CartPole-v1", "--batch-size", "0"], "not a positive integer"),
        (["train", "--task", "CartPole-v1", "--lr-fan-in", "-1"], "not a non-negative integer"),
        (["train", "--task", "CartPole-v1", "--lr-fan-in-conv", "channels"], "give --lr-fan-in N as well"),
        (["train", "--task", "CartPole-v1", "--lr-fan-in-conv", "area"], "invalid choice"),
        (["train", "--task", "CartPole-v1", "--eval-workers", "-2"], "not a non-negative integer"),
        (["train", "--task", "CartPole-v1", "--kernels", "numpy", "--precision", "bf16"], "--kernels numpy"),
        (["train", "--task", "CartPole-v1", "--kernels", "blas"], "invalid choice"),
        (["train", "--task", "CartPole-v1", "--gamma", "1.5"], "not a number in [0, 1]"),
        (
            ["train", "--task", "CartPole-v1", "--task", "Acrobot-v1", "--horizon", "1", "2", "3"],
            "one per task",
        ),
        (["train"], "no task given"),
        (["train", "--preset", "deramo-gym", "--task", "CartPole-v1"], "not both"),
        (["train", "--preset", "nope"], "invalid choice"),
        (["evaluate", "no/such/run"], "not an mtdqn run folder"),
        (["plot", "no/such/run"], "no metrics.csv"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_code_2(
    args: list[str], needle: str, tmp_path: Path, capsys
) -> None:
    with pytest.raises(SystemExit) as exc:
        code = main([*args, "--runs-dir", str(tmp_path)] if args[0] == "train" else args)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_run_folder_errors_and_resume_flags(tmp_path: Path, capsys) -> None:
    assert main(["train", "--task", "CartPole-v1", "--name", "r", "--runs-dir", str(tmp_path), *TINY]) == 0
    run = tmp_path / "r"
    metrics = (run / "metrics.csv").read_bytes()
    capsys.readouterr()
    assert main(["train", "--task", "CartPole-v1", "--name", "r", "--runs-dir", str(tmp_path), *TINY]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--lr", "0.1"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    assert (run / "metrics.csv").read_bytes() == metrics  # nothing overwritten
    # settings that change no number may change: two more epochs on 2 threads, evaluated in this process
    resume = ["train", "--resume", str(run), "--epochs", "4", "--threads", "2", "--no-background-eval"]
    assert main([*resume, "--eval-workers", "3", "--no-progress"]) == 0
    capsys.readouterr()
    saved = json.loads((run / "config.json").read_text())["config"]["run"]
    assert (saved["epochs"], saved["torch_threads"], saved["background_eval"]) == (4, 2, False)
    assert saved["eval_workers"] == 3
    assert (run / "metrics.csv").read_bytes().startswith(metrics)
    assert (run / "metrics.csv").read_text().splitlines()[-1].startswith("4,")
    metrics = (run / "metrics.csv").read_bytes()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "corrupt" in err and len(err.splitlines()) == 1


def _learning_numbers(run: Path) -> list[dict[str, str]]:
    """metrics.csv without its wall-clock columns."""
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if k not in ("steps_per_s", "wall_s")} for r in csv.DictReader(f)]


def test_like_starts_a_new_run_with_another_runs_config(tmp_path: Path, capsys) -> None:
    runs = ["--runs-dir", str(tmp_path)]
    source = ["--task", "CartPole-v1", "--task", "Acrobot-v1", "--lr", "0.002", "--double-dqn"]
    source += ["--gamma", "0.9"]
    assert main(["train", *source, "--width", "24", "--name", "a", *runs, *TINY]) == 0
    a = tmp_path / "a"
    saved = json.loads((a / "config.json").read_text())["config"]
    # the same config and seed again: the same run, number for number
    assert main(["train", "--like", str(a), "--name", "b", *runs]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["config"] == saved
    assert _learning_numbers(tmp_path / "b") == _learning_numbers(a)
    # another seed and an override; the default name is the source's with the new seed tag
    assert main(["train", "--like", str(a), "--seed", "3", "--feature-width", "8", *runs]) == 0
    other = json.loads((tmp_path / "a-seed3" / "config.json").read_text())["config"]
    assert other["run"]["seeds"] == [3] and other["network"]["feature_width"] == 8
    assert other["network"]["width"] == 24 and other["learner"]["lr"] == 0.002
    assert other["learner"]["double_dqn"] is True and [t["gamma"] for t in other["tasks"]] == [0.9, 0.9]
    assert {s for s in _learning_numbers(tmp_path / "a-seed3")[0]} == set(_learning_numbers(a)[0])
    assert _learning_numbers(tmp_path / "a-seed3") != _learning_numbers(a)
    capsys.readouterr()
    for args, needle in [
        (["--like", str(a), "--preset", "deramo-gym"], "drop --preset"),
        (["--like", str(a), "--task", "CartPole-v1"], "drop --task"),
        (["--like", str(a), "--noop-max", "5"], "applies to Atari games only"),
        (["--like", str(tmp_path / "nowhere")], "not an mtdqn run folder"),
        (["--like", str(a), "--name", "a", "--overwrite"], "would be"),
        (["--resume", str(a), "--like", str(a)], "drop --like"),
    ]:
        assert main(["train", *args, *runs]) == 2, args
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert json.loads((a / "config.json").read_text())["config"] == saved  # the source is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "a-seed3", "b"]


def test_like_takes_an_atari_runs_protocol_and_network(tmp_path: Path) -> None:
    source = atari_run_config("review", ["ALE/Pong-v5", "ALE/Breakout-v5"])
    source.atari_network.arch = "review-mtqn"
    source.learner.lr_fan_in = 256
    (tmp_path / "src").mkdir()
    save_config(tmp_path / "src", source)
    parser = build_parser()
    args = ["train", "--like", str(tmp_path / "src"), "--seed", "2"]
    args += ["--zero-q-layer", "--no-life-loss-terminal"]
    config = config_from_args(parser.parse_args([*args, "--lr", "5e-5"]))
    expected = source.to_dict()
    expected["run"]["seeds"] = [2]
    expected["learner"]["lr"] = 5e-5
    expected["atari_network"]["zero_q_layer"] = True
    expected["atari"]["terminal_on_life_loss"] = False
    assert config.to_dict() == expected
    for bad, needle in [(["--width", "8"], "does not apply to Atari"), (["--protocol", "mnih2015"], "drop")]:
        with pytest.raises(UserError, match=needle):
            config_from_args(parser.parse_args([*args, *bad]))


def test_train_evaluate_plot_end_to_end(tmp_path: Path) -> None:
    proc = _run(
        ["train", "--task", "CartPole-v1", "--task", "mtdqn/CarOnHill-v0", "--name", "e2e", *TINY], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "e2e"
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["run"]["seeds"] == [0] and "torch" in config["versions"]
    assert (run / "plots" / "learning_curves.png").is_file()
    # `evaluate` replays the run's own last evaluation exactly (same weights, same seeded environments).
    proc = _run(["evaluate", str(run), "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    with (run / "metrics.csv").open() as f:
        last = [row for row in csv.DictReader(f) if row["epoch"] == "1"]
    assert [round(float(r["J"]), 10) for r in last] == [round(t["J"], 10) for t in scores["tasks"]]
    # every evaluation is kept in evaluations.csv; the same one again replaces its rows
    other = ["--steps", "20", "--epsilon", "0.5"]
    for extra in (other, [*other, "--seed", "7"], other):
        assert _run(["evaluate", str(run), *extra], tmp_path).returncode == 0
    assert _run(["evaluate", str(run), "--steps", "25", "--no-save"], tmp_path).returncode == 0
    with (run / "evaluations.csv").open() as f:
        saved = list(csv.DictReader(f))
    assert [(r["steps"], r["epsilon"], r["eval_seed"], r["task_name"]) for r in saved] == [
        ("30", "0.0", "0", "CartPole-v1"), ("30", "0.0", "0", "mtdqn/CarOnHill-v0"),  # the --json one
        ("20", "0.5", "7", "CartPole-v1"), ("20", "0.5", "7", "mtdqn/CarOnHill-v0"),
        ("20", "0.5", "0", "CartPole-v1"), ("20", "0.5", "0", "mtdqn/CarOnHill-v0"),  # replaced: at the end
    ]  # fmt: skip
    assert [float(r["J"]) for r in saved[:2]] == [t["J"] for t in scores["tasks"]]
    assert {r["epoch"] for r in saved} == {"1"} and {r["seed"] for r in saved} == {"0"}
    sd = [float("nan") if t["return_sd"] is None else t["return_sd"] for t in scores["tasks"]]
    np.testing.assert_array_equal([float(r["return_sd"]) for r in saved[:2]], sd)  # nan: < 2 episodes
    proc = _run(["plot", str(run)], tmp_path)
    assert proc.returncode == 0 and "learning_curves.png" in proc.stdout


def test_help_documents_every_option_with_its_default() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mtdqn.cli", "train", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for option, default in [
        ("--lr", "0.001"),
        ("--batch-size", "100"),
        ("--capacity", "5000"),
        ("--target-update-every", "100"),
        ("--eps-end", "0.01"),
        ("--epochs", "50"),
        ("--eval-steps", "2000"),
        ("--seed", "0"),
        ("--warmup", "100"),
    ]:
        assert option in text
        assert f"default: {default})" in text, option


def test_seeds_train_a_population_in_one_run(tmp_path: Path, capsys) -> None:
    args = ["train", "--task", "CartPole-v1", "--seeds", "3-5", "--runs-dir", str(tmp_path), *TINY]
    assert main(args) == 0
    run = tmp_path / "CartPole-v1-multi-seeds3-5"
    with (run / "metrics.csv").open() as f:
        assert sorted({row["seed"] for row in csv.DictReader(f)}) == ["3", "4", "5"]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert [r["seed"] for r in json.loads(capsys.readouterr().out)["tasks"]] == [3, 4, 5]
    for bad in ("2-1", "1,1", "x"):
        with pytest.raises(SystemExit) as exc:
            main(["train", "--task", "CartPole-v1", "--seeds", bad, "--runs-dir", str(tmp_path)])
        assert exc.value.code == 2


def _long_run_with_background_evaluation(tmp_path: Path, start_new_session: bool = False) -> subprocess.Popen:
    """`mtdqn train` of 500 tiny epochs in a subprocess, evaluating in its background process."""
    background_eval = [arg for arg in TINY if arg != "--no-background-eval"][2:]
    args = ["train", "--task", "CartPole-v1", "--epochs", "500", *background_eval]
    return subprocess.Popen(
        [sys.executable, "-m", "mtdqn.cli", *args, "--runs-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=start_new_session,
        preexec_fn=default_sigint,
    )


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_sigterm_stops_a_run_and_its_evaluation_process_like_ctrl_c(tmp_path: Path) -> None:
    assert TINY[:2] == ["--epochs", "1"]
    proc = _long_run_with_background_evaluation(tmp_path)
    checkpoint = tmp_path / "CartPole-v1-multi-seed0" / "checkpoint.pt"
    # the background evaluation has started once the process has a child
    err, children = sigterm_when(proc, lambda: checkpoint.exists() and bool(descendants(proc.pid)))
    assert proc.returncode == 143, err[-2000:]
    assert "interrupted; the last completed epoch is saved" in err and "Traceback" not in err
    assert f"continue with mtdqn train --resume {checkpoint.parent}" in err
    time.sleep(1)
    assert not [pid for pid in children if alive(pid)]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_ctrl_c_during_training_prints_no_traceback_from_the_evaluation_process(tmp_path: Path) -> None:
    proc = _long_run_with_background_evaluation(tmp_path, start_new_session=True)
    metrics = tmp_path / "CartPole-v1-multi-seed0" / "metrics.csv"
    # Ctrl-C reaches the learner and its evaluation process; the learner then also SIGTERMs the latter
    err, _ = sigterm_when(proc, lambda: metrics.exists() and bool(descendants(proc.pid)), group_sigint=True)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
