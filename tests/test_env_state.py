"""Recording an environment's internal state and rendering that exact moment later."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import mtdqn.analysis.render  # noqa: F401  (sets the headless SDL drivers before pygame loads)
from mtdqn.config import TaskConfig
from mtdqn.tasks import make_env
from mtdqn.tasks.env_state import get_env_state, render_env_state

ENV_IDS = [
    "CartPole-v1",
    "Acrobot-v1",
    "MountainCar-v0",
    "mtdqn/CarOnHill-v0",
    "mtdqn/InvertedPendulumDiscrete-v1",
]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_rendering_a_recorded_state_equals_rendering_the_environment_then(env_id):
    live = make_env(TaskConfig(env_id), render_mode="rgb_array")
    live.reset(seed=3)
    rng = np.random.default_rng(0)
    recorded, frames = [], []
    for _ in range(25):
        recorded.append(get_env_state(live))
        frames.append(live.render())
        _, _, terminated, truncated, _ = live.step(int(rng.integers(live.action_space.n)))
        if terminated or truncated:
            live.reset()
    fresh = make_env(TaskConfig(env_id), render_mode="rgb_array")
    fresh.reset(seed=99)  # another start: only the recorded state may decide the picture
    for state, frame in zip(recorded, frames, strict=True):
        np.testing.assert_array_equal(render_env_state(fresh, state), frame)
    assert not all(np.array_equal(frames[0], f) for f in frames[1:])  # the states really differ


def test_acrobot_state_is_not_its_observation():
    """The review wrote Acrobot's 6-d observation into its 4-d state slot and drew the wrong arm."""
    env = make_env(TaskConfig("Acrobot-v1"), render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    for _ in range(30):
        obs, *_ = env.step(2)
    state = get_env_state(env)
    assert state.shape == (4,)
    np.testing.assert_allclose(
        obs[:4],
        [np.cos(state[0]), np.sin(state[0]), np.cos(state[1]), np.sin(state[1])],
        rtol=1e-6,
        atol=1e-6,
    )
    right = env.render()
    wrong = render_env_state(gym.make("Acrobot-v1", render_mode="rgb_array").unwrapped, obs[:4])
    assert not np.array_equal(right, wrong)
    np.testing.assert_array_equal(render_env_state(env, state), right)
