"""Atari emulator states: a recorded moment re-renders its exact frame and continues the same game."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from mtdqn.config_atari import AtariConfig
from mtdqn.errors import UserError
from mtdqn.tasks.atari import make_atari_env
from mtdqn.tasks.env_state import get_env_state, render_env_state, set_env_state


def _record(env_id: str, cfg: AtariConfig, steps: int = 50):
    live = make_atari_env(env_id, cfg, render_mode="rgb_array", record_states=True)
    live.reset(seed=3)
    rng = np.random.default_rng(0)
    states, frames, actions = [], [], []
    for _ in range(steps):
        states.append(get_env_state(live))
        frames.append(live.render().copy())
        actions.append(int(rng.integers(live.action_space.n)))
        *_, terminated, truncated, _ = live.step(actions[-1])
        if terminated or truncated:
            live.reset()
    return states, frames, actions


@pytest.mark.parametrize(
    ("env_id", "cfg"),
    [
        ("ALE/Breakout-v5", AtariConfig()),
        ("ALE/MsPacman-v5", AtariConfig(noop_max=0)),  # no FIRE, no no-op: a reset with no frame since
        ("ALE/Pong-v5", AtariConfig(repeat_action_probability=0.25)),  # sticky actions: the RNG is restored
    ],
)
def test_a_restored_state_renders_the_frame_of_that_moment(env_id: str, cfg: AtariConfig) -> None:
    states, frames, actions = _record(env_id, cfg)
    fresh = make_atari_env(env_id, cfg, render_mode="rgb_array", record_states=True)
    fresh.reset(seed=99)  # another game: only the recorded state may decide the picture
    for state, frame in zip(states, frames, strict=True):
        np.testing.assert_array_equal(render_env_state(fresh, state), frame)
    assert not all(np.array_equal(frames[0], f) for f in frames[1:])
    for k in (0, 20, 40):  # the restored emulator goes on exactly as the recorded one did
        set_env_state(fresh, states[k])
        fresh.step(actions[k])
        np.testing.assert_array_equal(fresh.render(), frames[k + 1])
        np.testing.assert_array_equal(get_env_state(fresh), states[k + 1])


def test_an_atari_env_without_recorder_is_a_user_error() -> None:
    env = make_atari_env("ALE/Pong-v5", render_mode="rgb_array")
    env.reset(seed=0)
    with pytest.raises(UserError, match="record_states=True"):
        get_env_state(env)
    with pytest.raises(UserError):
        get_env_state(gym.make("ALE/Pong-v5"))
