"""The paper's update (D'Eramo et al. 2020, section 3; spec ``dqn.py``), readable top to bottom.

For every member s, task t and sample b of a multi-task batch:

    y      = r + gamma_t * (1 - terminal) * max_{a valid for t} Q_target(s', a)
             (Double DQN: Q_target(s', argmax_{a valid for t} Q_online(s', a)))
             (``clip_targets``: y clamped into [min(r_min, 0), max(r_max, 0)] / (1 - gamma_t), the
             rewards' extremes of member s and task t in the batches so far, this one included)
    loss   = mean over (t, b) of Huber(Q_online(s, a) - y)        one joint loss over all tasks
             (single-task mode: the sum over t of each task's own mean, i.e. T independent DQNs)
             (``task_balance``, :mod:`mtdqn.task_balance`: ``param-norm`` weighs each task's term so
             that the tasks' gradients on the shared layers are equal in norm; ``feature-norm``
             rescales each task's gradient at the shared features in the backward)
    one Adam step over all parameters; every C updates: Q_target <- Q_online (hard copy)

``precision="bf16"`` runs the two forwards and the backward
under autocast (bfloat16 matmuls and convolutions, float32 accumulation); the loss, the targets, the
online weights and the optimizer stay float32, and the target network holds its weights in bfloat16.

``kernels``: the forwards and the backward run either through PyTorch (autograd), or, for the float32
control networks on a CPU, through :class:`mtdqn.backprop.ManualBackprop` (the backward written out, numpy's
OpenBLAS matmuls), which computes the same gradients up to float rounding about twice as fast there.

Members are independent agents: the loss is summed over members and Adam is elementwise, so member k
learns as it would alone (on a CPU bit for bit: :mod:`mtdqn.adam`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from mtdqn.adam import MemberwiseAdam
from mtdqn.backprop import ManualBackprop
from mtdqn.config import LearnerConfig
from mtdqn.errors import UserError
from mtdqn.nets import FeatureHook, MultiTaskQNetwork
from mtdqn.replay import Batch
from mtdqn.task_balance import ParamNormWeights, equal_feature_pull, shared_parameters


class DQNLearner:
    """Online and target networks, the optimizer and the update counter."""

    def __init__(self, online: MultiTaskQNetwork, gammas: list[float], cfg: LearnerConfig) -> None:
        self.cfg = cfg
        self.online = online
        self.target = copy.deepcopy(online).requires_grad_(False)
        if cfg.precision == "bf16":
            # Autocast would cast the target's float32 weights to bfloat16 in every forward; they change only
            # at a sync, so hold them in bfloat16 (the same rounding: the TD targets are bit-identical).
            self.target.to(torch.bfloat16)
        device = online.action_mask.device
        self.gamma = torch.tensor(gammas, dtype=torch.float32, device=device).reshape(1, -1, 1)
        # 0 for a task's valid actions, -inf for its padded ones: added before every max over actions.
        self.action_penalty = (
            torch.zeros(online.action_mask.shape, device=device)
            .masked_fill(~online.action_mask, float("-inf"))
            .reshape(1, online.n_tasks, 1, -1)
        )
        self.optimizer = make_optimizer(param_groups(online, cfg), cfg, device, online.n_members)
        shape_st = (online.n_members, online.n_tasks)
        self.kernels = resolve_kernels(cfg, online)
        self.manual = ManualBackprop(online, self.target, cfg.batch_size) if self.kernels == "numpy" else None
        # task_balance (None, None: the paper's joint loss as it is)
        self.feature_hook = equal_feature_pull if cfg.task_balance == "feature-norm" else None
        self.task_weights = (
            ParamNormWeights(
                online.n_members, online.n_tasks, cfg.task_balance_every, device, cfg.task_balance_max_weight
            )
            if cfg.task_balance == "param-norm"
            else None
        )
        # clip_targets: the smallest and largest reward of each (member, task) in the batches so far, and 0
        self.reward_bounds = torch.zeros(2, *shape_st, device=device) if cfg.clip_targets else None
        self._autocast = cfg.precision == "bf16"
        self._device_type = device.type
        self.n_updates = 0
        # Per-(member, task) sums of the loss and of Q(s, a) since the last call of pop_stats().
        shape = (online.n_members, online.n_tasks)
        self._loss_sum = torch.zeros(shape, device=device)
        self._q_sum = torch.zeros(shape, device=device)
        self._stat_updates = 0

    def _precision(self):
        """The autocast context of ``precision`` (a no-op for fp32)."""
        return torch.autocast(self._device_type, dtype=torch.bfloat16, enabled=self._autocast)

    def td_target(self, batch: Batch) -> torch.Tensor:
        """y = r + gamma_t * (1 - terminal) * V_target(s'), with V over the task's valid actions."""
        with torch.no_grad():
            if self.manual is not None:
                q_next_raw = self.manual.forward(batch.next_obs, "target")
                q_online_next = (
                    self.manual.forward(batch.next_obs, "online_next") if self.cfg.double_dqn else None
                )
            else:
                with self._precision():
                    q_next_raw = self.target(batch.next_obs)
                    q_online_next = self.online(batch.next_obs) if self.cfg.double_dqn else None
            q_next = q_next_raw.float() + self.action_penalty
            if q_online_next is not None:
                a_next = (q_online_next.float() + self.action_penalty).argmax(-1, keepdim=True)
                v_next = q_next.gather(-1, a_next).squeeze(-1)
            else:
                v_next = q_next.amax(-1)
            y = torch.addcmul(batch.reward, self.gamma * (1.0 - batch.terminal), v_next)
            if self.reward_bounds is not None:
                low, high = self.value_bounds()
                y = torch.minimum(torch.maximum(y, low.unsqueeze(-1)), high.unsqueeze(-1))
            return y

    def value_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``clip_targets``' interval per (member, task) ``(S, T)``: ``[min(r_min, 0), max(r_max, 0)] /
        (1 - gamma_t)`` from the rewards of the batches so far (infinite for gamma 1 and a nonzero reward)."""
        gamma = self.gamma.reshape(1, -1)
        horizon = torch.where(gamma < 1, 1.0 / (1.0 - gamma).clamp_min(1e-12), torch.inf)
        low, high = self.reward_bounds
        return (
            torch.where(low < 0, low * horizon, torch.zeros_like(low)),
            torch.where(high > 0, high * horizon, torch.zeros_like(high)),
        )

    def _see_rewards(self, batch: Batch) -> None:
        """``clip_targets``: widen each (member, task)'s reward interval to this batch's rewards."""
        if self.reward_bounds is not None:
            torch.minimum(self.reward_bounds[0], batch.reward.amin(-1), out=self.reward_bounds[0])
            torch.maximum(self.reward_bounds[1], batch.reward.amax(-1), out=self.reward_bounds[1])

    def loss(
        self, batch: Batch, feature_hook: FeatureHook | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The joint loss, the Huber loss per (member, task) and Q(s, a) ``(S, T, B)`` (autograd graph).
        ``feature_hook`` is applied to the shared features instead of the update's (``task_balance``)."""
        y = self.td_target(batch)
        with self._precision():
            q_all = self.online(batch.obs, feature_hook=feature_hook or self.feature_hook)
        q = q_all.float().gather(-1, batch.action.unsqueeze(-1)).squeeze(-1)
        per_task = F.huber_loss(q, y, reduction="none", delta=self.cfg.huber_delta).mean(-1)  # (S, T)
        return self.joint_loss(per_task), per_task, q

    def joint_loss(self, per_task: torch.Tensor) -> torch.Tensor:
        """The mean over tasks of the per-(member, task) losses ``(S, T)`` (``param-norm``: weighted), summed
        over members; single-task mode: their sum."""
        if not self.online.share:
            return per_task.sum()
        if self.task_weights is not None:
            per_task = per_task * self.task_weights.weight
        return per_task.mean(1).sum()

    def update(self, batch: Batch) -> None:
        """One gradient step on the joint Huber loss, then the target copy when it is due."""
        self._see_rewards(batch)
        if self.manual is None:
            loss, per_task, q = self.loss(batch)
            if self.task_weights is not None and self.task_weights.due(self.n_updates):
                trainable = [p for p in shared_parameters(self.online) if p.requires_grad]
                self.task_weights.measure(per_task, trainable)
                loss = self.joint_loss(per_task)  # with the weights of this measurement
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        else:
            per_task, q = self._manual_gradients(batch)
        self.optimizer.step()
        self.n_updates += 1
        if self.n_updates % self.cfg.target_update_every == 0:
            self.sync_target()
        self._loss_sum.add_(per_task.detach())
        self._q_sum.add_(q.detach().mean(-1))
        self._stat_updates += 1

    @torch.no_grad()
    def _manual_gradients(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`loss` and its backward without autograd: dL/dQ(s, a) = clip(Q(s, a) - y, +-delta) / B
        (divided by T too when the tasks share one network), zero for the actions not taken."""
        y = self.td_target(batch)
        q_all = self.manual.forward(batch.obs, "online")
        action = batch.action.unsqueeze(-1)
        q = q_all.gather(-1, action).squeeze(-1)
        delta = self.cfg.huber_delta
        per_task = F.huber_loss(q, y, reduction="none", delta=delta).mean(-1)
        t, b = q.shape[1:]
        scale = 1.0 / (b * t) if self.online.share else 1.0 / b
        dq = (q - y).clamp_(-delta, delta).mul_(scale)
        grad_q = torch.zeros_like(q_all).scatter_(-1, action, dq.unsqueeze(-1))
        if self.task_weights is not None:  # param-norm: measure when due, then dL/dQ of mean_t w_t L_t
            if self.task_weights.due(self.n_updates) and any(
                p.requires_grad for p in shared_parameters(self.online)
            ):
                self.task_weights.record(self.manual.task_gradient_norms(batch.obs, grad_q))
            grad_q.mul_(self.task_weights.weight[:, :, None, None])
        self.manual.backward(batch.obs, grad_q, equal_feature_pull=self.feature_hook is not None)
        return per_task, q

    @torch.no_grad()
    def sync_target(self) -> None:
        """Hard copy of the online parameters into the target network."""
        for dst, src in zip(self.target.parameters(), self.online.parameters(), strict=True):
            dst.copy_(src)

    def pop_stats(self) -> dict[str, torch.Tensor]:
        """Mean loss and mean Q(s, a) per (member, task) since the last call (NaN if no update)."""
        n = self._stat_updates
        stats = {
            "loss": (self._loss_sum / n).cpu() if n else torch.full_like(self._loss_sum, float("nan")).cpu(),
            "mean_q": (self._q_sum / n).cpu() if n else torch.full_like(self._q_sum, float("nan")).cpu(),
        }
        self._loss_sum.zero_()
        self._q_sum.zero_()
        self._stat_updates = 0
        return stats

    def state_dict(self) -> dict:
        state = {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "n_updates": self.n_updates,
        }
        if self.task_weights is not None:
            state["task_weights"] = self.task_weights.state_dict()
        if self.reward_bounds is not None:
            state["reward_bounds"] = self.reward_bounds.cpu().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.n_updates = int(state["n_updates"])
        if self.task_weights is not None:
            self.task_weights.load_state_dict(state["task_weights"])
        if self.reward_bounds is not None:
            self.reward_bounds.copy_(state["reward_bounds"])


def param_groups(online: torch.nn.Module, cfg: LearnerConfig) -> list[dict]:
    """The optimizer's parameter groups: one group at ``lr``, or with ``cfg.lr_fan_in`` one per layer at
    ``lr * min(1, lr_fan_in / fan_in)`` (a convolution's fan-in: in-channels x kernel area, or in-channels
    alone with ``cfg.lr_fan_in_conv == "channels"``)."""
    if not cfg.lr_fan_in:
        return [{"params": list(online.parameters())}]
    groups = []
    for layer, weight, bias in zip(online.plan, online.weights, online.biases, strict=True):
        channels_only = cfg.lr_fan_in_conv == "channels" and getattr(layer, "is_conv", False)
        fan_in = layer.in_dim if channels_only else layer.fan_in
        groups.append({"params": [weight, bias], "lr": cfg.lr * min(1.0, cfg.lr_fan_in / fan_in)})
    return groups


def resolve_kernels(cfg: LearnerConfig, online: torch.nn.Module) -> str:
    """``numpy`` or ``torch``: what ``cfg.kernels`` means for this network (``auto``: numpy for a float32
    control network on the CPU, torch otherwise)."""
    manual_ok = (
        isinstance(online, MultiTaskQNetwork)
        and cfg.precision == "fp32"
        and online.action_mask.device.type == "cpu"
    )
    if cfg.kernels == "auto":
        return "numpy" if manual_ok else "torch"
    if cfg.kernels == "numpy" and not manual_ok:
        raise UserError(
            "--kernels numpy runs the float32 update of a control network on the CPU only; "
            "use --kernels auto (or torch) with --precision bf16, a GPU or Atari games"
        )
    return cfg.kernels


def make_optimizer(params, cfg: LearnerConfig, device: torch.device, n_members: int) -> torch.optim.Optimizer:
    """One optimizer over all parameters: Adam (on a CPU :class:`mtdqn.adam.MemberwiseAdam`, so that a
    member steps as it would alone; fused on CUDA; foreach elsewhere), or centred RMSProp (foreach)."""
    if cfg.optimizer == "rmsprop-centered":
        return torch.optim.RMSprop(
            params, lr=cfg.lr, alpha=cfg.rmsprop_decay, eps=cfg.adam_eps, centered=True, foreach=True
        )
    if device.type == "cpu":
        return MemberwiseAdam(params, n_members, lr=cfg.lr, eps=cfg.adam_eps)
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.adam_eps, **fast)
