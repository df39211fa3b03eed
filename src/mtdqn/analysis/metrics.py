"""Numbers that say how much the shared features are really shared between tasks.

Each metric has a one-line meaning in :data:`MEANINGS`, written beside it in ``metrics.json`` and the report.
Inputs are the shared features ``X (N, F)`` of states from several tasks, their task labels and values.
"""

from __future__ import annotations

import numpy as np

from mtdqn.errors import UserError

MEANINGS = {
    "task_probe_accuracy": "cross-validated accuracy of a linear classifier predicting the task from the "
    "shared features; near 1 = tasks occupy separable regions, near chance = features do not tell tasks "
    "apart",
    "task_probe_chance": "accuracy of always guessing the most common task (the probe's floor)",
    "knn_task_mixing": "fraction of each state's k nearest neighbours (shared-feature space) that come from "
    "another task, divided by the same fraction with shuffled task labels; 0 = tasks fully separated, "
    "1 = as mixed as random",
    "overlap_fraction": "fraction of states with at least one of their k nearest neighbours from another "
    "task",
    "effective_rank": "exp(entropy) of the normalised singular values of the centred features: how many "
    "directions the features really use (at most the width)",
    "effective_rank_per_task": "the same inside each task's own states",
    "dead_unit_fraction": "fraction of shared units whose output does not vary over all states (std < 1e-3)",
    "task_variance_fraction": "mean over live units of the share of a unit's variance explained by the task "
    "(between-task / total variance); near 1 = units encode which task it is, near 0 = units vary within "
    "tasks",
    "task_exclusive_unit_fraction": "fraction of live units that vary (std > 1e-3) in exactly one task",
    "value_r2_joint": "cross-validated R^2 of ONE linear readout predicting V (standardised within each "
    "task) from the shared features of all tasks; high = V is linearly readable from one map, which "
    "tasks in separate subspaces also allow (value_r2_cross is the strict test)",
    "value_r2_per_task": "mean cross-validated R^2 of one linear readout per task (the same target); the "
    "ceiling for value_r2_joint",
    "value_r2_cross": "R^2 on task j (rows) of a linear readout fitted on task i (columns), floored at -1; "
    "off-diagonal > 0 = the value code of one task reads the value of another (the strict test of a shared "
    "value direction)",
    "value_vs_return": "per task, V on the recorded states against the discounted return (learning rewards) "
    "that actually followed each of them, over the states whose unrecorded rest weighs at most 1%: states "
    "compared, mean value and return, bias = mean(V - G) (> 0 = overestimation) and error = mean |V - G| / "
    "the largest return the task's rewards allow (0 = right; 1 = off by as much as any return could be)",
    "value_error_max": "the largest error of value_vs_return over the tasks",
    "layer_activity": "per dense layer (input to Q) and task: the fraction of units whose output does not "
    "vary over the task's states (dead, std < 1e-3) and, for sigmoid layers, the fraction of outputs "
    "within 0.01 of 0 or 1 (saturated); where a layer is dead, nothing above it can tell states apart. "
    "Atari runs also get bf16_signal: the median over units of the correlation across states between the "
    "layer's float32 outputs and those of a bfloat16 forward (--precision bf16); near 0 = bfloat16 "
    "rounding erases what the layer says about the state",
    "gradient_sharing": "per task, its gradient of the TD loss (its term of the joint loss) on the shared "
    "layers' parameters, averaged over replay batches at the last checkpoint: norm; contribution = its part "
    "of the joint gradient along the joint direction (sums to 1 over tasks; < 0 pulls against it); "
    "cosine_with_others with the other tasks' summed gradient (> 0 agree, < 0 conflict); cosine = the task x "
    "task matrix; split_half_cosine between the task's gradients over the even and the odd batches (near 0 = "
    "noise dominates: raise --gradient-batches). Adam rescales the step per parameter: these describe the "
    "gradient, not the step",
    "cka": "linear CKA between this run's shared features and another run's on the same states (all states "
    "and per task); 1 = same representation up to rotation and scale, 0 = unrelated",
}

DEAD_STD = 1e-3


def task_probe(x: np.ndarray, task: np.ndarray, folds: int, seed: int) -> tuple[float, float]:
    """Cross-validated linear-probe accuracy for the task id, and the majority-class chance level."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    chance = float(np.bincount(task).max() / len(task))
    if len(np.unique(task)) < 2:
        return 1.0, chance
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, x, task, cv=cv).mean()), chance


def neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances ``(N, k)`` of each row's ``k`` nearest other rows (Euclidean, exact)."""
    from sklearn.neighbors import NearestNeighbors

    if k >= len(x):  # more neighbours than other rows: sklearn would fail, a clamp would hide it
        raise UserError(f"{k} nearest neighbours need more than {k} states, but there are {len(x)}")
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return idx[:, 1:], dist[:, 1:]


def knn_mixing(nn_idx: np.ndarray, task: np.ndarray, seed: int, shuffles: int = 5) -> tuple[float, float]:
    """k-NN task mixing relative to shuffled labels, and the fraction of states with any foreign neighbour."""
    foreign = task[nn_idx] != task[:, None]
    observed = foreign.mean()
    rng = np.random.default_rng(seed)
    baseline = np.mean(
        [(perm[nn_idx] != perm[:, None]).mean() for perm in (rng.permutation(task) for _ in range(shuffles))]
    )
    mixing = float(observed / baseline) if baseline > 0 else 0.0
    return mixing, float(foreign.any(axis=1).mean())


