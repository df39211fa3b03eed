"""Tests of the Car-On-Hill and inverted-pendulum vector tasks against the single environments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gymnasium.utils import seeding

from mtdqn.config import TaskConfig
from mtdqn.tasks.classic_envs import (
    CAR_ON_HILL_ID,
    INVERTED_PENDULUM_ID,
    CarOnHill,
    car_on_hill_step,
    car_on_hill_step_many,
    pendulum_step,
    pendulum_step_many,
)
from mtdqn.tasks.control import make_env
from mtdqn.tasks.vector import GymVectorTask, VectorStep
from mtdqn.tasks.vector_classic import (
    VECTOR_CLASSIC_TASKS,
    CarOnHillVector,
    InvertedPendulumVector,
)

FIELDS = ("next_obs", "reward", "terminated", "truncated", "obs")
SEEDS = [3, 1000, 7, 123456789, 0, 42, 2**40]

# The 19-step sequence from (-0.5, 0) to the top (see tests/test_classic_envs.py).
WINNING_19 = (0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)


def _assert_steps_equal(ours: VectorStep, ref: VectorStep, where: str) -> None:
    for field in FIELDS:
        a, b = getattr(ours, field), getattr(ref, field)
        assert a.dtype == b.dtype, f"{where}: {field} dtype {a.dtype} != {b.dtype}"
        assert a.shape == b.shape, f"{where}: {field} shape {a.shape} != {b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=f"{where}: {field}")


def _ref_states(ref: GymVectorTask) -> np.ndarray:
    return np.array([env.unwrapped.state for env in ref.envs], dtype=np.float64)


def _run_against_gym(ours, env_id: str, horizon: int | None, n_steps: int, policy) -> dict[str, int]:
    """Step ``ours`` and a loop of single environments with the same seeds and actions; all exact."""
    n = ours.n
    ref = GymVectorTask(TaskConfig(env_id, horizon=horizon), n)
    assert (ours.obs_dim, ours.n_actions, ours.horizon) == (ref.obs_dim, ref.n_actions, ref.horizon)
    first = ours.reset(SEEDS[:n])
    np.testing.assert_array_equal(first, ref.reset(SEEDS[:n]))
    assert first.dtype == np.float32 and first.shape == (n, 2)
    rng = np.random.default_rng(2024)
    counts = {"terminated": 0, "truncated": 0, "won": 0, "lost": 0}
    episode_t = np.zeros(n, np.int64)
    obs = first
    for t in range(n_steps):
        actions = policy(obs, episode_t, rng)
        a, b = ours.step(actions), ref.step(actions)
        _assert_steps_equal(a, b, f"{env_id} step {t}")
        np.testing.assert_array_equal(ours.state, _ref_states(ref), err_msg=f"{env_id} step {t}: state")
        ended = a.terminated | a.truncated
        episode_t = np.where(ended, 0, episode_t + 1)
        counts["terminated"] += int(a.terminated.sum())
        counts["truncated"] += int(a.truncated.sum())
        counts["won"] += int((a.reward == 1.0).sum())
        counts["lost"] += int((a.reward == -1.0).sum())
        obs = a.obs
    ref.close()
    return counts


# --- Car-On-Hill: bit-identical trajectories -------------------------------------------------------------


def _car_policy(obs: np.ndarray, episode_t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copy 0 plays the winning sequence, copy 1 the same with 15 % random actions, the others random."""
    n = len(obs)
    actions = rng.integers(2, size=n)
    plan = np.array(WINNING_19)[np.minimum(episode_t[:2], len(WINNING_19) - 1)]
    actions[:2] = np.where(np.array([True, rng.random() >= 0.15])[: min(n, 2)], plan[:n], actions[:2])
    return actions


@pytest.mark.parametrize("horizon", [25, None], ids=["short-horizon", "registered-horizon"])
def test_car_on_hill_bit_identical_to_single_envs(horizon: int | None) -> None:
    ours = CarOnHillVector(7, horizon)
    counts = _run_against_gym(ours, CAR_ON_HILL_ID, horizon, 500, _car_policy)
    assert counts["won"] >= 10  # copy 0 reaches the top every 19 steps
    assert counts["lost"] >= 3
    assert counts["truncated"] >= (10 if horizon else 1)


