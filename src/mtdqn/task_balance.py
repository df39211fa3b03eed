"""Balancing the tasks' pull on the shared layers (``LearnerConfig.task_balance``; off by default).

The joint loss ``mean_t L_t`` lets a task whose TD errors are large or frequent (Breakout once it scores)
pull on the shared layers many times harder than the others (``mtdqn train --gradient-batches`` measures
it). ``feature-norm`` equalises that pull at the shared features, the interface between the trunk and the
task heads: in every update, per member, task t's gradient arriving at the output of the last shared layer
(its heads' backward of ``L_t``, a ``(B, F)`` block) is rescaled to the mean norm of the tasks' blocks:

    g_t  <-  g_t * mean_t'(|g_t'|) / |g_t|          (over the tasks with |g_t| > 0; a zero block stays zero)

Backpropagation is linear, so task t's gradient on every shared parameter, and on its own input layers, is
multiplied by the same factor; its heads' gradients are untouched. The sum of the tasks' norms at the
features is unchanged. The forward is the identity, so acting, evaluation and the TD targets do not
change. The factor is computed from each batch alone (no state to save); a task's gradient with no other
task in the batch (one task, or ``autograd.grad`` of one task's loss) is left as it is.

Not in the paper or the review (their loss is the plain mean over tasks); the idea is that of loss and
gradient balancing in multi-task learning (e.g. GradNorm, Chen et al. 2018; PopArt, Hessel et al. 2019,
normalises the targets instead).
"""

from __future__ import annotations

import torch


def feature_norm_scales(feature_grad: torch.Tensor) -> torch.Tensor:
    """``(S, T)`` float32 factors for gradients ``(S, T, B, F)`` at the shared features: the mean of the
    member's non-zero task norms over each task's norm (1 where a task's block is zero)."""
    norm = torch.linalg.vector_norm(feature_grad.float(), dim=(2, 3))
    nonzero = norm > 0
    target = norm.sum(1, keepdim=True) / nonzero.sum(1, keepdim=True).clamp_min(1)
    return torch.where(nonzero, target / torch.where(nonzero, norm, torch.ones_like(norm)), 1.0)


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
