"""The analysis figures (PNG): embeddings coloured by value and by task, overlap panels, run comparisons."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mtdqn.analysis.overlap import OverlapState
from mtdqn.runlog import atomic_write_bytes

TASK_COLOURS = plt.get_cmap("tab10").colors
POINT = {"s": 5, "linewidths": 0, "rasterized": True}


def task_colour(t: int) -> tuple[float, float, float]:
    return TASK_COLOURS[t % len(TASK_COLOURS)]


def _save(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _axes_off(ax, title: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def _scatter_tasks(ax, emb: np.ndarray, task: np.ndarray, names: list[str], alpha: float = 0.6) -> None:
    for t, name in enumerate(names):
        rows = task == t
        ax.scatter(emb[rows, 0], emb[rows, 1], color=task_colour(t), alpha=alpha, label=name, **POINT)


def embedding_by_task(emb: np.ndarray, task: np.ndarray, names: list[str], title: str, path: Path) -> Path:
    """All states, one colour per task (the review's ``overlap.png`` without a hand-drawn circle)."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    _scatter_tasks(ax, emb, task, names)
    _axes_off(ax, title)
    ax.legend(markerscale=3, fontsize=9, loc="best", framealpha=0.85)
    return _save(fig, path)


def embedding_by_value(emb: np.ndarray, value: np.ndarray, title: str, path: Path) -> Path:
    """All states coloured by ``V = max_a Q`` on one scale (the review's ``tsne.png``)."""
    fig, ax = plt.subplots(figsize=(7, 5.5))
    sc = ax.scatter(emb[:, 0], emb[:, 1], c=value, cmap="viridis", alpha=0.7, **POINT)
    _axes_off(ax, title)
    fig.colorbar(sc, ax=ax, label="V(s) = max_a Q(s, a)")
    return _save(fig, path)


def embedding_by_task_value(
    emb: np.ndarray, value: np.ndarray, task: np.ndarray, names: list[str], path: Path
) -> Path:
    """One panel per task: its states coloured by their own V (own colour bar), the others in grey."""
    n = len(names)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.0 * rows), squeeze=False)
    for t, name in enumerate(names):
        ax = axes.flat[t]
        own = task == t
        ax.scatter(emb[~own, 0], emb[~own, 1], color="0.85", **POINT)
        sc = ax.scatter(emb[own, 0], emb[own, 1], c=value[own], cmap="viridis", **POINT)
        _axes_off(ax, name)
        fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02, label="V")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Value inside each task's region of the embedding", fontsize=12)
    return _save(fig, path)


class OverlapPanels:
    """Overlap pictures: a state and its nearest foreign neighbour, their place in the embedding and their
    frames. The embedding is drawn once and reused for every picture (only markers, frames and titles
    change), which makes each further picture several times cheaper."""

    def __init__(self, emb: np.ndarray, task: np.ndarray, value: np.ndarray, names: list[str]) -> None:
        self.emb, self.task, self.value, self.names = emb, task, value, names
        self.fig, self.axes = plt.subplots(1, 3, figsize=(14, 4.6), gridspec_kw={"width_ratios": [1.2, 1, 1]})
        ax = self.axes[0]
        _scatter_tasks(ax, emb, task, names, alpha=0.25)
        style = {"s": 200, "edgecolor": "black", "linewidths": 1.8, "zorder": 5}  # black: no task colour
        self.star = ax.scatter([0.0], [0.0], marker="*", facecolor="black", **style)
        self.circle = ax.scatter([0.0], [0.0], marker="o", facecolor="none", **style)
        _axes_off(ax, "embedding (star: state, circle: its neighbour)")
        ax.legend(markerscale=3, fontsize=8, loc="best", framealpha=0.85)
        for frame_ax in self.axes[1:]:
            frame_ax.set_xticks([])
            frame_ax.set_yticks([])
        # a fixed layout: "tight" bounding boxes would draw every picture twice
        self.fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.84, wspace=0.06)

    def draw(self, item: OverlapState, frame: np.ndarray, partner_frame: np.ndarray, path: Path) -> Path:
        """Save the picture of ``item`` (frames of its state and of its partner) to ``path``."""
        import io

        self.star.set_offsets(self.emb[item.row][None])
        self.circle.set_offsets(self.emb[item.partner][None])
        for ax, row, img in ((self.axes[1], item.row, frame), (self.axes[2], item.partner, partner_frame)):
            for old in list(ax.images):
                old.remove()
            ax.imshow(img)
            t = int(self.task[row])
            ax.set_title(f"{self.names[t]}   V = {self.value[row]:.2f}", fontsize=11, color=task_colour(t))
        a, b = self.names[item.task], self.names[item.other]
        if item.foreign_fraction > 0:
            why = f"{item.foreign_fraction:.0%} of its nearest neighbours are {b} states"
        else:
            why = f"no {b} state among its nearest neighbours; the closest {b} state is drawn"
        self.fig.suptitle(
            f"{a} state near {b} in shared-feature space: {why} (feature distance {item.distance:.3f})",
            fontsize=11,
        )
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=150)
        atomic_write_bytes(path, buf.getvalue())
        return path

    def close(self) -> None:
        plt.close(self.fig)


def comparison(panels: list[tuple[str, np.ndarray, np.ndarray]], names: list[str], path: Path) -> Path:
    """Side by side embeddings of the same states' features from several runs, coloured by task."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), squeeze=False)
    for ax, (title, emb, task) in zip(axes.flat, panels, strict=True):
        _scatter_tasks(ax, emb, task, names)
        _axes_off(ax, title)
    axes.flat[0].legend(markerscale=3, fontsize=8, loc="best", framealpha=0.85)
    return _save(fig, path)
