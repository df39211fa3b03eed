"""The experiment report: exact statistics on a hand-made results.csv, published curves, NA, errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_reference
from scipy import stats

from mtdqn import reference
from mtdqn.cli import main
from mtdqn.experiment_report import legend_below, make_report

T2 = 4.302652729911275  # Student-t 97.5% quantile, 2 degrees of freedom (3 seeds)
T3 = 3.182446305284263  # 3 degrees of freedom (4 runs)
C = {"MDQN": [1.0, 2.0, 3.0], "DQN": [0.0, 0.0, 1.0, 3.0]}  # per-seed offsets of the Cart-Pole curves


def _write_results(
    folder: Path, last_epoch: int = 50, arms: dict[str, list[float]] = C, return_scale: float = 0.0
) -> Path:
    """Cart-Pole J = c_seed + epoch/50 (AUC over 0..50 = 50 c + 25); Acrobot J = -c_seed, constant; the
    return is ``return_scale`` x J."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seed", "task", "task_index", "epoch", "J", "return", "episodes", "group"])
        for arm, offsets in arms.items():
            for seed, c in enumerate(offsets):
                for t, task in enumerate(("Cart-Pole", "Acrobot")):
                    for e in range(last_epoch + 1):
                        j = c + e / 50 if t == 0 else -c
                        w.writerow([arm, seed, task, t, e, repr(j), repr(return_scale * j), 1, f"{arm}-g"])
    return folder


def _published(tmp_path: Path) -> Path:
    """Four published runs per arm, constant curves: MDQN run r scores 2r, DQN run r scores r (every task)."""
    r = np.arange(4.0)[:, None, None] * np.ones((1, 5, 51))
    return fake_reference(tmp_path / "ref", {"MDQN": 2 * r, "DQN": r})


def _summary(folder: Path) -> dict[tuple[str, str], dict[str, str]]:
    with (folder / "report" / "summary.csv").open() as f:
        return {(r["task"], r["arm"]): r for r in csv.DictReader(f)}


def _num(text: str) -> float:
    return math.nan if text == "" else float(text)


def test_summary_numbers_are_exact(tmp_path: Path) -> None:
    folder = _write_results(tmp_path / "exp")
    make_report(folder, reference=_published(tmp_path), baseline="DQN")
    rows = _summary(folder)
    m, d = rows[("Cart-Pole", "MDQN")], rows[("Cart-Pole", "DQN")]
    assert m["n"] == "3" and d["n"] == "4" and m["paper_n"] == "4"
    assert _num(m["J10_mean"]) == pytest.approx(2.2)  # c + 0.2 for c = 1, 2, 3
    assert _num(m["J50_mean"]) == pytest.approx(3.0)
    assert _num(m["J50_ci95"]) == pytest.approx(T2 / math.sqrt(3))  # std 1, n 3
    assert _num(m["AUC_mean"]) == pytest.approx(125.0)  # 50 c + 25
    assert _num(m["AUC_ci95"]) == pytest.approx(50 * T2 / math.sqrt(3))
    assert m["auc_epochs"] == "0-50" and m["last_epoch"] == "50"
    assert _num(d["AUC_mean"]) == pytest.approx(75.0)
    # the published MDQN runs score 0, 2, 4, 6 at every epoch
    assert _num(m["paper_J50_mean"]) == pytest.approx(3.0)
    assert _num(m["paper_J50_ci95"]) == pytest.approx(T3 * np.std([0, 2, 4, 6], ddof=1) / 2)
    assert _num(m["paper_AUC_mean"]) == pytest.approx(150.0)
    ours50, paper50 = [2.0, 3.0, 4.0], [0.0, 2.0, 4.0, 6.0]
    assert _num(m["p_J50_vs_paper"]) == pytest.approx(
        stats.ttest_ind(ours50, paper50, equal_var=False).pvalue
    )
    assert _num(m["p_AUC_vs_paper"]) == pytest.approx(
        stats.ttest_ind([75, 125, 175], [0, 100, 200, 300], equal_var=False).pvalue
    )
    # MDQN against the baseline DQN, ours and the paper's
    assert m["baseline"] == "DQN" and d["baseline"] == ""
    assert _num(m["dAUC_vs_baseline"]) == pytest.approx(50.0)
    assert _num(m["p_AUC_vs_baseline"]) == pytest.approx(
        stats.ttest_ind([75, 125, 175], [25, 25, 75, 175], equal_var=False).pvalue
    )
    assert _num(m["dJ50_vs_baseline"]) == pytest.approx(1.0)
    assert _num(m["paper_dAUC_vs_baseline"]) == pytest.approx(75.0)  # 50 * (mean 3 - mean 1.5)
    assert math.isnan(_num(d["dAUC_vs_baseline"]))
    # a constant curve: Acrobot J = -c
    assert _num(rows[("Acrobot", "MDQN")]["AUC_mean"]) == pytest.approx(-100.0)

    report = folder / "report"
    for name in ("learning_curves.png", "J_Cart-Pole.png", "J_Acrobot.png"):
        assert (report / name).stat().st_size > 10_000
    md = (report / "summary.md").read_text()
    row = "| Cart-Pole | MDQN | 3 | 2.2 ± 2.5 | 2.5 ± 2.5 | 3 ± 2.5 | 125 ± 124 | 4 | 3 ± 4.1 | 150 ± 205 |"
    assert row in md
    assert "| Cart-Pole | MDQN - DQN | 1 (" in md
    text = (report / "report.md").read_text()
    assert "![J_Cart-Pole](J_Cart-Pole.png)" in text and "summary.csv" in text and "dashed" in text


