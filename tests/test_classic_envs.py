"""Tests of the Car-On-Hill and inverted-pendulum environments."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from mtdqn.config import TaskConfig
from mtdqn.errors import UserError
from mtdqn.tasks.classic_envs import (
    CAR_ON_HILL_ID,
    INVERTED_PENDULUM_ID,
    CarOnHill,
    InvertedPendulumDiscrete,
    car_on_hill_step,
    hill,
    pendulum_step,
    register_envs,
)
from mtdqn.tasks.control import make_env

# A 19-step action sequence from (-0.5, 0) to the top, found offline by an exhaustive search over all
# 2**19 action sequences (pruned at termination): no sequence of 18 steps or fewer reaches p > 1, and
# exactly 6 sequences of 19 steps do. This is the optimum of the paper (discounted return 0.95**18).
WINNING_19 = (0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)


# --- reference dynamics, written out independently from the formulas -----------------------------------


def _car_rhs(_t: float, y: np.ndarray, u: float) -> list[float]:
    p, v = y
    if p < 0:
        h1, h2 = 2 * p + 1, 2.0
    else:
        h1 = 1 / (1 + 5 * p**2) ** 1.5
        h2 = -15 * p / (1 + 5 * p**2) ** 2.5
    return [v, (u - 9.81 * h1 - v**2 * h1 * h2) / (1 + h1**2)]


def _pend_rhs(_t: float, y: np.ndarray, u: float) -> list[float]:
    th, w = y
    m, big_m, length, g = 2.0, 8.0, 0.5, 9.8
    a = 1 / (m + big_m)
    # Lagoudakis & Parr (2003), l the pendulum's length, written as in MushroomRL (the paper's environment)
    num = g * math.sin(th) - a * m * length * w**2 * math.sin(2 * th) / 2 - a * math.cos(th) * u
    return [w, num / ((4 / 3) * length - a * m * length * math.cos(th) ** 2)]


def _solve(rhs, y0: tuple[float, float], u: float) -> np.ndarray:
    sol = solve_ivp(rhs, (0.0, 0.1), list(y0), args=(u,), method="DOP853", rtol=1e-11, atol=1e-11)
    assert sol.success
    return sol.y[:, -1]


def _car_energy(p: float, v: float, u: float) -> float:
    """Conserved under constant force: kinetic energy along the curve + gravity - work of the force."""
    h1 = 2 * p + 1 if p < 0 else 1 / (1 + 5 * p * p) ** 1.5
    return 0.5 * v * v * (1 + h1 * h1) + 9.81 * hill(p) - u * p


# --- Car-On-Hill ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "v", "u"),
    [
        (-0.5, 0.0, 4.0),
        (-0.5, 0.0, -4.0),
        (-0.05, 1.0, 4.0),  # crosses p = 0 to the right
        (0.05, -1.0, -4.0),  # crosses p = 0 to the left
        (0.4, 2.0, -4.0),
        (-0.9, 2.8, 4.0),
        (-0.1, -2.9, -4.0),
        (0.9, 0.5, 4.0),
    ],
)
def test_car_rk4_matches_scipy(p: float, v: float, u: float) -> None:
    got = np.array(car_on_hill_step(p, v, u))
    want = _solve(_car_rhs, (p, v), u)
    np.testing.assert_allclose(got, want, rtol=0.0, atol=1e-6)


def test_car_env_step_matches_scipy() -> None:
    env = CarOnHill()
    env.reset(options={"state": (-0.02, 0.8)})
    _, _, terminated, _, _ = env.step(0)
    assert not terminated
    np.testing.assert_allclose(env.state, _solve(_car_rhs, (-0.02, 0.8), -4.0), rtol=0.0, atol=1e-6)


def test_car_conserves_energy_across_the_kink() -> None:
    p, v, u = -0.05, 0.9, 4.0
    e0 = _car_energy(p, v, u)
    crossings = 0
    for _ in range(100):
        p2, v2 = car_on_hill_step(p, v, u)
        crossings += (p2 < 0) != (p < 0)
        p, v = p2, v2
        assert abs(_car_energy(p, v, u) - e0) < 1e-6
    assert crossings >= 5  # the car rocks back and forth over p = 0


def test_car_reset_and_spaces() -> None:
    env = CarOnHill()
    obs, info = env.reset(seed=123)
    assert env.state == (-0.5, 0.0)
    assert obs.dtype == np.float32 and obs.tolist() == [-0.5, 0.0]
    assert info == {}
    assert env.observation_space.contains(obs)
    assert env.action_space.n == 2
    env.step(1)
    env.reset(seed=7)
    assert env.state == (-0.5, 0.0)
    env.reset(options={"state": (0.25, -1.5)})
    assert env.state == (0.25, -1.5)


def test_car_is_deterministic() -> None:
    actions = [int(a) for a in np.random.default_rng(0).integers(0, 2, size=60)]
    trajs = []
    for seed in (1, 2):
        env = CarOnHill()
        env.reset(seed=seed)
        traj = []
        for a in actions:
            obs, r, term, trunc, _ = env.step(a)
            traj.append((env.state, obs.tobytes(), r, term, trunc))
            if term:
                break
        trajs.append(traj)
    assert trajs[0] == trajs[1]


def test_car_constant_forces_stay_in_the_valley() -> None:
    # Pushing either way from the bottom cannot climb out: the car oscillates in the frictionless valley,
    # and since the valley is a parabola symmetric about p = -0.5 the two motions mirror each other.
    results = {}
    for action in (0, 1):
        env = CarOnHill()
        env.reset()
        ps = []
        for _ in range(100):
            _, r, term, trunc, _ = env.step(action)
            assert r == 0.0 and not term and not trunc
            ps.append(env.state[0])
        results[action] = np.array(ps)
    left, right = results[0], results[1]
    assert -0.91 < left.min() < -0.90 and left.max() <= -0.5 + 1e-3
    assert -0.1 < right.max() < -0.09 and right.min() >= -0.5 - 1e-3
    np.testing.assert_allclose(left + right, -1.0, atol=1e-9)


def test_car_optimal_sequence_reaches_top_at_step_19() -> None:
    env = CarOnHill()
    env.reset()
    rewards = []
    for a in WINNING_19:
        _, r, term, trunc, _ = env.step(a)
        rewards.append(r)
        assert not trunc
        if term:
            break
    assert rewards == [0.0] * 18 + [1.0]
    p, v = env.state
    assert p > 1.0 and abs(v) <= 3.0
    assert sum(0.95**t * r for t, r in enumerate(rewards)) == pytest.approx(0.95**18)


def test_car_too_fast_loses() -> None:
    env = CarOnHill()
    env.reset(options={"state": (0.0, -2.95)})
    _, r, term, _, _ = env.step(0)
    assert term and r == -1.0 and env.state[1] < -3.0


def test_car_timelimit_truncates_at_100() -> None:
    register_envs()
    env = gym.make(CAR_ON_HILL_ID)
    env.reset(seed=0)
    for t in range(1, 101):
        _, r, term, trunc, _ = env.step(t % 2)
        assert r == 0.0 and not term
        assert trunc == (t == 100)
    env.close()


# --- inverted pendulum ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("th", "w", "u"),
    [(0.0, 0.0, 55.0), (0.3, 0.0, -3.7), (-1.2, 2.5, 41.0), (1.0, -4.0, -58.0), (0.1, 6.0, 0.0)],
)
def test_pendulum_rk4_matches_scipy(th: float, w: float, u: float) -> None:
    got = np.array(pendulum_step(th, w, u))
    want = _solve(_pend_rhs, (th, w), u)
    np.testing.assert_allclose(got, want, rtol=0.0, atol=1e-6)


@pytest.mark.parametrize("action", [0, 1, 2])
def test_pendulum_env_step_matches_scipy_with_same_noise(action: int) -> None:
    env = InvertedPendulumDiscrete()
    env.reset(seed=11, options={"state": (0.2, -0.4)})
    twin = copy.deepcopy(env.np_random)
    u = (-50.0, 0.0, 50.0)[action] + twin.uniform(-10.0, 10.0)
    env.step(action)
    assert env.last_u == u
    np.testing.assert_allclose(env.state, _solve(_pend_rhs, (0.2, -0.4), u), rtol=0.0, atol=1e-6)


def test_pendulum_reset() -> None:
    env = InvertedPendulumDiscrete()
    thetas = []
    for seed in range(50):
        obs, _ = env.reset(seed=seed)
        assert obs.dtype == np.float32 and obs.shape == (2,)
        assert env.state[1] == 0.0
        thetas.append(env.state[0])
    assert max(abs(t) for t in thetas) <= math.pi / 8
    assert len(set(thetas)) == 50
    env.reset(options={"state": (0.1, 0.2)})
    assert env.state == (0.1, 0.2)
    assert env.action_space.n == 3


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pendulum_falls_without_force(seed: int) -> None:
    env = InvertedPendulumDiscrete()
    env.reset(seed=seed, options={"state": (0.3, 0.0)})
    steps = 0
    term = False
    while not term and steps < 10:
        _, r, term, trunc, _ = env.step(1)
        steps += 1
        assert not trunc
    assert term and r == -1.0
    assert abs(env.state[0]) > math.pi / 2
    # 6-7 steps (the noise, |u| <= 10, decides); the half-length formula used before fell in 5
    assert steps == (6, 7, 6, 6)[seed]


def _pendulum_trajectory(seed: int, n: int = 30) -> list[tuple[float, float]]:
    env = InvertedPendulumDiscrete()
    env.reset(seed=seed, options={"state": (0.0, 0.0)})
    traj = []
    for _ in range(n):
        _, _, term, _, _ = env.step(1)
        traj.append(env.state)
        if term:
            break
    return traj


def test_pendulum_seeding() -> None:
    a, b, c = _pendulum_trajectory(5), _pendulum_trajectory(5), _pendulum_trajectory(6)
    assert a == b
    assert a != c


def test_pendulum_theta_wrapped() -> None:
    env = InvertedPendulumDiscrete()
    env.reset(seed=0, options={"state": (1.5, 25.0)})
    _, r, term, _, _ = env.step(1)
    theta = env.state[0]
    assert -math.pi <= theta < math.pi
    assert theta < 0.0  # went past pi and wrapped round
    assert term and r == -1.0
    rng = np.random.default_rng(0)
    for seed in range(20):
        env.reset(seed=seed)
        for _ in range(200):
            obs, _, term, _, _ = env.step(int(rng.integers(3)))
            assert -math.pi <= env.state[0] < math.pi
            if term:
                assert abs(env.state[0]) > math.pi / 2
                break
            assert abs(obs[0]) <= math.pi / 2 + 1e-6


def test_pendulum_registered() -> None:
    register_envs()
    env = gym.make(INVERTED_PENDULUM_ID)
    assert env.spec is not None and env.spec.max_episode_steps == 3000
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2,)
    env.close()


# --- registration and rendering -------------------------------------------------------------------------


def test_register_twice() -> None:
    register_envs()
    register_envs()
    assert gym.spec(CAR_ON_HILL_ID).max_episode_steps == 100
    assert gym.spec(INVERTED_PENDULUM_ID).max_episode_steps == 3000


def _red_centroid_col(img: np.ndarray) -> float:
    red = (img[..., 0] == 200) & (img[..., 1] == 30) & (img[..., 2] == 30)
    assert red.any()
    return float(np.nonzero(red)[1].mean())


def test_car_render() -> None:
    env = CarOnHill(render_mode="rgb_array")
    env.reset()
    img0 = env.render()
    assert isinstance(img0, np.ndarray) and img0.dtype == np.uint8
    assert img0.ndim == 3 and img0.shape[2] == 3
    env.reset(options={"state": (0.6, 0.0)})
    img1 = env.render()
    assert img1.shape == img0.shape
    assert not np.array_equal(img0, img1)
    assert _red_centroid_col(img1) > _red_centroid_col(img0) + 30
    assert CarOnHill().render() is None


def test_pendulum_render() -> None:
    env = gym.make(INVERTED_PENDULUM_ID, render_mode="rgb_array")
    env.reset(seed=0, options={"state": (0.0, 0.0)})
    img0 = env.render()
    assert img0.dtype == np.uint8 and img0.ndim == 3 and img0.shape[2] == 3
    env.reset(options={"state": (1.0, 0.0)})
    img1 = env.render()
    assert not np.array_equal(img0, img1)
    env.close()


# --- compiled integrators: the same numbers as plain Python ------------------------------------------------

_PLAIN_PYTHON = """
import json, sys
import numpy as np
from mtdqn.tasks.classic_envs import car_on_hill_step, pendulum_step
rows = json.loads(sys.stdin.read())
print(json.dumps([[car_on_hill_step(*r[:3]), pendulum_step(*r[3:])] for r in rows]))
"""


def test_compiled_integrators_are_bit_identical_to_plain_python() -> None:
    """Numba must evaluate the same float64 operations as CPython: no fast-math, FMA or reassociation."""
    import json

    rng = np.random.default_rng(7)
    n = 400
    car = np.stack([rng.uniform(-1, 1, n), rng.uniform(-3, 3, n), rng.choice([-4.0, 4.0], n)], axis=1)
    car[:50, 0] = rng.uniform(-0.05, 0.05, 50)  # near the kink: substeps split at p = 0
    pend = np.stack([rng.uniform(-3, 3, n), rng.uniform(-8, 8, n), rng.uniform(-60, 60, n)], axis=1)
    rows = np.concatenate([car, pend], axis=1).tolist()
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    out = subprocess.run(
        [sys.executable, "-c", _PLAIN_PYTHON], input=json.dumps(rows), env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    plain = json.loads(out.stdout)  # floats round-trip exactly through JSON (repr)
    compiled = [[list(car_on_hill_step(*r[:3])), list(pendulum_step(*r[3:]))] for r in rows]
    assert compiled == plain
    crossed = [(c[0][0] < 0) != (r[0] < 0) for c, r in zip(compiled, rows, strict=True)]
    assert 5 <= sum(crossed) < n  # the kink was exercised


def test_the_retired_pendulum_id_is_refused_with_its_successor() -> None:
    """-v0 had the half-length dynamics: configs naming it must not silently get the new pendulum."""
    with pytest.raises(UserError) as err:
        make_env(TaskConfig("mtdqn/InvertedPendulumDiscrete-v0", gamma=0.95, horizon=3000))
    message = str(err.value)
    assert "retired" in message and INVERTED_PENDULUM_ID in message and "\n" not in message
    assert INVERTED_PENDULUM_ID.endswith("-v1")


def test_a_new_process_loads_the_compiled_integrators_from_the_cache(tmp_path) -> None:
    """Every worker and evaluation process steps these envs: it must load them, not compile them again."""
    script = (
        "import numpy as np\n"
        "from mtdqn.tasks import classic_envs as c\n"
        "c.car_on_hill_step_many(np.zeros(2), np.zeros(2), np.ones(2))\n"
        "c.pendulum_step_many(np.zeros(2), np.zeros(2), np.ones(2))\n"
        "f = (c._car_on_hill_rows, c._pendulum_rows)\n"
        "print(sum(x.stats.cache_hits.total() for x in f), sum(x.stats.cache_misses.total() for x in f))\n"
    )
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True) for _ in "ab"
    ]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    assert runs[0].stdout.split() == ["0", "2"]  # compiled and saved
    assert runs[1].stdout.split() == ["2", "0"]  # loaded
    assert len(list(tmp_path.rglob("*_rows*.nbi"))) == 2
