"""Runs side by side: ``mtdqn compare RUN RUN ... --out DIR``.

    DIR/curves.png    one column per task: each run's score against learning steps per task (a population's
                      mean and 95% Student-t interval over its seeds); with ``gradients.csv`` in any run, a
                      row with the task's share of the joint gradient on the shared layers; with
                      ``task_weights.csv`` (``param-norm``), a row with the task's loss weight (log scale);
                      with ``--mean-q``, a row with the task's mean Q of the learning batches (``mean_q``),
                      a line per seed (symmetric log scale when values diverge)
    DIR/summary.csv   per task and run: the numbers below
    DIR/summary.md    the same as a table (also printed)
    DIR/per_epoch.md  per task, each run's mean score at every evaluation (a row per run)

Everything is read from the runs' ``metrics.csv`` (and ``gradients.csv``), so a run still training can be
compared with the epochs it has finished. A finished experiment folder stands for all its arms (from its
``results.csv``, each arm with all its seeds, labelled ``<label>/<arm>``); run folders given the same label
are pooled as the seeds of one setting (:func:`pool_seeds`). Tasks are matched by name
(``task_name``), so a single-task run of Pong lines up with Pong inside a multi-task run. The x axis is the
learning steps per task (``env_steps``, 0 at the evaluation of the untrained network), so runs with
different epoch sizes line up.

Per task and run, over the run's seeds (members): the score at its last evaluation, the mean of its last
``recent`` evaluations (a single seed's last evaluation is noisy), the best evaluation of the mean curve,
the average score over the run (trapezoidal area under the curve over learning steps, divided by the steps
it spans: comparable between runs of the same length), and, for every run but the baseline, the difference
of the recent means from the baseline run's and Welch's p (two or more seeds on both sides). With
gradients: the task's mean share of the joint gradient over the measurements after epoch 0. With
``evaluations.csv`` (``mtdqn evaluate``): the final evaluation, that of the latest checkpoint with the most
steps (often longer than the per-epoch evaluations). The mean Q of the last epoch (``mean_q_last``) comes
from run folders and from experiments whose ``results.csv`` has the ``mean_q`` column (written since it
exists).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtdqn.config import HARDWARE_FIELDS, Config
from mtdqn.errors import UserError
from mtdqn.experiment_report import (
    ci95,
    draw_band,
    draw_mean_q,
    format_num,
    format_p,
    format_pm,
    has_column,
    legend_below,
    mean,
    read_results,
    save_png,
    welch_p,
    write_summary_csv,
)
from mtdqn.runlog import (
    EVALUATION_COLUMNS,
    GRADIENT_COLUMNS,
    TASK_WEIGHT_COLUMNS,
    atomic_write_bytes,
    read_metrics,
    safe_name,
)
from mtdqn.runner import MANIFEST, RESULTS, read_manifest

METRICS = ("return", "J")
"""Scores a comparison can be made on: the undiscounted return or the paper's discounted J."""
_COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:olive")


@dataclass
class Series:
    """One run's values of one task: ``values[member, k]`` at learning step ``steps[k]`` (epoch
    ``epochs[k]``), over the epochs every member has."""

    seeds: np.ndarray
    epochs: np.ndarray
    steps: np.ndarray
    values: np.ndarray


@dataclass
class RunSeries:
    """What a comparison reads from one run folder: per task (in the run's order) its score and, if the
    run measured them, its share of the joint gradient on the shared layers."""

    label: str
    path: Path
    scores: dict[str, Series]
    shares: dict[str, Series] = field(default_factory=dict)
    weights: dict[str, Series] = field(default_factory=dict)
    """Per task, its ``param-norm`` loss weight per epoch (runs with ``task_weights.csv``)."""
    mean_q: dict[str, Series] = field(default_factory=dict)
    """Per task, the mean Q of its learning batches per epoch from 1 (run folders; experiments whose
    ``results.csv`` has ``mean_q``)."""
    evaluation: dict[str, np.ndarray] = field(default_factory=dict)
    """Per task, each member's score in the run's final ``mtdqn evaluate`` (:func:`final_evaluation`)."""
    evaluation_setting: str = ""


