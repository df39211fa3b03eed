"""Tasks: presets, space checks, horizon vs terminal in the stored transitions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import small_config

from mtdqn.config import TASK_PRESETS, TaskConfig
from mtdqn.errors import UserError
from mtdqn.tasks import make_env, task_specs
from mtdqn.train import Trainer


def test_deramo_preset_is_the_papers_task_set() -> None:
    specs = task_specs(TASK_PRESETS["deramo-gym"])
    got = [(s.name, s.obs_dim, s.n_actions, s.gamma, s.horizon) for s in specs]
    assert got == [
        ("Cart-Pole", 4, 2, 0.99, 500),
        ("Acrobot", 6, 3, 0.99, 1000),
        ("Mountain-Car", 2, 3, 0.99, 1000),
        ("Car-On-Hill", 2, 2, 0.95, 100),
        ("Inverted-Pendulum", 2, 3, 0.95, 3000),
    ]


def test_registered_limit_is_the_default_horizon() -> None:
    assert task_specs([TaskConfig("MountainCar-v0")])[0].horizon == 200


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("NoSuchEnv-v0", "unknown environment"),
        ("Pendulum-v1", "discrete actions"),
        ("mtdqn-test/ImageObs-v0", "image observations"),
    ],
)
def test_unusable_environments_are_user_errors(env_id: str, message: str) -> None:
    if env_id.startswith("mtdqn-test/") and env_id not in gym.registry:
        gym.register(env_id, entry_point=_ImageEnv)
    with pytest.raises(UserError, match=message):
        make_env(TaskConfig(env_id))


class _ImageEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)


def _stored(trainer: Trainer) -> dict[str, np.ndarray]:
    rows = trainer.replay.storage[0, :, : trainer.replay.size].numpy()
    d = trainer.replay.obs_dim
    return {"obs": rows[..., :d], "next_obs": rows[..., d : 2 * d], "terminal": rows[..., 2 * d + 2]}


def test_horizon_cut_is_stored_as_non_terminal_and_failure_as_terminal(tmp_path) -> None:
    config = small_config()
    config.tasks = [TaskConfig("CartPole-v1", horizon=5), TaskConfig("CartPole-v1", horizon=500)]
    trainer = Trainer(config, tmp_path, progress=False)
    trainer._reset_envs("test")
    for _ in range(60):  # always push left: the pole falls in about 10 steps (a true terminal)
        trainer._step_envs(np.zeros((1, 2), dtype=np.int64))
    stored = _stored(trainer)
    # Task 0 is cut by its horizon every 5 steps before it can fall: never terminal.
    assert stored["terminal"][0].sum() == 0
    # The step after a cut starts from a reset state, not from the cut transition's next state.
    assert not np.allclose(stored["obs"][0, 5], stored["next_obs"][0, 4])
    assert np.allclose(stored["obs"][0, 4], stored["next_obs"][0, 3])
    # Task 1 falls: terminal exactly at the steps where the pole angle or cart left the allowed range.
    ends = np.flatnonzero(stored["terminal"][1])
    assert len(ends) >= 3
    angle = np.abs(stored["next_obs"][1, ends, 2])
    position = np.abs(stored["next_obs"][1, ends, 0])
    assert np.all((angle > 0.2095) | (position > 2.4))
    not_ended = np.setdiff1d(np.arange(60), ends)
    assert np.all(np.abs(stored["next_obs"][1, not_ended, 2]) <= 0.2095)
