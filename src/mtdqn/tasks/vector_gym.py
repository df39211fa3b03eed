"""Numpy versions of Gymnasium's Cart-Pole, Acrobot and Mountain-Car: N copies with no loop over copies.

Each class reproduces one Gymnasium 1.4 classic-control environment wrapped in a ``TimeLimit`` (what
:func:`mtdqn.tasks.control.make_env` builds), behind the :class:`~mtdqn.tasks.vector.VectorTask`
interface:

* ``CartPole-v1`` (:class:`CartPoleVector`): Euler integration with tau = 0.02, +1 reward every step
  (the terminating one included), terminal when ``|x| > 2.4`` or ``|theta| > 12 deg``.
* ``Acrobot-v1`` (:class:`AcrobotVector`): the "book" dynamics integrated by one 4th-order Runge-Kutta
  step over dt = 0.2, no torque noise, angles wrapped to [-pi, pi], velocities bounded by 4 pi and 9 pi,
  -1 reward per step and 0 on reaching the terminal height.
* ``MountainCar-v0`` (:class:`MountainCarVector`): velocity and position clipped, the velocity zeroed
  against the left wall, -1 reward per step, terminal at ``position >= 0.5`` with ``velocity >= 0``.

Seeding and resets follow Gymnasium: ``reset(seeds)`` gives copy i the generator
``gymnasium.utils.seeding.np_random(seeds[i])`` (a PCG64 ``np.random.Generator``) and draws its start
state from it with the same calls as the single environment; a copy whose episode ends is restarted at
once from its own generator without reseeding (its stream continues, as ``env.reset()`` does). Only that
restart loops over the (few) copies that ended; the dynamics are numpy operations over all N rows. The
state is kept in float64 as Gymnasium keeps it; observations and rewards are returned as float32.

Exactness: every operation is evaluated in the same order and precision as in Gymnasium, so the states,
observations, rewards and flags are bit-identical to the single environments (checked by the tests,
with no re-synchronisation, over thousands of steps). Two details matter for that:

* Acrobot squares numpy float64 *scalars* with ``**``, which calls the C library's ``pow``; that differs
  from the correctly rounded ``x * x`` (and from ``np.power``'s vector loops) in about 0.1 % of cases.
  :func:`numpy.float_power` calls the same ``pow`` elementwise, so it is used here.
* Acrobot's first observation after a reset is computed from its float32 start state in float32
  (``cos``/``sin`` of float32 values), as Gymnasium does; later ones in float64, then cast.

The remaining assumption is that numpy's vectorised float64 ``sin``/``cos`` agree with the scalar ones
(Cart-Pole calls ``np.cos`` on numpy scalars, Mountain-Car ``math.cos``). They do with numpy 2.4 on the
x86-64 (AVX-512) machine we tested (identical over 6 x 10^5 random arguments). A numpy build whose SIMD
``sin``/``cos`` differ from libm by an ulp would make the states agree only to about 1e-15 relative per
step (the tests, which require exact equality, would then show it).
"""

from __future__ import annotations

import math

import numpy as np

from mtdqn.tasks.vector import NumpyVectorTask

__all__ = ["VECTOR_GYM_TASKS", "AcrobotVector", "CartPoleVector", "MountainCarVector"]


# --- Cart-Pole -------------------------------------------------------------------------------------------

_CP_GRAVITY = 9.8
_CP_MASS_CART = 1.0
_CP_MASS_POLE = 0.1
_CP_TOTAL_MASS = _CP_MASS_POLE + _CP_MASS_CART
_CP_HALF_LENGTH = 0.5
_CP_POLE_MOMENT = _CP_MASS_POLE * _CP_HALF_LENGTH  # "polemass_length"
_CP_FORCE = 10.0
_CP_TAU = 0.02
_CP_THETA_LIMIT = 12 * 2 * math.pi / 360
_CP_X_LIMIT = 2.4