def _series(cols: dict[str, np.ndarray], task: str, key: str, steps_of: dict[int, float]) -> Series | None:
    """``cols[key]`` of ``task`` per member over the epochs all members have (and ``steps_of`` knows)."""
    sel = cols["task_name"] == task
    members = sorted({int(m) for m in cols["member"][sel]})
    per_member = []
    for member in members:
        rows = sel & (cols["member"] == member)
        per_member.append(dict(zip(cols["epoch"][rows].astype(int), cols[key][rows], strict=True)))
    epochs = sorted(set.intersection(*(set(p) for p in per_member)) & set(steps_of))
    if not epochs:
        return None
    seeds = [int(cols["seed"][sel & (cols["member"] == m)][0]) for m in members]
    return Series(
        seeds=np.array(seeds),
        epochs=np.array(epochs),
        steps=np.array([steps_of[e] for e in epochs], dtype=np.float64),
        values=np.array([[p[e] for e in epochs] for p in per_member], dtype=np.float64),
    )


def read_run(path: Path, label: str, metric: str) -> RunSeries:
    """The scores ``metric`` (and gradient shares, if measured) of the run folder ``path``."""
    metrics_path = path / "metrics.csv"
    if not metrics_path.is_file():
        raise UserError(
            f"{path} has no metrics.csv; give run folders written by mtdqn train or mtdqn transfer "
            "(an experiment's runs are in EXPERIMENT/runs/)"
        )
    cols = read_metrics(metrics_path)
    if cols["epoch"].size == 0:
        raise UserError(f"{metrics_path} has no evaluations yet; compare the run once an epoch has finished")
    tasks = list(dict.fromkeys(cols["task_name"][np.argsort(cols["task"], kind="stable")]))
    gradients_path, weights_path = path / "gradients.csv", path / "task_weights.csv"
    g = read_metrics(gradients_path, GRADIENT_COLUMNS) if gradients_path.is_file() else None
    w = read_metrics(weights_path, TASK_WEIGHT_COLUMNS) if weights_path.is_file() else None
    scores, shares, weights, mean_q = {}, {}, {}, {}
    for task in tasks:
        sel = cols["task_name"] == task
        steps_of = dict(zip(cols["epoch"][sel].astype(int), cols["env_steps"][sel], strict=False))
        scores[task] = _series(cols, task, metric, steps_of)
        learned = {epoch: steps for epoch, steps in steps_of.items() if epoch > 0}  # epoch 0: no batches yet
        mean_q[task] = _series(cols, task, "mean_q", learned)
        if g is not None and task in set(g["task_name"]):
            shares[task] = _series(g, task, "contribution", steps_of)
        if w is not None and task in set(w["task_name"]):
            weights[task] = _series(w, task, "weight", steps_of)
    evaluation, setting = final_evaluation(path / "evaluations.csv", metric)
    return RunSeries(
        label=label,
        path=path,
        scores={t: s for t, s in scores.items() if s is not None},
        shares={t: s for t, s in shares.items() if s is not None},
        weights={t: s for t, s in weights.items() if s is not None},
        mean_q={t: s for t, s in mean_q.items() if s is not None},
        evaluation=evaluation,
        evaluation_setting=setting,
    )


def final_evaluation(path: Path, metric: str) -> tuple[dict[str, np.ndarray], str]:
    """From a run's ``evaluations.csv``: per task, each member's ``metric`` in the evaluation of the latest
    epoch with the most steps (of those, the epsilon evaluated last, its latest rows), and that setting."""
    if not path.is_file():
        return {}, ""
    e = read_metrics(path, EVALUATION_COLUMNS)
    if e["epoch"].size == 0:
        return {}, ""
    latest = e["epoch"] == e["epoch"].max()
    longest = latest & (e["steps"] == e["steps"][latest].max())
    last = int(np.flatnonzero(longest)[-1])
    chosen = np.flatnonzero(longest & (e["epsilon"] == e["epsilon"][last]))
    final: dict[tuple[str, int], float] = {}
    for i in chosen:  # the last row of each (task, member): the latest `mtdqn evaluate` of this setting
        final[(str(e["task_name"][i]), int(e["member"][i]))] = float(e[metric][i])
    tasks = dict.fromkeys(task for task, _ in final)
    values = {t: np.array([v for (task, _), v in sorted(final.items()) if task == t]) for t in tasks}
    setting = f"epoch {int(e['epoch'][last])}, {int(e['steps'][last])} steps, epsilon {e['epsilon'][last]:g}"
    return values, setting


