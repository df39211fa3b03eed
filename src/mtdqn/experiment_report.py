"""An experiment's report, regenerated from its ``results.csv`` alone (plus the published curves, if found).

    report/learning_curves.png   J vs epoch for every task side by side
    report/J_<task>.png          one task: each arm's mean over seeds and 95% Student-t interval (solid),
                                 the paper's published arm of the same name (dashed, its 100 runs)
    report/summary.csv           per task and arm: J at epochs 10/25/50 and at the last epoch, AUC, the
                                 published values, Welch p vs the paper and vs the baseline arm
    report/summary.md            the same as tables
    report/report.md             the figures and the tables
    report/mean_q.png            each seed's mean Q of its learning batches per epoch and task (results files
                                 with ``mean_q``): values that diverge show here while J may still look fine
    report/sweep.*, sharing.*    for an experiment with a sweep, or analysed: see :mod:`mtdqn.sweep_report`

An experiment may report another score and other epochs (its manifest's ``metric`` and ``check_epochs``;
the Atari experiments: ``return``, the raw game score, at epochs 7 and 14): the file names, columns and
axes then name that score, and its last check epoch takes the place of 50.

Statistics follow the paper's (spec section 5.2): mean and 95% Student-t interval over seeds (n-1 degrees
of freedom), ``AUC`` = trapezoidal area under each seed's J curve over epochs 0..50 (or 0..last epoch of a
shorter experiment; the published AUC is then taken over the same epochs), Welch's two-sided t-test
(``scipy.stats.ttest_ind(equal_var=False)``) between independent sets of runs. A value that cannot be
computed (an epoch the experiment does not reach, a single seed) is blank in the CSV and ``NA`` in tables.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtdqn.errors import UserError
from mtdqn.experiments import MULTI_TASK_ONLY
from mtdqn.reference import find_reference, load_published
from mtdqn.runlog import atomic_write_bytes, safe_name, t_half_width
from mtdqn.runner import MANIFEST, PARTIAL, RESULTS, gather_finished, read_manifest

CHECK_EPOCHS = (10, 25, 50)
"""The paper's epochs of the summary table; an experiment may name others (:attr:`Experiment.check_epochs`),
whose last one then takes the place of 50 below."""
AUC_LAST_EPOCH = 50
"""AUC spans epochs 0..50 as in the paper (fewer when the experiment is shorter)."""
_SCORE_AXIS = {"J": "J", "return": "return (undiscounted)"}
REPORT = "report"
REGENERATE = (
    f"regenerate it by running the same `mtdqn experiment` command again (it keeps finished groups and "
    f"rewrites {RESULTS})"
)
_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:olive")


@dataclass
class Curves:
    """J of one arm on one task: ``values[seed, k]`` at ``epochs[k]`` (the epochs every seed has)."""

    seeds: np.ndarray
    epochs: np.ndarray
    values: np.ndarray

    def at(self, epoch: int) -> np.ndarray | None:
        hit = np.flatnonzero(self.epochs == epoch)
        return self.values[:, hit[0]] if hit.size else None


# --- reading ---------------------------------------------------------------------------------------------


def read_results(path: Path, metric: str = "J") -> dict[str, dict[str, Curves]]:
    """results.csv as ``{task: {arm: Curves}}`` of ``metric`` (``J`` or ``return``), tasks and arms in order
    of first appearance."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; give an experiment folder that holds a {RESULTS}")
    table: dict[str, dict[str, dict[int, dict[int, float]]]] = {}
    text = path.read_text(errors="replace")
    if text and not text.endswith("\n"):  # every writer ends each row with a newline
        raise UserError(f"{path} ends in the middle of a row (cut off?); {REGENERATE}")
    try:
        for row in csv.DictReader(io.StringIO(text, newline="")):
            by_seed = table.setdefault(row["task"], {}).setdefault(row["arm"], {})
            by_seed.setdefault(int(row["seed"]), {})[int(row["epoch"])] = float(row[metric])
    except (KeyError, ValueError, TypeError, csv.Error) as exc:
        raise UserError(f"{path} is not an experiment results file ({exc!r}); {REGENERATE}") from None
    if not table:
        raise UserError(f"{path} has no rows; run the experiment first")
    out: dict[str, dict[str, Curves]] = {}
    for task, arms in table.items():
        out[task] = {}
        for arm, by_seed in arms.items():
            seeds = sorted(by_seed)
            epochs = sorted(set.intersection(*(set(by_seed[s]) for s in seeds)))
            values = np.array([[by_seed[s][e] for e in epochs] for s in seeds], dtype=np.float64)
            values = values.reshape(len(seeds), len(epochs))
            out[task][arm] = Curves(np.array(seeds), np.array(epochs), values)
    return out


