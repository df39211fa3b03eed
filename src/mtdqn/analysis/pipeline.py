"""``mtdqn analyze``: rollout -> shared features -> metrics, embedding, overlap, figures, report.

Per analysed member (all members of a population by default) the folder ``<run>/analysis/`` (or
``analysis/seed<k>/`` for a population) receives ``states.npz``, ``embedding.npz``, ``metrics.json``, the
PNG figures, ``overlap/*.png`` and ``report.html``. States and embeddings are reused when the settings that
produced them are unchanged, so re-plotting with other settings needs no new rollout.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtdqn.analysis import figures
from mtdqn.analysis.config import AnalysisConfig
from mtdqn.analysis.embed import embed
from mtdqn.analysis.gradients import gradient_sharing
from mtdqn.analysis.metrics import MEANINGS, layer_activity, linear_cka, sharing_metrics
from mtdqn.analysis.overlap import overlap_states
from mtdqn.analysis.render import FrameRenderer, Thumbnails
from mtdqn.analysis.report import write_report
from mtdqn.analysis.rollout import (
    Agent,
    StateSet,
    collect_states,
    features_on,
    layer_outputs_per_task,
    load_agents,
)
from mtdqn.analysis.values import value_vs_return
from mtdqn.errors import UserError
from mtdqn.runlog import atomic_write_bytes, safe_name, t_half_width
from mtdqn.seeding import derive_seed

RENDER_WORKERS = 2
"""Processes that render the hover thumbnails (about 1.5 ms per classic-control frame)."""


@dataclass
class MemberResult:
    """What one member's analysis produced."""

    seed: int
    folder: Path
    metrics: dict
    timings: dict = field(default_factory=dict)


def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode())


def _states(agent: Agent, cfg: AnalysisConfig, folder: Path, log) -> StateSet:
    path = folder / "states.npz"
    cached = StateSet.load(path) if path.is_file() else None  # None also for a file of an older version
    if cached is not None:
        key = {k: cached.meta.get(k) for k in ("epoch", "seed", *cfg.rollout_key())}
        if key == {"epoch": agent.epoch, "seed": agent.seed, **cfg.rollout_key()}:
            log(f"reusing the recorded states in {path}")
            return cached
    states = collect_states(agent, cfg)
    states.save(path)
    return states


def _embedding(x: np.ndarray, cfg: AnalysisConfig, seed: int, path: Path, log) -> np.ndarray:
    """Embed ``x``, or reuse ``path`` when it holds the embedding of the same features and settings."""
    settings = {"method": cfg.method, "seed": seed}
    if cfg.method == "tsne":
        settings.update(
            perplexity=cfg.perplexity,
            iterations=cfg.tsne_iterations,
            learning_rate=cfg.tsne_learning_rate,
            early_exaggeration=cfg.tsne_early_exaggeration,
            threads=cfg.tsne_threads,
        )
    digest = hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()
    key = json.dumps({**settings, "features": digest}, sort_keys=True)
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) == key:
                log(f"reusing the embedding in {path}")
                return data["embedding"]
    emb = embed(x, cfg, seed)
    buf = io.BytesIO()
    np.savez(buf, embedding=emb, key=np.array(key))
    atomic_write_bytes(path, buf.getvalue())
    return emb


