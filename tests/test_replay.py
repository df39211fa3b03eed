"""Replay: ring buffer, per-task quotas, uniform sampling, round trip."""

from __future__ import annotations

import numpy as np
import torch

from mtdqn.replay import MultiTaskReplay


def _add(replay: MultiTaskReplay, step: int) -> None:
    s, t = replay.shape
    d = replay.obs_dim
    # Encode (task, step) in every field so that rows can be traced.
    obs = np.zeros((s, t, d), np.float32)
    obs[..., 0] = np.arange(t)[None, :]
    obs[..., 1] = step
    next_obs = obs + 0.5
    action = np.full((s, t), step % 3)
    reward = np.full((s, t), float(step), np.float32)
    terminal = np.full((s, t), step % 2 == 0)
    replay.add(obs, action, reward, next_obs, terminal)


def _gather(replay: MultiTaskReplay, uniform: np.ndarray):
    """The batch of one sample drawn now from uniform numbers ``(S, T, B)``, and its slot indices."""
    rows = replay.plan_indices(uniform[None], adds_before=np.zeros(1, np.int64))[0]
    slots = rows.numpy().reshape(uniform.shape) % replay.capacity
    return replay.gather_rows(rows, uniform.shape[-1]), slots


def test_ring_buffer_overwrites_the_oldest() -> None:
    replay = MultiTaskReplay(1, 2, capacity=5, obs_dim=3)
    for step in range(7):
        _add(replay, step)
    assert len(replay) == 5 and replay.position == 2
    batch, slots = _gather(replay, ((np.arange(5) + 0.5) / 5)[None, None, :].repeat(2, axis=1))
    assert slots[0, 0].tolist() == [0, 1, 2, 3, 4]
    assert batch.obs[0, 0, :, 1].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert batch.next_obs[0, 0, :, 1].tolist() == [5.5, 6.5, 2.5, 3.5, 4.5]
    assert batch.reward[0, 1].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert batch.action[0, 1].tolist() == [2, 0, 2, 0, 1]
    assert batch.terminal[0, 1].tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]


def test_every_task_fills_exactly_its_quota_from_its_own_memory() -> None:
    replay = MultiTaskReplay(2, 3, capacity=50, obs_dim=4)
    for step in range(30):
        _add(replay, step)
    batch, idx = _gather(replay, np.random.default_rng(0).random((2, 3, 64)))
    assert batch.obs.shape == (2, 3, 64, 4)
    for t in range(3):
        assert (batch.obs[:, t, :, 0] == t).all()  # rows of task t come from task t's memory
    assert idx.min() >= 0 and idx.max() < 30  # only filled slots


def test_sampling_is_uniform_over_filled_slots() -> None:
    replay = MultiTaskReplay(1, 1, capacity=10, obs_dim=2)
    for step in range(10):
        _add(replay, step)
    _, idx = _gather(replay, np.random.default_rng(0).random((1, 1, 100_000)))
    freq = np.bincount(idx.ravel(), minlength=10) / idx.size
    np.testing.assert_allclose(freq, 0.1, atol=0.005)


def test_state_dict_round_trip() -> None:
    replay = MultiTaskReplay(1, 2, capacity=8, obs_dim=3)
    for step in range(11):
        _add(replay, step)
    copy = MultiTaskReplay(1, 2, capacity=8, obs_dim=3)
    copy.load_state_dict(replay.state_dict())
    assert (copy.position, copy.size) == (replay.position, replay.size)
    assert copy.storage.equal(replay.storage)


def test_planned_indices_follow_the_growing_fill_level() -> None:
    replay = MultiTaskReplay(1, 2, capacity=6, obs_dim=2)
    for step in range(2):
        _add(replay, step)
    uniform = np.full((5, 1, 2, 1), 0.999)  # always the newest filled slot
    rows = replay.plan_indices(uniform, adds_before=np.array([1, 2, 3, 4, 8])).numpy()
    # Sizes then are 3, 4, 5, 6, 6 (capped at capacity): the last slots are 2, 3, 4, 5, 5 in each task block.
    assert rows[:, 0].tolist() == [2, 3, 4, 5, 5]
    assert rows[:, 1].tolist() == [8, 9, 10, 11, 11]
    for step in range(2, 5):
        _add(replay, step)
    batch = replay.gather_rows(torch.as_tensor(rows[2]), 1)  # after 3 more adds: slot 4 holds step 4
    assert batch.obs[0, :, 0, 1].tolist() == [4.0, 4.0]


def test_reward_range_per_member_and_task_over_the_filled_slots() -> None:
    buf = MultiTaskReplay(n_members=2, n_tasks=2, capacity=3, obs_dim=1)
    assert np.isnan(buf.reward_range()[0]).all()
    obs = np.zeros((2, 2, 1), np.float32)
    for reward in ([[5, -1], [0, 2]], [[1, -3], [0, 2]], [[2, 0], [0, 2]], [[3, 0], [0, 7]]):
        buf.add(obs, np.zeros((2, 2)), np.array(reward, np.float32), obs, np.zeros((2, 2)))
    low, high = buf.reward_range()  # the first transition (5, -1, 0, 2) was overwritten by the fourth
    np.testing.assert_array_equal(low, [[1, -3], [0, 2]])
    np.testing.assert_array_equal(high, [[3, 0], [0, 7]])