# --- Inverted pendulum: bit-identical trajectories, random numbers included ------------------------------


def _pendulum_policy(obs: np.ndarray, episode_t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copies 0-2 balance (push towards the side the pole falls to); the others act at random."""
    actions = rng.integers(3, size=len(obs))
    balance = np.where(obs[:3, 0] + 0.3 * obs[:3, 1] > 0.0, 2, 0)
    actions[:3] = balance[: len(obs)]
    return actions


@pytest.mark.parametrize(
    ("horizon", "block"), [(30, 1024), (30, 7), (None, 1)], ids=["h30", "h30-block7", "h3000-block1"]
)
def test_pendulum_bit_identical_to_single_envs(horizon: int | None, block: int) -> None:
    ours = InvertedPendulumVector(7, horizon, block=block)
    counts = _run_against_gym(ours, INVERTED_PENDULUM_ID, horizon, 500, _pendulum_policy)
    assert counts["terminated"] >= 50  # random copies fall within a few steps
    if horizon is not None:
        assert counts["truncated"] >= 10  # balancing copies reach the horizon
    else:
        assert counts["truncated"] == 0


def test_numpy_uniform_is_low_plus_range_times_random() -> None:
    # The assumption behind the pre-drawn blocks: uniform(a, b) == a + (b - a) * random(), and a block
    # random(k) is the next k values of random() (checked here for this numpy build).
    for seed in range(20):
        a, b = seeding.np_random(seed)[0], seeding.np_random(seed)[0]
        lows_highs = [(-math.pi / 8.0, math.pi / 8.0), (-10.0, 10.0)]
        singles = np.array([a.uniform(*lows_highs[k % 3 == 0]) for k in range(50)])
        block = np.concatenate([b.random(20), b.random(30)])
        lows = np.array([lows_highs[k % 3 == 0][0] for k in range(50)])
        highs = np.array([lows_highs[k % 3 == 0][1] for k in range(50)])
        np.testing.assert_array_equal(singles, lows + (highs - lows) * block)


# --- copies are independent -----------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", list(VECTOR_CLASSIC_TASKS))
def test_copy_does_not_depend_on_the_others(env_id: str) -> None:
    cls = VECTOR_CLASSIC_TASKS[env_id]
    many, one = cls(5, 25), cls(1, 25)
    seeds = [11, 12, 13, 14, 15]
    np.testing.assert_array_equal(many.reset(seeds)[2], one.reset([13])[0])
    rng = np.random.default_rng(9)
    n_ended = 0
    for _ in range(300):
        actions = rng.integers(many.n_actions, size=5)
        a, b = many.step(actions), one.step(actions[2:3])
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(a, field)[2], getattr(b, field)[0])
        n_ended += int(b.terminated[0] or b.truncated[0])
    np.testing.assert_array_equal(many.state[2], one.state[0])
    assert n_ended >= 3


def test_reseeding_repeats_and_seeds_differ() -> None:
    task = InvertedPendulumVector(3, 20, block=4)
    first = task.reset([1, 2, 1])
    np.testing.assert_array_equal(first[0], first[2])
    assert not np.array_equal(first[0], first[1])
    run1 = [task.step(np.array([0, 1, 2])).obs for _ in range(30)]
    np.testing.assert_array_equal(task.reset([1, 2, 1]), first)
    run2 = [task.step(np.array([0, 1, 2])).obs for _ in range(30)]
    np.testing.assert_array_equal(np.stack(run1), np.stack(run2))


# --- Car-On-Hill: substeps crossing p = 0 ----------------------------------------------------------------

# States next to p = 0, moving across it (both ways) or not, and far from it.
_CAR_STATES = np.array(
    [
        [-0.05, 1.0],  # crosses to the right
        [0.05, -1.0],  # crosses to the left
        [-0.5, 0.0],  # the valley: stays left
        [-0.002, 0.3],  # crosses in the first substep
        [0.3, 0.5],  # stays right
        [0.001, -0.02],  # slow: crosses left late
        [-0.9, 2.8],  # fast from the far left
        [0.0, 0.0],  # exactly at the kink
        [-0.0, 0.7],
    ]
)


@pytest.mark.parametrize("force", [4.0, -4.0])
def test_car_crossing_matches_scalar_integrator(force: float) -> None:
    p, v = _CAR_STATES[:, 0].copy(), _CAR_STATES[:, 1].copy()
    u = np.full(len(p), force)
    u[::2] = -force  # mixed forces
    got_p, got_v = car_on_hill_step_many(p, v, u)
    want = np.array([car_on_hill_step(float(a), float(b), float(c)) for a, b, c in zip(p, v, u, strict=True)])
    np.testing.assert_array_equal(got_p, want[:, 0])
    np.testing.assert_array_equal(got_v, want[:, 1])
    side_changed = (got_p < 0.0) != (p < 0.0)
    assert side_changed.any() and not side_changed.all()


def test_car_crossing_through_the_vector_task() -> None:
    n = len(_CAR_STATES)
    task = CarOnHillVector(n)
    task.reset(range(n))
    task.state[:] = _CAR_STATES
    singles = [CarOnHill() for _ in range(n)]
    for env, state in zip(singles, _CAR_STATES, strict=True):
        env.reset(options={"state": tuple(state)})
    actions = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1])
    followed = np.ones(n, bool)  # copies still in their hand-set episode
    for t in range(15):
        left_before = task.state[:, 0] < 0.0
        out = task.step(actions)
        for i in np.flatnonzero(followed):
            obs, reward, terminated, _, _ = singles[i].step(int(actions[i]))
            np.testing.assert_array_equal(out.next_obs[i], obs, err_msg=f"step {t} copy {i}")
            assert out.reward[i] == reward and out.terminated[i] == terminated
            if terminated:
                followed[i] = False  # restarted in the vector; the single env is not followed further
            else:
                assert task.state[i].tolist() == list(singles[i].state)
        if t == 0:  # some rows crossed p = 0 in the first step, others not
            crossed = (task.state[:, 0] < 0.0) != left_before
            assert crossed.any() and not crossed.all()
    assert followed.sum() >= 3


@pytest.mark.parametrize("p0", [-0.5, 0.3], ids=["all-left", "all-right"])
def test_car_all_rows_on_one_side(p0: float) -> None:
    p = np.full(6, p0) + np.linspace(0.0, 0.05, 6)
    v = np.linspace(-0.5, 0.5, 6)
    u = np.array([4.0, -4.0] * 3)
    got_p, got_v = car_on_hill_step_many(p, v, u)
    want = np.array([car_on_hill_step(float(a), float(b), float(c)) for a, b, c in zip(p, v, u, strict=True)])
    np.testing.assert_array_equal(np.stack([got_p, got_v], axis=1), want)


def test_pendulum_step_many_matches_scalar() -> None:
    rng = np.random.default_rng(1)
    theta, omega, u = rng.uniform(-3, 3, 300), rng.uniform(-8, 8, 300), rng.uniform(-60, 60, 300)
    got = np.stack(pendulum_step_many(theta, omega, u), axis=1)
    rows = zip(theta, omega, u, strict=True)
    want = np.array([pendulum_step(float(a), float(b), float(c)) for a, b, c in rows])
    np.testing.assert_array_equal(got, want)


# --- interface ------------------------------------------------------------------------------------------


def test_registry_defaults_and_checks() -> None:
    assert dict(VECTOR_CLASSIC_TASKS) == {
        CAR_ON_HILL_ID: CarOnHillVector,
        INVERTED_PENDULUM_ID: InvertedPendulumVector,
    }
    for env_id, cls in VECTOR_CLASSIC_TASKS.items():
        env = make_env(TaskConfig(env_id))
        assert cls(2).horizon == cls(2, None).horizon == env.spec.max_episode_steps
        assert (cls.obs_dim, cls.n_actions) == (env.observation_space.shape[0], env.action_space.n)
        env.close()
        task = cls(2, 10)
        with pytest.raises(RuntimeError):
            task.step(np.zeros(2, np.int64))
        with pytest.raises(ValueError):
            task.reset([1])
        task.reset([1, 2])
        with pytest.raises(ValueError):
            task.step(np.zeros(3, np.int64))
        with pytest.raises(ValueError):
            task.step(np.array([0, cls.n_actions]))
        with pytest.raises(ValueError):
            cls(0)
        with pytest.raises(ValueError):
            cls(1, 0)
    assert CarOnHillVector(3).reset([0, 1, 2]).tolist() == [[-0.5, 0.0]] * 3
