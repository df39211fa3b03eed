"""Car-On-Hill and the discrete-action inverted pendulum as Gymnasium 1.x environments.

Both follow the versions in MushroomRL used by D'Eramo et al. (2020): the same parameters, rewards and
terminal conditions. MushroomRL integrates the dynamics with ``scipy.integrate.odeint``; here they are
integrated with fixed-step classical Runge-Kutta (RK4; 20 substeps for the car, 15 for the pendulum) on
float64 scalars, which agrees with a tight adaptive solver to well below 1e-6 per step (see
``tests/test_classic_envs.py``). The integrators are compiled with Numba (``njit``, cached on disk): a step
costs 1-2 us instead of 25-30 us in CPython, and ``*_step_many`` steps N copies in one call for the
vector tasks. Numba evaluates the same IEEE float64 operations in the same order (no fast-math, so no
reassociation or fused multiply-add; ``sqrt`` is correctly rounded, ``sin``/``cos`` come from the same libm),
so the results are bit-identical to running these functions as plain Python (tested with
``NUMBA_DISABLE_JIT=1``).

Car-On-Hill's acceleration is discontinuous at ``p = 0`` (the hill's second derivative jumps from 2 to 0),
so a substep that crosses ``p = 0`` is split exactly at the crossing and each part is integrated with the
formula of its own side.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numba import njit

__all__ = [
    "CAR_ON_HILL_ID",
    "INVERTED_PENDULUM_ID",
    "RETIRED_IDS",
    "CarOnHill",
    "InvertedPendulumDiscrete",
    "car_on_hill_step",
    "car_on_hill_step_many",
    "hill",
    "pendulum_step",
    "pendulum_step_many",
    "register_envs",
]

CAR_ON_HILL_ID = "mtdqn/CarOnHill-v0"
INVERTED_PENDULUM_ID = "mtdqn/InvertedPendulumDiscrete-v1"

RETIRED_IDS = {
    "mtdqn/InvertedPendulumDiscrete-v0": (
        INVERTED_PENDULUM_ID,
        "its dynamics used half the pendulum's length, so it fell about twice as fast as the paper's",
    ),
}
"""Ids of earlier versions of these environments: (the id that replaces it, what was wrong)."""

_RENDER_SIZE = 200

_jit = njit(cache=True)
"""Compile to machine code on first use (cached in ``__pycache__``); IEEE semantics, no fast-math."""


# ---------------------------------------------------------------------------------------------------------
# Car-On-Hill dynamics
# ---------------------------------------------------------------------------------------------------------


def hill(p: float) -> float:
    """Height of the hill at position ``p``."""
    if p < 0.0:
        return p * p + p
    return p / math.sqrt(1.0 + 5.0 * p * p)


@_jit
def _car_accel(p: float, v: float, u: float, m: float, g: float, left: bool) -> float:
    """dv/dt using the hill formula of the left (``p < 0``) or right (``p >= 0``) side, whatever ``p`` is."""
    if left:
        h1 = 2.0 * p + 1.0
        h2 = 2.0
    else:
        q = 1.0 + 5.0 * p * p
        sq = math.sqrt(q)
        h1 = 1.0 / (q * sq)
        h2 = -15.0 * p / (q * q * sq)
    return (u - g * m * h1 - v * v * m * h1 * h2) / (m * (1.0 + h1 * h1))


@_jit
def _car_rk4(p: float, v: float, u: float, m: float, g: float, h: float, left: bool) -> tuple[float, float]:
    """One RK4 step of length ``h`` with the hill formula of one side held fixed."""
    hh = 0.5 * h
    a1 = _car_accel(p, v, u, m, g, left)
    v2 = v + hh * a1
    a2 = _car_accel(p + hh * v, v2, u, m, g, left)
    v3 = v + hh * a2
    a3 = _car_accel(p + hh * v2, v3, u, m, g, left)
    v4 = v + h * a3
    a4 = _car_accel(p + h * v3, v4, u, m, g, left)
    return (
        p + h / 6.0 * (v + 2.0 * v2 + 2.0 * v3 + v4),
        v + h / 6.0 * (a1 + 2.0 * a2 + 2.0 * a3 + a4),
    )


@_jit
def _car_substep(p: float, v: float, u: float, m: float, g: float, h: float) -> tuple[float, float]:
    """Advance by ``h``, splitting the step where the trajectory crosses ``p = 0``."""
    left = p < 0.0
    remaining = h
    for _ in range(8):  # a handful of crossings per substep at most; more cannot happen for sane parameters
        p1, v1 = _car_rk4(p, v, u, m, g, remaining, left)
        if (p1 < 0.0) == left:
            return p1, v1
        # The fixed-side flow crosses 0 within ``remaining``: find the crossing time by bracketed
        # regula falsi (Illinois variant) on tau -> p(tau), which is smooth for a fixed side.
        t_lo, f_lo = 0.0, p
        t_hi, f_hi = remaining, p1
        tau, v_c = remaining, v1
        side = 0
        for _ in range(60):
            denom = f_hi - f_lo
            tau = t_lo - f_lo * (t_hi - t_lo) / denom if denom != 0.0 else 0.5 * (t_lo + t_hi)
            if not t_lo < tau < t_hi:
                tau = 0.5 * (t_lo + t_hi)
            p_c, v_c = _car_rk4(p, v, u, m, g, tau, left)
            if abs(p_c) < 1e-14 or t_hi - t_lo < 1e-15:
                break
            if (p_c < 0.0) == (f_lo < 0.0) and f_lo != 0.0:
                t_lo, f_lo = tau, p_c
                if side == -1:
                    f_hi *= 0.5
                side = -1
            else:
                t_hi, f_hi = tau, p_c
                if side == 1:
                    f_lo *= 0.5
                side = 1
        p, v = 0.0, v_c
        left = not left
        remaining -= tau
        if remaining <= 0.0:
            return p, v
    return _car_rk4(p, v, u, m, g, remaining, left)


@_jit
def _car_on_hill_step(
    p: float, v: float, u: float, m: float, g: float, dt: float, n_substeps: int
) -> tuple[float, float]:
    h = dt / n_substeps
    for _ in range(n_substeps):
        p, v = _car_substep(p, v, u, m, g, h)
    return p, v


def car_on_hill_step(
    p: float, v: float, u: float, m: float = 1.0, g: float = 9.81, dt: float = 0.1, n_substeps: int = 20
) -> tuple[float, float]:
    """Integrate the Car-On-Hill ODE from ``(p, v)`` under constant force ``u`` for ``dt`` seconds."""
    return _car_on_hill_step(float(p), float(v), float(u), float(m), float(g), float(dt), int(n_substeps))


def car_on_hill_step_many(
    p: np.ndarray,
    v: np.ndarray,
    u: np.ndarray,
    m: float = 1.0,
    g: float = 9.81,
    dt: float = 0.1,
    n_substeps: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`car_on_hill_step` for each row of (N,) float64 arrays (the same numbers, one compiled loop)."""
    params = (float(m), float(g), float(dt), int(n_substeps))
    return _car_on_hill_rows(*_float_rows(p, v, u), params)


