"""The parts of an experiment's report that put results against a swept setting, and the sharing metrics.

    report/sweep.png     experiments with a sweep (``experiment.json`` ``sweep``): per task, J at the last
                         epoch (top) and the AUC (bottom) against the swept value; mean and 95% Student-t
                         interval over seeds, one dot per seed
    report/sweep.csv     the same numbers, one row per (task, arm)
    report/sharing.png   after ``mtdqn experiment --analyze`` (``sharing.csv`` in the experiment folder): the
                         sharing metrics of the shared features against the swept value (or per arm)
    report/sharing.csv   per arm and metric: n, mean and 95% t half-width over seeds

The statistics are the experiment report's (:mod:`mtdqn.experiment_report`): AUC over epochs 0..50 (0..last
epoch of a shorter experiment), intervals with n-1 degrees of freedom, NaN / ``NA`` where not computable.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from mtdqn.errors import UserError
from mtdqn.experiment_report import (
    AUC_LAST_EPOCH,
    Curves,
    auc,
    ci95,
    format_pm,
    mean,
    save_png,
    write_summary_csv,
)

SHARING = "sharing.csv"
"""Per-seed sharing metrics of an analysed experiment (written by :mod:`mtdqn.experiment_analysis`)."""
SHARING_COLUMNS = ["arm", "seed", "metric", "value", "group"]
SHARING_SHOWN = (
    "task_probe_accuracy",
    "knn_task_mixing",
    "effective_rank",
    "dead_unit_fraction",
    "value_r2_cross_offdiag",
    "gradient_cosine_offdiag",
    "gradient_contribution_max",
    "gradient_zero_tasks",
    "value_error_max",
)
"""The metrics drawn and tabled in the report (``sharing.csv`` holds every scalar metric)."""
LOG_SCALE = ("value_error_max",)
"""Shown on a log axis: a diverging task's values are off by orders of magnitude."""


# --- results against the swept value ---------------------------------------------------------------------


def _ordered_arms(sweep: dict[str, Any], present: list[str]) -> list[str]:
    """The arms of the sweep that have results, by increasing value."""
    values = sweep["values"]
    return sorted((a for a in values if a in present), key=lambda a: values[a])


def _final_and_auc(cur: Curves) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    last = int(cur.epochs.max())
    end = min(last, AUC_LAST_EPOCH)
    final = cur.at(last)
    assert final is not None
    return final, auc(cur.values, cur.epochs, end), last, end


def sweep_rows(results: dict[str, dict[str, Curves]], sweep: dict[str, Any]) -> list[dict[str, object]]:
    """Per task and arm (by increasing value): n, J at the last epoch and AUC, mean and 95% half-width."""
    rows = []
    for task, arms in results.items():
        for arm in _ordered_arms(sweep, list(arms)):
            final, area, last, end = _final_and_auc(arms[arm])
            rows.append(
                {
                    "task": task,
                    "parameter": sweep["parameter"],
                    "value": sweep["values"][arm],
                    "arm": arm,
                    "n": len(arms[arm].seeds),
                    "last_epoch": last,
                    "Jlast_mean": mean(final),
                    "Jlast_ci95": ci95(final),
                    "auc_epochs": f"0-{end}",
                    "AUC_mean": mean(area),
                    "AUC_ci95": ci95(area),
                }
            )
    return rows