def effective_rank(x: np.ndarray) -> float:
    """``exp`` of the entropy of the normalised singular values of the centred ``x`` (Roy & Vetterli 2007)."""
    x = x.astype(np.float64)
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def unit_usage(x: np.ndarray, task: np.ndarray) -> dict[str, float]:
    """Dead units, task-explained variance per unit and units used by a single task."""
    x = x.astype(np.float64)
    total_std = x.std(axis=0)
    live = total_std >= DEAD_STD
    out = {"dead_unit_fraction": float(1.0 - live.mean())}
    if not live.any():
        out.update(task_variance_fraction=float("nan"), task_exclusive_unit_fraction=float("nan"))
        return out
    tasks = np.unique(task)
    means = np.stack([x[task == t].mean(axis=0) for t in tasks])
    weights = np.array([(task == t).mean() for t in tasks])
    between = (weights[:, None] * (means - x.mean(axis=0)) ** 2).sum(axis=0)
    out["task_variance_fraction"] = float((between[live] / total_std[live] ** 2).mean())
    varies = np.stack([x[task == t].std(axis=0) >= DEAD_STD for t in tasks])
    out["task_exclusive_unit_fraction"] = float((varies[:, live].sum(axis=0) == 1).mean())
    return out


def layer_activity(
    layers: list[tuple[str, str, list[np.ndarray]]],
    task_names: list[str],
    bf16_layers: list[tuple[str, str, list[np.ndarray]]] | None = None,
) -> dict:
    """``{layer label: {task: {dead, saturated, bf16_signal}}}`` from each layer's outputs on each task's
    states; ``bf16_signal`` only where ``bf16_layers`` (the same outputs of a bfloat16 forward) is given."""
    out: dict = {}
    for k, (label, activation, per_task) in enumerate(layers):
        row = {}
        for t, (name, y) in enumerate(zip(task_names, per_task, strict=True)):
            y = y.astype(np.float64)
            entry = {"dead": round(float((y.std(axis=0) < DEAD_STD).mean()), 4)}
            if activation == "sigmoid":
                entry["saturated"] = round(float(((y < 0.01) | (y > 0.99)).mean()), 4)
            if bf16_layers is not None:
                entry["bf16_signal"] = round(bf16_signal(y, bf16_layers[k][2][t]), 4)
            row[name] = entry
        out[label] = row
    return out


def bf16_signal(exact: np.ndarray, rounded: np.ndarray) -> float:
    """Median over units of the correlation, across states, between a layer's exact outputs ``(N, units)``
    and the same outputs of a bfloat16 forward: 1 = the state signal survives bfloat16, 0 = rounding
    replaced it. A unit constant in either forward counts as 0."""
    a = exact - exact.mean(axis=0)
    b = rounded.astype(np.float64) - rounded.mean(axis=0, dtype=np.float64)
    norm = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    corr = np.divide((a * b).sum(axis=0), norm, out=np.zeros(a.shape[1]), where=norm > 0)
    return float(np.median(corr))


def _standardised_within(value: np.ndarray, task: np.ndarray) -> np.ndarray:
    z = np.zeros_like(value, dtype=np.float64)
    for t in np.unique(task):
        v = value[task == t]
        z[task == t] = (v - v.mean()) / (v.std() + 1e-12)
    return z


def value_readouts(x: np.ndarray, value: np.ndarray, task: np.ndarray, folds: int, seed: int) -> dict:
    """Linear predictability of V from the features: jointly over tasks, per task, and task to task."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_score

    def readout():  # on the features as the heads see them; a small ridge, as they are often collinear
        return Ridge(alpha=1.0, solver="svd")  # SVD: stable when large ReLU features make X'X ill-conditioned

    z = _standardised_within(value, task)
    cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    joint = float(cross_val_score(readout(), x, z, cv=cv, scoring="r2").mean())
    tasks = np.unique(task)
    per_task = [
        float(cross_val_score(readout(), x[task == t], z[task == t], cv=cv, scoring="r2").mean())
        for t in tasks
    ]
    cross = np.zeros((len(tasks), len(tasks)))
    for i, ti in enumerate(tasks):
        model = readout().fit(x[task == ti], z[task == ti])
        for j, tj in enumerate(tasks):
            cross[j, i] = max(r2_score(z[task == tj], model.predict(x[task == tj])), -1.0)
    return {"value_r2_joint": joint, "value_r2_per_task": float(np.mean(per_task)), "value_r2_cross": cross}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) of two feature matrices on the same rows."""
    x = x.astype(np.float64) - x.mean(axis=0)
    y = y.astype(np.float64) - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x, "fro") ** 2
    norm = np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")
    return float(cross / norm) if norm > 0 else float("nan")


def sharing_metrics(
    x: np.ndarray, task: np.ndarray, value: np.ndarray, k: int, folds: int, seed: int
) -> tuple[dict, np.ndarray]:
    """All metrics of one set of features; also returns the k-NN indices (for the overlap search)."""
    nn_idx, _ = neighbours(x, k)
    accuracy, chance = task_probe(x, task, folds, seed)
    mixing, overlap = knn_mixing(nn_idx, task, seed)
    metrics = {
        "task_probe_accuracy": accuracy,
        "task_probe_chance": chance,
        "knn_task_mixing": mixing,
        "overlap_fraction": overlap,
        "effective_rank": effective_rank(x),
        "effective_rank_per_task": [effective_rank(x[task == t]) for t in np.unique(task)],
        **unit_usage(x, task),
        **value_readouts(x, value, task, folds, seed),
    }
    metrics["value_r2_cross"] = metrics["value_r2_cross"].tolist()
    return metrics, nn_idx
