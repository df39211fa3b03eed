"""Tests of the numpy Cart-Pole, Acrobot and Mountain-Car vectors against Gymnasium's own environments."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from mtdqn.config import TaskConfig
from mtdqn.tasks.control import make_env
from mtdqn.tasks.vector import GymVectorTask, VectorStep
from mtdqn.tasks.vector_gym import (
    VECTOR_GYM_TASKS,
    AcrobotVector,
    CartPoleVector,
    MountainCarVector,
    _pow2,
)

ENV_IDS = list(VECTOR_GYM_TASKS)
FIELDS = ("next_obs", "reward", "terminated", "truncated", "obs")


def _gym_state(env: gym.Env) -> np.ndarray:
    return np.asarray(env.unwrapped.state, dtype=np.float64)


def _assert_steps_equal(ours: VectorStep, ref: VectorStep, where: str) -> None:
    for field in FIELDS:
        a, b = getattr(ours, field), getattr(ref, field)
        assert a.dtype == b.dtype, f"{where}: {field} dtype {a.dtype} != {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=f"{where}: {field}")


def _actions(env_id: str, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random actions for copies 3.., and for copies 0-2 an energy-pumping rule (with 20 % random actions)
    so that Acrobot and Mountain-Car episodes also reach their terminal states."""
    n_actions = VECTOR_GYM_TASKS[env_id].n_actions
    actions = rng.integers(n_actions, size=len(obs))
    if env_id != "CartPole-v1":
        speed = obs[:3, 5] if env_id == "Acrobot-v1" else obs[:3, 1]
        pump = np.where(speed > 0, 2, 0)
        actions[:3] = np.where(rng.random(3) < 0.2, actions[:3], pump)
    return actions


# --- bit-identical trajectories, no re-synchronisation ---------------------------------------------------


