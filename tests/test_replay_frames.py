"""The frame replay: rebuilt stacks equal the environments' stacks, sampling, memory estimate and check."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from mtdqn.config_atari import AtariConfig
from mtdqn.errors import UserError
from mtdqn.replay_frames import FrameReplay, available_memory_bytes, check_fits, memory_bytes
from mtdqn.tasks.atari import AtariVectorTask

CAPACITY = 150


@dataclass
class Recorded:
    """A filled replay and, per step ``(steps, S, T, ...)``, what the environments showed."""

    replay: FrameReplay
    obs: np.ndarray
    next_obs: np.ndarray
    first: np.ndarray
    game_over: np.ndarray
    ended: np.ndarray
    terminal: np.ndarray


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    """600 joint steps of 2 members x (Breakout, Pong) with game overs, truncations and phase resets."""
    configs = [AtariConfig(max_episode_steps=1000), AtariConfig(max_episode_steps=90)]
    tasks = [
        AtariVectorTask(g, 2, c) for g, c in zip(["ALE/Breakout-v5", "ALE/Pong-v5"], configs, strict=True)
    ]
    replay = FrameReplay(2, 2, CAPACITY, check_memory=False)
    rng = np.random.default_rng(0)
    steps, s, t = 600, 2, 2
    obs = np.zeros((steps, s, t, 4, 84, 84), np.uint8)
    next_obs = np.zeros_like(obs)
    first = np.zeros((steps, s, t), bool)
    game_over = np.zeros((steps, s, t), bool)
    ended = np.zeros((steps, s, t), bool)
    terminal = np.zeros((steps, s, t), bool)
    current = np.zeros((s, t, 4, 84, 84), np.uint8)
    is_first = np.ones((s, t), bool)
    for step in range(steps):
        if step in (0, 400):  # a phase boundary resets every environment (the trainer does at every epoch)
            for ti, task in enumerate(tasks):
                current[:, ti] = task.reset([10 * step + ti, 10 * step + ti + 5])
            is_first[:] = True
        actions = np.stack([rng.integers(0, task.n_actions, s) for task in tasks], axis=1)
        outs = [task.step(actions[:, ti]) for ti, task in enumerate(tasks)]
        reward = np.stack([o.learning_reward for o in outs], axis=1)
        term = np.stack([o.learning_terminal for o in outs], axis=1)
        replay.add(current[:, :, -1], actions, reward, term, is_first)
        obs[step], first[step], terminal[step] = current, is_first, term
        for ti, o in enumerate(outs):
            next_obs[step, :, ti] = o.next_obs
            game_over[step, :, ti] = o.terminated
            ended[step, :, ti] = o.terminated | o.truncated
            current[:, ti] = o.obs
        is_first = ended[step].copy()
    return Recorded(replay, obs, next_obs, first, game_over, ended, terminal)


def test_the_run_covers_what_must_be_tested(recorded: Recorded) -> None:
    r = recorded
    assert r.game_over[:, :, 0].sum() >= 2  # Breakout game overs
    assert (r.ended & ~r.game_over)[:, :, 1].sum() >= 4  # Pong truncations
    assert (r.terminal & ~r.game_over).sum() >= 4  # life losses (learning terminals, the game goes on)
    assert len(r.obs) > 3 * CAPACITY  # the rings wrapped around


def test_rebuilt_stacks_equal_the_environment_stacks(recorded: Recorded) -> None:
    r = recorded
    steps = len(r.obs)
    slot_step = {(steps - 1 - k) % CAPACITY: steps - 1 - k for k in range(CAPACITY)}
    valid = r.replay.valid_slots()
    for ring, slots in enumerate(valid):
        m, t = divmod(ring, 2)
        full = np.zeros((2, 2, len(slots)), np.int64)
        full[m, t] = slots
        batch = r.replay.gather(full)
        for b, slot in enumerate(slots):
            step = slot_step[int(slot)]
            np.testing.assert_array_equal(batch.obs[m, t, b].numpy(), r.obs[step, m, t])
            if not r.game_over[step, m, t]:  # after a game over slot p+1 holds the next game (never used)
                np.testing.assert_array_equal(batch.next_obs[m, t, b].numpy(), r.next_obs[step, m, t])
            assert batch.terminal[m, t, b] == r.terminal[step, m, t]


def test_exactly_the_transitions_with_a_known_successor_can_be_sampled(recorded: Recorded) -> None:
    r = recorded
    steps = len(r.obs)
    # Episode position of every step's observation, from the recorded episode starts.
    pos = np.zeros(r.first.shape, np.int64)
    for step in range(1, steps):
        pos[step] = np.where(r.first[step], 0, pos[step - 1] + 1)
    cut = np.zeros(r.first.shape, bool)
    cut[:-1] = r.first[1:] & ~r.terminal[:-1]  # a new episode follows without a terminal: successor unknown
    for ring, slots in enumerate(r.replay.valid_slots()):
        m, t = divmod(ring, 2)
        expected = []
        for age in range(CAPACITY - 1):  # the newest is never sampleable
            step = steps - CAPACITY + age
            if not cut[step, m, t] and min(pos[step, m, t], 3) <= age:
                expected.append(step % CAPACITY)
        assert list(slots) == expected
        assert len(slots) < CAPACITY - 1  # some were excluded in every ring


def test_sampling_is_uniform_over_the_sampleable_slots(recorded: Recorded) -> None:
    replay = recorded.replay
    rng = np.random.default_rng(0)
    slots = np.concatenate([replay.sample_slots(rng, 500) for _ in range(40)], axis=2)  # (2, 2, 20000)
    for ring, valid in enumerate(replay.valid_slots()):
        drawn = slots[divmod(ring, 2)]
        assert set(np.unique(drawn)) == set(valid)
        counts = np.bincount(drawn, minlength=CAPACITY)[valid]
        expected = drawn.size / len(valid)
        assert abs(counts - expected).max() < 5 * np.sqrt(expected)
    again = np.random.default_rng(0)
    assert np.array_equal(replay.sample_slots(again, 500), slots[..., :500])  # seeded: reproducible


def test_a_member_samples_the_same_alone_and_inside_a_population() -> None:
    rng = np.random.default_rng(3)
    pair = FrameReplay(2, 2, 60, frame_shape=(6, 6), check_memory=False)
    alone = FrameReplay(1, 2, 60, frame_shape=(6, 6), check_memory=False)
    for _ in range(150):
        step = (
            rng.integers(0, 256, (2, 2, 6, 6), dtype=np.uint8),
            rng.integers(0, 4, (2, 2)),
            rng.random((2, 2)),
            rng.random((2, 2)) < 0.05,
            rng.random((2, 2)) < 0.1,  # episode starts differ between members: so do their valid slots
        )
        pair.add(*step)
        alone.add(*(a[1:] for a in step))
    valid = [list(v) for v in pair.valid_slots()]
    assert valid[2:] == [list(v) for v in alone.valid_slots()] and valid[2] != valid[0]
    slots = pair.sample_slots([np.random.default_rng(0), np.random.default_rng(9)], 64)
    np.testing.assert_array_equal(slots[1:], alone.sample_slots([np.random.default_rng(9)], 64))
    torch.testing.assert_close(pair.gather(slots).obs[1:], alone.gather(slots[1:]).obs)


def test_reward_range_per_member_and_game_over_the_filled_slots() -> None:
    replay = FrameReplay(2, 2, 8, frame_shape=(6, 6), check_memory=False)
    assert np.isnan(replay.reward_range()[1]).all()
    rewards = np.arange(10 * 4, dtype=np.float32).reshape(10, 2, 2) * np.array([1, -1, 1, -1])[
        :, None
    ].reshape(2, 2)
    for reward in rewards:
        replay.add(
            np.zeros((2, 2, 6, 6), np.uint8),
            np.zeros((2, 2)),
            reward,
            np.zeros((2, 2), bool),
            np.zeros((2, 2), bool),
        )
    low, high = replay.reward_range()  # the last 8 of the 10 steps
    np.testing.assert_array_equal(low, rewards[2:].min(0))
    np.testing.assert_array_equal(high, rewards[2:].max(0))


def test_batch_layout(recorded: Recorded) -> None:
    replay = recorded.replay
    batch = replay.sample(np.random.default_rng(1), 32)
    assert batch.obs.shape == batch.next_obs.shape == (2, 2, 32, 4, 84, 84)
    assert batch.obs.dtype == batch.next_obs.dtype == torch.uint8
    assert batch.action.dtype == torch.int64 and batch.action.shape == (2, 2, 32)
    assert batch.reward.dtype == batch.terminal.dtype == torch.float32
    assert batch.action[:, 1].max() < 6 and batch.action[:, 0].max() < 4  # Pong 6, Breakout 4 actions


def test_memory_estimate_is_one_frame_per_transition() -> None:
    per_million = memory_bytes(1_000_000, n_tasks=1)
    assert per_million == 1_000_000 * (84 * 84 + 8)
    assert per_million <= 7.5e9
    assert memory_bytes(500_000, n_tasks=3, n_members=2) == 6 * memory_bytes(500_000, 1)
    replay = FrameReplay(2, 3, 1000, check_memory=False)
    allocated = sum(a.nbytes for a in (replay.frames, replay.action, replay.reward, replay.terminal))
    allocated += replay.episode_pos.nbytes + replay.cut.nbytes
    assert replay.memory_bytes() == allocated == memory_bytes(1000, 3, 2)


def test_a_replay_that_does_not_fit_is_refused(tmp_path, monkeypatch) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    8000000 kB\n")
    assert available_memory_bytes(meminfo) == 8_000_000 * 1024
    assert available_memory_bytes(tmp_path / "missing") is None
    check_fits(500_000, 1, available=8_192_000_000)  # 3.5 GB fits in 8.2 GB
    with pytest.raises(UserError) as err:
        check_fits(1_000_000, 2, available=8_192_000_000)
    message = str(err.value)
    assert "\n" not in message and "14.1 GB" in message and "at most 503,840 per task" in message
    monkeypatch.setattr("mtdqn.replay_frames.available_memory_bytes", lambda: 1 << 30)
    with pytest.raises(UserError):
        FrameReplay(1, 2, 100_000)
    FrameReplay(1, 2, 100_000, check_memory=False)  # allocation itself is lazy
