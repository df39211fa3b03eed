"""Frame replay: every 84x84 frame stored once, frame stacks rebuilt from indices at sampling time.

One ring of ``capacity`` slots per (member, task); all rings advance in lockstep (one slot per joint step)
and share one write position. Slot p holds the newest frame of the observation s_t that action a_t was
taken in, with a_t, the learning reward r_t, the learning terminal and the frame's place in its episode.
A transition is rebuilt as

    obs      = frames of slots p-3 .. p      (frame_stack = 4)
    next_obs = frames of slots p-2 .. p+1

where a frame from before the episode's first one is zeros, exactly as the environments pad their stacks
after a reset (tested against the environments' own stacks, across episode ends and ring wrap-around).

A slot can be sampled unless its successor is unknown: the newest slot (s_{t+1} is not stored yet), a slot
whose episode was cut without a terminal (time limit, or an environment reset at a phase boundary: the
final observation is not stored; one transition is lost per cut), or one of the oldest slots whose earlier
frames the ring has overwritten. After a game over the slot p+1 already holds the next episode, so
``next_obs`` of a terminal transition is not the final observation; it is never used (no bootstrap).

Memory per transition: one frame (7,056 bytes at 84x84) + 8 bytes (action, reward, flags), i.e. ~7.06 GB
per million transitions, against 56,448 bytes when both 4-frame stacks are stored (the review's memory).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtdqn.errors import UserError

_BYTES_PER_SLOT_EXTRA = 8
"""action (uint8) + reward (float32) + terminal, episode position, cut (uint8 each)."""

_SAVED_ARRAYS = ("frames", "action", "reward", "terminal", "episode_pos", "cut")
_SAVE_FORMAT = 1


def _rows_digest(array: np.ndarray) -> str:
    """SHA-256 of ``array``'s bytes in C order, hashed row by row (no copy of a sliced ring)."""
    digest = hashlib.sha256()
    for row in array:
        digest.update(np.ascontiguousarray(row).data)
    return digest.hexdigest()


_HEADROOM_BYTES = 1 << 30
"""Memory left for everything else (networks, environments, Python) when checking that a replay fits."""


def memory_bytes(
    capacity: int, n_tasks: int, n_members: int = 1, frame_shape: tuple[int, int] = (84, 84)
) -> int:
    """Bytes of a :class:`FrameReplay` of ``capacity`` transitions per (member, task)."""
    per_slot = int(np.prod(frame_shape)) + _BYTES_PER_SLOT_EXTRA
    return int(capacity) * int(n_tasks) * int(n_members) * per_slot


