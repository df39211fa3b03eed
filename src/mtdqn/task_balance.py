"""Balancing the tasks' pull on the shared layers (``LearnerConfig.task_balance``; off by default).

The joint loss ``mean_t L_t`` lets a task whose TD errors are large or consistent pull on the shared layers
many times harder than the others (``mtdqn train --gradient-batches`` measures it: Breakout's gradient on
``review-exp1``'s trunk is up to 14x Pong's once Breakout scores). Two rules, per member:

``param-norm``
    The joint loss becomes ``mean_t w_t L_t``: every ``task_balance_every`` updates, on that update's batch,
    each task's gradient of ``L_t`` on the (trainable) shared parameters is taken (with autograd one backward
    per task; with the numpy kernels one backward, each task's part from its own rows),
    its norm enters a moving average ``m_t <- 0.9 m_t + 0.1 |g_t|`` (the first measurement sets it), and
    ``w_t = min(mean_t'(m_t') / m_t, max_weight)`` (``task_balance_max_weight``, 10; a task whose gradient
    vanishes would otherwise get an unbounded weight). Between measurements the weights hold. The tasks'
    pulls on the shared parameters are then equal in norm (as of the last measurement, but for a task at the
    bound; ``gradients.csv`` measures them); each task's heads and input layers get the same weight (Adam's
    step is nearly invariant to it). The moving averages are saved with the learner (the weights follow
    from them).
``feature-norm``
    In every update each task's gradient arriving at the shared features (its ``(B, F)`` block of the
    output of the last shared layer) is rescaled to the tasks' mean norm there. Stateless and free, but the
    norm at the features sums every sample's squared gradient, while a parameter's gradient sums the
    samples' gradients, which cancel for some tasks and add up for others: measured on ``review-exp1`` (seed
    1, epochs 1 and 2), it gave Pong 99.97% and 99.8% of the trunk's gradient instead of balancing it.

Both are equalising factors ``mean_t'(n_t') / n_t`` over the tasks with ``n_t > 0`` (a zero stays as it is).
Not in the paper or the review (their loss is the plain mean over tasks); the idea is that of loss and
gradient balancing in multi-task learning (GradNorm, Chen et al. 2018; PopArt, Hessel et al. 2019,
normalises the targets instead).
"""

from __future__ import annotations

import torch

PULL_DECAY = 0.9
"""``param-norm``: weight of the previous moving average of a task's gradient norm at each measurement."""


def equalising_factors(norm: torch.Tensor) -> torch.Tensor:
    """``(S, T)`` factors for per-task norms ``(S, T)``: the mean of the member's non-zero norms over each
    task's norm (1 where a task's norm is zero), so that every non-zero ``factor * norm`` is that mean."""
    norm = norm.float()
    nonzero = norm > 0
    target = norm.sum(1, keepdim=True) / nonzero.sum(1, keepdim=True).clamp_min(1)
    return torch.where(nonzero, target / torch.where(nonzero, norm, torch.ones_like(norm)), 1.0)


def feature_norm_scales(feature_grad: torch.Tensor) -> torch.Tensor:
    """``(S, T)`` float32 ``feature-norm`` factors for gradients ``(S, T, B, F)`` at the shared features."""
    return equalising_factors(torch.linalg.vector_norm(feature_grad.float(), dim=(2, 3)))


def shared_parameters(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights and biases of the shared layers of a multi-task network (leading member dimension)."""
    return [
        p
        for layer, weight, bias in zip(net.plan, net.weights, net.biases, strict=True)
        if layer.shared
        for p in (weight, bias)
    ]


def per_task_gradients(per_task: torch.Tensor, params: list[torch.Tensor], keep_graph: bool) -> torch.Tensor:
    """``(S, T, P)`` float32: the gradient of each task's term ``per_task[:, t] / T`` of the joint loss on
    ``params`` (each with a leading member dimension), one backward per task; ``keep_graph`` keeps the
    graph for a later backward."""
    n_members, n_tasks = per_task.shape
    grads = []
    for t in range(n_tasks):
        g = torch.autograd.grad(
            per_task[:, t].sum() / n_tasks, params, retain_graph=keep_graph or t < n_tasks - 1
        )
        grads.append(torch.cat([x.float().reshape(n_members, -1) for x in g], dim=1))
    return torch.stack(grads, dim=1)


class ParamNormWeights:
    """``param-norm``'s moving averages ``pull`` ``(S, T)`` of the tasks' gradient norms on the shared
    parameters, and the loss weights ``w`` derived from them (kept, not recomputed in every update)."""

    def __init__(
        self, n_members: int, n_tasks: int, every: int, device: torch.device, max_weight: float = 0.0
    ) -> None:
        self.every = every
        self.max_weight = max_weight
        self.weight = torch.ones(n_members, n_tasks, device=device)
        self.pull = torch.zeros(n_members, n_tasks, device=device)
        self.measurements = 0

    def due(self, n_updates: int) -> bool:
        """Whether the update numbered ``n_updates`` (from 0) measures before its step."""
        return n_updates % self.every == 0

    def measure(self, per_task: torch.Tensor, params: list[torch.Tensor]) -> None:
        """Update ``pull`` and ``weight`` from the per-task losses ``(S, T)`` of a batch (graph kept)."""
        if not params:  # every shared layer frozen (a transfer): nothing to balance
            return
        self.record(per_task_gradients(per_task, params, keep_graph=True).norm(dim=-1))

    def record(self, norm: torch.Tensor) -> None:
        """Update ``pull`` and ``weight`` from measured per-task gradient norms ``(S, T)``."""
        norm = norm.to(self.pull.device)
        self.pull = norm if self.measurements == 0 else self.pull * PULL_DECAY + norm * (1.0 - PULL_DECAY)
        self.measurements += 1
        self.weight = self._weights()

    def _weights(self) -> torch.Tensor:
        """The loss weights of the current averages: equalising, at most ``max_weight`` (0: unbounded)."""
        weight = equalising_factors(self.pull)
        return weight.clamp(max=self.max_weight) if self.max_weight else weight

    def state_dict(self) -> dict:
        return {"pull": self.pull, "measurements": self.measurements}

    def load_state_dict(self, state: dict) -> None:
        """The saved averages; the weights follow from them (1 before the first measurement)."""
        self.pull = state["pull"].to(self.pull.device)
        self.measurements = int(state["measurements"])
        if self.measurements:
            self.weight = self._weights()


class _EqualFeaturePull(torch.autograd.Function):
    """Identity forward; the backward rescales each (member, task) block by :func:`feature_norm_scales`."""

    @staticmethod
    def forward(ctx, features: torch.Tensor) -> torch.Tensor:
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * feature_norm_scales(grad)[:, :, None, None].to(grad.dtype)


def equal_feature_pull(features: torch.Tensor) -> torch.Tensor:
    """``features`` ``(S, T, B, F)`` unchanged, with the backward of ``feature-norm`` attached."""
    return _EqualFeaturePull.apply(features)