# One row loop per integrator, each naming its step function: a loop taking the step function as an
# argument was typed by the function object's address, so every process compiled it anew and added an
# entry to the on-disk cache (and Numba's cache writer could fail on that type).
@_jit
def _car_on_hill_rows(
    x: np.ndarray, y: np.ndarray, u: np.ndarray, params: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_car_on_hill_step` on every row."""
    new_x, new_y = np.empty_like(x), np.empty_like(y)
    for i in range(x.shape[0]):
        new_x[i], new_y[i] = _car_on_hill_step(x[i], y[i], u[i], *params)
    return new_x, new_y


@_jit
def _pendulum_rows(
    x: np.ndarray, y: np.ndarray, u: np.ndarray, params: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_pendulum_step` on every row."""
    new_x, new_y = np.empty_like(x), np.empty_like(y)
    for i in range(x.shape[0]):
        new_x[i], new_y[i] = _pendulum_step(x[i], y[i], u[i], *params)
    return new_x, new_y


def _float_rows(*arrays: np.ndarray) -> list[np.ndarray]:
    """The arrays as contiguous float64 1-D arrays of one length (one compiled signature for every caller)."""
    out = [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]
    if any(a.ndim != 1 or a.shape != out[0].shape for a in out):
        raise ValueError(f"expected 1-D arrays of one length, got shapes {[a.shape for a in out]}")
    return out


# ---------------------------------------------------------------------------------------------------------
# Inverted pendulum dynamics
# ---------------------------------------------------------------------------------------------------------


@_jit
def _pend_accel(
    theta: float, omega: float, u: float, mlalpha: float, alpha: float, g: float, length: float
) -> float:
    """d(omega)/dt of the pendulum: Lagoudakis & Parr (2003) as MushroomRL's InvertedPendulumDiscrete has it.

    ``(g sin(theta) - alpha m l omega^2 sin(2 theta) / 2 - alpha cos(theta) u)
    / (4 l / 3 - alpha m l cos(theta)^2)`` with ``l`` the pendulum's length (0.5) and ``mlalpha`` =
    ``alpha * m * l``.
    """
    c = math.cos(theta)
    s = math.sin(theta)
    return (g * s - mlalpha * omega * omega * s * c - alpha * c * u) / (4.0 / 3.0 * length - mlalpha * c * c)


@_jit
def _pendulum_step(
    theta: float,
    omega: float,
    u: float,
    m: float,
    M: float,
    l: float,  # noqa: E741
    g: float,
    dt: float,
    n_substeps: int,
) -> tuple[float, float]:
    alpha = 1.0 / (m + M)
    mlalpha = alpha * m * l
    h = dt / n_substeps
    hh = 0.5 * h
    for _ in range(n_substeps):
        a1 = _pend_accel(theta, omega, u, mlalpha, alpha, g, l)
        w2 = omega + hh * a1
        a2 = _pend_accel(theta + hh * omega, w2, u, mlalpha, alpha, g, l)
        w3 = omega + hh * a2
        a3 = _pend_accel(theta + hh * w2, w3, u, mlalpha, alpha, g, l)
        w4 = omega + h * a3
        a4 = _pend_accel(theta + h * w3, w4, u, mlalpha, alpha, g, l)
        theta += h / 6.0 * (omega + 2.0 * w2 + 2.0 * w3 + w4)
        omega += h / 6.0 * (a1 + 2.0 * a2 + 2.0 * a3 + a4)
    return theta, omega


def pendulum_step(
    theta: float,
    omega: float,
    u: float,
    m: float = 2.0,
    M: float = 8.0,
    l: float = 0.5,  # noqa: E741
    g: float = 9.8,
    dt: float = 0.1,
    n_substeps: int = 15,
) -> tuple[float, float]:
    """Integrate the pendulum ODE from ``(theta, omega)`` under constant force ``u`` for ``dt`` seconds.

    The angle is not wrapped here.
    """
    params = (float(m), float(M), float(l), float(g), float(dt), int(n_substeps))
    return _pendulum_step(float(theta), float(omega), float(u), *params)


def pendulum_step_many(
    theta: np.ndarray,
    omega: np.ndarray,
    u: np.ndarray,
    m: float = 2.0,
    M: float = 8.0,
    l: float = 0.5,  # noqa: E741
    g: float = 9.8,
    dt: float = 0.1,
    n_substeps: int = 15,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pendulum_step` for each row of (N,) float64 arrays (the same numbers, one compiled loop)."""
    params = (float(m), float(M), float(l), float(g), float(dt), int(n_substeps))
    return _pendulum_rows(*_float_rows(theta, omega, u), params)


def _wrap_angle(x: float) -> float:
    """Wrap an angle to ``[-pi, pi)``."""
    y = (x + math.pi) % (2.0 * math.pi) - math.pi
    return y if y < math.pi else -math.pi


# ---------------------------------------------------------------------------------------------------------
# Drawing helpers (numpy only)
# ---------------------------------------------------------------------------------------------------------


class _Canvas:
    """A fixed-size RGB canvas with precomputed pixel coordinates."""

    def __init__(self, size: int = _RENDER_SIZE) -> None:
        self.size = size
        rows, cols = np.mgrid[0:size, 0:size]
        self.rows = rows.astype(np.float64)
        self.cols = cols.astype(np.float64)

    def blank(self) -> np.ndarray:
        return np.full((self.size, self.size, 3), 255, dtype=np.uint8)

    def disc(
        self, img: np.ndarray, row: float, col: float, radius: float, color: tuple[int, int, int]
    ) -> None:
        mask = (self.rows - row) ** 2 + (self.cols - col) ** 2 <= radius * radius
        img[mask] = color

    def segment(
        self,
        img: np.ndarray,
        r0: float,
        c0: float,
        r1: float,
        c1: float,
        half_width: float,
        color: tuple[int, int, int],
    ) -> None:
        dr, dc = r1 - r0, c1 - c0
        length2 = dr * dr + dc * dc
        if length2 == 0.0:
            self.disc(img, r0, c0, half_width, color)
            return
        t = np.clip(((self.rows - r0) * dr + (self.cols - c0) * dc) / length2, 0.0, 1.0)
        mask = (self.rows - (r0 + t * dr)) ** 2 + (self.cols - (c0 + t * dc)) ** 2 <= half_width * half_width
        img[mask] = color

    def box(
        self, img: np.ndarray, r0: float, c0: float, r1: float, c1: float, color: tuple[int, int, int]
    ) -> None:
        mask = (self.rows >= r0) & (self.rows <= r1) & (self.cols >= c0) & (self.cols <= c1)
        img[mask] = color


# ---------------------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------------------


class CarOnHill(gym.Env):
    """Car-On-Hill (Ernst, Geurts & Wehenkel, 2005): drive an underpowered car up to the top of a hill.

    State ``(p, v)``; actions ``0 -> -a``, ``1 -> +a`` with ``a = action_magnitude``. Every episode starts at
    ``(-0.5, 0)`` (the bottom of the valley) unless ``reset(options={"state": (p, v)})`` says otherwise.
    Reward ``-1`` and termination if ``p < -1`` or ``|v| > 3``; reward ``+1`` and termination if ``p > 1``
    with ``|v| <= 3``; ``0`` otherwise.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012

    max_pos = 1.0
    max_velocity = 3.0
    start_state = (-0.5, 0.0)

    def __init__(
        self,
        render_mode: str | None = None,
        m: float = 1.0,
        g: float = 9.81,
        action_magnitude: float = 4.0,
        dt: float = 0.1,
        n_substeps: int = 20,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.render_mode = render_mode
        self.m = float(m)
        self.g = float(g)
        self.dt = float(dt)
        self.n_substeps = int(n_substeps)
        self.forces = (-float(action_magnitude), float(action_magnitude))
        self.observation_space = spaces.Box(
            low=np.array([-self.max_pos, -self.max_velocity], dtype=np.float32),
            high=np.array([self.max_pos, self.max_velocity], dtype=np.float32),
            dtype=np.float32,
        )
        self.action_space = spaces.Discrete(2)
        self.state: tuple[float, float] = self.start_state
        self._canvas: _Canvas | None = None
        self._background: np.ndarray | None = None

    def _obs(self) -> np.ndarray:
        return np.array(self.state, dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start at ``(-0.5, 0)``, or at ``options["state"]`` if given."""
        super().reset(seed=seed)
        if options is not None and options.get("state") is not None:
            p, v = options["state"]
            self.state = (float(p), float(v))
        else:
            self.state = self.start_state
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the force of ``action`` for ``dt`` seconds."""
        u = self.forces[int(action)]
        p, v = car_on_hill_step(self.state[0], self.state[1], u, self.m, self.g, self.dt, self.n_substeps)
        self.state = (p, v)
        if p < -self.max_pos or abs(v) > self.max_velocity:
            reward, terminated = -1.0, True
        elif p > self.max_pos:
            reward, terminated = 1.0, True
        else:
            reward, terminated = 0.0, False
        return self._obs(), reward, terminated, False, {}

    def render(self) -> np.ndarray | None:
        """Draw the hill and the car (a red disc) as an RGB array."""
        if self.render_mode != "rgb_array":
            return None
        if self._canvas is None:
            self._canvas = _Canvas()
        cv = self._canvas
        size = cv.size
        # World window: p in [-1.1, 1.1], height in [-0.45, 0.65].
        x_lo, x_hi, y_lo, y_hi = -1.1, 1.1, -0.45, 0.65

        def to_px(x: float, y: float) -> tuple[float, float]:
            col = (x - x_lo) / (x_hi - x_lo) * (size - 1)
            row = (y_hi - y) / (y_hi - y_lo) * (size - 1)
            return row, col

        if self._background is None:
            bg = cv.blank()
            # The hill, as a thick polyline of short segments.
            xs = np.linspace(-1.0, 1.0, 61)
            pts = [to_px(float(x), hill(float(x))) for x in xs]
            for (r0, c0), (r1, c1) in itertools.pairwise(pts):
                cv.segment(bg, r0, c0, r1, c1, 1.5, (40, 120, 40))
            # The goal flag at p = 1.
            gr, gc = to_px(1.0, hill(1.0))
            cv.segment(bg, gr, gc, gr - 25.0, gc, 1.0, (0, 0, 0))
            cv.box(bg, gr - 25.0, gc - 12.0, gr - 17.0, gc, (230, 180, 0))
            self._background = bg
        img = self._background.copy()
        # The car, sitting on the curve at its (clipped) position.
        p = min(max(self.state[0], x_lo), x_hi)
        radius = 7.0
        r, c = to_px(p, hill(p))
        cv.disc(img, r - radius, c, radius, (200, 30, 30))
        return img


class InvertedPendulumDiscrete(gym.Env):
    """Inverted pendulum on a cart with three noisy forces (Lagoudakis & Parr, 2003).

    State ``(theta, omega)`` with ``theta = 0`` upright. Actions ``0, 1, 2`` push with ``-max_u, 0,
    +max_u`` plus uniform noise in ``[-noise_u, noise_u]``. Episodes start at ``theta ~ U(-pi/8, pi/8)``,
    ``omega = 0``; reward ``-1`` and termination when ``|theta| > pi/2``, ``0`` otherwise.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012

    def __init__(
        self,
        render_mode: str | None = None,
        m: float = 2.0,
        M: float = 8.0,
        l: float = 0.5,  # noqa: E741
        g: float = 9.8,
        max_u: float = 50.0,
        noise_u: float = 10.0,
        dt: float = 0.1,
        n_substeps: int = 15,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.render_mode = render_mode
        self.m = float(m)
        self.M = float(M)
        self.l = float(l)
        self.g = float(g)
        self.alpha = 1.0 / (self.m + self.M)
        self.max_u = float(max_u)
        self.noise_u = float(noise_u)
        self.dt = float(dt)
        self.n_substeps = int(n_substeps)
        self.forces = (-self.max_u, 0.0, self.max_u)
        self.observation_space = spaces.Box(low=-np.inf, high=np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(3)
        self.state: tuple[float, float] = (0.0, 0.0)
        self.last_u = 0.0
        self._canvas: _Canvas | None = None

    def _obs(self) -> np.ndarray:
        return np.array(self.state, dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start at a random small angle at rest, or at ``options["state"]`` if given."""
        super().reset(seed=seed)
        if options is not None and options.get("state") is not None:
            theta, omega = options["state"]
            self.state = (float(theta), float(omega))
        else:
            self.state = (float(self.np_random.uniform(-math.pi / 8.0, math.pi / 8.0)), 0.0)
        self.last_u = 0.0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the noisy force of ``action`` for ``dt`` seconds."""
        u = self.forces[int(action)] + float(self.np_random.uniform(-self.noise_u, self.noise_u))
        self.last_u = u
        theta, omega = pendulum_step(
            self.state[0], self.state[1], u, self.m, self.M, self.l, self.g, self.dt, self.n_substeps
        )
        theta = _wrap_angle(theta)
        self.state = (theta, omega)
        if abs(theta) > 0.5 * math.pi:
            return self._obs(), -1.0, True, False, {}
        return self._obs(), 0.0, False, False, {}

    def render(self) -> np.ndarray | None:
        """Draw the cart (a box) and the pole (a thick line at angle ``theta``) as an RGB array."""
        if self.render_mode != "rgb_array":
            return None
        if self._canvas is None:
            self._canvas = _Canvas()
        cv = self._canvas
        size = cv.size
        img = cv.blank()
        ground = 0.75 * size
        cv.segment(img, ground, 0.0, ground, size - 1.0, 1.0, (0, 0, 0))
        cart_w, cart_h = 0.3 * size, 0.1 * size
        cc = 0.5 * size
        top = ground - 4.0 - cart_h
        cv.box(img, top, cc - 0.5 * cart_w, ground - 4.0, cc + 0.5 * cart_w, (60, 60, 160))
        pole = 0.45 * size
        theta = self.state[0]
        cv.segment(
            img, top, cc, top - pole * math.cos(theta), cc + pole * math.sin(theta), 3.5, (200, 120, 40)
        )
        cv.disc(img, top, cc, 4.0, (0, 0, 0))
        return img


def register_envs() -> None:
    """Register both environments with Gymnasium (a no-op for ids that are already registered)."""
    specs = (
        (CAR_ON_HILL_ID, "mtdqn.tasks.classic_envs:CarOnHill", 100),
        (INVERTED_PENDULUM_ID, "mtdqn.tasks.classic_envs:InvertedPendulumDiscrete", 3000),
    )
    for env_id, entry_point, horizon in specs:
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=horizon)