def analyze_member(
    agent: Agent,
    cfg: AnalysisConfig,
    folder: Path,
    compare: list[list[Agent]],
    log=print,
    gradients: dict | None = None,
) -> MemberResult:
    """The whole analysis of one member into ``folder``; ``gradients``: its
    :func:`~mtdqn.analysis.gradients.gradient_sharing`, reported with the metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    seed = derive_seed(agent.seed, "analysis-embed", cfg.seed) % 2**32  # sklearn and openTSNE take 32 bits
    states = _states(agent, cfg, folder, log)
    lap("rollout")
    # The hover thumbnails (one frame per state) render in worker processes while this one computes the
    # metrics; the embedding waits for them, as its threads would compete with the workers for the cores.
    thumbnails = Thumbnails(
        states, folder / "states.npz", cfg.thumbnail_width, folder / "thumbnails.npz", RENDER_WORKERS
    )
    x, task, value, names = states.features, states.task, states.value, states.task_names
    metrics, nn_idx = sharing_metrics(x, task, value, cfg.neighbours, cfg.probe_folds, seed)
    gammas = [task_config.gamma for task_config in agent.tasks]
    metrics.update(value_vs_return(value, task, states.reward, states.terminal, states.ended, gammas, names))
    bf16 = layer_outputs_per_task(agent, states, bf16=True) if agent.bf16_forward else None
    metrics["layer_activity"] = layer_activity(layer_outputs_per_task(agent, states), names, bf16)
    lap("metrics")
    sheets = thumbnails.result()
    lap("thumbnails (wait)")
    emb = _embedding(x, cfg, seed, folder / "embedding.npz", log)
    lap("embedding")
    comparisons = [("this run", emb, task)]
    cka = {}
    for others in compare:
        other = next((a for a in others if a.seed == agent.seed), others[0])
        rows, feats, _ = features_on(other, states)
        label = f"{other.run_dir.name} (seed {other.seed}, {other.config.mode})"
        per_task = {
            names[t]: linear_cka(x[rows][task[rows] == t], feats[task[rows] == t])
            for t in np.unique(task[rows])
        }
        cka[label] = {"all states": linear_cka(x[rows], feats), **per_task}
        other_emb = _embedding(
            feats, cfg, seed, folder / f"embedding_{safe_name(other.run_dir.name)}.npz", log
        )
        comparisons.append((label, other_emb, task[rows]))
    if cka:
        metrics["cka"] = cka
    if gradients is not None:
        metrics["gradient_sharing"] = gradients
    lap("compare")

    method = "t-SNE" if cfg.method == "tsne" else "PCA"
    figs = [
        figures.embedding_by_value(
            emb, value, f"{method} of the shared features, coloured by V", folder / "embedding_value.png"
        ),
        figures.embedding_by_task(
            emb,
            task,
            names,
            f"{method} of the shared features, coloured by task",
            folder / "embedding_task.png",
        ),
        figures.embedding_by_task_value(emb, value, task, names, folder / "embedding_value_per_task.png"),
    ]
    if len(comparisons) > 1:
        figs.append(figures.comparison(comparisons, names, folder / "comparison.png"))
    lap("figures")

    overlap_dir = folder / "overlap"
    for old in overlap_dir.glob("*.png"):
        old.unlink()
    overlaps = overlap_states(x, task, nn_idx, cfg.overlap_per_pair)
    renderer = FrameRenderer(states)
    panels = figures.OverlapPanels(emb, task, value, names)
    overlap_figs, overlap_rows = [], []
    try:
        for (a, b), items in overlaps.items():
            for rank, item in enumerate(items):
                path = overlap_dir / f"{safe_name(names[a])}__{safe_name(names[b])}_{rank}.png"
                frames = renderer.frame(item.row), renderer.frame(item.partner)
                overlap_figs.append(panels.draw(item, *frames, path))
                overlap_rows.append(
                    {
                        **item.__dict__,
                        "task": names[item.task],
                        "other": names[item.other],
                        "value": float(value[item.row]),
                        "partner_value": float(value[item.partner]),
                        "figure": str(path.relative_to(folder)),
                    }
                )
    finally:
        renderer.close()
        panels.close()
    lap("overlap")

    _write_json(
        folder / "metrics.json",
        {
            "run": str(agent.run_dir),
            "seed": agent.seed,
            "epoch": agent.epoch,
            "n_states": len(task),
            "tasks": names,
            "metrics": metrics,
            "meanings": {k: MEANINGS[k] for k in metrics},
            "overlap_states": overlap_rows,
        },
    )
    _write_json(
        folder / "config.json", {"analysis": cfg.to_dict(), "compare": [str(c[0].run_dir) for c in compare]}
    )
    title = (
        f"Shared features of {agent.run_dir.name} "
        f"(seed {agent.seed}, epoch {agent.epoch}, {agent.config.mode})"
    )
    write_report(
        folder / "report.html",
        title,
        states,
        emb,
        sheets,
        metrics,
        figs,
        overlap_figs,
        {"analysis": cfg.to_dict(), "run": str(agent.run_dir), "seed": agent.seed, "epoch": agent.epoch},
    )
    lap("report")
    return MemberResult(agent.seed, folder, metrics, timings)


SCALAR_METRICS = (
    "task_probe_accuracy",
    "task_probe_chance",
    "knn_task_mixing",
    "overlap_fraction",
    "effective_rank",
    "dead_unit_fraction",
    "task_variance_fraction",
    "task_exclusive_unit_fraction",
    "value_r2_joint",
    "value_r2_per_task",
    "value_error_max",
)


def summarise(results: list[MemberResult]) -> dict:
    """Mean and 95% Student-t half-width over members of every scalar metric (and of the all-states CKA
    against each compared run)."""
    columns = {key: [r.metrics[key] for r in results] for key in SCALAR_METRICS}
    for r in results:
        for label, values in r.metrics.get("cka", {}).items():
            columns.setdefault(f"cka vs {label.split(' (seed ')[0]}", []).append(values["all states"])
    summary = {}
    for key, column in columns.items():
        values = np.array(column, dtype=np.float64)
        half = float(t_half_width(values[:, None])[0]) if len(values) > 1 else float("nan")
        summary[key] = {"mean": float(values.mean()), "ci95": half, "per_seed": values.tolist()}
    return summary


def _check_out(out: Path) -> None:
    """Refuse an output folder that is a file, or lies below one (checked before anything runs)."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == out else f"lies in {path}, which is a file"
                raise UserError(
                    f"output folder {out} {where}; give --out a folder (new or existing) for the analysis"
                )
            return


