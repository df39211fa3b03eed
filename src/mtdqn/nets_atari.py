"""Atari Q-networks: per-game and shared convolution and dense layers, batched over games and members.

Like :class:`mtdqn.nets.MultiTaskQNetwork`, every layer's parameters are stacked tensors with a leading
member dimension ``S`` and, for a per-game layer, a game dimension ``T``:

* conv: ``W (S, T, out, in, k, k)`` per game, ``W (S, out, in, k, k)`` shared; biases without ``k, k``;
* dense: ``W (S, T, out, in)`` / ``(S, out, in)``, biases ``(S, T, 1, out)`` / ``(S, 1, out)``.

Input: uint8 frame stacks ``(S, T, B, stack, 84, 84)``, scaled to [0, 1] inside the network. Output: Q
values ``(S, T, B, A_max)``; ``action_mask`` marks each game's actions (a game lacking an action has its
output masked: never chosen, bootstrapped from, or trained).

Batch layout: ``conv_mode="grouped"`` (the default off the CPU) runs the convolutions on ``(B, T, S, C, H,
W)`` memory, so a per-game layer is one grouped convolution over the ``T*S`` (game, member) groups and a
shared layer one convolution over ``B*T`` images (grouped over members), with no copy between them.
``conv_mode="loop"`` (the default on the CPU, where oneDNN's grouped convolution is ~10-40% slower at T =
2-6) runs one dense convolution per member or (member, game) on channels-last ``(S, T, B, H, W, C)``
memory, where oneDNN's convolutions are ~40% faster than on ``(N, C, H, W)`` memory. Both flatten the last
convolution's output in ``(C, H, W)`` order, so their weights are interchangeable. The
dense layers take and return ``(S, T, B, F)`` tensors with one batched matmul each, computed feature-major
(``y^T = W x^T``) so that no weight gradient needs a transposing copy (see ``_dense``).

Architectures (``arch``; spec review-code 3.1/3.3, deramo2020 1.4, Mnih et al. 2015), the Nature
conv stack being 4->32 (8x8, stride 4), 32->64 (4x4, 2), 64->64 (3x3, 1) -> 3136:

| arch | per game (bottom) | shared | per game (head) |
|---|---|---|---|
| ``review-exp1`` | conv1 | conv2, conv3, 3136->512, 512->256 (features, linear) | 256->10->A |
| ``review-mtqn`` | conv stack, 3136->1024 sigmoid | 1024->512->256, 256->128 sigmoid | 128->64->A |
| ``deramo-atari`` | conv stack | 3136->512 (sigmoid or relu) | 512->A |
| ``deramo-atari-2018`` | conv1 | conv2, conv3, 3136->512 (sigmoid or relu) | 512->A |
| ``nature`` | - | conv stack, 3136->512 relu | 512->A |

The review's networks use LeakyReLU (slope 0.01) and PyTorch's default init, as its code did; the deramo
ones ReLU and Xavier-uniform init (gain sqrt 2, 1 for the Q layer), as the paper's code did; ``nature``
ReLU and PyTorch's default init. In single mode (``share=False``) every layer is per game.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtdqn.config import INITS
from mtdqn.config_atari import ATARI_ARCHS, AtariNetworkConfig
from mtdqn.errors import UserError
from mtdqn.nets import FeatureHook, action_mask, member_seeds
from mtdqn.seeding import derive_seed

_ACT = {
    "relu": torch.relu,
    "lrelu": lambda x: F.leaky_relu(x, 0.01),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "identity": lambda x: x,
}

NATURE_CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
"""(out channels, kernel, stride) of the Nature DQN convolutions."""


@dataclass(frozen=True)
class AtariLayer:
    """One layer of the plan: a convolution (``kernel > 0``) or a dense layer."""

    in_dim: int
    """Input channels (conv) or features (dense)."""
    out_dim: int
    activation: str
    role: str
    """``input`` (per game), ``shared`` (shared unless single mode) or ``head`` (per game)."""
    shared: bool
    kernel: int = 0
    stride: int = 1

    @property
    def is_conv(self) -> bool:
        return self.kernel > 0

    @property
    def area(self) -> int:
        """Kernel area of a convolution, 1 for a dense layer."""
        return self.kernel**2 if self.is_conv else 1

    @property
    def fan_in(self) -> int:
        """Inputs per unit: in-channels x kernel area, or in-features."""
        return self.in_dim * self.area


def _conv_out(size: int, layers: list[tuple[int, int, int]]) -> int:
    for _, kernel, stride in layers:
        size = (size - kernel) // stride + 1
    return size


def layer_plan(
    cfg: AtariNetworkConfig, actions_max: int, share: bool, stack: int = 4, screen: int = 84
) -> tuple[list[AtariLayer], str]:
    """The layers of ``cfg.arch`` and its init (``torch`` or ``xavier``); ``share=False``: none shared."""
    if cfg.arch not in ATARI_ARCHS:
        raise UserError(f"unknown Atari architecture {cfg.arch!r}; use one of {', '.join(ATARI_ARCHS)}")
    flat = NATURE_CONVS[-1][0] * _conv_out(screen, list(NATURE_CONVS)) ** 2
    if flat <= 0:
        raise UserError(f"screen size {screen} is too small for the Nature convolutions (at least 36)")
    review = cfg.arch.startswith("review")
    hidden = "lrelu" if review else "relu"
    n_conv_input = {
        "review-exp1": 1,
        "review-mtqn": 3,
        "deramo-atari": 3,
        "deramo-atari-2018": 1,
        "nature": 0,
    }
    dense = {
        # (out, role, activation) of the dense layers before the Q layer; the last shared one: features.
        "review-exp1": [(512, "shared", hidden), (256, "shared", "identity"), (10, "head", hidden)],
        "review-mtqn": [
            (1024, "input", "sigmoid"),
            (512, "shared", hidden),
            (256, "shared", hidden),
            (128, "shared", "sigmoid"),
            (64, "head", hidden),
        ],
        "deramo-atari": [(512, "shared", "sigmoid")],
        "deramo-atari-2018": [(512, "shared", "sigmoid")],
        "nature": [(512, "shared", "relu")],
    }[cfg.arch]
    if cfg.feature_activation:
        if review:
            raise UserError(f"{cfg.arch} fixes its feature activation (the review's code); drop the option")
        if cfg.feature_activation not in _ACT:
            raise UserError(
                f"unknown feature activation {cfg.feature_activation!r}; use one of {', '.join(_ACT)}"
            )
        dense = [(out, role, cfg.feature_activation) for out, role, _ in dense]
    layers: list[AtariLayer] = []
    channels = stack
    for i, (out, kernel, stride) in enumerate(NATURE_CONVS):
        role = "input" if i < n_conv_input[cfg.arch] else "shared"
        layers.append(AtariLayer(channels, out, hidden, role, share and role == "shared", kernel, stride))
        channels = out
    width = flat
    for out, role, act in dense:
        layers.append(AtariLayer(width, out, act, role, share and role == "shared"))
        width = out
    layers.append(AtariLayer(width, actions_max, "identity", "head", False))
    if cfg.init and cfg.init not in INITS:
        raise UserError(f"unknown init {cfg.init!r}; use one of {', '.join(INITS)}")
    return layers, cfg.init or ("torch" if review or cfg.arch == "nature" else "xavier")


class AtariQNetwork(nn.Module):
    """Q-network for T games and S independent members; see the module docstring for the shapes."""

    def __init__(
        self,
        n_actions: list[int],
        cfg: AtariNetworkConfig,
        share: bool = True,
        n_members: int = 1,
        seeds: list[int] | int = 0,
        stack: int = 4,
        screen: int = 84,
    ) -> None:
        super().__init__()
        if cfg.conv_mode not in ("auto", "grouped", "loop"):
            raise UserError(f"unknown conv mode {cfg.conv_mode!r}; use auto, grouped or loop")
        self.cfg = cfg
        self.share = share
        self.n_members = n_members
        self.n_tasks = len(n_actions)
        self.n_actions = list(n_actions)
        self.actions_max = max(n_actions)
        self.input_shape = (stack, screen, screen)
        self.plan, self.init = layer_plan(cfg, self.actions_max, share, stack, screen)
        self.feature_layer = max(i for i, layer in enumerate(self.plan) if layer.role == "shared")
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer in self.plan:
            lead = (n_members,) if layer.shared else (n_members, self.n_tasks)
            if layer.is_conv:
                kk = (layer.kernel, layer.kernel)
                self.weights.append(nn.Parameter(torch.zeros(*lead, layer.out_dim, layer.in_dim, *kk)))
                self.biases.append(nn.Parameter(torch.zeros(*lead, layer.out_dim)))
            else:
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
                copies = 1 if layer.shared else self.n_tasks
                for t in range(copies):
                    w = weight[member] if layer.shared else weight[member, t]
                    b = bias[member] if layer.shared else bias[member, t]
                    self._init_layer(w, b, layer, gen)
            if self.cfg.zero_q_layer:  # drawn as usual above, so every other layer keeps its init
                self.weights[-1][member].zero_()
                self.biases[-1][member].zero_()

    def _init_layer(self, w: torch.Tensor, b: torch.Tensor, layer: AtariLayer, gen) -> None:
        fan_in, fan_out = layer.fan_in, layer.out_dim * layer.area
        if self.init == "xavier":  # the paper's code: Xavier-uniform, ReLU gain; gain 1 for the Q layer
            gain = 1.0 if layer.activation == "identity" and layer.role == "head" else math.sqrt(2.0)
            bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        else:  # PyTorch's default Conv2d/Linear init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(fan_in)
        w.uniform_(-bound, bound, generator=gen)
        b.uniform_(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in), generator=gen)

    # --- forward ---------------------------------------------------------------------------------------

    def _loop(self, x: torch.Tensor) -> bool:
        mode = self.cfg.conv_mode
        return mode == "loop" or (mode == "auto" and x.device.type == "cpu")

    def _conv_loop(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Conv layer i on channels-last ``(S, T, B, H, W, C)`` memory, one dense convolution per member
        (shared layer, over its ``T*B`` images) or per (member, game); returns the same layout.

        Each group's input is then a dense ``(N, C, H, W)`` tensor in channels-last memory, which oneDNN
        convolves (forward and backward) ~40% faster than the default ``(N, C, H, W)`` memory here."""
        layer, w, b = self.plan[i], self.weights[i], self.biases[i]
        s, t, n, h, wd, c = x.shape
        if layer.shared:
            groups = [(x[si].view(t * n, h, wd, c), w[si], b[si]) for si in range(s)]
        else:
            groups = [(x[si, ti], w[si, ti], b[si, ti]) for si in range(s) for ti in range(t)]
        outs = [
            F.conv2d(xg.permute(0, 3, 1, 2), wg, bg, stride=layer.stride).permute(0, 2, 3, 1)
            for xg, wg, bg in groups
        ]
        y = outs[0].unsqueeze(0) if len(outs) == 1 else torch.stack(outs)
        return _ACT[layer.activation](y.reshape(s, t, n, *y.shape[-3:]))

    def _conv_grouped(self, i: int, x: torch.Tensor, s: int, t: int) -> torch.Tensor:
        """Conv layer i on ``x`` holding ``(B, T, S, C, H, W)`` memory as one grouped convolution;
        returns the same layout."""
        layer, w, b = self.plan[i], self.weights[i], self.biases[i]
        n, c, h, wd = x.shape[0], layer.in_dim, x.shape[-2], x.shape[-1]
        k = layer.kernel
        if layer.shared:  # one convolution over the B*T images, grouped over members
            y = F.conv2d(
                x.reshape(n * t, s * c, h, wd),
                w.reshape(s * layer.out_dim, c, k, k),
                b.reshape(-1),
                stride=layer.stride,
                groups=s,
            )
        else:  # one convolution grouped over (game, member)
            wg = w.transpose(0, 1).reshape(t * s * layer.out_dim, c, k, k)
            y = F.conv2d(
                x.reshape(n, t * s * c, h, wd),
                wg,
                b.transpose(0, 1).reshape(-1),
                stride=layer.stride,
                groups=t * s,
            )
        return _ACT[layer.activation](y.view(n, t * s * layer.out_dim, *y.shape[-2:]))

    def _dense(self, i: int, x: torch.Tensor, s: int, t: int) -> torch.Tensor:
        """Dense layer i on ``x`` of shape ``(S, T, B, in)`` (any strides); returns ``(S, T, B, out)``.

        Computed feature-major, ``y^T = W x^T + b`` with ``y^T`` of shape ``(groups, out, B)``: autograd then
        produces the weight gradient ``dy^T x`` directly in the ``(out, in)`` layout of ``W``. The row-major
        ``y = x W^T`` gives it as ``(in, out)`` and needs a transposing copy of the whole gradient, which
        dominated the update of the large Atari dense layers (91 of 248 ms for ``review-mtqn``). The
        returned tensor is a transposed view of ``y^T``; the next layer reads it without a copy."""
        layer, w, b = self.plan[i], self.weights[i], self.biases[i]
        n = x.shape[2]
        if w.dtype != x.dtype:  # under autocast: cast the contiguous weights once per forward
            w, b = w.to(x.dtype), b.to(x.dtype)
        if layer.shared:  # one matmul per member over the rows of all its games
            x_t = x.reshape(s, t * n, layer.in_dim).transpose(1, 2)
            y_t = torch.baddbmm(b.transpose(1, 2), w, x_t)  # (S, out, T*B)
            y = y_t.view(s, layer.out_dim, t, n).permute(0, 2, 3, 1)
        else:  # one batched matmul over (member, game) groups, each with its own weights
            x_t = x.reshape(s * t, n, layer.in_dim).transpose(1, 2)
            w = w.view(s * t, layer.out_dim, layer.in_dim)
            y_t = torch.baddbmm(b.view(s * t, 1, layer.out_dim).transpose(1, 2), w, x_t)  # (S*T, out, B)
            y = y_t.view(s, t, layer.out_dim, n).transpose(2, 3)
        return _ACT[layer.activation](y)

    def _run(
        self,
        obs: torch.Tensor,
        n_layers: int,
        collect: list | None = None,
        feature_hook: FeatureHook | None = None,
    ) -> torch.Tensor:
        s, t, n = obs.shape[:3]
        if obs.shape[3:] != self.input_shape or s != self.n_members or t != self.n_tasks:
            raise ValueError(
                f"expected observations (S={self.n_members}, T={self.n_tasks}, B, {self.input_shape}), "
                f"got {tuple(obs.shape)}"
            )
        c, h, w = self.input_shape
        # Pixels to [0, 1] in the compute dtype (bfloat16 under autocast: no float32 copy of the batch).
        dtype = torch.float32
        if torch.is_autocast_enabled(obs.device.type):
            dtype = torch.get_autocast_dtype(obs.device.type)
        i = 0
        if self._loop(obs):  # channels-last (S, T, B, H, W, C); flattened in (C, H, W) order at the end
            x = torch.empty((s, t, n, h, w, c), dtype=dtype, device=obs.device)
            x.copy_(obs.permute(0, 1, 2, 4, 5, 3)).div_(255.0)
            while i < n_layers and self.plan[i].is_conv:
                x = self._conv_loop(i, x)
                i += 1
            x = x.permute(0, 1, 2, 5, 3, 4).reshape(s, t, n, -1)  # (S, T, B, features)
        else:
            x = obs.permute(2, 1, 0, 3, 4, 5).reshape(n, t * s * c, h, w).to(dtype).div_(255.0)
            while i < n_layers and self.plan[i].is_conv:
                x = self._conv_grouped(i, x, s, t)
                i += 1
            x = x.view(n, t, s, -1).permute(2, 1, 0, 3)  # (S, T, B, features), a view
        while i < n_layers:
            x = self._dense(i, x, s, t)
            if i == self.feature_layer and feature_hook is not None:
                x = feature_hook(x)
            if collect is not None:
                collect.append(x)
            i += 1
        return x

    def forward(self, obs: torch.Tensor, feature_hook: FeatureHook | None = None) -> torch.Tensor:
        """Q values ``(S, T, B, A_max)`` of uint8 frame stacks ``(S, T, B, stack, H, W)``; ``feature_hook``
        as in :meth:`mtdqn.nets.MultiTaskQNetwork.forward`."""
        return self._run(obs, len(self.plan), feature_hook=feature_hook)

    def dense_outputs(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """The output ``(S, T, B, out)`` of every dense layer, the Q layer's last (one forward pass)."""
        outputs: list[torch.Tensor] = []
        self._run(obs, len(self.plan), collect=outputs)
        return outputs

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Shared features ``(S, T, B, F)``: the output of the last shared layer."""
        return self._run(obs, self.feature_layer + 1).contiguous()

    def parameter_count(self, count_padded_actions: bool = False) -> int:
        """Trainable parameters of one member that can affect a valid Q value.

        Padded action outputs count only with ``count_padded_actions`` (each head has A_max outputs).
        """
        total = 0
        for layer in self.plan:
            if layer.shared:
                total += (layer.fan_in + 1) * layer.out_dim
                continue
            for t in range(self.n_tasks):
                out = layer.out_dim
                if layer is self.plan[-1] and not count_padded_actions:
                    out = self.n_actions[t]
                total += (layer.fan_in + 1) * out
        return total
