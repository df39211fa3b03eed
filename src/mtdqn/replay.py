"""Per-task replay memories in one preallocated block.

All tasks step in lockstep, so every task's ring buffer holds the same number of transitions and shares
one write position. Storage is one float32 tensor ``(S, T, capacity, 2 * obs_max + 3)`` whose rows pack
``[obs | next_obs | action | reward | terminal]``: a joint step is one row write per (member, task) and a
batch is one ``index_select``. Sampling draws ``batch_size`` slots per task and member, uniformly with
replacement, so each task contributes exactly its quota to every multi-task batch (the quota is the tensor
shape, not a sort order).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class Batch:
    """A multi-task batch: every tensor is ``(S, T, B, ...)``."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminal: torch.Tensor
    """1.0 for a true terminal (no bootstrap); 0.0 otherwise, horizon cuts included."""

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device``."""
        return Batch(*(getattr(self, f.name).to(device) for f in fields(self)))


class MultiTaskReplay:
    """Ring buffers of ``capacity`` transitions for each of T tasks and S members."""

    def __init__(self, n_members: int, n_tasks: int, capacity: int, obs_dim: int, device="cpu") -> None:
        self.shape = (n_members, n_tasks)
        self.capacity = capacity
        self.obs_dim = obs_dim
        self.device = torch.device(device)
        self.width = 2 * obs_dim + 3
        self.storage = torch.zeros(n_members, n_tasks, capacity, self.width, device=self.device)
        self._row = np.zeros((n_members, n_tasks, self.width), dtype=np.float32)
        self.position = 0
        self.size = 0
        # Row offset of each (member, task) block in the flattened storage, for one index_select per batch.
        self._block_offset = np.arange(n_members * n_tasks).reshape(n_members, n_tasks, 1) * capacity

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminal: np.ndarray,
    ) -> None:
        """Store one transition per (member, task); arrays are ``(S, T, ...)``.

        ``terminal`` is True only for a true terminal state (no bootstrap); a horizon cut is not terminal.
        """
        d, row = self.obs_dim, self._row
        row[..., :d] = obs
        row[..., d : 2 * d] = next_obs
        row[..., 2 * d] = action
        row[..., 2 * d + 1] = reward
        row[..., 2 * d + 2] = terminal
        self.storage[:, :, self.position] = torch.from_numpy(row)
        self.position = (self.position + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def plan_indices(self, uniform: np.ndarray, adds_before: np.ndarray) -> torch.Tensor:
        """Flat row indices for a whole phase of samples at once: ``uniform`` is ``(N, S, T, B)``.

        Sample k is drawn after ``adds_before[k]`` more joint steps have been stored than now, so its slots
        are uniform over the slots filled by then; row k of the result feeds :meth:`gather_rows`.
        """
        n = uniform.shape[0]
        sizes = np.minimum(self.size + np.asarray(adds_before), self.capacity)
        slots = (uniform * sizes.reshape(n, 1, 1, 1)).astype(np.int64)
        return torch.from_numpy((slots + self._block_offset).reshape(n, -1)).to(self.device)

    def gather_rows(self, flat: torch.Tensor, batch_size: int) -> Batch:
        """The transitions at flat row indices (from :meth:`plan_indices`) as a :class:`Batch`."""
        s, t = self.shape
        rows = self.storage.view(-1, self.width).index_select(0, flat).view(s, t, batch_size, self.width)
        d = self.obs_dim
        return Batch(
            obs=rows[..., :d],
            next_obs=rows[..., d : 2 * d],
            action=rows[..., 2 * d].long(),
            reward=rows[..., 2 * d + 1],
            terminal=rows[..., 2 * d + 2],
        )

    def reward_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The smallest and largest stored reward of each (member, task), ``(S, T)`` each (NaN if empty)."""
        if not self.size:
            return np.full(self.shape, np.nan), np.full(self.shape, np.nan)
        rewards = self.storage[:, :, : self.size, 2 * self.obs_dim + 1]
        return rewards.amin(-1).cpu().numpy(), rewards.amax(-1).cpu().numpy()

    def state_dict(self) -> dict:
        return {"storage": self.storage.cpu(), "position": self.position, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        src = state["storage"]
        if src.shape != self.storage.shape or src.dtype != self.storage.dtype:
            raise ValueError(f"replay of shape {tuple(src.shape)}, expected {tuple(self.storage.shape)}")
        self.storage.copy_(src)
        self.position = int(state["position"])
        self.size = int(state["size"])
