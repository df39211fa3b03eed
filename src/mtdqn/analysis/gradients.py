"""How the tasks pull on the shared layers: each task's gradient of the TD loss on the shared parameters.

The joint loss is ``L = mean_t L_t`` (the learner's), so its gradient on a shared parameter is the sum over
tasks of ``g_t = grad(L_t / T)``. For a trained run, on transitions drawn from its replay memory with its own
target network (the loss its next update would minimise), per member and task:

* ``norm``: ``|g_t|``, how hard task t pulls on the shared layers;
* ``contribution``: ``<g_t, g> / |g|^2`` with ``g = sum_t g_t``, task t's part of the joint gradient's length
  along its own direction (the contributions sum to 1; a negative one pulls against the joint step);
* ``cosine_with_others``: the cosine between ``g_t`` and the sum of the other tasks' gradients (> 0: the
  tasks agree on how to change the shared layers; < 0: they conflict);
* ``cosine``: the T x T matrix of cosines between the tasks' gradients.

The gradients are averaged over ``batches`` batches (the learner's batch size per task) before any of this,
so the numbers describe the expected gradient, not one batch's noise; ``split_half_cosine``, the cosine
between a task's gradients averaged over the even and over the odd batches, says whether that worked (near
1: the average is the expected gradient; near 0: noise dominates, and the cosines between tasks are pulled
towards 0 by it: raise ``batches``). Adam rescales each parameter's step,
so these describe the gradient the optimiser receives, not its step.

During training (``mtdqn train --gradient-batches N``, ``RunConfig.gradient_batches``) the trainer measures
the same numbers after the warm-up (epoch 0) and after every epoch's learning, with ``seed`` = the epoch, and
writes them to the run's ``gradients.csv``: the rows of epoch e are what ``mtdqn analyze RUN
--gradient-batches N --seed e`` reports on the checkpoint of epoch e, so the first epochs, where a task
starts to learn or does not, are measured too.

With ``--task-balance`` (:mod:`mtdqn.task_balance`) every ``g_t`` is the balanced one (``param-norm``: times
the task's current loss weight; ``feature-norm``: each batch's gradient times that batch's factor): what the
shared layers receive.

A task whose gradient on the shared layers is exactly zero (``norm`` 0: e.g. its inputs saturate every
sigmoid feature unit, so nothing flows back) has contribution 0 and no cosines (``None`` in the JSON).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mtdqn.errors import UserError
from mtdqn.learner import DQNLearner
from mtdqn.seeding import derive_rng
from mtdqn.task_balance import feature_norm_scales, per_task_gradients, shared_parameters


def task_gradients(learner: DQNLearner, batch) -> torch.Tensor:
    """``(S, T, P)``: each task's gradient of its term ``L_t / T`` of the joint loss on the ``P`` shared
    parameters of each member (float32; the learner's precision for the forward and backward). With the
    learner's ``task_balance``, each multiplied by its factor (``param-norm``: its current weight;
    ``feature-norm``: the batch's factor): what the update gives the shared layers."""
    params = shared_parameters(learner.online)
    if not params:
        raise UserError(
            "the run has no shared layers (a single-task baseline, --mode single); analyse the gradients "
            "of a multi-task run, or drop --gradient-batches"
        )
    features: list[torch.Tensor] = []

    def keep(x: torch.Tensor) -> torch.Tensor:  # in place of the update's hook: the raw gradients
        features.append(x)
        return x

    _, per_task, _ = learner.loss(batch, feature_hook=keep)
    scale = torch.ones_like(per_task)  # members are independent: their gradients do not mix
    if learner.feature_hook is not None:  # each task's gradient at the features decides its factor
        (at_features,) = torch.autograd.grad(per_task.sum(), features[0], retain_graph=True)
        scale = feature_norm_scales(at_features)
    elif learner.task_weights is not None:  # the weights of the last measurement
        scale = learner.task_weights.weight
    return per_task_gradients(per_task, params, keep_graph=False) * scale.unsqueeze(-1)


def sharing_of(grads: torch.Tensor) -> dict[str, np.ndarray]:
    """Norms ``(S, T)``, contributions ``(S, T)``, cosines with the other tasks ``(S, T)`` and the cosine
    matrix ``(S, T, T)`` of per-task gradients ``(S, T, P)`` (float64; NaN where a norm is zero)."""
    g = grads.double()
    total = g.sum(1, keepdim=True)
    norm = g.norm(dim=-1)
    unit = g / norm.unsqueeze(-1)
    others = total - g
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "norm": norm.numpy(),
            "contribution": ((g * total).sum(-1) / (total * total).sum(-1)).numpy(),
            "cosine_with_others": ((g * others).sum(-1) / (norm * others.norm(dim=-1))).numpy(),
            "cosine": (unit @ unit.transpose(1, 2)).numpy(),
        }