def available_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes; None where the file or the field does not exist."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(
    capacity: int,
    n_tasks: int,
    n_members: int = 1,
    frame_shape: tuple[int, int] = (84, 84),
    available: int | None = None,
) -> None:
    """Raise :class:`UserError` when the replay would not fit in the available memory (minus 1 GiB)."""
    need = memory_bytes(capacity, n_tasks, n_members, frame_shape)
    available = available_memory_bytes() if available is None else available
    if available is None or need + _HEADROOM_BYTES <= available:
        return
    per_capacity = memory_bytes(1, n_tasks, n_members, frame_shape)
    fits = max(0, (available - _HEADROOM_BYTES) // per_capacity)
    raise UserError(
        f"a frame replay of {capacity:,} transitions x {n_tasks} task(s) x {n_members} member(s) needs "
        f"{need / 1e9:.1f} GB but {available / 1e9:.1f} GB is available (MemAvailable, 1 GiB kept free); "
        f"lower the replay capacity to at most {fits:,} per task, or use fewer tasks or seeds"
    )


@dataclass
class FrameBatch:
    """A multi-task batch of image transitions: every tensor is ``(S, T, B, ...)``."""

    obs: torch.Tensor
    """uint8 ``(S, T, B, stack, H, W)``."""
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    """uint8 ``(S, T, B, stack, H, W)``; meaningless where ``terminal`` is 1 (never bootstrapped)."""
    terminal: torch.Tensor
    """1.0 for a learning terminal (no bootstrap), else 0.0."""


class FrameReplay:
    """Rings of ``capacity`` single frames for each of T tasks and S members (see the module docstring)."""

    def __init__(
        self,
        n_members: int,
        n_tasks: int,
        capacity: int,
        frame_shape: tuple[int, int] = (84, 84),
        stack: int = 4,
        check_memory: bool = True,
    ) -> None:
        if capacity < stack + 2:
            raise UserError(f"replay capacity is {capacity}; it must be at least {stack + 2} transitions")
        if check_memory:
            check_fits(capacity, n_tasks, n_members, frame_shape)
        self.shape = (n_members, n_tasks)
        self.capacity = capacity
        self.frame_shape = tuple(frame_shape)
        self.stack = stack
        rings = n_members * n_tasks
        pixels = int(np.prod(frame_shape))
        # np.zeros takes zeroed pages from the OS lazily: memory is committed as the rings fill.
        self.frames = np.zeros((rings, capacity, pixels), np.uint8)
        self.action = np.zeros((rings, capacity), np.uint8)
        self.reward = np.zeros((rings, capacity), np.float32)
        self.terminal = np.zeros((rings, capacity), np.bool_)
        self.episode_pos = np.zeros((rings, capacity), np.uint8)
        """min(frames since the episode's first, stack - 1): how many earlier frames belong to the stack."""
        self.cut = np.zeros((rings, capacity), np.bool_)
        """The episode ended after this slot without a terminal: its next observation is not stored."""
        self._frames_flat = self.frames.reshape(rings * capacity, pixels)
        self._ring_offset = np.arange(rings).reshape(n_members, n_tasks, 1) * capacity
        self._pos = np.zeros(rings, np.int64)  # episode position of the latest frame of each ring
        self.position = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def reward_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The smallest and largest stored reward of each (member, task), ``(S, T)`` each (NaN if empty)."""
        if not self.size:
            return np.full(self.shape, np.nan), np.full(self.shape, np.nan)
        rewards = self.reward[:, : self.size]
        return rewards.min(-1).reshape(self.shape), rewards.max(-1).reshape(self.shape)

    def add(
        self,
        frame: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        terminal: np.ndarray,
        first: np.ndarray,
    ) -> None:
        """Store one step per (member, task); arrays are ``(S, T, ...)``.

        ``frame`` is the newest frame ``(H, W)`` of the observation the action was taken in, ``first``
        whether that observation is an episode's first (a reset), ``reward`` and ``terminal`` the learning
        reward and terminal of the step.
        """
        rings = self.shape[0] * self.shape[1]
        first = np.asarray(first, bool).reshape(rings)
        p, prev = self.position, (self.position - 1) % self.capacity
        if self.size:
            # A new episode after a slot without a terminal: that slot's successor is not stored.
            self.cut[:, prev] = first & ~self.terminal[:, prev]
        self._pos = np.where(first, 0, np.minimum(self._pos + 1, self.stack - 1))
        self.frames[:, p] = np.asarray(frame, np.uint8).reshape(rings, -1)
        self.action[:, p] = np.asarray(action).reshape(rings)
        self.reward[:, p] = np.asarray(reward, np.float32).reshape(rings)
        self.terminal[:, p] = np.asarray(terminal, bool).reshape(rings)
        self.episode_pos[:, p] = self._pos
        self.cut[:, p] = False
        self.position = (p + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    # --- which slots can be sampled --------------------------------------------------------------------

    def _oldest(self) -> int:
        return (self.position - self.size) % self.capacity

    def _invalid(self, ring: np.ndarray, age: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Which (ring, slot) pairs, ``age`` slots after the oldest, cannot be sampled (newest excluded)."""
        return self.cut[ring, slot] | (age < self.episode_pos[ring, slot])

    def valid_slots(self) -> list[np.ndarray]:
        """For every ring (member-major), the slots that can be sampled, oldest first (for tests)."""
        age = np.arange(max(self.size - 1, 0))
        slot = (self._oldest() + age) % self.capacity
        rings = self.shape[0] * self.shape[1]
        return [slot[~self._invalid(np.full_like(slot, r), age, slot)] for r in range(rings)]

    # --- sampling ------------------------------------------------------------------------------------------

    def sample_slots(
        self, rng: np.random.Generator | Sequence[np.random.Generator], batch_size: int
    ) -> np.ndarray:
        """``(S, T, B)`` slots drawn uniformly with replacement from each ring's sampleable slots.

        ``rng`` is one generator, or one per member: then member m's slots come from ``rng[m]`` alone, so a
        member samples the same whichever other members share the replay. Invalid draws (a handful of
        slots per ring) are redrawn; the loop runs over redraw rounds, not samples, and almost always ends
        after the first.
        """
        if self.size < 2:
            raise RuntimeError("the replay holds no complete transition yet")
        s, t = self.shape
        gens = list(rng) if isinstance(rng, Sequence) else None
        if gens is not None and len(gens) != s:
            raise ValueError(f"{len(gens)} generators for {s} members")
        span = self.size - 1  # the newest slot has no successor yet

        def draw(mask: np.ndarray) -> np.ndarray:
            """Uniform ages for the True entries of ``mask`` (S, T, B), member by member if per-member."""
            if gens is None:
                return (rng.random(int(mask.sum())) * span).astype(np.int64)
            counts = mask.reshape(s, -1).sum(1)
            parts = [(g.random(int(c)) * span).astype(np.int64) for g, c in zip(gens, counts, strict=True)]
            return np.concatenate(parts)

        ring = np.arange(s * t).reshape(s, t, 1).repeat(batch_size, axis=2)
        age = draw(np.ones((s, t, batch_size), bool)).reshape(s, t, batch_size)
        oldest = self._oldest()
        slot = (oldest + age) % self.capacity
        bad = self._invalid(ring, age, slot)
        for _ in range(1000):
            if not bad.any():
                return slot
            redraw = draw(bad)
            age[bad] = redraw
            slot[bad] = (oldest + redraw) % self.capacity
            bad[bad] = self._invalid(ring[bad], redraw, slot[bad])
        raise RuntimeError("a ring of the replay has no sampleable transition")

    def sample(
        self,
        rng: np.random.Generator | Sequence[np.random.Generator],
        batch_size: int,
        device: torch.device | str = "cpu",
    ) -> FrameBatch:
        """A batch of ``batch_size`` transitions per (member, task)."""
        return self.gather(self.sample_slots(rng, batch_size), device)

    def gather(self, slots: np.ndarray, device: torch.device | str = "cpu") -> FrameBatch:
        """The transitions starting at ``slots`` ``(S, T, B)`` (from :meth:`sample_slots`)."""
        s, t, b = slots.shape
        k = self.stack
        rings = np.broadcast_to(np.arange(s * t).reshape(s, t, 1), slots.shape)
        back = np.arange(k - 1, -1, -1)  # frame j of a stack lies k-1-j slots before its newest
        # One allocation for both stacks: two live multi-MB arrays per call cost page faults (~6x slower).
        out = np.empty((2, s * t * b * k, self._frames_flat.shape[1]), np.uint8)
        for i, newest in enumerate((slots, (slots + 1) % self.capacity)):
            rows = ((newest[..., None] - back) % self.capacity + self._ring_offset[..., None]).reshape(-1)
            np.take(self._frames_flat, rows, axis=0, out=out[i])
            before_start = back > self.episode_pos[rings, newest][..., None]
            out[i][before_start.reshape(-1)] = 0  # frames from before the episode's first: zeros
        stacks = torch.from_numpy(out).view(2, s, t, b, k, *self.frame_shape).to(device)
        return FrameBatch(
            obs=stacks[0],
            action=torch.from_numpy(self.action[rings, slots].astype(np.int64)).to(device),
            reward=torch.from_numpy(self.reward[rings, slots]).to(device),
            next_obs=stacks[1],
            terminal=torch.from_numpy(self.terminal[rings, slots].astype(np.float32)).to(device),
        )

    def memory_bytes(self) -> int:
        """Bytes of the allocated storage (committed as the rings fill)."""
        return memory_bytes(self.capacity, self.shape[1], self.shape[0], self.frame_shape)

    # --- saving and loading (checkpoints) ------------------------------------------------------------------

    def _meta(self) -> dict:
        return {
            "format": _SAVE_FORMAT,
            "shape": list(self.shape),
            "capacity": self.capacity,
            "frame_shape": list(self.frame_shape),
            "stack": self.stack,
            "position": self.position,
            "size": self.size,
            "episode_pos_latest": self._pos.tolist(),
        }

    def save(self, folder: Path) -> None:
        """Write the rings into the new folder ``folder``, atomically: it exists complete or not at all.

        Plain ``.npy`` files (no pickle) of the written slots only, and ``meta.json``; the folder is built
        under a temporary name, synced, then renamed.
        """
        folder = Path(folder)
        if folder.exists():
            raise FileExistsError(f"{folder} exists")
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        try:
            used = self.size if self.size < self.capacity else self.capacity  # slots 0..size-1 until full
            digests = {}
            for name in _SAVED_ARRAYS:
                written = getattr(self, name)[:, :used]
                digests[name] = _rows_digest(written)
                with open(tmp / f"{name}.npy", "wb") as f:
                    np.save(f, written, allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
            (tmp / "meta.json").write_text(json.dumps({**self._meta(), "digests": digests}))
            os.chmod(tmp, 0o755)
            os.rename(tmp, folder)
            dir_fd = os.open(folder.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def load(self, folder: Path) -> None:
        """Restore the rings saved by :meth:`save` (same members, tasks, capacity and frame shape)."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            mine = self._meta()
            for key in ("format", "shape", "capacity", "frame_shape", "stack"):
                if meta[key] != mine[key]:
                    raise ValueError(f"{key} is {meta[key]} there, {mine[key]} here")
            used = int(meta["size"])
            digests = meta.get("digests", {})  # replays saved before digests have none
            for name in _SAVED_ARRAYS:
                data = np.load(folder / f"{name}.npy", allow_pickle=False)
                target = getattr(self, name)
                if data.shape != (target.shape[0], used, *target.shape[2:]) or data.dtype != target.dtype:
                    raise ValueError(f"{name}.npy has shape {data.shape} ({data.dtype})")
                if name in digests and _rows_digest(data) != digests[name]:
                    raise ValueError(f"{name}.npy does not match its SHA-256 digest: the file is damaged")
                target[:, :used] = data
            self.position, self.size = int(meta["position"]), used
            self._pos = np.asarray(meta["episode_pos_latest"], np.int64)
        except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError) as exc:  # incl. JSON errors
            raise UserError(
                f"the replay memory saved in {folder} cannot be read into this run ({exc}); "
                "restart the run with --overwrite"
            ) from None