def read_experiment(folder: Path, prefix: str, metric: str) -> list[RunSeries]:
    """Every arm of an experiment folder, from its ``results.csv``, as one run labelled ``prefix/arm`` (all of
    the arm's seeds, whatever groups they were trained in; learning steps = epoch x the arm's epoch size)."""
    manifest = read_manifest(folder)
    if manifest is None or not (folder / RESULTS).is_file():
        raise UserError(
            f"{folder} has no finished experiment ({RESULTS} is written when every group is done); "
            f"give its run folders ({folder}/runs/...) to compare the groups finished so far"
        )
    results = read_results(folder / RESULTS, metric)
    mean_q = read_results(folder / RESULTS, "mean_q") if has_column(folder / RESULTS, "mean_q") else {}
    try:
        steps = {arm["name"]: int(arm["config"]["run"]["steps_per_epoch"]) for arm in manifest["arms"]}
    except (KeyError, TypeError, ValueError):
        raise UserError(
            f"{folder / MANIFEST} lacks the arms' epoch sizes (edited?); give the experiment's run folders"
        ) from None
    arms = dict.fromkeys(arm for per_arm in results.values() for arm in per_arm)
    runs = []
    for arm in arms:
        scores = {
            task: Series(cur.seeds, cur.epochs, (cur.epochs * steps[arm]).astype(np.float64), cur.values)
            for task, per_arm in results.items()
            if (cur := per_arm.get(arm)) is not None
        }
        learned = {
            task: _learned(cur, steps[arm])
            for task, per_arm in mean_q.items()
            if (cur := per_arm.get(arm)) is not None and (cur.epochs > 0).any()
        }
        runs.append(RunSeries(label=f"{prefix}/{arm}", path=folder, scores=scores, mean_q=learned))
    return runs


def _learned(curves, steps_per_epoch: int) -> Series:
    """An experiment arm's mean-Q curves from epoch 1 (epoch 0 has no learning batches) as a Series."""
    keep = curves.epochs > 0
    epochs = curves.epochs[keep]
    return Series(curves.seeds, epochs, (epochs * steps_per_epoch).astype(np.float64), curves.values[:, keep])


def default_labels(paths: list[Path]) -> list[str]:
    """Each run's folder name; the path as given where two folders share a name."""
    names = [p.name or str(p) for p in paths]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]