def has_column(path: Path, name: str) -> bool:
    """Whether the CSV file at ``path`` has the column ``name`` (e.g. ``mean_q``, which older results
    files lack)."""
    with Path(path).open(newline="") as f:
        return name in next(csv.reader(f), [])


def check_complete(results: dict[str, dict[str, Curves]], manifest: dict, path: Path) -> None:
    """Refuse ``results`` (read from ``path``) when it lacks an arm, task, seed or epoch that the experiment's
    manifest lists: a truncated or damaged results.csv, which would otherwise be reported as it is."""
    epochs = int(manifest["epochs"])
    seeds: dict[str, set[int]] = {}
    for group in manifest.get("groups", []):
        seeds.setdefault(group["arm"], set()).update(int(s) for s in group["seeds"])
    tasks = {
        arm["name"]: [t.get("name") or t["env_id"] for t in arm["config"]["tasks"]]
        for arm in manifest.get("arms", [])
        if "tasks" in (arm.get("config") or {})
    }
    problems = []
    for arm, wanted in seeds.items():
        have = [task for task in results if arm in results[task]]
        if not have:
            problems.append(f"no row of arm {arm}")
            continue
        problems += [f"no row of arm {arm} on task {task}" for task in tasks.get(arm, []) if task not in have]
        for task in have:
            cur = results[task][arm]
            lacking = sorted(wanted - set(cur.seeds.tolist()))
            if lacking:
                problems.append(f"no row of arm {arm}, seed {lacking[0]} on task {task}")
            elif not np.array_equal(cur.epochs, np.arange(epochs + 1)):
                problems.append(f"arm {arm} on task {task} lacks epochs of 0-{epochs} for some seed")
    if problems:
        more = f" and {len(problems) - 1} more gap(s)" if len(problems) > 1 else ""
        raise UserError(
            f"{path} is incomplete against {MANIFEST} (cut off or edited?): {problems[0]}{more}; {REGENERATE}"
        )


# --- statistics ------------------------------------------------------------------------------------------


def ci95(x: np.ndarray | None) -> float:
    """Half-width of the 95% Student-t interval of the mean of ``x`` (NaN for fewer than 2 values)."""
    if x is None or len(x) < 2:
        return math.nan
    return float(t_half_width(np.asarray(x, dtype=np.float64)))


def mean(x: np.ndarray | None) -> float:
    return float(np.mean(x)) if x is not None and len(x) else math.nan