@pytest.mark.parametrize("horizon", [37, None], ids=["short-horizon", "registered-horizon"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_trajectories_bit_identical_to_gymnasium(env_id: str, horizon: int | None) -> None:
    n, n_steps = 7, 1200
    ours = VECTOR_GYM_TASKS[env_id](n, horizon)
    ref = GymVectorTask(TaskConfig(env_id, horizon=horizon), n)
    assert (ours.obs_dim, ours.n_actions, ours.horizon) == (ref.obs_dim, ref.n_actions, ref.horizon)
    seeds = [3, 1000, 7, 123456789, 0, 42, 2**40]
    first = ours.reset(seeds)
    np.testing.assert_array_equal(first, ref.reset(seeds))
    assert first.dtype == np.float32 and first.shape == (n, ours.obs_dim)

    rng = np.random.default_rng(2024)
    n_terminated = n_truncated = 0
    obs = first
    for t in range(n_steps):
        actions = _actions(env_id, obs, rng)
        a, b = ours.step(actions), ref.step(actions)
        _assert_steps_equal(a, b, f"{env_id} step {t}")
        # The internal float64 states agree exactly too (the strongest check against slow drift).
        np.testing.assert_array_equal(ours.state, np.stack([_gym_state(e) for e in ref.envs]))
        n_terminated += int(a.terminated.sum())
        n_truncated += int(a.truncated.sum())
        obs = a.obs
    # Both ways an episode can end (and so the auto-reset) were exercised.
    # (A random cart-pole falls long before 500 steps; no car reaches the flag within 37 steps.)
    assert n_truncated >= 3 or (env_id == "CartPole-v1" and horizon is None)
    assert n_terminated >= 3 or (env_id != "CartPole-v1" and horizon is not None)
    ref.close()


# --- one step from states spread over the whole domain (wrap, bounds, wall, goal) ------------------------


def _random_states(env_id: str, rng: np.random.Generator, m: int) -> np.ndarray:
    if env_id == "CartPole-v1":
        return rng.uniform([-2.4, -3.0, -0.21, -4.0], [2.4, 3.0, 0.21, 4.0], (m, 4))
    if env_id == "Acrobot-v1":
        high = np.array([np.pi, np.pi, 4 * np.pi, 9 * np.pi])
        return rng.uniform(-high, high, (m, 4))
    states = rng.uniform([-1.2, -0.07], [0.6, 0.07], (m, 2))
    states[: m // 10] = [[-1.19, -0.06]] * (m // 10)  # driven into the left wall
    return states


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_one_step_from_arbitrary_states(env_id: str) -> None:
    m = 1500
    rng = np.random.default_rng(5)
    ours = VECTOR_GYM_TASKS[env_id](m)
    ours.reset(range(m))
    states = _random_states(env_id, rng, m)
    actions = rng.integers(ours.n_actions, size=m)
    ours.state = states.copy()
    out = ours.step(actions)

    env = make_env(TaskConfig(env_id))
    env.reset(seed=0)
    raw = env.unwrapped
    next_states = np.empty_like(states)
    for i in range(m):
        raw.state = tuple(states[i]) if env_id == "MountainCar-v0" else states[i].copy()
        if hasattr(raw, "steps_beyond_terminated"):
            raw.steps_beyond_terminated = None
        obs, reward, terminated, _, _ = raw.step(int(actions[i]))
        next_states[i] = _gym_state(env)
        assert np.array_equal(obs, out.next_obs[i]), (i, obs, out.next_obs[i])
        assert reward == out.reward[i] and terminated == out.terminated[i], i
    alive = ~out.terminated  # the others were restarted
    np.testing.assert_array_equal(ours.state[alive], next_states[alive])
    assert not out.truncated.any()
    assert out.terminated.any()

    if env_id == "Acrobot-v1":  # the velocity bounds and the angle wrap were both exercised
        assert (np.abs(next_states[:, 3]) == 9 * np.pi).any()
        assert (np.abs(next_states[:, 2]) == 4 * np.pi).any()
        assert (np.abs(states[:, :2] + 0.2 * states[:, 2:]) > np.pi).any()
    if env_id == "MountainCar-v0":  # the inelastic wall was hit
        assert ((next_states[:, 0] == -1.2) & (next_states[:, 1] == 0.0)).any()
    env.close()


def test_pow2_matches_numpy_scalar_power() -> None:
    # Gymnasium's Acrobot squares numpy scalars with ``**`` (C pow); x * x differs from it in rare cases.
    x = np.random.default_rng(0).uniform(-30.0, 30.0, 20000)
    np.testing.assert_array_equal(_pow2(x), np.array([np.float64(v) ** 2 for v in x]))


# --- copies are independent -----------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_copy_does_not_depend_on_the_others(env_id: str) -> None:
    cls = VECTOR_GYM_TASKS[env_id]
    many, one = cls(5, 25), cls(1, 25)
    seeds = [11, 12, 13, 14, 15]
    np.testing.assert_array_equal(many.reset(seeds)[2], one.reset([13])[0])
    rng = np.random.default_rng(9)
    for _ in range(300):
        actions = rng.integers(many.n_actions, size=5)
        a, b = many.step(actions), one.step(actions[2:3])
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(a, field)[2], getattr(b, field)[0])
    np.testing.assert_array_equal(many.state[2], one.state[0])


def test_reseeding_repeats_and_seeds_differ() -> None:
    task = CartPoleVector(3, 20)
    first = task.reset([1, 2, 1])
    np.testing.assert_array_equal(first[0], first[2])
    assert not np.array_equal(first[0], first[1])
    run1 = [task.step(np.array([0, 1, 1])).obs for _ in range(50)]
    np.testing.assert_array_equal(task.reset([1, 2, 1]), first)
    run2 = [task.step(np.array([0, 1, 1])).obs for _ in range(50)]
    np.testing.assert_array_equal(np.stack(run1), np.stack(run2))


# --- terminal and truncation flags on hand-built cases ---------------------------------------------------


def test_cartpole_terminal_beyond_angle_limit() -> None:
    task = CartPoleVector(3, 500)
    task.reset([0, 1, 2])
    limit = 12 * 2 * np.pi / 360
    # Copy 0 crosses the angle limit in this step, copy 1 the track edge, copy 2 stays inside.
    task.state[:] = [[0.0, 0.0, limit - 1e-5, 1.0], [2.39, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    out = task.step(np.array([1, 1, 1]))
    np.testing.assert_array_equal(out.terminated, [True, True, False])
    np.testing.assert_array_equal(out.truncated, [False, False, False])
    np.testing.assert_array_equal(out.reward, [1.0, 1.0, 1.0])  # Gymnasium rewards the terminating step too
    assert out.next_obs[0, 2] > limit and out.next_obs[1, 0] > 2.4
    assert np.all(np.abs(out.obs[:2]) <= 0.05)  # fresh start states in [-0.05, 0.05]
    np.testing.assert_array_equal(out.obs[2], out.next_obs[2])
    np.testing.assert_array_equal(task.elapsed, [0, 0, 1])


def test_horizon_truncates_and_terminal_wins_at_the_horizon() -> None:
    horizon = 5
    task = CartPoleVector(2, horizon)
    task.reset([4, 5])
    for t in range(horizon - 1):
        out = task.step(np.array([0, 1]))
        assert not (out.terminated.any() or out.truncated.any()), t
    task.state[1] = [0.0, 0.0, 0.25, 0.0]  # copy 1 also falls on the last step
    out = task.step(np.array([0, 1]))
    np.testing.assert_array_equal(out.truncated, [True, False])
    np.testing.assert_array_equal(out.terminated, [False, True])
    np.testing.assert_array_equal(task.elapsed, [0, 0])
    assert not np.array_equal(out.obs, out.next_obs)


def test_acrobot_terminal_when_tip_above_line() -> None:
    task = AcrobotVector(2)
    task.reset([0, 1])
    task.state[:] = [[np.pi, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]  # upright vs hanging at rest
    out = task.step(np.array([1, 1]))
    np.testing.assert_array_equal(out.terminated, [True, False])
    np.testing.assert_array_equal(out.reward, [0.0, -1.0])
    assert not out.truncated.any()


def test_mountain_car_goal_and_wall() -> None:
    task = MountainCarVector(3)
    task.reset([0, 1, 2])
    task.state[:] = [[0.49, 0.05], [0.49, -0.05], [-1.19, -0.07]]
    out = task.step(np.array([2, 0, 0]))
    np.testing.assert_array_equal(out.terminated, [True, False, False])
    np.testing.assert_array_equal(out.reward, [-1.0, -1.0, -1.0])
    np.testing.assert_array_equal(task.state[2], [-1.2, 0.0])  # stopped by the left wall
    assert out.obs[0, 1] == 0.0 and -0.6 <= out.obs[0, 0] <= -0.4  # restarted at rest


# --- interface details -----------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registry_defaults_and_errors(env_id: str) -> None:
    cls = VECTOR_GYM_TASKS[env_id]
    task = cls(2)
    assert task.horizon == gym.spec(env_id).max_episode_steps
    env = make_env(TaskConfig(env_id))
    assert task.obs_dim == env.observation_space.shape[0] and task.n_actions == env.action_space.n
    env.close()
    with pytest.raises(RuntimeError):
        task.step(np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        task.reset([1, 2, 3])
    task.reset([1, 2])
    with pytest.raises(ValueError):
        task.step(np.array([0, task.n_actions]))
    with pytest.raises(ValueError):
        task.step(np.zeros(3, np.int64))
    with pytest.raises(ValueError):
        cls(0)