def test_a_shorter_experiment_leaves_the_missing_epochs_blank(tmp_path: Path) -> None:
    folder = _write_results(tmp_path / "exp", last_epoch=2)
    make_report(folder, reference=_published(tmp_path), baseline="DQN")
    m = _summary(folder)[("Cart-Pole", "MDQN")]
    for key in ("J10_mean", "J25_ci95", "J50_mean", "paper_J50_mean", "p_J50_vs_paper", "dJ50_vs_baseline"):
        assert m[key] == ""
    assert m["last_epoch"] == "2" and m["auc_epochs"] == "0-2"
    assert _num(m["Jlast_mean"]) == pytest.approx(2.04)
    assert _num(m["AUC_mean"]) == pytest.approx(2 * 2.0 + 0.04)  # 2 c + 2^2 / 2 / 50
    assert _num(m["paper_AUC_mean"]) == pytest.approx(6.0)  # over epochs 0..2 too
    assert _num(m["dAUC_vs_baseline"]) == pytest.approx(2.0)
    md = (folder / "report" / "summary.md").read_text()
    assert "| Cart-Pole | MDQN | 3 | NA | NA | NA | 2.04 ± 2.5 |" in md


def test_one_seed_and_no_published_curves(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(reference.ENV_VAR, raising=False)
    monkeypatch.setattr(reference, "_REPO_CANDIDATE", tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    folder = _write_results(tmp_path / "exp", last_epoch=3, arms={"MDQN": [1.0], "Other": [2.0, 3.0]})
    make_report(folder)
    rows = _summary(folder)
    m = rows[("Cart-Pole", "MDQN")]
    assert m["n"] == "1" and m["Jlast_ci95"] == "" and m["paper_n"] == "0" and m["paper_AUC_mean"] == ""
    assert _num(m["Jlast_mean"]) == pytest.approx(1.06)
    assert m["baseline"] == ""  # no manifest, no --baseline: no comparison
    text = (folder / "report" / "report.md").read_text()
    assert "Published curves: not found" in text
    assert (folder / "report" / "learning_curves.png").is_file()


def test_reference_lookup_order(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")  # nothing at ../shared from here
    monkeypatch.setattr(reference, "_REPO_CANDIDATE", tmp_path / "nowhere")
    monkeypatch.delenv(reference.ENV_VAR, raising=False)
    assert reference.find_reference() is None
    work = tmp_path / "work" / "repo"
    beside = tmp_path / "work" / "shared" / "reference" / "deramo2020"
    work.mkdir(parents=True)
    beside.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert reference.find_reference() == beside.resolve()
    monkeypatch.setenv(reference.ENV_VAR, str(tmp_path))
    assert reference.find_reference() == tmp_path
    fake_reference(beside, {"DQN": np.zeros((2, 5, 51))})  # an explicit folder must hold a published file
    assert reference.find_reference(beside) == beside


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["report", "{tmp}/none"], "is not a folder"),
        (["report", "{tmp}"], "results.csv does not exist"),
        (["report", "{tmp}/exp", "--baseline", "Nope"], "baseline arm 'Nope'"),
        (["report", "{tmp}/exp", "--reference", "{tmp}/noref"], "does not exist"),
        (["report", "{tmp}/exp", "--reference", "{tmp}/exp"], "holds none of the paper's published results"),
    ],
)
def test_report_mistakes_give_one_line_and_exit_code_2(args, needle, tmp_path: Path, capsys) -> None:
    _write_results(tmp_path / "exp", last_epoch=1)
    code = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "exp" / "report").exists()


