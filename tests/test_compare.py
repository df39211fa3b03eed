"""`mtdqn compare`: runs side by side, exact summary numbers, tasks matched by name, one-line mistakes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRAIN, small_config
from scipy import stats

from mtdqn.cli import main
from mtdqn.compare import final_evaluation, legend_label
from mtdqn.runlog import (
    GRADIENT_COLUMNS,
    METRIC_COLUMNS,
    TASK_WEIGHT_COLUMNS,
    MetricsTable,
    save_config,
    save_evaluation,
)


def _write_run(
    run: Path,
    scores: dict[str, np.ndarray],
    steps: list[float],
    shares: dict[str, np.ndarray] | None = None,
    first_seed: int = 10,
) -> None:
    """A run folder whose metrics.csv holds ``scores[task][member, k]`` as both return and J (J halved) at
    epoch k after ``steps[k]`` learning steps, and gradients.csv the ``shares``; seeds first_seed + member."""
    run.mkdir(parents=True)
    rows, grad_rows = [], []
    for task_index, (task, values) in enumerate(scores.items()):
        for member, curve in enumerate(values):
            for epoch, value in enumerate(curve):
                row = dict.fromkeys(METRIC_COLUMNS, 0.0)
                row.update(
                    epoch=epoch, member=member, seed=first_seed + member, task=task_index, task_name=task
                )
                row.update({"return": value, "J": value / 2, "env_steps": steps[epoch]})
                rows.append(row)
                if shares is not None and task in shares:
                    g = dict.fromkeys(GRADIENT_COLUMNS, 0.0)
                    g.update(
                        epoch=epoch, member=member, seed=first_seed + member, task=task_index, task_name=task
                    )
                    g["contribution"] = shares[task][member, epoch]
                    grad_rows.append(g)
    MetricsTable(run / "metrics.csv").append(rows)
    if shares is not None:
        MetricsTable(run / "gradients.csv", GRADIENT_COLUMNS).append(grad_rows)


A_CART = np.array([[0.0, 10.0, 20.0, 30.0], [0.0, 20.0, 40.0, 50.0]])
A_ACRO = np.array([[-5.0, -4.0, -3.0, -2.0], [-5.0, -5.0, -5.0, -1.0]])
A_SHARE = np.array([[0.5, 0.2, 0.4, 0.6], [0.5, 0.4, 0.2, 0.8]])
B_CART = np.array([[0.0, 30.0, 60.0], [0.0, 10.0, 20.0], [0.0, 50.0, 70.0]])


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    _write_run(a, {"CartPole-v1": A_CART, "Acrobot-v1": A_ACRO}, [0, 100, 200, 300], {"CartPole-v1": A_SHARE})
    _write_run(b, {"CartPole-v1": B_CART}, [0, 150, 300])  # another epoch size, one task
    return a, b


def _rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open() as f:
        return {(r["task"], r["run"]): r for r in csv.DictReader(f)}


def _t(n: int) -> float:
    return float(stats.t.ppf(0.975, n - 1))


def test_summary_numbers_are_exact(two_runs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    a, b = two_runs
    out = tmp_path / "cmp"
    code = main(["compare", str(a), str(b), "--last", "2", "--out", str(out)])
    assert code == 0
    rows = _rows(out / "summary.csv")
    assert list(rows) == [("CartPole-v1", "a"), ("CartPole-v1", "b"), ("Acrobot-v1", "a")]  # by name

    ra = rows[("CartPole-v1", "a")]
    assert float(ra["n"]) == 2 and float(ra["last_epoch"]) == 3 and float(ra["steps"]) == 300
    assert float(ra["last_mean"]) == pytest.approx(40.0)
    assert float(ra["last_ci95"]) == pytest.approx(_t(2) * np.std([30, 50], ddof=1) / math.sqrt(2))
    recent_a = np.array([25.0, 45.0])  # each seed's last two evaluations
    assert float(ra["recent_mean"]) == pytest.approx(35.0)
    assert float(ra["recent_ci95"]) == pytest.approx(_t(2) * recent_a.std(ddof=1) / math.sqrt(2))
    assert float(ra["best_mean"]) == pytest.approx(40.0) and float(ra["best_steps"]) == 300
    # trapezoid over steps / 300: seed 0 (5 + 15 + 25) * 100 / 300 = 15, seed 1 (10 + 30 + 45) / 3
    assert float(ra["average_mean"]) == pytest.approx((15.0 + 85.0 / 3) / 2)
    assert float(ra["share_mean"]) == pytest.approx(np.mean(A_SHARE[:, 1:]))  # after epoch 0
    assert ra["baseline"] == ""  # the first run is the baseline

    rb = rows[("CartPole-v1", "b")]
    recent_b = B_CART[:, -2:].mean(axis=1)  # 45, 15, 60
    assert float(rb["recent_mean"]) == pytest.approx(40.0)
    assert float(rb["average_mean"]) == pytest.approx(np.mean([(15 + 45) / 2, (5 + 15) / 2, (25 + 60) / 2]))
    assert rb["baseline"] == "a"
    assert float(rb["d_recent_vs_baseline"]) == pytest.approx(40.0 - 35.0)
    p = stats.ttest_ind(recent_b, recent_a, equal_var=False).pvalue
    assert float(rb["p_recent_vs_baseline"]) == pytest.approx(p)
    assert rb["share_mean"] == ""  # b measured no gradients

    per_epoch = (out / "per_epoch.md").read_text()  # each run's mean at every evaluation, steps united
    table = "| run | 0 | 100 | 150 | 200 | 300 |\n|---|---|---|---|---|---|\n| a | 0 | 15 |  | 30 | 40 |\n"
    assert table in per_epoch
    assert "| b | 0 |  | 30 |  | 50 |\n" in per_epoch and "Acrobot-v1: return" in per_epoch
    printed = capsys.readouterr().out
    assert printed == (out / "summary.md").read_text() + "\n"
    assert "| CartPole-v1 | b | 3 | 300 |" in printed
    assert "gradient share" in printed
    assert (out / "curves.png").stat().st_size > 10_000


def test_j_metric_baseline_and_labels(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_runs
    out = tmp_path / "cmp"
    args = ["compare", str(a), str(b), "--metric", "J", "--label", "MT", "--label", "ST", "--baseline", "ST"]
    assert main([*args, "--last", "1", "--out", str(out)]) == 0
    rows = _rows(out / "summary.csv")
    assert float(rows[("CartPole-v1", "MT")]["last_mean"]) == pytest.approx(20.0)  # J = return / 2
    assert float(rows[("CartPole-v1", "MT")]["d_recent_vs_baseline"]) == pytest.approx(20.0 - 25.0)
    assert rows[("CartPole-v1", "ST")]["baseline"] == ""
    assert rows[("Acrobot-v1", "MT")]["baseline"] == ""  # the baseline has no Acrobot


def test_default_folder_and_labels_of_same_named_runs(tmp_path: Path, monkeypatch) -> None:
    one, two = tmp_path / "x" / "run", tmp_path / "y" / "run"
    _write_run(one, {"CartPole-v1": A_CART}, [0, 100, 200, 300])
    _write_run(two, {"CartPole-v1": A_CART + 1}, [0, 100, 200, 300])
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "x/run", "y/run"]) == 0
    rows = _rows(tmp_path / "comparisons" / "x_run-vs-y_run" / "summary.csv")
    assert float(rows[("CartPole-v1", "y/run")]["d_recent_vs_baseline"]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--label", "only-one"], "--label was given 1 times for 2 runs"),
        (["--label", "same", "--label", "same"], "cannot be pooled with the other runs labelled 'same'"),
        (["--baseline", "nope"], "--baseline 'nope' is none of the runs' labels"),
        (["--out", "FILE"], "is a file; give --out a folder"),
    ],
)
def test_mistakes_give_one_line_and_exit_code_2(
    two_runs: tuple[Path, Path], tmp_path: Path, capsys, extra: list[str], needle: str
) -> None:
    a, b = two_runs
    out = tmp_path / "cmp"
    (tmp_path / "FILE").write_text("not a folder")
    extra = [str(tmp_path / x) if x == "FILE" else x for x in extra]
    assert main(["compare", str(a), str(b), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists()  # nothing written
    assert (tmp_path / "FILE").read_text() == "not a folder"


def test_runs_with_one_label_are_pooled_as_seeds_of_one_setting(tmp_path: Path, capsys) -> None:
    a, b, c, d = (tmp_path / name for name in "abcd")
    b_cart = np.array([[0.0, 5.0, 6.0, 7.0, 100.0]])  # one more epoch than a: not pooled
    b_acro = np.array([[-5.0, -3.0, -2.0, 0.0, 0.0]])
    _write_run(a, {"CartPole-v1": A_CART, "Acrobot-v1": A_ACRO}, [0, 100, 200, 300])  # seeds 10, 11
    _write_run(b, {"CartPole-v1": b_cart, "Acrobot-v1": b_acro}, [0, 100, 200, 300, 400], first_seed=0)
    _write_run(c, {"CartPole-v1": b_cart, "Acrobot-v1": b_acro}, [0, 100, 200, 300, 400], first_seed=11)
    _write_run(d, {"CartPole-v1": b_cart, "Acrobot-v1": b_acro}, [0, 100, 200, 300, 400], first_seed=0)
    save_config(a, small_config(seeds=[10, 11]))
    save_config(b, small_config(seeds=[0], epochs=4, torch_threads=2))  # epochs and threads: not the setting
    save_config(c, small_config(seeds=[11]))
    other = small_config(seeds=[0])
    other.learner.lr = 0.5
    save_config(d, other)

    def evaluation(seed: int, member: int, value: float, steps: int = 200) -> dict:
        row = {"epoch": 3, "steps": steps, "epsilon": 0.05, "eval_seed": 0, "member": member, "seed": seed}
        return {**row, "task": 0, "task_name": "CartPole-v1", "J": value / 2, "return": value, "episodes": 3}

    save_evaluation(a, [evaluation(10, 0, 1.0), evaluation(11, 1, 2.0)])
    save_evaluation(b, [evaluation(0, 0, 6.0)])
    out = tmp_path / "cmp"
    pooled = ["compare", str(a), str(b), "--label", "x", "--label", "x"]
    assert main([*pooled, "--last", "1", "--out", str(out)]) == 0
    rows = _rows(out / "summary.csv")
    assert list(rows) == [("CartPole-v1", "x"), ("Acrobot-v1", "x")]
    cart = rows[("CartPole-v1", "x")]
    assert float(cart["n"]) == 3 and float(cart["last_epoch"]) == 3 and float(cart["steps"]) == 300
    last = [30.0, 50.0, 7.0]  # seeds 10, 11 of a and seed 0 of b at epoch 3, the last they all have
    assert float(cart["last_mean"]) == pytest.approx(np.mean(last))
    assert float(cart["last_ci95"]) == pytest.approx(_t(3) * np.std(last, ddof=1) / math.sqrt(3))
    assert cart["evaluation"] == "epoch 3, 200 steps, epsilon 0.05" and float(cart["evaluation_mean"]) == 3.0
    assert float(rows[("Acrobot-v1", "x")]["last_mean"]) == pytest.approx(np.mean([-2.0, -1.0, 0.0]))
    assert rows[("Acrobot-v1", "x")]["evaluation"] == ""  # no evaluation of Acrobot
    save_evaluation(b, [evaluation(0, 0, 6.0, steps=400)])  # b's final evaluation is now a longer one
    assert main([*pooled, "--out", str(out)]) == 0
    assert _rows(out / "summary.csv")[("CartPole-v1", "x")]["evaluation"] == ""
    capsys.readouterr()
    for runs, needle in [
        ((a, c), "share seed 11"),
        ((a, d), "not seeds of one setting (their config.json differ in learner.lr)"),
    ]:
        args = ["compare", *map(str, runs), "--label", "x", "--label", "x", "--out", str(tmp_path / "o")]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_not_a_run_and_empty_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "has no metrics.csv" in capsys.readouterr().err
    (tmp_path / "empty" / "metrics.csv").write_text(",".join(METRIC_COLUMNS) + "\n")
    assert main(["compare", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "has no evaluations yet" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_real_runs(tmp_path: Path, capsys) -> None:
    """Two real two-epoch runs (multi-task and the single-task baseline) compared on their metrics.csv."""
    base = ["train", "--task", "CartPole-v1", "--task", "Acrobot-v1", "--epochs", "2", *TINY_TRAIN]
    base += ["--runs-dir", str(tmp_path)]
    assert main([*base, "--name", "multi"]) == 0
    assert main([*base, "--name", "single", "--mode", "single"]) == 0
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "multi"), str(tmp_path / "single"), "--out", str(out)]) == 0
    rows = _rows(out / "summary.csv")
    assert sorted(rows) == sorted((t, r) for t in ("CartPole-v1", "Acrobot-v1") for r in ("multi", "single"))
    with (tmp_path / "single" / "metrics.csv").open() as f:
        last = [r for r in csv.DictReader(f) if r["epoch"] == "2" and r["task_name"] == "Acrobot-v1"]
    assert float(rows[("Acrobot-v1", "single")]["last_mean"]) == float(last[0]["return"])
    assert float(rows[("Acrobot-v1", "single")]["steps"]) == float(last[0]["env_steps"]) == 80


def test_final_evaluation_is_the_latest_epochs_longest_last_evaluated(two_runs, tmp_path: Path) -> None:
    a, b = two_runs

    def evaluation(epoch: int, steps: int, eval_seeds: tuple[int, int], values: tuple[float, float]) -> list:
        return [
            {"epoch": epoch, "steps": steps, "epsilon": 0.05, "eval_seed": s, "member": m, "seed": 10 + m,
             "task": 0, "task_name": "CartPole-v1", "J": v / 2, "return": v, "episodes": 3}
            for m, (s, v) in enumerate(zip(eval_seeds, values, strict=True))
        ]  # fmt: skip

    save_evaluation(a, evaluation(3, 200, (10, 11), (1.0, 2.0)))
    save_evaluation(a, evaluation(3, 50, (10, 11), (9.0, 9.0)))  # shorter
    save_evaluation(a, evaluation(2, 1000, (10, 11), (7.0, 7.0)))  # an earlier checkpoint
    save_evaluation(a, evaluation(3, 200, (5, 6), (3.0, 5.0)))  # the same again with other seeds: the latest
    save_evaluation(a, evaluation(3, 50, (10, 11), (8.0, 8.0)))  # replaces the 9s
    with (a / "evaluations.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 8
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    rows = _rows(out / "summary.csv")
    ra = rows[("CartPole-v1", "a")]
    assert ra["evaluation"] == "epoch 3, 200 steps, epsilon 0.05"
    assert float(ra["evaluation_mean"]) == 4.0
    assert float(ra["evaluation_ci95"]) == pytest.approx(_t(2) * np.std([3, 5], ddof=1) / math.sqrt(2))
    assert rows[("Acrobot-v1", "a")]["evaluation"] == rows[("CartPole-v1", "b")]["evaluation"] == ""
    assert "4 ± " in (out / "summary.md").read_text()


def test_evaluations_written_before_return_sd_are_kept_with_nan_there(two_runs) -> None:
    a, _ = two_runs
    old = "epoch,steps,epsilon,eval_seed,member,seed,task,task_name,J,return,episodes\n"
    old += "3,200,0.05,0,0,0,0,CartPole-v1,1.5,3.0,4\n"
    (a / "evaluations.csv").write_text(old)
    new = {"epoch": 3, "steps": 50, "epsilon": 0.05, "eval_seed": 0, "member": 0, "seed": 0, "task": 0,
           "task_name": "CartPole-v1", "J": 0.5, "return": 1.0, "episodes": 3, "return_sd": 0.25}  # fmt: skip
    save_evaluation(a, [new])
    with (a / "evaluations.csv").open() as f:
        rows = list(csv.DictReader(f))
    saved = [(r["steps"], r["return"], r["return_sd"]) for r in rows]
    assert saved == [("200", "3.0", "nan"), ("50", "1.0", "0.25")]
    values, setting = final_evaluation(a / "evaluations.csv", "return")
    assert setting == "epoch 3, 200 steps, epsilon 0.05" and values["CartPole-v1"].tolist() == [3.0]


def _write_experiment(folder: Path, arms: dict[str, np.ndarray], steps_per_epoch: dict[str, int]) -> None:
    """An experiment folder: experiment.json with the arms' epoch sizes and results.csv holding
    ``arms[arm][seed, epoch]`` as the return (J halved) of task Cart-Pole, seeds 0.. split over two groups."""
    folder.mkdir(parents=True)
    arm_list = [{"name": a, "config": {"run": {"steps_per_epoch": n}}} for a, n in steps_per_epoch.items()]
    manifest = {"arms": arm_list}
    (folder / "experiment.json").write_text(json.dumps(manifest))
    lines = ["arm,seed,task,task_index,epoch,J,return,episodes,group"]
    for arm, values in arms.items():
        for seed, curve in enumerate(values):
            for epoch, v in enumerate(curve):
                lines.append(f"{arm},{seed},Cart-Pole,0,{epoch},{v / 2},{v},3,{arm}-group{seed % 2}")
    (folder / "results.csv").write_text("\n".join(lines) + "\n")


def test_an_experiment_folder_stands_for_its_arms(tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    exp = tmp_path / "experiments" / "e"
    _write_experiment(exp, {"MDQN": B_CART, "DQN": A_CART}, {"MDQN": 150, "DQN": 100})
    out = tmp_path / "cmp"
    args = ["compare", str(exp), str(two_runs[0]), "--baseline", "e/DQN", "--last", "2", "--out", str(out)]
    assert main(args) == 0
    rows = _rows(out / "summary.csv")
    assert list(rows) == [("Cart-Pole", "e/MDQN"), ("Cart-Pole", "e/DQN"), ("CartPole-v1", "a"),
                          ("Acrobot-v1", "a")]  # fmt: skip
    mdqn = rows[("Cart-Pole", "e/MDQN")]
    assert float(mdqn["n"]) == 3 and float(mdqn["steps"]) == 300  # 2 epochs of 150 steps, both groups' seeds
    assert float(mdqn["recent_mean"]) == pytest.approx(40.0)  # as run b, which holds the same numbers
    assert float(mdqn["d_recent_vs_baseline"]) == pytest.approx(40.0 - 35.0)
    assert main(["compare", str(exp), "--metric", "J", "--label", "x", "--out", str(out)]) == 0
    assert float(_rows(out / "summary.csv")[("Cart-Pole", "x/MDQN")]["last_mean"]) == pytest.approx(50.0 / 2)


def test_an_experiment_with_mean_q_gives_it_to_the_comparison(tmp_path: Path) -> None:
    exp = tmp_path / "experiments" / "e"
    _write_experiment(exp, {"MDQN": B_CART}, {"MDQN": 150})
    lines = (exp / "results.csv").read_text().splitlines()
    with_q = [lines[0].replace("episodes,group", "episodes,mean_q,group")]
    for line in lines[1:]:  # mean Q = 10 x epoch + seed (nan at epoch 0)
        fields = line.split(",")
        seed, epoch = int(fields[1]), int(fields[4])
        fields.insert(8, "nan" if epoch == 0 else str(10.0 * epoch + seed))
        with_q.append(",".join(fields))
    (exp / "results.csv").write_text("\n".join(with_q) + "\n")
    out = tmp_path / "cmp"
    assert main(["compare", str(exp), "--mean-q", "--out", str(out)]) == 0
    assert (
        float(_rows(out / "summary.csv")[("Cart-Pole", "e/MDQN")]["mean_q_last"]) == 21.0
    )  # epoch 2, seeds 0-2
    assert "| mean Q, last epoch |" in (out / "summary.md").read_text()


def test_an_unfinished_experiment_is_refused(tmp_path: Path, capsys) -> None:
    exp = tmp_path / "e"
    _write_experiment(exp, {"MDQN": B_CART}, {"MDQN": 150})
    (exp / "results.csv").unlink()
    assert main(["compare", str(exp), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "has no finished experiment" in err and f"{exp}/runs/" in err and len(err.splitlines()) == 1
    _write_experiment(tmp_path / "f", {"MDQN": B_CART}, {"MDQN": 150})
    (tmp_path / "f" / "experiment.json").write_text(json.dumps({"arms": [{"name": "MDQN"}]}))
    assert main(["compare", str(tmp_path / "f"), "--out", str(tmp_path / "o")]) == 2
    assert "lacks the arms' epoch sizes (edited?)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_param_norm_weights_are_shown(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_runs
    rows = [
        {"epoch": e, "member": m, "seed": 10 + m, "task": 0, "task_name": "CartPole-v1",
         "measurements": 5 * e, "pull": 0.1, "weight": 1.0 + e + m}
        for e in range(4)
        for m in range(2)
    ]  # fmt: skip
    MetricsTable(a / "task_weights.csv", TASK_WEIGHT_COLUMNS).append(rows)
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    summary = _rows(out / "summary.csv")
    assert float(summary[("CartPole-v1", "a")]["weight_last"]) == 4.5  # epoch 3: weights 4 and 5
    assert summary[("Acrobot-v1", "a")]["weight_last"] == summary[("CartPole-v1", "b")]["weight_last"] == ""
    assert "| loss weight |" in (out / "summary.md").read_text()


def test_mean_q_is_tabled_and_drawn_on_request(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = two_runs
    rows = []
    for epoch in range(4):
        for member in range(2):
            row = dict.fromkeys(METRIC_COLUMNS, 0.0)
            row.update(epoch=epoch, member=member, seed=10 + member, task=0, task_name="MountainCar-v0")
            row.update({"return": -100.0, "J": -60.0, "env_steps": 100.0 * epoch})
            # no learning batches before epoch 1; member 1's values run away
            row["mean_q"] = math.nan if epoch == 0 else (-30.0 * epoch if member == 0 else 10.0**epoch * 5)
            rows.append(row)
    c = tmp_path / "runs" / "c"
    c.mkdir(parents=True)
    MetricsTable(c / "metrics.csv").append(rows)
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(c), "--mean-q", "--out", str(out)]) == 0
    summary = _rows(out / "summary.csv")
    assert float(summary[("MountainCar-v0", "c")]["mean_q_last"]) == (-90.0 + 5000.0) / 2
    assert float(summary[("CartPole-v1", "a")]["mean_q_last"]) == 0.0  # _write_run's zeros
    table = (out / "summary.md").read_text()
    assert "| mean Q, last epoch |" in table and "2455" in table
    assert (out / "curves.png").stat().st_size > 10_000
    assert main(["compare", str(a), str(c), "--out", str(tmp_path / "plain")]) == 0
    assert "mean Q" not in (tmp_path / "plain" / "summary.md").read_text()
    assert float(_rows(tmp_path / "plain" / "summary.csv")[("MountainCar-v0", "c")]["mean_q_last"]) == 2455.0


def test_legend_names_the_seeds_once() -> None:
    assert legend_label("seed 1", np.array([1])) == "seed 1"
    assert legend_label("seed 1", np.array([2])) == "seed 1 (seed 2)"
    assert legend_label("fan-in 256", np.array([1])) == "fan-in 256 (seed 1)"
    assert legend_label("remedies", np.array([0, 1, 2])) == "remedies (3 seeds)"