def read_runs(paths: list[Path], labels: list[str] | None, metric: str) -> list[RunSeries]:
    """The runs to compare, checked: one label per run; run folders that share a label are the seeds of one
    setting (:func:`pool_seeds`)."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if labels is not None and len(labels) != len(paths):
        raise UserError(
            f"--label was given {len(labels)} times for {len(paths)} runs; "
            "give one per run, in the same order"
        )
    labels = labels if labels is not None else default_labels(paths)
    grouped: dict[str, list[Path]] = {}
    for path, label in zip(paths, labels, strict=True):
        grouped.setdefault(label, []).append(path)
    runs = []
    for label, group in grouped.items():
        experiments = [p for p in group if _is_experiment(p)]
        if len(group) == 1 and experiments:
            runs += read_experiment(group[0], label, metric)
        elif experiments:
            raise UserError(
                f"{experiments[0]} is an experiment folder labelled {label!r} like another run; only run "
                "folders are pooled as seeds of one setting (an experiment's arms already hold their seeds)"
            )
        else:
            runs.append(pool_seeds([read_run(p, label, metric) for p in group]))
    named = [r.label for r in runs]
    twice = [x for x in dict.fromkeys(named) if named.count(x) > 1]
    if twice:
        raise UserError(f"two runs are labelled {twice[0]!r}; give each run once, or a --label per run")
    return runs


def _is_experiment(path: Path) -> bool:
    return (path / MANIFEST).is_file() and not (path / "metrics.csv").is_file()


def pool_seeds(runs: list[RunSeries]) -> RunSeries:
    """Run folders of one setting (say one seed each, from ``mtdqn train --like``) as one run of all their
    seeds: per task, their members side by side over the epochs they all have.

    Their ``config.json`` must agree in everything that changes the learning but the seeds, and no seed may
    appear twice; the final evaluations (``evaluations.csv``) are pooled where all runs have one of the same
    setting (epoch, steps, epsilon), else left out."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    configs = [_seedless_config(run) for run in runs]
    for run, config in zip(runs[1:], configs[1:], strict=True):
        if config.learning_fingerprint() != configs[0].learning_fingerprint():
            differ = _differing_fields(configs[0], config)
            raise UserError(
                f"{first.path} and {run.path} are labelled {first.label!r} but are not seeds of one setting "
                f"(their config.json differ in {', '.join(differ[:4])}); give each its own --label"
            )
    seeds = [int(seed) for run in runs for seed in next(iter(run.scores.values())).seeds]
    twice = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if twice:
        raise UserError(
            f"the runs labelled {first.label!r} share seed {twice[0]}; pool runs of distinct seeds "
            "(mtdqn train --like RUN --seed N)"
        )
    settings_of_evaluation = {run.evaluation_setting for run in runs}
    same_evaluation = len(settings_of_evaluation) == 1 and "" not in settings_of_evaluation
    return RunSeries(
        label=first.label,
        path=first.path,
        scores=_pooled([run.scores for run in runs]),
        shares=_pooled([run.shares for run in runs]),
        weights=_pooled([run.weights for run in runs]),
        mean_q=_pooled([run.mean_q for run in runs]),
        evaluation=(
            {
                t: np.concatenate([run.evaluation[t] for run in runs])
                for t in _common([r.evaluation for r in runs])
            }
            if same_evaluation
            else {}
        ),
        evaluation_setting=first.evaluation_setting if same_evaluation else "",
    )


def _seedless_config(run: RunSeries) -> Config:
    """The run's configuration with its seeds left out (set to [0]): its learning fingerprint is then that of
    the setting."""
    from mtdqn.runlog import load_config

    if not (run.path / "config.json").is_file():
        raise UserError(
            f"{run.path} has no config.json, so it cannot be pooled with the other runs labelled "
            f"{run.label!r} as seeds of one setting; give each run its own --label"
        )
    config = load_config(run.path)
    config.run.seeds = [0]
    return config


def _differing_fields(a: Config, b: Config) -> list[str]:
    """``section.field`` names whose values differ between two configurations (for the message; the
    run-placement fields, which the fingerprint leaves out, are not named)."""
    ignored = {f"run.{key}" for key in ("epochs", "gradient_batches", *HARDWARE_FIELDS)}
    da, db = a.to_dict(), b.to_dict()
    differ = []
    for section in da:
        pa, pb = da[section], db[section]
        if isinstance(pa, dict) and isinstance(pb, dict):
            differ += [f"{section}.{k}" for k in pa.keys() | pb.keys() if pa.get(k) != pb.get(k)]
        elif pa != pb:
            differ.append(section)
    return sorted(k for k in differ if k not in ignored)


def _common(per_run: list[dict[str, object]]) -> list[str]:
    """The tasks every run has, in the first run's order."""
    return [task for task in per_run[0] if all(task in d for d in per_run[1:])]


def _pooled(per_run: list[dict[str, Series]]) -> dict[str, Series]:
    """Per task that every run has: the runs' members stacked, over the epochs every run has."""
    pooled = {}
    for task in _common(per_run):
        parts = [d[task] for d in per_run]
        epochs = sorted(set.intersection(*(set(p.epochs.tolist()) for p in parts)))
        if not epochs:
            continue
        at = [np.searchsorted(p.epochs, epochs) for p in parts]
        pooled[task] = Series(
            seeds=np.concatenate([p.seeds for p in parts]),
            epochs=np.array(epochs),
            steps=parts[0].steps[at[0]],
            values=np.concatenate([p.values[:, i] for p, i in zip(parts, at, strict=True)], axis=0),
        )
    return pooled