class CartPoleVector(NumpyVectorTask):
    """``CartPole-v1`` for N copies. State rows: (x, x_dot, theta, theta_dot); actions 0 (left), 1 (right)."""

    env_id = "CartPole-v1"
    default_horizon = 500
    state_dim = 4
    obs_dim = 4
    n_actions = 2

    def _draw_start(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(low=-0.05, high=0.05, size=(4,))

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.state
        x, x_dot, theta, theta_dot = s[:, 0], s[:, 1], s[:, 2], s[:, 3]
        push = np.where(actions == 1, _CP_FORCE, -_CP_FORCE)
        c, sn = np.cos(theta), np.sin(theta)
        # Accelerations of the pole and the cart (Barto, Sutton & Anderson), same evaluation order.
        common = (push + _CP_POLE_MOMENT * np.square(theta_dot) * sn) / _CP_TOTAL_MASS
        denom = _CP_HALF_LENGTH * (4.0 / 3.0 - _CP_MASS_POLE * np.square(c) / _CP_TOTAL_MASS)
        theta_acc = (_CP_GRAVITY * sn - c * common) / denom
        x_acc = common - _CP_POLE_MOMENT * theta_acc * c / _CP_TOTAL_MASS
        # Explicit Euler: positions move with the old velocities.
        new = np.empty_like(s)
        new[:, 0] = x + _CP_TAU * x_dot
        new[:, 1] = x_dot + _CP_TAU * x_acc
        new[:, 2] = theta + _CP_TAU * theta_dot
        new[:, 3] = theta_dot + _CP_TAU * theta_acc
        self.state = new
        x, theta = new[:, 0], new[:, 2]
        terminated = (
            (x < -_CP_X_LIMIT) | (x > _CP_X_LIMIT) | (theta < -_CP_THETA_LIMIT) | (theta > _CP_THETA_LIMIT)
        )
        return terminated, np.ones(self.n, np.float32)


# --- Acrobot ---------------------------------------------------------------------------------------------

_AC_DT = 0.2
_AC_L1 = 1.0  # length of link 1
_AC_M1 = 1.0  # masses
_AC_M2 = 1.0
_AC_C1 = 0.5  # centres of mass along the links
_AC_C2 = 0.5
_AC_I1 = 1.0  # moments of inertia
_AC_I2 = 1.0
_AC_G = 9.8
_AC_MAX_VEL_1 = 4 * np.pi
_AC_MAX_VEL_2 = 9 * np.pi
_AC_TORQUES = np.array([-1.0, 0.0, 1.0])


def _pow2(x: np.ndarray) -> np.ndarray:
    """``x**2`` as a numpy float64 scalar computes it (C ``pow``), elementwise; see the module docstring."""
    return np.float_power(x, 2.0)


def _acrobot_derivatives(
    theta1: np.ndarray, theta2: np.ndarray, omega1: np.ndarray, omega2: np.ndarray, torque: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Time derivatives of (theta1, theta2, omega1, omega2) under the "book" equations of motion."""
    m1, m2, l1, c1, c2, i1, i2, g = _AC_M1, _AC_M2, _AC_L1, _AC_C1, _AC_C2, _AC_I1, _AC_I2, _AC_G
    cos2, sin2 = np.cos(theta2), np.sin(theta2)
    d1 = m1 * c1**2 + m2 * (l1**2 + c2**2 + 2 * l1 * c2 * cos2) + i1 + i2
    d2 = m2 * (c2**2 + l1 * c2 * cos2) + i2
    phi2 = m2 * c2 * g * np.cos(theta1 + theta2 - np.pi / 2.0)
    phi1 = (
        -m2 * l1 * c2 * _pow2(omega2) * sin2
        - 2 * m2 * l1 * c2 * omega2 * omega1 * sin2
        + (m1 * c1 + m2 * l1) * g * np.cos(theta1 - np.pi / 2)
        + phi2
    )
    alpha2 = (torque + d2 / d1 * phi1 - m2 * l1 * c2 * _pow2(omega1) * sin2 - phi2) / (
        m2 * c2**2 + i2 - _pow2(d2) / d1
    )
    alpha1 = -(d2 * alpha2 + phi1) / d1
    return omega1, omega2, alpha1, alpha2


def _wrap_angle(x: np.ndarray) -> np.ndarray:
    """Shift by whole turns into [-pi, pi], one turn at a time (as Gymnasium's ``wrap`` does)."""
    turn = np.pi - (-np.pi)
    while (above := x > np.pi).any():
        x = np.where(above, x - turn, x)
    while (below := x < -np.pi).any():
        x = np.where(below, x + turn, x)
    return x


class AcrobotVector(NumpyVectorTask):
    """``Acrobot-v1`` for N copies. State rows: (theta1, theta2, omega1, omega2); actions: torque -1, 0, +1.

    Observation rows: (cos theta1, sin theta1, cos theta2, sin theta2, omega1, omega2).
    """

    env_id = "Acrobot-v1"
    default_horizon = 500
    state_dim = 4
    obs_dim = 6
    n_actions = 3

    def _draw_start(self, rng: np.random.Generator) -> np.ndarray:
        # Gymnasium keeps the start state in float32 (it is promoted to float64 by the first step).
        return rng.uniform(low=-0.1, high=0.1, size=(4,)).astype(np.float32)

    def _start_obs(self, rows: np.ndarray) -> np.ndarray:
        # Gymnasium's first observation takes cos/sin of the float32 start state, in float32.
        return self._observe(self.state[rows].astype(np.float32))

    def _observe(self, state: np.ndarray) -> np.ndarray:
        t1, t2 = state[:, 0], state[:, 1]
        return np.stack(
            [np.cos(t1), np.sin(t1), np.cos(t2), np.sin(t2), state[:, 2], state[:, 3]], axis=1
        ).astype(np.float32)

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torque = _AC_TORQUES[actions]
        y = tuple(self.state.T)  # theta1, theta2, omega1, omega2
        # One classical Runge-Kutta step over [0, dt] (the torque is held constant).
        h, half = _AC_DT, _AC_DT / 2.0
        k1 = _acrobot_derivatives(*y, torque)
        k2 = _acrobot_derivatives(*(yj + half * kj for yj, kj in zip(y, k1, strict=True)), torque)
        k3 = _acrobot_derivatives(*(yj + half * kj for yj, kj in zip(y, k2, strict=True)), torque)
        k4 = _acrobot_derivatives(*(yj + h * kj for yj, kj in zip(y, k3, strict=True)), torque)
        theta1, theta2, omega1, omega2 = (
            yj + h / 6.0 * (a + 2 * b + 2 * c + d) for yj, a, b, c, d in zip(y, k1, k2, k3, k4, strict=True)
        )
        new = np.empty_like(self.state)
        new[:, 0] = _wrap_angle(theta1)
        new[:, 1] = _wrap_angle(theta2)
        new[:, 2] = np.minimum(np.maximum(omega1, -_AC_MAX_VEL_1), _AC_MAX_VEL_1)
        new[:, 3] = np.minimum(np.maximum(omega2, -_AC_MAX_VEL_2), _AC_MAX_VEL_2)
        self.state = new
        # The tip is higher than one link length above the pivot.
        terminated = -np.cos(new[:, 0]) - np.cos(new[:, 1] + new[:, 0]) > 1.0
        return terminated, np.where(terminated, 0.0, -1.0).astype(np.float32)


# --- Mountain-Car ----------------------------------------------------------------------------------------

_MC_MIN_POS = -1.2
_MC_MAX_POS = 0.6
_MC_MAX_SPEED = 0.07
_MC_GOAL_POS = 0.5
_MC_GOAL_VEL = 0
_MC_FORCE = 0.001
_MC_GRAVITY = 0.0025


class MountainCarVector(NumpyVectorTask):
    """``MountainCar-v0`` for N copies. State rows: (position, velocity); actions: push left, none, right."""

    env_id = "MountainCar-v0"
    default_horizon = 200
    state_dim = 2
    obs_dim = 2
    n_actions = 3

    def _draw_start(self, rng: np.random.Generator) -> np.ndarray:
        return np.array([rng.uniform(low=-0.6, high=-0.4), 0.0])

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos, vel = self.state[:, 0], self.state[:, 1]
        vel = vel + ((actions - 1) * _MC_FORCE + np.cos(3 * pos) * (-_MC_GRAVITY))
        vel = np.clip(vel, -_MC_MAX_SPEED, _MC_MAX_SPEED)
        pos = np.clip(pos + vel, _MC_MIN_POS, _MC_MAX_POS)
        vel = np.where((pos == _MC_MIN_POS) & (vel < 0), 0.0, vel)  # an inelastic left wall
        self.state = np.stack([pos, vel], axis=1)
        terminated = (pos >= _MC_GOAL_POS) & (vel >= _MC_GOAL_VEL)
        return terminated, np.full(self.n, -1.0, np.float32)


VECTOR_GYM_TASKS: dict[str, type[NumpyVectorTask]] = {
    "CartPole-v1": CartPoleVector,
    "Acrobot-v1": AcrobotVector,
    "MountainCar-v0": MountainCarVector,
}
"""Gymnasium id -> numpy :class:`~mtdqn.tasks.vector.VectorTask` class, called as ``cls(n, horizon)``."""
