"""The run folder: config, metrics, TensorBoard scalars, plots and the checkpoint.

    runs/<name>/config.json      resolved configuration, seed, package and library versions
    runs/<name>/metrics.csv      one row per (epoch, member, task)
    runs/<name>/gradients.csv    with --gradient-batches: each task's pull on the shared layers per epoch
    runs/<name>/evaluations.csv  the results of mtdqn evaluate (longer or other evaluations of a checkpoint)
    runs/<name>/task_weights.csv with --task-balance param-norm: each task's loss weight per epoch
    runs/<name>/tb/              TensorBoard scalars per task
    runs/<name>/plots/*.png      learning curves (one per task, and all tasks side by side)
    runs/<name>/checkpoint.pt    everything needed to resume after the last completed epoch
    runs/<name>/best_shared.pt   multi-task runs: the best epoch's shared layers (see mtdqn.best_shared)

Every file is written atomically (temporary file, fsync, rename), so a killed run never leaves a half file.
Checkpoints hold only tensors and plain containers and are loaded with ``torch.load(weights_only=True)``:
no arbitrary object is ever unpickled. Each carries a digest of its contents, checked on loading, so a
checkpoint damaged on disk is refused instead of resuming with garbage weights.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mtdqn.config import Config
from mtdqn.errors import UserError

METRIC_COLUMNS = [
    "epoch",
    "member",
    "seed",
    "task",
    "task_name",
    "J",
    "return",
    "episodes",
    "loss",
    "mean_q",
    "epsilon",
    "env_steps",
    "updates",
    "steps_per_s",
    "wall_s",
]
GRADIENT_COLUMNS = [
    "epoch",
    "member",
    "seed",
    "task",
    "task_name",
    "batches",
    "norm",
    "contribution",
    "cosine_with_others",
    "split_half_cosine",
]
"""gradients.csv (``run.gradient_batches``): :mod:`mtdqn.analysis.gradients`'s numbers after each epoch's
learning; ``nan`` where undefined (a task whose gradient on the shared layers is zero; one batch's halves)."""
TASK_WEIGHT_COLUMNS = ["epoch", "member", "seed", "task", "task_name", "measurements", "pull", "weight"]
"""task_weights.csv (``learner.task_balance`` ``param-norm``): after the warm-up (epoch 0) and every epoch's
learning, each task's moving average of its gradient norm on the shared layers (``pull``) and its loss
weight, with the number of measurements so far."""
EVALUATION_COLUMNS = ["epoch", "steps", "epsilon", "eval_seed", "member", "seed", "task", "task_name"]
EVALUATION_COLUMNS += ["J", "return", "episodes"]
"""evaluations.csv (``mtdqn evaluate``): one row per (evaluation, member, task); an evaluation is its
checkpoint epoch, steps per task, epsilon and the member's evaluation seed (``seed`` is the member's)."""
EVALUATION_KEY = ("epoch", "steps", "epsilon", "eval_seed", "member", "task")
EVALUATION_LATER_COLUMNS = ["return_sd"]
"""Columns evaluations.csv gained later (``return_sd``: the standard deviation of the games' or episodes'
returns, nan with fewer than two); rows of older files read as nan there."""
CHECKPOINT_FORMAT = 1
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def versions() -> dict[str, str]:
    """Versions of Python, mtdqn and the libraries that change numbers."""
    out = {"python": platform.python_version()}
    for pkg in ("mtdqn", "torch", "numpy", "gymnasium"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def save_config(run_dir: Path, config: Config) -> None:
    payload = {"config": config.to_dict(), "versions": versions()}
    atomic_write_bytes(run_dir / "config.json", (json.dumps(payload, indent=2) + "\n").encode())


def load_config(run_dir: Path) -> Config:
    """The validated configuration of the run in ``run_dir``; a missing or broken config.json is a
    :class:`UserError` naming the file."""
    path = run_dir / "config.json"
    if run_dir.is_file():
        raise UserError(f"{run_dir} is a file, not a run folder; pass the run's folder")
    if not path.is_file():
        raise UserError(f"{run_dir} is not an mtdqn run folder (no config.json); check the path")
    try:
        payload = json.loads(path.read_text())
        config = Config.from_dict(payload["config"])
        config.validate()
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path} is corrupt ({exc}); restore it or start a new run with --overwrite"
        ) from None
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return config


def _corrupt_metrics(path: Path, problem: str) -> UserError:
    return UserError(f"{path} is corrupt ({problem}); restore it, or start the run again with --overwrite")


def _read_metric_rows(path: Path, columns: list[str] = METRIC_COLUMNS) -> list[dict[str, str]]:
    """The rows of a metrics.csv (or another table of ``columns``), checked: every column present and the
    numeric ones numbers."""
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _corrupt_metrics(path, str(exc)) from None
    if not header and not rows:  # an empty file: nothing recorded
        return []
    missing = [c for c in columns if c not in header]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise _corrupt_metrics(path, f"no column {missing[0]!r}{more} in its first line")
    for line, row in enumerate(rows, start=2):
        for key in columns:
            if key == "task_name":
                continue
            try:
                float(row[key])
            except (TypeError, ValueError):
                raise _corrupt_metrics(path, f"line {line}: {key} is {row[key]!r}, not a number") from None
    return rows