def welch_p(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Two-sided Welch t-test p-value (NaN when either side has fewer than 2 values or no spread at all)."""
    from scipy import stats

    if a is None or b is None or len(a) < 2 or len(b) < 2:
        return math.nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def auc(values: np.ndarray, epochs: np.ndarray, last: int) -> np.ndarray | None:
    """Per-run trapezoidal area under J over epochs 0..``last`` (None unless all those epochs are there)."""
    keep = epochs <= last
    if not np.array_equal(epochs[keep], np.arange(last + 1)):
        return None
    return np.trapezoid(values[:, keep], epochs[keep], axis=1)


def summarize(
    results: dict[str, dict[str, Curves]],
    reference: Path | None,
    baseline: str | None,
    metric: str = "J",
    check_epochs: tuple[int, ...] = CHECK_EPOCHS,
) -> list[dict[str, object]]:
    """One row per (task, arm) with every number of the summary (NaN where not computable): the score
    ``metric`` at ``check_epochs`` and the last epoch, its AUC up to the last check epoch, against the paper
    and the baseline arm at that epoch. Keys name the metric (``J50_mean``, ``return14_mean``)."""
    m, final = metric, check_epochs[-1]
    rows = []
    for task, arms in results.items():
        base = arms.get(baseline) if baseline else None
        for arm, cur in arms.items():
            last = int(cur.epochs.max())
            auc_end = min(last, final)
            pub = load_published(reference, arm, task) if reference is not None else None
            pub_curves = None if pub is None else Curves(np.arange(len(pub)), np.arange(pub.shape[1]), pub)
            row: dict[str, object] = {"task": task, "arm": arm, "n": len(cur.seeds)}
            ours_auc = auc(cur.values, cur.epochs, auc_end)
            pub_auc = auc(pub_curves.values, pub_curves.epochs, auc_end) if pub_curves else None
            for e in (*check_epochs, "last"):
                epoch = last if e == "last" else e
                ours = cur.at(epoch)
                theirs = pub_curves.at(epoch) if pub_curves and ours is not None else None
                row[f"{m}{e}_mean"], row[f"{m}{e}_ci95"] = mean(ours), ci95(ours)
                if e == "last":
                    row["last_epoch"] = last
                row[f"paper_{m}{e}_mean"], row[f"paper_{m}{e}_ci95"] = mean(theirs), ci95(theirs)
            row["auc_epochs"] = f"0-{auc_end}"
            row["AUC_mean"], row["AUC_ci95"] = mean(ours_auc), ci95(ours_auc)
            row["paper_n"] = len(pub) if pub is not None else 0
            row["paper_AUC_mean"], row["paper_AUC_ci95"] = mean(pub_auc), ci95(pub_auc)
            row[f"p_{m}{final}_vs_paper"] = welch_p(
                cur.at(final), pub_curves.at(final) if pub_curves else None
            )
            row[f"p_{m}last_vs_paper"] = welch_p(cur.at(last), pub_curves.at(last) if pub_curves else None)
            row["p_AUC_vs_paper"] = welch_p(ours_auc, pub_auc)
            row.update(_versus(arm, cur, base, baseline, task, reference, auc_end, m, final))
            rows.append(row)
    return rows


def _versus(
    arm: str,
    cur: Curves,
    base: Curves | None,
    baseline: str | None,
    task: str,
    reference,
    auc_end: int,
    m: str = "J",
    final: int = 50,
) -> dict[str, object]:
    """Differences (arm - baseline) and Welch p of the score ``m`` at epoch ``final`` and of the AUC, ours
    and the paper's."""
    out: dict[str, object] = {"baseline": ""}
    at = f"{m}{final}"
    keys = (
        f"d{at}",
        f"p_{at}",
        "dAUC",
        "p_AUC",
        f"paper_d{at}",
        f"paper_p_{at}",
        "paper_dAUC",
        "paper_p_AUC",
    )
    out.update({f"{k}_vs_baseline": math.nan for k in keys})
    if base is None or arm == baseline:
        return out
    out["baseline"] = baseline
    a_auc, b_auc = auc(cur.values, cur.epochs, auc_end), auc(base.values, base.epochs, auc_end)
    out[f"d{at}_vs_baseline"] = mean(cur.at(final)) - mean(base.at(final))
    out[f"p_{at}_vs_baseline"] = welch_p(cur.at(final), base.at(final))
    out["dAUC_vs_baseline"] = mean(a_auc) - mean(b_auc)
    out["p_AUC_vs_baseline"] = welch_p(a_auc, b_auc)
    if reference is not None:
        pa, pb = load_published(reference, arm, task), load_published(reference, baseline, task)
        if pa is not None and pb is not None:
            epochs = np.arange(pa.shape[1])
            pa_auc, pb_auc = auc(pa, epochs, auc_end), auc(pb, epochs, auc_end)
            has_final = pa.shape[1] > final and pb.shape[1] > final and int(cur.epochs.max()) >= final
            if has_final:
                out[f"paper_d{at}_vs_baseline"] = mean(pa[:, final]) - mean(pb[:, final])
                out[f"paper_p_{at}_vs_baseline"] = welch_p(pa[:, final], pb[:, final])
            out["paper_dAUC_vs_baseline"] = mean(pa_auc) - mean(pb_auc)
            out["paper_p_AUC_vs_baseline"] = welch_p(pa_auc, pb_auc)
    return out


# --- writing ---------------------------------------------------------------------------------------------


def _csv_value(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def write_summary_csv(rows: list[dict[str, object]], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(rows[0]))
    for row in rows:
        writer.writerow([_csv_value(v) for v in row.values()])
    atomic_write_bytes(path, buf.getvalue().encode())


def format_num(x: object, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant digits, integers from 10**digits on, ``NA`` if missing."""
    if not isinstance(x, float | int) or math.isnan(x):
        return "NA"
    return f"{x:.0f}" if abs(x) >= 10**digits else f"{x:.{digits}g}"


def _pm(row: dict[str, object], key: str) -> str:
    return format_pm(row[f"{key}_mean"], row[f"{key}_ci95"])


def format_pm(m: object, h: object) -> str:
    """``mean ± half-width`` for a table (``NA`` for a missing mean, the mean alone without an interval)."""
    if isinstance(m, float) and math.isnan(m):
        return "NA"
    return (
        format_num(m) if isinstance(h, float) and math.isnan(h) else f"{format_num(m)} ± {format_num(h, 2)}"
    )


def format_p(x: object) -> str:
    """A p-value with two significant digits (``NA`` where undefined)."""
    return "NA" if not isinstance(x, float) or math.isnan(x) else f"{x:.2g}"


def summary_markdown(
    rows: list[dict[str, object]],
    has_reference: bool,
    metric: str = "J",
    check_epochs: tuple[int, ...] = CHECK_EPOCHS,
) -> str:
    """The summary as Markdown tables (ours beside the paper, then each arm against the baseline)."""
    m, final = metric, check_epochs[-1]
    last = max(int(r["last_epoch"]) for r in rows)
    extra = [] if last in check_epochs else ["last"]
    auc_span = rows[0]["auc_epochs"]
    cols = [f"{m} ep{e}" if e != "last" else f"{m} ep{last}" for e in (*check_epochs, *extra)]
    head = ["task", "arm", "n", *cols, f"AUC ep{auc_span}"]
    if has_reference:
        head += [
            "paper n",
            f"paper {m} ep{final if last >= final else last}",
            f"paper AUC ep{auc_span}",
            f"p vs paper ({m} ep{final if last >= final else last} / AUC)",
        ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["task"]), str(r["arm"]), str(r["n"])]
        cells += [_pm(r, f"{m}{e}") for e in (*check_epochs, *extra)]
        cells.append(_pm(r, "AUC"))
        if has_reference:
            key = f"{m}{final}" if last >= final else f"{m}last"
            if r["paper_n"]:
                cells += [str(r["paper_n"]), _pm(r, f"paper_{key}"), _pm(r, "paper_AUC")]
                cells.append(f"{format_p(r[f'p_{key}_vs_paper'])} / {format_p(r['p_AUC_vs_paper'])}")
            else:
                cells += ["0", "NA", "NA", "NA"]
        lines.append("| " + " | ".join(cells) + " |")
    versus = [r for r in rows if r["baseline"]]
    if versus:
        lines += [
            "",
            f"Each arm against the baseline (difference of means, arm - baseline; Welch p). AUC over epochs "
            f"{auc_span}.",
            "",
        ]
        head = ["task", "arm - baseline", f"Δ{m} ep{final} (p)", "ΔAUC (p)"]
        if has_reference:
            head += [f"paper Δ{m} ep{final} (p)", "paper ΔAUC (p)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in versus:
            cells = [str(r["task"]), f"{r['arm']} - {r['baseline']}"]
            for prefix in ("", "paper_") if has_reference else ("",):
                for what in (f"{m}{final}", "AUC"):
                    d, p = r[f"{prefix}d{what}_vs_baseline"], r[f"{prefix}p_{what}_vs_baseline"]
                    cells.append("NA" if format_num(d) == "NA" else f"{format_num(d)} ({format_p(p)})")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_report(
    results: dict[str, dict[str, Curves]], reference: Path | None, out_dir: Path, metric: str = "J"
) -> list[Path]:
    """One PNG per task (``<metric>_<task>.png``) and one with all tasks: ours solid, published dashed, 95%
    t-intervals shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    arms = list(dict.fromkeys(arm for per_task in results.values() for arm in per_task))
    colour = {arm: _COLOURS[k % len(_COLOURS)] for k, arm in enumerate(arms)}

    def draw(ax, task: str) -> None:
        for arm, cur in results[task].items():
            label = f"{arm} (mtdqn, {len(cur.seeds)} seeds)"
            draw_band(ax, cur.epochs, cur.values, colour[arm], "-", label, 0.25)
            pub = load_published(reference, arm, task) if reference is not None else None
            if pub is not None:
                upto = min(int(cur.epochs.max()), pub.shape[1] - 1)
                x = np.arange(upto + 1)
                draw_band(
                    ax, x, pub[:, : upto + 1], colour[arm], "--", f"{arm} (paper, {len(pub)} runs)", 0.10
                )
        ax.set_title(task)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{_SCORE_AXIS[metric]} (mean, 95% t-interval)")
        ax.grid(alpha=0.3)

    written = []
    for task in results:
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        draw(ax, task)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(save_png(fig, out_dir / f"{metric}_{safe_name(task)}.png"))
    tasks = list(results)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.8 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        draw(ax, task)
    legend_below(fig, axes[0], columns=4, row_height=0.06)
    written.append(save_png(fig, out_dir / "learning_curves.png"))
    return written


DIVERGING_Q = 1e3
"""Above this mean Q magnitude, a mean-Q panel is drawn on a symmetric log axis."""


def draw_mean_q(ax, x: np.ndarray, values: np.ndarray, colour: str, label: str) -> None:
    """Each seed's mean Q (``values[seed, k]`` at ``x[k]``) as a thin line, the median over seeds thick; a
    symmetric log axis once any value passes :data:`DIVERGING_Q` (one runaway seed would flatten the rest)."""
    ax.plot(x, values.T, color=colour, lw=0.7, alpha=0.45)
    ax.plot(x, np.median(values, axis=0), color=colour, lw=1.8, label=label)
    if np.nanmax(np.abs(values), initial=0.0) > DIVERGING_Q:
        ax.set_yscale("symlog", linthresh=1.0)


def plot_mean_q(mean_q: dict[str, dict[str, Curves]], out_dir: Path) -> Path:
    """report/mean_q.png: per task, each arm's seeds' mean Q of their learning batches from epoch 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(mean_q)
    arms = list(dict.fromkeys(arm for per_task in mean_q.values() for arm in per_task))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.8 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for k, arm in enumerate(arms):
            cur = mean_q[task].get(arm)
            if cur is None or not (cur.epochs > 0).any():
                continue
            keep = cur.epochs > 0  # epoch 0 has no learning batches
            label = f"{arm} ({len(cur.seeds)} seeds; median thick)"
            draw_mean_q(ax, cur.epochs[keep], cur.values[:, keep], _COLOURS[k % len(_COLOURS)], label)
        ax.set_title(task)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean Q of the learning batches")
        ax.grid(alpha=0.3)
    legend_below(fig, axes[0], columns=4, row_height=0.06)
    return save_png(fig, out_dir / "mean_q.png")


def legend_below(fig, axes, columns: int, row_height: float) -> None:
    """One legend under the figure for the labelled lines of ``axes`` (each label once) in at most ``columns``
    columns, fewer where long labels would not fit the figure's width; the layout tightened above it
    (``row_height``: the fraction of the figure's height one legend row takes)."""
    handles, labels = [], []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    ncol = min(columns, len(labels))
    while True:  # as many columns (at most ``columns``) as fit the figure's width
        legend = fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
        if ncol == 1 or legend.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width:
            break
        legend.remove()
        ncol -= 1
    fig.tight_layout(rect=(0, row_height * math.ceil(len(labels) / ncol), 1, 1))


def draw_band(
    ax, x: np.ndarray, values: np.ndarray, colour: str, style: str, label: str, alpha: float
) -> None:
    """The mean over axis 0 of ``values`` as a line, with its 95% Student-t interval shaded (2+ rows)."""
    m = values.mean(axis=0)
    ax.plot(x, m, color=colour, ls=style, lw=1.6, label=label)
    if len(values) > 1:
        h = t_half_width(values)
        ax.fill_between(x, m - h, m + h, color=colour, alpha=alpha, lw=0)


def save_png(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def make_report(
    folder: Path,
    reference: Path | None = None,
    use_reference: bool = True,
    baseline: str | None = None,
    partial: bool = False,
) -> Path:
    """Write ``folder/report/`` from ``folder/results.csv``; returns the path of report.md.

    ``partial``: gather the groups finished so far into ``folder/partial/results.csv`` first and write
    ``folder/partial/report/`` from it (for an experiment still running or stopped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give an experiment folder (e.g. experiments/deramo-gym)")
    base, manifest_link, partial_line = folder, f"../{MANIFEST}", None
    if partial:
        _, n_done, n_total = gather_finished(folder)
        base, manifest_link = folder / PARTIAL, f"../../{MANIFEST}"
        partial_line = (
            f"**Partial report: {n_done} of {n_total} groups finished**; the unfinished groups are left out. "
            "`mtdqn report` without `--partial` writes the full report once all have finished."
        )
    manifest = read_manifest(folder) or {}
    metric = str(manifest.get("metric", "J"))  # manifests before the field: the paper's J
    if metric not in _SCORE_AXIS:
        raise UserError(f"{folder / MANIFEST} names an unknown metric {metric!r}; restore it (edited?)")
    results = read_results(base / RESULTS, metric)
    if manifest and not partial:  # a partial results.csv holds the finished groups only, by design
        check_complete(results, manifest, base / RESULTS)
    arms = list(dict.fromkeys(arm for per_task in results.values() for arm in per_task))
    explicit = baseline is not None
    baseline = baseline or manifest.get("baseline")
    if baseline is not None and baseline not in arms:
        if partial and not explicit:
            baseline = None  # no group of the baseline arm has finished yet: no comparison with it
        else:
            raise UserError(
                f"baseline arm {baseline!r} is not in {base / RESULTS}; use one of {', '.join(arms)}"
            )
    ref = find_reference(reference) if use_reference else None
    out_dir = base / REPORT
    check_epochs = tuple(int(e) for e in manifest.get("check_epochs", CHECK_EPOCHS))
    rows = summarize(results, ref, baseline, metric, check_epochs)
    write_summary_csv(rows, out_dir / "summary.csv")
    has_ref = ref is not None and any(r["paper_n"] for r in rows)
    table = summary_markdown(rows, has_ref, metric, check_epochs)
    atomic_write_bytes(out_dir / "summary.md", table.encode())
    figures = plot_report(results, ref, out_dir, metric)

    name = manifest.get("experiment", folder.name)
    lines = [f"# Experiment {name}", ""]
    if manifest.get("description"):
        lines += [manifest["description"], ""]
    if partial_line:
        lines += [partial_line, ""]
    n_seeds = {arm: max(len(results[t][arm].seeds) for t in results if arm in results[t]) for arm in arms}
    last = max(int(r["last_epoch"]) for r in rows)
    arm_list = ", ".join(f"{a} ({_count(n_seeds[a], 'seed')})" for a in arms)
    lines.append(
        f"Arms: {arm_list}; epochs 0-{last}; "
        f"data: [`{RESULTS}`](../{RESULTS})"
        + (f", [`{MANIFEST}`]({manifest_link})" if manifest else "")
        + "."
    )
    lines.append("")
    if manifest.get("overrides"):  # --set: the arms differ from the registered experiment's
        overrides = manifest["overrides"]
        settings = ", ".join(f"`{key}={value}`" for key, value in overrides.items())
        multi_only = [f"`{key}`" for key in overrides if key in MULTI_TASK_ONLY]
        scope = f" ({', '.join(multi_only)}: multi-task arms only)" if multi_only else ""
        lines += [
            f"**Settings changed with `--set`: {settings}**{scope}; the published curves were made without "
            "them.",
            "",
        ]
    if ref is None:
        lines.append(
            "Published curves: not found (set MTDQN_REFERENCE to the reference folder, or place it at "
            "../shared/reference/deramo2020), so this report has no comparison with the paper."
        )
    else:
        with_pub = sorted({r["arm"] for r in rows if r["paper_n"]})
        without = [a for a in arms if a not in with_pub]
        lines.append(
            f"Published curves: `{ref}` (dashed; mean and 95% t-interval over the paper's runs) for "
            f"{', '.join(with_pub) or 'no arm'}"
            + (f"; none for {', '.join(without)}" if without else "")
            + "."
        )
    lines += ["", "## Learning curves", ""]
    lines += [f"![{p.stem}]({p.name})" for p in figures[:-1]]
    lines += ["", f"All tasks: [{figures[-1].name}]({figures[-1].name})", "", "## Summary", ""]
    lines += [
        f"Mean ± 95% Student-t half-width over seeds; AUC = trapezoidal area under each seed's {metric} "
        "curve (spec section 5.2); p = two-sided Welch t-test. Also as [summary.csv](summary.csv).",
        "",
        table,
    ]
    if has_column(base / RESULTS, "mean_q"):
        values = plot_mean_q(read_results(base / RESULTS, "mean_q"), out_dir)
        lines += [
            "",
            "## Values",
            "",
            "Each seed's mean Q of its learning batches per epoch (`mean_q`), the median over seeds thick. "
            "A task whose values diverge runs away here (a symmetric log axis once a value passes 1,000) "
            "while its J may still look fine; `mtdqn train` also warns when a task's mean Q leaves what its "
            "rewards allow.",
            "",
            f"![{values.stem}]({values.name})",
            "",
        ]
    from mtdqn.sweep_report import sweep_section  # it builds on this module's statistics

    lines += sweep_section(folder, results, manifest, out_dir)
    path = out_dir / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
