"""``mtdqn experiment --analyze``: the sharing metrics of every group's shared features, gathered per seed.

After the groups have trained, every group whose run has shared layers over two or more tasks (a multi-task
run) is analysed by :func:`mtdqn.analysis.pipeline.analyze_run` into its own ``analysis/`` folder
(``analysis/seed<k>/`` per member of a population), exactly as ``mtdqn analyze RUN`` would; a group whose
members already hold an analysis of the run's last epoch with the same settings is kept. Then every
member's scalar metrics (and the mean off-diagonal entry of ``value_r2_cross``; with gradient batches
the mean off-diagonal gradient cosine, the largest contribution and the lowest split-half cosine) are
gathered into ``<experiment>/sharing.csv``, one row per (arm, seed, metric), which the report draws
(:mod:`mtdqn.sweep_report`). The analysis runs in this process, also with the Ray backend.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mtdqn.analysis.config import AnalysisConfig
from mtdqn.errors import UserError
from mtdqn.experiments import Experiment, RunOptions
from mtdqn.runlog import atomic_write_bytes, load_config
from mtdqn.runner import read_manifest
from mtdqn.sweep_report import SHARING, SHARING_COLUMNS

OFFDIAG = "value_r2_cross_offdiag"
GRADIENT_COSINE = "gradient_cosine_offdiag"
"""Mean cosine between two tasks' gradients on the shared layers (``--analyze-gradient-batches``)."""
GRADIENT_DOMINANCE = "gradient_contribution_max"
"""The largest task's contribution to the joint gradient: 1/T = even, 1 = one task drives the shared
layers."""
GRADIENT_SPLIT_HALF = "gradient_split_half_min"
"""The lowest split-half cosine over the tasks: near 1 = the two numbers above are not batch noise."""
GRADIENT_ZERO = "gradient_zero_tasks"
"""How many tasks have an exactly zero gradient on the shared layers (cut off from them: e.g. saturated
sigmoid features). The three numbers above are over the other tasks."""


def member_folders(run_dir: Path, seeds: list[int]) -> dict[int, Path]:
    """Where ``analyze_run`` writes each member's analysis (``analysis/seed<k>`` in a population)."""
    base = Path(run_dir) / "analysis"
    if len(seeds) == 1:
        return {seeds[0]: base}
    return {s: base / f"seed{s}" for s in seeds}


def _is_current(folder: Path, cfg: AnalysisConfig, epoch: int) -> bool:
    """Whether ``folder`` holds an analysis of ``epoch`` with the settings ``cfg`` and no comparison."""
    try:
        settings = json.loads((folder / "config.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return settings == {"analysis": cfg.to_dict(), "compare": []} and metrics.get("epoch") == epoch


def offdiag_mean(matrix: list[list[float | None]]) -> float:
    """Mean of the defined (not None or NaN) off-diagonal entries of a square matrix; NaN if none is."""
    a = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=np.float64)
    values = a[~np.eye(len(a), dtype=bool)]
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def _extreme(values: list[float | None], pick) -> float:
    """``pick`` (max or min) of the defined values; NaN if none is."""
    defined = [float(v) for v in values if v is not None and np.isfinite(v)]
    return pick(defined) if defined else float("nan")


def member_metrics(folder: Path) -> dict[str, float]:
    """The scalar metrics of one member's ``metrics.json`` and :data:`OFFDIAG`."""
    from mtdqn.analysis.pipeline import SCALAR_METRICS

    metrics = json.loads((Path(folder) / "metrics.json").read_text())["metrics"]
    out = {key: float(metrics[key]) for key in SCALAR_METRICS if key in metrics}
    if "value_r2_cross" in metrics:
        out[OFFDIAG] = offdiag_mean(metrics["value_r2_cross"])
    gradients = metrics.get("gradient_sharing")
    if gradients is not None:
        per_task = [v for v in gradients.values() if isinstance(v, dict)]
        out[GRADIENT_COSINE] = offdiag_mean(gradients["cosine"])
        out[GRADIENT_DOMINANCE] = _extreme([t["contribution"] for t in per_task], max)
        out[GRADIENT_SPLIT_HALF] = _extreme([t["split_half_cosine"] for t in per_task], min)
        out[GRADIENT_ZERO] = float(sum(t["norm"] == 0 for t in per_task))
    return out


def check_analysis(experiment: Experiment, options: RunOptions, cfg: AnalysisConfig) -> None:
    """Refuse, before anything trains, analysis settings that the states of a multi-task arm of
    ``experiment`` cannot support (see :meth:`AnalysisConfig.check_state_count`)."""
    cfg.validate()
    for arm in experiment.arms:
        make = getattr(arm, "config", None)
        if make is None:  # an arm without a configuration: checked when its run is analysed
            continue
        config = make([0], options)
        if config.mode == "multi" and len(config.tasks) >= 2:
            cfg.check_state_count(len(config.tasks), steps_flag="--analyze-steps", tunable=False)


def analyze_experiment(folder: Path, cfg: AnalysisConfig, log: Callable[[str], None] = print) -> Path | None:
    """Analyse every multi-task group of the experiment in ``folder`` and write ``sharing.csv`` (returned;
    None when no group has shared layers over several tasks)."""
    from mtdqn.analysis.pipeline import analyze_run

    cfg.validate()
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise UserError(f"{folder} is not an experiment folder (no experiment.json)")
    epochs = int(manifest["epochs"])
    rows = []
    for group in manifest["groups"]:
        run_dir = folder / group["folder"]
        config = load_config(run_dir)
        if config.mode != "multi" or len(config.tasks) < 2:
            log(f"{group['folder']}: no shared layers over several tasks, not analysed")
            continue
        members = member_folders(run_dir, list(config.run.seeds))
        if all(_is_current(members[s], cfg, epochs) for s in group["seeds"]):
            log(f"{group['folder']}: analysis of epoch {epochs} present, kept")
        else:
            analyze_run(run_dir, cfg, log=log)
        for seed in group["seeds"]:
            for metric, value in member_metrics(members[seed]).items():
                rows.append([group["arm"], seed, metric, repr(value), Path(group["folder"]).name])
    if not rows:
        return None
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SHARING_COLUMNS)
    writer.writerows(rows)
    path = folder / SHARING
    atomic_write_bytes(path, buf.getvalue().encode())
    return path