def sweep_markdown(rows: list[dict[str, object]], label: str) -> str:
    last, span = rows[0]["last_epoch"], rows[0]["auc_epochs"]
    head = ["task", label, "arm", "n", f"J ep{last}", f"AUC ep{span}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["task"]), _value_text(r["value"]), str(r["arm"]), str(r["n"])]
        cells += [format_pm(r["Jlast_mean"], r["Jlast_ci95"]), format_pm(r["AUC_mean"], r["AUC_ci95"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _value_text(value: object) -> str:
    return f"{value:g}" if isinstance(value, float | int) else str(value)


def _axis(ax, values: list[float], label: str) -> None:
    """A log2 axis with a tick at every value when they span a factor of 4 or more, else a linear one."""
    from matplotlib.ticker import FixedLocator, NullLocator

    positive = all(v > 0 for v in values)
    if positive and max(values) / min(values) >= 4:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.set_xticklabels([_value_text(v) for v in values])
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def _defined(values: np.ndarray) -> np.ndarray:
    """The finite values (a NaN metric is undefined for that seed, not a number to average)."""
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def _points(ax, x: list[float], per_arm: list[np.ndarray | None], colour: str) -> None:
    """Each arm's seeds as dots, and the mean with its 95% t-interval as error bars joined by a line."""
    means, halves, xs = [], [], []
    for value, y in zip(x, per_arm, strict=True):
        y = None if y is None else _defined(y)
        if y is None or not len(y):
            continue
        ax.plot([value] * len(y), y, "o", color=colour, mfc="none", alpha=0.5, ms=4, lw=0, zorder=3)
        xs.append(value)
        means.append(mean(y))
        halves.append(0.0 if math.isnan(ci95(y)) else ci95(y))
    if xs:
        ax.errorbar(xs, means, yerr=halves, color=colour, marker="s", ms=4, capsize=3, lw=1.5)


def plot_sweep(results: dict[str, dict[str, Curves]], sweep: dict[str, Any], path: Path) -> Path:
    """Per task (columns): J at the last epoch (top row) and AUC (bottom row) against the swept value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results)
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.6 * len(tasks), 6.2), squeeze=False)
    for col, task in enumerate(tasks):
        arms = _ordered_arms(sweep, list(results[task]))
        x = [float(sweep["values"][a]) for a in arms]
        stats = [_final_and_auc(results[task][a]) for a in arms]
        last, end = (stats[0][2], stats[0][3]) if stats else (0, 0)
        top, bottom = axes[0][col], axes[1][col]
        _points(top, x, [s[0] for s in stats], "tab:blue")
        _points(bottom, x, [s[1] for s in stats], "tab:red")
        top.set_title(task)
        top.set_ylabel(f"J at epoch {last}")
        bottom.set_ylabel(f"AUC, epochs 0-{end}")
        for ax in (top, bottom):
            _axis(ax, x, sweep["label"])
    fig.suptitle("mean and 95% t-interval over seeds (dots: seeds)", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


# --- sharing metrics ------------------------------------------------------------------------------------


def read_sharing(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``sharing.csv`` as ``{arm: {metric: per-seed values}}`` (seed order), arms in order of appearance."""
    table: dict[str, dict[str, dict[int, float]]] = {}
    try:
        with Path(path).open(newline="") as f:
            for row in csv.DictReader(f):
                per_metric = table.setdefault(row["arm"], {}).setdefault(row["metric"], {})
                per_metric[int(row["seed"])] = float(row["value"])
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a sharing-metrics file ({exc!r}); run the analysis again") from None
    return {
        arm: {m: np.array([v[s] for s in sorted(v)]) for m, v in metrics.items()}
        for arm, metrics in table.items()
    }


def sharing_rows(sharing: dict[str, dict[str, np.ndarray]], sweep: dict[str, Any] | None) -> list[dict]:
    """Per arm (by swept value when there is a sweep) and metric: n (seeds), mean and 95% half-width over
    the seeds where the metric is defined (``defined`` of them: a NaN, e.g. the gradient cosine of a member
    whose tasks are all cut off from the shared layers, is left out)."""
    arms = _ordered_arms(sweep, list(sharing)) if sweep else list(sharing)
    rows = []
    for arm in arms:
        for metric, values in sharing[arm].items():
            row: dict[str, object] = {"arm": arm}
            if sweep:
                row["value"] = sweep["values"][arm]
            defined = _defined(values)
            row.update({"metric": metric, "n": len(values), "defined": len(defined)})
            row.update({"mean": mean(defined), "ci95": ci95(defined)})
            rows.append(row)
    return rows


def sharing_markdown(rows: list[dict], label: str | None) -> str:
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    shown = [m for m in SHARING_SHOWN if any(r["metric"] == m for r in rows)]
    head = ["arm", *([label] if label else []), "n", *shown]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in arms:
        mine = {r["metric"]: r for r in rows if r["arm"] == arm}
        first = next(iter(mine.values()))
        cells = [arm, *([_value_text(first["value"])] if label else []), str(first["n"])]
        cells += [format_pm(mine[m]["mean"], mine[m]["ci95"]) if m in mine else "NA" for m in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_sharing(sharing: dict[str, dict[str, np.ndarray]], sweep: dict[str, Any] | None, path: Path) -> Path:
    """One panel per shown metric: per arm (at its swept value, else its position) the seeds and the mean
    with its 95% t-interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = _ordered_arms(sweep, list(sharing)) if sweep else list(sharing)
    shown = [m for m in SHARING_SHOWN if any(m in sharing[a] for a in arms)]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.4 * len(shown), 3.4), squeeze=False)
    x = [float(sweep["values"][a]) for a in arms] if sweep else [float(k) for k in range(len(arms))]
    for ax, metric in zip(axes[0], shown, strict=True):
        _points(ax, x, [sharing[a].get(metric) for a in arms], "tab:purple")
        ax.set_title(metric, fontsize=9)
        if metric in LOG_SCALE:
            ax.set_yscale("log")
        if sweep:
            _axis(ax, x, sweep["label"])
        else:
            ax.set_xticks(x, arms)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


# --- the report's sections ------------------------------------------------------------------------------


def sweep_section(
    folder: Path, results: dict[str, dict[str, Curves]], manifest: dict[str, Any], out_dir: Path
) -> list[str]:
    """Write the sweep and sharing files into ``out_dir``; returns their Markdown for report.md."""
    lines: list[str] = []
    sweep = manifest.get("sweep")
    if sweep:
        rows = sweep_rows(results, sweep)
        if rows:
            write_summary_csv(rows, out_dir / "sweep.csv")
            figure = plot_sweep(results, sweep, out_dir / "sweep.png")
            lines += [
                f"## Against the {sweep['label']}",
                "",
                f"Each task's J at the last epoch and AUC against `{sweep['parameter']}`: mean ± 95% "
                "Student-t half-width over seeds. Also as [sweep.csv](sweep.csv).",
                "",
                f"![sweep]({figure.name})",
                "",
                sweep_markdown(rows, sweep["label"]),
            ]
    path = Path(folder) / SHARING
    if path.is_file():
        sharing = read_sharing(path)
        if sweep:  # an arm left out of the sweep has no x
            sharing = {a: m for a, m in sharing.items() if a in sweep["values"]}
        if sharing:
            rows = sharing_rows(sharing, sweep)
            write_summary_csv(rows, out_dir / "sharing.csv")
            figure = plot_sharing(sharing, sweep, out_dir / "sharing.png")
            lines += [
                "## Sharing metrics of the shared features",
                "",
                f"From `mtdqn analyze` of every seed's last checkpoint ([`{SHARING}`](../{SHARING}); the "
                "meanings are in the README, section *Analysing the shared features*): mean ± 95% Student-t "
                "half-width over seeds. `value_r2_cross_offdiag` is the mean off-diagonal entry of "
                "`value_r2_cross` (a value readout fitted on one task, tested on another). With "
                "`--analyze-gradient-batches`, `gradient_cosine_offdiag` is the mean cosine between two "
                "tasks' gradients on the shared layers (< 0: they conflict) and `gradient_contribution_max` "
                "the largest task's share of the joint gradient (1/T: even; 1: one task drives them); "
                "`gradient_zero_tasks` counts the tasks with an exactly zero gradient there (cut off from "
                "the shared layers). A seed where a metric is undefined is left out of its mean. Every "
                "metric as [sharing.csv](sharing.csv).",
                "",
                f"![sharing]({figure.name})",
                "",
                sharing_markdown(rows, sweep["label"] if sweep else None),
            ]
    return lines