def replay_batch(trainer, rng: list[np.random.Generator], batch_size: int):
    """One batch from the trainer's replay (control or frame replay), member m's slots from ``rng[m]``."""
    from mtdqn.replay_frames import FrameReplay

    replay = trainer.replay
    if isinstance(replay, FrameReplay):
        return replay.sample(rng, batch_size, trainer.device)
    uniform = np.stack([r.random((1, trainer.n_tasks, batch_size)) for r in rng], axis=1)
    rows = replay.plan_indices(uniform, adds_before=np.zeros(1, dtype=np.int64))
    return replay.gather_rows(rows[0], batch_size)


PER_TASK = ("norm", "contribution", "cosine_with_others", "split_half_cosine")
"""The numbers reported for each task."""


def measure_sharing(trainer, batches: int, seed: int) -> dict[str, np.ndarray]:
    """The module docstring's numbers for the trainer's current weights and replay, as float64 arrays: per
    (member, task) ``norm``, ``contribution``, ``cosine_with_others`` and ``split_half_cosine`` ``(S, T)``,
    and ``cosine`` ``(S, T, T)``; NaN where undefined. Member m draws its ``batches`` batches from
    ``derive_rng(seed_m, "analysis-gradients", seed)``; no other random stream, weight or ``.grad`` of the
    trainer is touched (frozen shared layers are measured too: what the tasks would pull)."""
    params = shared_parameters(trainer.learner.online)
    frozen = [p for p in params if not p.requires_grad]
    rngs = [derive_rng(s, "analysis-gradients", seed) for s in trainer.seeds]
    halves: list[torch.Tensor | None] = [None, None]  # sums over the even and the odd batches
    try:
        for p in frozen:
            p.requires_grad_(True)
        for k in range(batches):
            batch = replay_batch(trainer, rngs, trainer.config.learner.batch_size)
            g = task_gradients(trainer.learner, batch)
            halves[k % 2] = g if halves[k % 2] is None else halves[k % 2].add_(g)
    finally:
        for p in frozen:
            p.requires_grad_(False)
    even, odd = halves
    numbers = sharing_of((even if odd is None else even + odd).div_(batches).cpu())
    numbers["split_half_cosine"] = np.full(numbers["norm"].shape, np.nan)
    if odd is not None:
        numbers["split_half_cosine"] = _cosine(even.cpu(), odd.cpu())
    return numbers


def gradient_sharing(run_dir: Path, batches: int, seed: int = 0) -> dict[int, dict]:
    """Per member seed of the run in ``run_dir`` (its last checkpoint): the numbers of the module docstring
    as plain JSON values, keyed by task name, from ``batches`` replay batches drawn with the member's own
    stream ``derive_rng(member seed, "analysis-gradients", seed)`` (:func:`measure_sharing`)."""
    from mtdqn.train import Trainer

    trainer = Trainer.load(Path(run_dir), progress=False)
    if trainer.epoch < 0 or len(trainer.replay) < 2:
        raise UserError(
            f"{run_dir} has no replay memory yet; continue it with mtdqn train --resume {run_dir}"
        )
    numbers = measure_sharing(trainer, batches, seed)
    names = [spec.name for spec in trainer.specs]
    out = {}
    for m, member_seed in enumerate(trainer.seeds):
        per_task = {
            name: {key: _plain(numbers[key][m, t]) for key in PER_TASK} for t, name in enumerate(names)
        }
        out[member_seed] = {
            "batches": batches,
            "transitions_per_task": batches * trainer.config.learner.batch_size,
            **per_task,
            "cosine": [[_plain(v) for v in row] for row in numbers["cosine"][m]],
        }
    return out


def _cosine(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Cosine along the last axis in float64; NaN where either vector is zero (no direction to compare)."""
    a, b = a.double(), b.double()
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).numpy()


def _plain(value: float) -> float | None:
    """A JSON number, or None for NaN (a task whose gradient is zero)."""
    value = float(value)
    return value if np.isfinite(value) else None