# --- numbers ---------------------------------------------------------------------------------------------


def _recent(s: Series, recent: int) -> np.ndarray:
    """Per seed, the mean of its last ``recent`` evaluations."""
    return s.values[:, -recent:].mean(axis=1)


def _average(s: Series) -> np.ndarray | None:
    """Per seed, the area under its curve over learning steps divided by the steps spanned (None if the
    curve has a single point)."""
    span = s.steps[-1] - s.steps[0]
    if s.steps.size < 2 or span <= 0:
        return None
    return np.trapezoid(s.values, s.steps, axis=1) / span


def summarize(runs: list[RunSeries], recent: int, baseline: str | None) -> list[dict[str, object]]:
    """One row per (task, run), tasks in order of first appearance, runs in the given order."""
    base = next((r for r in runs if r.label == baseline), None) if baseline else runs[0]
    if baseline and base is None:
        raise UserError(
            f"--baseline {baseline!r} is none of the runs' labels ({', '.join(r.label for r in runs)})"
        )
    tasks = list(dict.fromkeys(t for r in runs for t in r.scores))
    rows = []
    for task in tasks:
        for run in runs:
            s = run.scores.get(task)
            if s is None:
                continue
            k = min(recent, s.values.shape[1])
            mean_curve = s.values.mean(axis=0)
            best = int(np.argmax(mean_curve))
            ours, average = _recent(s, k), _average(s)
            row: dict[str, object] = {
                "task": task,
                "run": run.label,
                "n": len(s.seeds),
                "last_epoch": int(s.epochs[-1]),
                "steps": float(s.steps[-1]),
                "last_mean": mean(s.values[:, -1]),
                "last_ci95": ci95(s.values[:, -1]),
                "recent_evaluations": k,
                "recent_mean": mean(ours),
                "recent_ci95": ci95(ours),
                "best_mean": float(mean_curve[best]),
                "best_steps": float(s.steps[best]),
                "average_mean": mean(average),
                "average_ci95": ci95(average),
                "baseline": "",
                "d_recent_vs_baseline": math.nan,
                "p_recent_vs_baseline": math.nan,
                "share_mean": math.nan,
                "weight_last": math.nan,
                "mean_q_last": math.nan,
                "evaluation": run.evaluation_setting if task in run.evaluation else "",
                "evaluation_mean": mean(run.evaluation.get(task)),
                "evaluation_ci95": ci95(run.evaluation.get(task)),
            }
            other = base.scores.get(task) if base is not None and base is not run else None
            if other is not None:
                theirs = _recent(other, min(recent, other.values.shape[1]))
                row["baseline"] = base.label
                row["d_recent_vs_baseline"] = mean(ours) - mean(theirs)
                row["p_recent_vs_baseline"] = welch_p(ours, theirs)
            share = run.shares.get(task)
            if share is not None and (share.epochs > 0).any():
                row["share_mean"] = float(share.values[:, share.epochs > 0].mean())
            weight = run.weights.get(task)
            if weight is not None:
                row["weight_last"] = float(weight.values[:, -1].mean())
            q = run.mean_q.get(task)
            if q is not None:
                row["mean_q_last"] = mean(q.values[:, -1])
            rows.append(row)
    return rows