def test_bad_results_file_is_a_user_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    assert main(["report", str(tmp_path), "--no-reference"]) == 2
    assert "not an experiment results file" in capsys.readouterr().err


def _with_manifest(folder: Path, last_epoch: int) -> Path:
    """An experiment.json for the results of :func:`_write_results` (arms of ``C``, both tasks)."""
    tasks = [{"env_id": "CartPole-v1", "name": "Cart-Pole"}, {"env_id": "Acrobot-v1", "name": "Acrobot"}]
    manifest = {
        "experiment": "exp",
        "epochs": last_epoch,
        "baseline": "DQN",
        "arms": [{"name": arm, "config": {"tasks": tasks}} for arm in C],
        "groups": [
            {"arm": arm, "seeds": list(range(len(c))), "folder": f"runs/{arm}-g"} for arm, c in C.items()
        ],
    }
    (folder / "experiment.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda lines: ["\n".join(lines)[:100]], "ends in the middle of a row (cut off?)"),
        (
            lambda lines: [x for x in lines if not x.startswith("DQN,")],
            "against experiment.json (cut off or edited?): no row of arm DQN;",
        ),
        (lambda lines: lines[:-1], "arm DQN on task Acrobot lacks epochs of 0-3 for some seed"),
        (
            lambda lines: [x for x in lines if ",2,Acrobot," not in x],
            "no row of arm MDQN, seed 2 on task Acrobot",
        ),
        (lambda lines: [x for x in lines if ",Acrobot," not in x], "no row of arm MDQN on task Acrobot"),
    ],
)
def test_a_cut_off_or_incomplete_results_file_is_named_with_the_fix(tmp_path: Path, capsys, damage, needle):
    folder = _with_manifest(_write_results(tmp_path / "exp", last_epoch=3), last_epoch=3)
    assert main(["report", str(folder), "--no-reference"]) == 0
    capsys.readouterr()
    path = folder / "results.csv"
    header, *rows = path.read_text().splitlines()
    text = "\n".join([header, *damage(rows)])
    path.write_text(text if needle.startswith("ends") else text + "\n")
    assert main(["report", str(folder), "--no-reference"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "baseline" not in err
    assert "running the same `mtdqn experiment` command again" in err


def test_the_report_names_the_settings_changed_with_set(tmp_path: Path) -> None:
    folder = _with_manifest(_write_results(tmp_path / "exp", last_epoch=3), last_epoch=3)
    assert "--set" not in make_report(folder, use_reference=False).read_text()  # no overrides: no line
    manifest = json.loads((folder / "experiment.json").read_text())
    manifest["overrides"] = {"learner.task_balance": "param-norm", "run.eval_steps": "30"}
    (folder / "experiment.json").write_text(json.dumps(manifest))
    text = make_report(folder, use_reference=False).read_text()
    assert (
        "**Settings changed with `--set`: `learner.task_balance=param-norm`, `run.eval_steps=30`** "
        "(`learner.task_balance`: multi-task arms only); the published curves were made without them."
    ) in text


def test_an_experiment_reports_its_own_score_and_epochs(tmp_path: Path, capsys) -> None:
    """The Atari experiments' manifests say: the return (raw score) at epochs 7 and 14."""
    folder = _with_manifest(_write_results(tmp_path / "exp", last_epoch=14, return_scale=10.0), last_epoch=14)
    manifest = json.loads((folder / "experiment.json").read_text())
    (folder / "experiment.json").write_text(
        json.dumps({**manifest, "metric": "return", "check_epochs": [7, 14]})
    )
    text = make_report(folder, use_reference=False).read_text()
    m = _summary(folder)[("Cart-Pole", "MDQN")]
    assert "J10_mean" not in m and m["auc_epochs"] == "0-14"
    assert _num(m["return7_mean"]) == pytest.approx(10 * (2 + 7 / 50))  # 10 (c + e/50), c = 1, 2, 3
    assert _num(m["return14_mean"]) == pytest.approx(10 * (2 + 14 / 50))
    assert _num(m["AUC_mean"]) == pytest.approx(10 * (14 * 2 + 14**2 / 100))  # 10 (14 c + 14^2 / 100)
    d = _summary(folder)[("Cart-Pole", "DQN")]  # c = 0, 0, 1, 3: mean 1
    assert _num(m["dreturn14_vs_baseline"]) == pytest.approx(10.0) and d["dreturn14_vs_baseline"] == ""
    offsets = np.array(C["MDQN"]) * 10, np.array(C["DQN"]) * 10
    p = stats.ttest_ind(*offsets, equal_var=False).pvalue
    assert _num(m["p_return14_vs_baseline"]) == pytest.approx(p)
    md = (folder / "report" / "summary.md").read_text()
    assert "| task | arm | n | return ep7 | return ep14 | AUC ep0-14 |" in md and "Δreturn ep14 (p)" in md
    assert "each seed's return curve" in text and "![return_Cart-Pole](return_Cart-Pole.png)" in text
    assert (folder / "report" / "return_Acrobot.png").is_file()
    (folder / "experiment.json").write_text(json.dumps({**manifest, "metric": "score"}))
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown metric 'score'" in err and len(err.splitlines()) == 1


def test_the_values_section_draws_mean_q_when_the_results_have_it(tmp_path: Path) -> None:
    folder = _write_results(tmp_path / "old")  # a results file from before mean_q: no section
    make_report(folder, use_reference=False)
    assert "## Values" not in (folder / "report" / "report.md").read_text()
    assert not (folder / "report" / "mean_q.png").exists()
    new = tmp_path / "new"
    new.mkdir()
    with (folder / "results.csv").open() as f, (new / "results.csv").open("w", newline="") as g:
        rows = list(csv.reader(f))
        w = csv.writer(g)
        w.writerow([*rows[0][:8], "mean_q", rows[0][8]])
        for row in rows[1:]:  # seed 2 of MDQN runs away on Acrobot
            q = (
                "nan"
                if row[4] == "0"
                else str(1e6 * int(row[4]) if row[:3] == ["MDQN", "2", "Acrobot"] else -1.0)
            )
            w.writerow([*row[:8], q, row[8]])
    make_report(new, use_reference=False)
    text = (new / "report" / "report.md").read_text()
    assert "## Values" in text and "![mean_q](mean_q.png)" in text
    assert (new / "report" / "mean_q.png").stat().st_size > 10_000
    summary = (new / "report" / "summary.csv").read_text()
    assert summary == (folder / "report" / "summary.csv").read_text()  # the scores are untouched


def test_a_legend_of_long_labels_takes_fewer_columns_and_fits_the_figure() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(4.2, 7.2), squeeze=False)
    for k in range(3):
        axes[0, 0].plot([0, 1], [k, k], label=f"a run with a long descriptive label number {k}")
    legend_below(fig, axes[0], columns=3, row_height=0.025)
    (legend,) = fig.legends
    box = legend.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # three columns would stick out on both sides
    plt.close(fig)
    fig, axes = plt.subplots(1, 1, figsize=(8, 3), squeeze=False)
    for k in range(3):
        axes[0, 0].plot([0, 1], [k, k], label=f"arm {k}")
    legend_below(fig, axes[0], columns=3, row_height=0.06)
    renderer = fig.canvas.get_renderer()
    rows = {round(text.get_window_extent(renderer).y0) for text in fig.legends[0].get_texts()}
    assert len(rows) == 1  # short labels keep every column: one row
    plt.close(fig)