def analyze_run(
    run_dir: Path,
    cfg: AnalysisConfig,
    seeds: list[int] | None = None,
    compare: list[Path] | None = None,
    out: Path | None = None,
    log=print,
) -> list[MemberResult]:
    """Analyse the members of ``run_dir`` with ``seeds`` (default all); see the module docstring."""
    cfg.validate()
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "analysis"
    _check_out(out)
    agents = load_agents(run_dir, seeds)
    others = [load_agents(Path(c)) for c in compare or []]
    env_ids = [task.env_id for task in agents[0].tasks]
    shared = [sum(e in {t.env_id for t in other[0].tasks} for e in env_ids) for other in others]
    cfg.check_state_count(len(env_ids), min([len(env_ids), *(k for k in shared if k)]))
    population = len(agents[0].config.run.seeds) > 1
    gradients = {}
    if cfg.gradient_batches:
        log(f"gradients of each task on the shared layers over {cfg.gradient_batches} replay batches")
        gradients = gradient_sharing(run_dir, cfg.gradient_batches, cfg.seed)
    results = []
    for agent in agents:
        folder = out / f"seed{agent.seed}" if population else out
        log(f"analysing seed {agent.seed} of {run_dir} (epoch {agent.epoch}) into {folder}")
        result = analyze_member(agent, cfg, folder, others, log, gradients.get(agent.seed))
        log(
            f"  {folder / 'report.html'}  ({sum(result.timings.values()):.1f} s: "
            + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
            + ")"
        )
        results.append(result)
    if population:
        _write_json(
            out / "summary.json",
            {
                "seeds": [r.seed for r in results],
                "metrics": summarise(results),
                "meanings": {k: MEANINGS[k] for k in SCALAR_METRICS},
            },
        )
    return results