class MetricsTable:
    """metrics.csv (or gradients.csv: ``columns``), rewritten atomically after every epoch (it is small)."""

    def __init__(self, path: Path, columns: list[str] = METRIC_COLUMNS) -> None:
        self.path = path
        self.columns = columns
        self.rows: list[dict[str, Any]] = []

    def load(self, max_epoch: int) -> None:
        """Read the rows of epochs <= ``max_epoch`` (rows of later epochs belong to a lost future)."""
        self.rows = []
        if not self.path.is_file():
            return
        rows = _read_metric_rows(self.path, self.columns)
        self.rows = [r for r in rows if int(float(r["epoch"])) <= max_epoch]

    def append(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.path, buf.getvalue().encode())

    def evaluated_epochs(self) -> set[int]:
        return {int(float(r["epoch"])) for r in self.rows}


def save_evaluation(run_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Add the rows of one ``mtdqn evaluate`` to ``run_dir/evaluations.csv`` (atomically), replacing the rows
    of the same evaluation (:data:`EVALUATION_KEY`) if it was run before (it gives the same numbers)."""
    path = run_dir / "evaluations.csv"
    table = MetricsTable(path, EVALUATION_COLUMNS + EVALUATION_LATER_COLUMNS)
    if path.is_file():
        table.rows = _read_metric_rows(path, EVALUATION_COLUMNS)

    def key(row: dict[str, Any]) -> tuple[float, ...]:
        return tuple(float(row[k]) for k in EVALUATION_KEY)

    new = {key(r) for r in rows}
    table.rows = [_with_later_columns(r) for r in table.rows if key(r) not in new]
    table.append([_with_later_columns(r) for r in rows])
    return path


def _with_later_columns(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with nan in each of :data:`EVALUATION_LATER_COLUMNS` it lacks (rows of older files)."""
    return {**row, **{c: "nan" for c in EVALUATION_LATER_COLUMNS if row.get(c) in (None, "")}}


def read_metrics(path: Path, columns: list[str] = METRIC_COLUMNS) -> dict[str, np.ndarray]:
    """metrics.csv (or gradients.csv: ``columns``) as columns (numbers as float arrays, task names as a
    string array)."""
    rows = _read_metric_rows(path, columns)
    cols: dict[str, np.ndarray] = {}
    for key in columns:
        values = [r[key] for r in rows]
        cols[key] = np.array(values) if key == "task_name" else np.array(values, dtype=np.float64)
    return cols


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically save ``state`` (tensors and plain containers only)."""
    import torch

    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "digest": state_digest(state), **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def state_digest(state: Any) -> str:
    """A SHA-256 digest of a checkpoint's contents: every tensor's dtype, shape and bytes and every plain
    value, walked in a fixed order; equal for the saved state and the same state loaded back. (SHA-256:
    the fastest of hashlib's digests on CPUs with SHA instructions, ~1.3 GB/s here.)"""
    import torch

    digest = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            data = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{data.dtype}{tuple(value.shape)}".encode())
            digest.update(data.view(torch.uint8).numpy())
        elif isinstance(value, np.ndarray):
            digest.update(f"A{value.dtype.str}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).view(np.uint8))
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}".encode())
            for key in sorted(value, key=repr):
                digest.update(repr(key).encode())
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"L{len(value)}".encode())
            for item in value:
                walk(item)
        else:
            digest.update(f"V{type(value).__name__}:{value!r}".encode())

    walk(state)
    return digest.hexdigest()


def load_checkpoint(path: Path, fingerprint: str, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely, check its digest and that it belongs to the configuration ``fingerprint``."""
    if not path.is_file():
        raise UserError(
            f"no checkpoint at {path}: the run has not finished an epoch yet; "
            f"continue it with mtdqn train --resume {path.parent}"
        )
    state = safe_torch_load(path, "checkpoint", "restart the run with --overwrite", map_location)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {path} has an unknown format; restart the run with --overwrite")
    saved_digest = state.pop("digest", None)  # checkpoints written before digests have none
    if saved_digest is not None:
        body = {k: v for k, v in state.items() if k != "format"}
        if state_digest(body) != saved_digest:
            raise UserError(
                f"checkpoint {path} is damaged (its contents do not match the digest saved with it); "
                "restore it from a backup or restart the run with --overwrite"
            )
    if state.get("fingerprint") != fingerprint:
        raise UserError(
            f"checkpoint {path} was written by a different configuration than {path.parent}/config.json; "
            "restore the matching config.json or restart with --overwrite"
        )
    return state


def safe_torch_load(path: Path, what: str, fix: str, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only. A file that is damaged, or
    that holds any other object (which could run code when unpickled), is a :class:`UserError` saying
    ``what`` it should have been and the ``fix``."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text:  # torch's words for an object it refused to unpickle
            raise UserError(
                f"{what} {path} holds objects other than tensors and plain containers, so it was not "
                f"written by mtdqn; it was not loaded (unpickling it could run arbitrary code); {fix}"
            ) from None
        detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if text.strip() else ""
        raise UserError(f"{what} {path} is corrupt or not an mtdqn {what} ({detail}); {fix}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{what} {path} is corrupt or not an mtdqn {what} ({first}); {fix}") from None


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "task"


def plot_learning_curves(run_dir: Path) -> list[Path]:
    """Write one PNG per task (J and undiscounted return per epoch) and one with all tasks side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics_path = run_dir / "metrics.csv"
    if not metrics_path.is_file():
        return []
    m = read_metrics(metrics_path)
    if m["epoch"].size == 0:
        return []
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    tasks = sorted(set(m["task"].astype(int)))
    names = {int(t): n for t, n in zip(m["task"], m["task_name"], strict=True)}
    written = []

    def draw(ax_j, ax_r, task: int) -> None:
        sel = m["task"] == task
        members = sorted(set(m["member"][sel].astype(int)))
        for ax, key, colour in ((ax_j, "J", "tab:blue"), (ax_r, "return", "tab:orange")):
            curves = []
            for member in members:
                rows = sel & (m["member"] == member)
                order = np.argsort(m["epoch"][rows])
                epochs, values = m["epoch"][rows][order], m[key][rows][order]
                curves.append(values)
                if len(members) == 1:
                    ax.plot(epochs, values, marker=".", color=colour)
                else:
                    ax.plot(epochs, values, color=colour, lw=0.5, alpha=0.25)
            if len(members) > 1:  # mean and 95% Student-t interval over the seeds
                n = min(len(c) for c in curves)
                stack = np.stack([c[:n] for c in curves])
                mean, half = stack.mean(0), t_half_width(stack)
                ax.plot(epochs[:n], mean, color=colour, lw=1.8, label=f"mean of {len(members)} seeds")
                ax.fill_between(
                    epochs[:n], mean - half, mean + half, color=colour, alpha=0.25, label="95% CI"
                )
                ax.legend(fontsize=7)
        ax_j.set_title(names[task])
        ax_j.set_ylabel("J (discounted)")
        ax_r.set_ylabel("undiscounted return")
        ax_r.set_xlabel("epoch")
        ax_j.grid(alpha=0.3)
        ax_r.grid(alpha=0.3)

    for task in tasks:
        fig, (ax_j, ax_r) = plt.subplots(2, 1, figsize=(5, 5), sharex=True)
        draw(ax_j, ax_r, task)
        fig.tight_layout()
        path = out_dir / f"{task}_{safe_name(names[task])}.png"
        _save_fig(fig, path)
        written.append(path)
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.6 * len(tasks), 5), sharex=True, squeeze=False)
    for col, task in enumerate(tasks):
        draw(axes[0, col], axes[1, col], task)
    fig.tight_layout()
    path = out_dir / "learning_curves.png"
    _save_fig(fig, path)
    written.append(path)
    return written


