"""Compare deramo-gym runs with the paper's published 100-seed curves (D'Eramo et al. 2020).

    python benchmarks/compare_reference.py runs/deramo-gym-multi-seed* --single runs/deramo-gym-single-seed*

Reads the runs' metrics.csv files and the published scores, found as ``mtdqn report`` finds them
(--reference, $MTDQN_REFERENCE, ../shared/reference/deramo2020). Prints, per task and arm, our J at epochs
10/25/50 (mean over our seeds) beside the paper's mean with its 95% t-interval and its 5-95% seed spread, the
area under the curve, and whether each of our seeds' epoch-50 J lies inside the paper's seed spread. Writes a
figure with both (--out, default reference_comparison.png). For a many-seed experiment,
``mtdqn experiment deramo-gym`` and ``mtdqn report`` give the comparison with t-intervals and Welch tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mtdqn.experiment_report import ci95
from mtdqn.reference import DERAMO_GYM_TASKS, find_reference, load_published
from mtdqn.runlog import read_metrics

TASKS = list(DERAMO_GYM_TASKS)


def load_reference(reference: Path, arm: str) -> np.ndarray:
    """(runs, tasks, evaluations) published J of ``arm``."""
    return np.stack([load_published(reference, arm, task) for task in TASKS], axis=1)


def load_runs(paths: list[Path]) -> np.ndarray:
    """(seeds, tasks, evaluations) J of deramo-gym runs."""
    curves = []
    for path in paths:
        m = read_metrics(path / "metrics.csv")
        n_epochs = int(m["epoch"].max()) + 1
        j = np.full((len(TASKS), n_epochs), np.nan)
        j[m["task"].astype(int), m["epoch"].astype(int)] = m["J"]
        curves.append(j)
    return np.stack(curves)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("multi", nargs="+", type=Path, help="run folders of --mode multi")
    parser.add_argument("--single", nargs="*", type=Path, default=[], help="run folders of --mode single")
    parser.add_argument("--reference", type=Path, help="the published results folder")
    parser.add_argument("--out", type=Path, default=Path("reference_comparison.png"))
    args = parser.parse_args()
    reference = find_reference(args.reference)
    if reference is None:
        parser.error("published results not found; pass --reference or set MTDQN_REFERENCE")

    arms = {"MDQN": load_runs(args.multi)}
    if args.single:
        arms["DQN"] = load_runs(args.single)
    print(
        f"{'task':<18} {'arm':<5} {'n':>2} {'ep10 ours':>10} {'ep25 ours':>10} {'ep50 ours':>10} "
        f"{'ep50 paper mean +- ci95':>24} {'paper 5-95% spread':>20} {'in spread':>9} "
        f"{'AUC ours':>9} {'AUC paper':>9}"
    )
    for arm, ours in arms.items():
        ref = load_reference(reference, arm)
        for t, task in enumerate(TASKS):
            r50 = ref[:, t, 50]
            lo, hi = np.percentile(r50, [5, 95])
            o = ours[:, t]
            inside = int(np.sum((o[:, 50] >= lo - 1e-12) & (o[:, 50] <= hi + 1e-12)))
            auc_ours = np.trapezoid(o, axis=-1).mean()
            auc_ref = np.trapezoid(ref[:, t], axis=-1).mean()
            print(
                f"{task:<18} {arm:<5} {len(o):>2} {o[:, 10].mean():>10.3f} {o[:, 25].mean():>10.3f} "
                f"{o[:, 50].mean():>10.3f} {r50.mean():>13.3f} +- {ci95(r50):<8.3f} "
                f"[{lo:>8.3f}, {hi:>8.3f}] {inside:>4}/{len(o):<4} {auc_ours:>9.1f} {auc_ref:>9.1f}"
            )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 3.4))
    colours = {"MDQN": "tab:red", "DQN": "tab:blue"}
    for arm, ours in arms.items():
        ref = load_reference(reference, arm)
        for t, (ax, task) in enumerate(zip(axes, TASKS, strict=True)):
            x = np.arange(ref.shape[-1])
            lo, hi = np.percentile(ref[:, t], [5, 95], axis=0)
            ax.fill_between(x, lo, hi, color=colours[arm], alpha=0.12, label=f"paper {arm} 5-95%")
            ax.plot(x, ref[:, t].mean(0), color=colours[arm], lw=2, label=f"paper {arm} mean")
            for curve in ours[:, t]:
                ax.plot(np.arange(len(curve)), curve, color=colours[arm], lw=0.5, alpha=0.25)
            ax.plot(
                np.arange(ours.shape[-1]),
                ours[:, t].mean(0),
                color=colours[arm],
                lw=1.6,
                ls="--",
                label=f"mtdqn {arm} mean of {len(ours)} seeds (thin: seeds)",
            )
            ax.set_title(task)
            ax.set_xlabel("epoch")
    axes[0].set_ylabel("J")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
