"""Task input layers -> shared layers -> task heads, batched over tasks and members.

Every layer's parameters are stacked tensors, so all tasks (and all members of a population of independent
agents, the leading dimension ``S``) go through one batched matmul per layer; there is no Python loop over
tasks or members:

* a task-specific layer holds ``W: (S, T, out, in)`` and ``b: (S, T, 1, out)``;
* a shared layer holds ``W: (S, out, in)`` and ``b: (S, 1, out)`` and sees the rows of all tasks at once.

Weights use PyTorch's ``Linear`` layout ``(out, in)`` (also the paper's saved layout); MKL's batched matmul is
several times faster with it for the narrow input and head layers.

Inputs are ``(S, T, B, obs_max)``: task t's observation sits in its first ``obs_dim[t]`` columns and the rest
is zero padding. The rows of task t's input weight beyond ``obs_dim[t]`` are zero and receive zero gradient,
so a task's input layer reads only its own columns. Outputs are ``(S, T, B, A_max)``; ``action_mask`` marks
each task's valid actions, and padded actions are never chosen, bootstrapped from, or trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mtdqn.config import NetworkConfig
from mtdqn.seeding import derive_seed
from mtdqn.tasks import TaskSpec

FeatureHook = Callable[[torch.Tensor], torch.Tensor]
"""Applied to the shared features ``(S, T, B, F)`` in a forward; returns a tensor of the same shape."""

_ACT = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "identity": lambda x: x,
}


@dataclass(frozen=True)
class Layer:
    """One Linear layer of the plan."""

    in_dim: int
    out_dim: int
    activation: str
    shared: bool
    role: str
    """``input``, ``shared`` or ``head``."""

    @property
    def fan_in(self) -> int:
        """Inputs per unit (the padded width for a first layer)."""
        return self.in_dim


def action_mask(n_actions: list[int]) -> torch.Tensor:
    """``(T, A_max)`` booleans: task t has actions ``0 .. n_actions[t] - 1``, the rest are padding."""
    mask = torch.zeros(len(n_actions), max(n_actions), dtype=torch.bool)
    for t, n in enumerate(n_actions):
        mask[t, :n] = True
    return mask


def member_seeds(seeds: list[int] | int, n_members: int) -> list[int]:
    """One init seed per member; an int ``s`` means ``s, s + 1, ...``."""
    if isinstance(seeds, int):
        seeds = [seeds + k for k in range(n_members)]
    if len(seeds) != n_members:
        raise ValueError(f"{len(seeds)} seeds for {n_members} members")
    return list(seeds)


def layer_plan(cfg: NetworkConfig, obs_max: int, actions_max: int, share: bool) -> list[Layer]:
    """The stack of layers described by ``cfg``; with ``share=False`` no layer is shared."""
    layers: list[Layer] = []
    dim = obs_max
    for _ in range(cfg.n_input_layers):
        layers.append(Layer(dim, cfg.width, cfg.hidden_activation, False, "input"))
        dim = cfg.width
    for i in range(cfg.n_shared_layers):
        last = i == cfg.n_shared_layers - 1
        act = cfg.feature_activation if last else cfg.hidden_activation
        out = cfg.n_features if last else cfg.width
        layers.append(Layer(dim, out, act, share, "shared"))
        dim = out
    for i in range(cfg.n_head_layers):
        last = i == cfg.n_head_layers - 1
        out = actions_max if last else cfg.width
        layers.append(Layer(dim, out, "identity" if last else cfg.hidden_activation, False, "head"))
        dim = out
    return layers


class MultiTaskQNetwork(nn.Module):
    """Q-network for T tasks and S independent members; see the module docstring for the shapes."""

    def __init__(
        self,
        specs: list[TaskSpec],
        cfg: NetworkConfig,
        share: bool = True,
        n_members: int = 1,
        seeds: list[int] | int = 0,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.share = share
        self.n_members = n_members
        self.n_tasks = len(specs)
        self.obs_dims = [s.obs_dim for s in specs]
        self.n_actions = [s.n_actions for s in specs]
        self.obs_max = max(self.obs_dims)
        self.actions_max = max(self.n_actions)
        self.plan = layer_plan(cfg, self.obs_max, self.actions_max, share)
        self.feature_layer = max(i for i, layer in enumerate(self.plan) if layer.role == "shared")
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer in self.plan:
            lead = (n_members,) if layer.shared else (n_members, self.n_tasks)
            self.weights.append(nn.Parameter(torch.zeros(*lead, layer.out_dim, layer.in_dim)))
            self.biases.append(nn.Parameter(torch.zeros(*lead, 1, layer.out_dim)))
        self.register_buffer("action_mask", action_mask(self.n_actions))
        self.reset_parameters(seeds)

    @torch.no_grad()
    def reset_parameters(self, seeds: list[int] | int) -> None:
        """Initialise member k from ``seeds[k]`` alone (an int: seeds seed, seed + 1, ...)."""
        seeds = member_seeds(seeds, self.n_members)
        for member in range(self.n_members):
            gen = torch.Generator().manual_seed(derive_seed(seeds[member], "init"))
            for layer, weight, bias in zip(self.plan, self.weights, self.biases, strict=True):
                w_m, b_m = weight[member], bias[member]
                for t in range(self.n_tasks):
                    w = w_m if layer.shared else w_m[t]
                    b = b_m if layer.shared else b_m[t]
                    fan_in = (
                        self.obs_dims[t] if layer.role == "input" and layer is self.plan[0] else layer.in_dim
                    )
                    self._init_linear(w, b, fan_in, layer, gen)
                    if layer.shared:
                        break

    def _init_linear(self, w: torch.Tensor, b: torch.Tensor, fan_in: int, layer: Layer, gen) -> None:
        w.zero_()
        fan_out = layer.out_dim
        if self.cfg.init == "xavier":
            gain = 1.0 if layer.activation == "identity" else math.sqrt(2.0)
            bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        else:  # PyTorch's default Linear init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(fan_in)
        w[:, :fan_in].uniform_(-bound, bound, generator=gen)
        b.uniform_(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in), generator=gen)

    def _layer(self, i: int, x: torch.Tensor, s: int, t: int) -> torch.Tensor:
        """Layer i on ``x`` of shape ``(S * T, B, in)`` (rows grouped by member and task)."""
        layer, w, b = self.plan[i], self.weights[i], self.biases[i]
        n = x.shape[1]
        if layer.shared:  # one matmul per member over the rows of all its tasks
            y = torch.baddbmm(b, x.view(s, t * n, layer.in_dim), w.transpose(1, 2)).view(s * t, n, -1)
        else:  # one batched matmul over (member, task) groups, each with its own weights
            w = w.view(s * t, layer.out_dim, layer.in_dim).transpose(1, 2)
            y = torch.baddbmm(b.view(s * t, 1, layer.out_dim), x, w)
        return _ACT[layer.activation](y)

    def _run(self, obs: torch.Tensor, n_layers: int, feature_hook: FeatureHook | None = None) -> torch.Tensor:
        s, t, n, d = obs.shape
        x = obs.reshape(s * t, n, d)
        for i in range(n_layers):
            x = self._layer(i, x, s, t)
            if i == self.feature_layer and feature_hook is not None:
                x = feature_hook(x.view(s, t, n, -1)).view(s * t, n, -1)
        return x.view(s, t, n, -1)

    def forward(self, obs: torch.Tensor, feature_hook: FeatureHook | None = None) -> torch.Tensor:
        """Q values ``(S, T, B, A_max)`` of padded observations ``(S, T, B, obs_max)``; ``feature_hook``
        maps the shared features ``(S, T, B, F)`` on their way to the heads (e.g. to reshape their backward,
        :mod:`mtdqn.task_balance`)."""
        return self._run(obs, len(self.plan), feature_hook)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Shared features ``(S, T, B, width)``: the output of the last shared layer."""
        return self._run(obs, self.feature_layer + 1)

    def parameter_count(self, count_padded_actions: bool = False) -> int:
        """Trainable parameters of one member that can affect a valid Q value.

        Padded input rows are never counted; padded action outputs only when ``count_padded_actions``
        (the paper's count of its 5-task MDQN, 15,855, includes them: every head has A_max outputs).
        """
        total = 0
        n_copies = 1 if self.share else self.n_tasks
        for layer in self.plan:
            if layer.role == "shared":
                total += n_copies * (layer.in_dim + 1) * layer.out_dim
                continue
            for t in range(self.n_tasks):
                fan_in = self.obs_dims[t] if layer is self.plan[0] else layer.in_dim
                out = layer.out_dim
                if layer.role == "head" and layer.activation == "identity" and not count_padded_actions:
                    out = self.n_actions[t]
                total += (fan_in + 1) * out
        return total

    def numpy_params(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(W, b)`` per layer as numpy arrays; on the CPU these are views that follow every update."""
        return [
            (w.detach().cpu().numpy(), b.detach().cpu().numpy())
            for w, b in zip(self.weights, self.biases, strict=True)
        ]

    def layer_kinds(self) -> list[tuple[str, bool]]:
        """``(activation, shared)`` of every layer, for the numpy forward of :mod:`mtdqn.policy`."""
        return [(layer.activation, layer.shared) for layer in self.plan]