def plot_gradients(run_dir: Path) -> Path | None:
    """plots/gradients.png from gradients.csv: per task and epoch, its contribution to the joint gradient on
    the shared layers and its cosine with the other tasks' gradients (mean over the members where defined,
    with the 95% Student-t interval when there are several)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = run_dir / "gradients.csv"
    if not path.is_file():
        return None
    g = read_metrics(path, GRADIENT_COLUMNS)
    if g["epoch"].size == 0:
        return None
    epochs = np.unique(g["epoch"])
    tasks = sorted(set(g["task"].astype(int)))
    names = {int(t): n for t, n in zip(g["task"], g["task_name"], strict=True)}
    fig, axes = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True)
    panels = (
        ("contribution", "share of the joint gradient"),
        ("cosine_with_others", "cosine with the other tasks"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        for task in tasks:
            mean, half = np.full(epochs.size, np.nan), np.zeros(epochs.size)
            for i, epoch in enumerate(epochs):
                values = g[key][(g["task"] == task) & (g["epoch"] == epoch)]
                values = values[np.isfinite(values)]
                if values.size:
                    mean[i] = values.mean()
                if values.size > 1:
                    half[i] = t_half_width(values[:, None])[0]
            (line,) = ax.plot(epochs, mean, marker=".", label=names[task])
            ax.fill_between(epochs, mean - half, mean + half, color=line.get_color(), alpha=0.2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].axhline(0.0, color="black", lw=0.6)
    axes[1].set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    axes[0].set_title("each task's gradient on the shared layers")
    fig.tight_layout()
    out = run_dir / "plots" / "gradients.png"
    out.parent.mkdir(exist_ok=True)
    _save_fig(fig, out)
    return out


def t_half_width(samples: np.ndarray) -> np.ndarray:
    """Half-width of the 95% Student-t interval of the mean over axis 0 (the paper's plotting rule)."""
    return t_half_width_from_sd(samples.std(axis=0, ddof=1), samples.shape[0])


def t_half_width_from_sd(sd: np.ndarray | float, n: int) -> np.ndarray | float:
    """The same from ``n`` samples' standard deviation ``sd`` (ddof 1)."""
    from scipy import stats

    return stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