def summary_markdown(rows: list[dict[str, object]], metric: str, recent: int, mean_q: bool = False) -> str:
    """The summary as one Markdown table (``mean ± 95% half-width`` over a run's seeds); ``mean_q`` adds the
    last epoch's mean Q."""
    shares = any(not math.isnan(float(r["share_mean"])) for r in rows)  # type: ignore[arg-type]
    evaluations = any(r["evaluation"] for r in rows)
    weights = any(not math.isnan(float(r["weight_last"])) for r in rows)  # type: ignore[arg-type]
    head = ["task", "run", "seeds", "steps", f"{metric} last", f"{metric} last {recent}", "best (at steps)"]
    head += ["average over the run", f"Δ last {recent} vs baseline (p)"]
    head += ["gradient share"] if shares else []
    head += ["loss weight"] if weights else []
    head += ["mean Q, last epoch"] if mean_q else []
    head += ["final evaluation"] if evaluations else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        d = r["d_recent_vs_baseline"]
        versus = "" if not r["baseline"] else f"{format_num(d)} ({format_p(r['p_recent_vs_baseline'])})"
        cells = [
            str(r["task"]),
            str(r["run"]),
            str(r["n"]),
            format_num(r["steps"]),
            format_pm(r["last_mean"], r["last_ci95"]),
            format_pm(r["recent_mean"], r["recent_ci95"]),
            f"{format_num(r['best_mean'])} ({format_num(r['best_steps'])})",
            format_pm(r["average_mean"], r["average_ci95"]),
            versus,
        ]
        cells += [format_num(r["share_mean"], 2)] if shares else []
        cells += [format_num(r["weight_last"], 3)] if weights else []
        cells += [format_num(r["mean_q_last"])] if mean_q else []
        if evaluations:
            final = format_pm(r["evaluation_mean"], r["evaluation_ci95"])
            cells.append(f"{final} ({r['evaluation']})" if r["evaluation"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    baseline = next((str(r["baseline"]) for r in rows if r["baseline"]), "none")
    notes = [
        "",
        f"Over each run's seeds: mean ± 95% Student-t half-width. `last {recent}`: the mean of the last "
        f"{recent} evaluations (fewer where a run has fewer). `average over the run`: the area under the "
        "curve over learning steps per task divided by the steps spanned. Δ: this run's last-"
        f"{recent} mean minus the baseline run's ({baseline}), Welch's p with two or more seeds on both "
        "sides.",
    ]
    if shares:
        notes[-1] += " Gradient share: the task's mean share of the joint gradient on the shared layers over "
        notes[-1] += "the measurements after epoch 0 (runs trained with --gradient-batches)."
    if weights:
        notes[-1] += " Loss weight: param-norm's weight of the task at the last epoch (task_weights.csv)."
    if mean_q:
        notes[-1] += " Mean Q: the mean Q(s, a) of the last epoch's learning batches (`mean_q`)."
    if evaluations:
        notes[-1] += (
            " Final evaluation: the run's `mtdqn evaluate` of its latest checkpoint with the most steps "
            "(evaluations.csv)."
        )
    return "\n".join(lines + notes) + "\n"


def per_epoch_markdown(runs: list[RunSeries], metric: str) -> str:
    """Per task, one table: a row per run, a column per learning-step count any run was evaluated at, each
    cell the run's mean over its seeds there (blank where it has no evaluation)."""
    lines = []
    tasks = list(dict.fromkeys(t for r in runs for t in r.scores))
    for task in tasks:
        present = [(run.label, run.scores[task]) for run in runs if task in run.scores]
        steps = sorted({float(x) for _, s in present for x in s.steps})
        head = ["run", *(format_num(x) for x in steps)]
        lines += [f"{task}: {metric} (mean over seeds) at each number of learning steps per task", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label, s in present:
            at = dict(zip(s.steps.tolist(), s.values.mean(axis=0).tolist(), strict=True))
            cells = [format_num(at[x], 3) if x in at else "" for x in steps]
            lines.append("| " + " | ".join([label, *cells]) + " |")
        lines.append("")
    return "\n".join(lines)


# --- figure ----------------------------------------------------------------------------------------------


def legend_label(label: str, seeds: np.ndarray) -> str:
    """A run's legend entry: its label and its seeds (``fan-in 256 (seed 1)``, ``remedies (3 seeds)``), the
    label alone where it already names its one seed (``seed 1``)."""
    seeds_text = f"{len(seeds)} seeds" if len(seeds) > 1 else f"seed {int(seeds[0])}"
    return label if label == seeds_text else f"{label} ({seeds_text})"


def plot_comparison(runs: list[RunSeries], metric: str, path: Path, mean_q: bool = False) -> Path:
    """curves.png: per task, each run's score (and gradient share and loss weight, where measured; with
    ``mean_q`` the mean Q of the learning batches) against learning steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    tasks = list(dict.fromkeys(t for r in runs for t in r.scores))
    rows = ["scores"] + ["shares"] * any(r.shares for r in runs) + ["weights"] * any(r.weights for r in runs)
    rows += ["mean_q"] * (mean_q and any(r.mean_q for r in runs))
    n_rows = len(rows)
    fig, axes = plt.subplots(
        n_rows, len(tasks), figsize=(4.2 * len(tasks), 3.3 * n_rows + 0.6), squeeze=False, sharex="col"
    )
    for col, task in enumerate(tasks):
        for k, run in enumerate(runs):
            colour = _COLOURS[k % len(_COLOURS)]
            s = run.scores.get(task)
            if s is not None:
                draw_band(axes[0, col], s.steps, s.values, colour, "-", legend_label(run.label, s.seeds), 0.2)
            extra = {"shares": run.shares, "weights": run.weights, "mean_q": run.mean_q}
            for kind in rows[1:]:
                series = extra[kind].get(task)
                if series is not None and kind == "mean_q":  # a line per seed: which seeds run away
                    draw_mean_q(axes[rows.index(kind), col], series.steps, series.values, colour, "")
                elif series is not None:
                    draw_band(axes[rows.index(kind), col], series.steps, series.values, colour, "-", "", 0.2)
        axes[0, col].set_title(task)
        axes[0, col].set_ylabel("undiscounted return" if metric == "return" else "J (discounted)")
        if "shares" in rows:
            axes[rows.index("shares"), col].set_ylabel("share of the joint gradient")
            axes[rows.index("shares"), col].axhline(0.0, color="black", lw=0.6)
        if "weights" in rows:
            axes[rows.index("weights"), col].set_ylabel("param-norm loss weight")
            axes[rows.index("weights"), col].set_yscale("log")
            _plain_log_labels(axes[rows.index("weights"), col].yaxis)
        if "mean_q" in rows:
            axes[rows.index("mean_q"), col].set_ylabel("mean Q of the learning batches")
        axes[-1, col].set_xlabel("learning steps per task")
        axes[-1, col].xaxis.set_major_formatter(EngFormatter(sep=""))  # 100k, 1.5M
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    legend_below(fig, axes[0], columns=3, row_height=0.05 / n_rows)
    return save_png(fig, path)


def _plain_log_labels(axis) -> None:
    """Tick labels of a log axis as plain numbers (0.8, 1.5, 10), on the ticks matplotlib would label."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    for minor in (False, True):
        chooser = LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)) if minor else LogFormatter()
        chooser.set_axis(axis)

        def label(value: float, pos, chooser=chooser) -> str:
            return f"{value:g}" if chooser(value, pos) else ""

        (axis.set_minor_formatter if minor else axis.set_major_formatter)(FuncFormatter(label))


def default_out(labels: list[str]) -> Path:
    """``comparisons/<label>-vs-<label>...`` (file-name safe, at most 120 characters)."""
    return Path("comparisons") / safe_name("-vs-".join(labels))[:120]


def compare_runs(
    paths: list[Path],
    out: Path | None = None,
    labels: list[str] | None = None,
    metric: str = "return",
    recent: int = 3,
    baseline: str | None = None,
    mean_q: bool = False,
) -> tuple[Path, str]:
    """Write the comparison of the runs at ``paths`` into ``out``; return the folder and the Markdown."""
    if recent < 1:
        raise UserError(f"--last must be at least 1, got {recent}")
    runs = read_runs(paths, labels, metric)
    out = out if out is not None else default_out([r.label for r in runs])
    rows = summarize(runs, recent, baseline)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give --out a folder")
    out.mkdir(parents=True, exist_ok=True)
    write_summary_csv(rows, out / "summary.csv")
    markdown = summary_markdown(rows, metric, recent, mean_q)
    atomic_write_bytes(out / "summary.md", markdown.encode())
    atomic_write_bytes(out / "per_epoch.md", per_epoch_markdown(runs, metric).encode())
    plot_comparison(runs, metric, out / "curves.png", mean_q)
    return out, markdown
