"""An environment's full internal state: record it during a rollout, render that exact moment later.

The observation is not always the state a renderer draws: Acrobot observes ``(cos th1, sin th1, cos th2,
sin th2, dth1, dth2)`` but draws from ``(th1, th2, dth1, dth2)``. Writing an observation into the state slot
(the review's analysis notebook did) draws the wrong arm. Here the recorded vector is the environment's own
``unwrapped.state``, so rendering it reproduces the frame the agent saw.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from mtdqn.errors import UserError


def get_env_state(env: gym.Env) -> np.ndarray:
    """The internal state that ``env``'s dynamics and renderer read (a flat float64 copy)."""
    state = getattr(env.unwrapped, "state", None)
    if state is None:
        env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        raise UserError(
            f"{env_id} keeps no `state` attribute, so its frames cannot be re-rendered; mtdqn analyze "
            "records environments whose unwrapped env has one (classic control and the package's own)"
        )
    return np.array(state, dtype=np.float64).reshape(-1)


def set_env_state(env: gym.Env, state: np.ndarray) -> None:
    """Put ``env`` into a state recorded by :func:`get_env_state` (the container type is kept)."""
    current = env.unwrapped.state
    values = np.asarray(state, dtype=np.float64)
    if isinstance(current, tuple):
        env.unwrapped.state = tuple(float(x) for x in values)
    elif current is None:  # never reset: take the recorded vector as it is
        env.unwrapped.state = values.copy()
    else:
        env.unwrapped.state = values.astype(np.asarray(current).dtype).reshape(np.shape(current))


def render_env_state(env: gym.Env, state: np.ndarray) -> np.ndarray:
    """The RGB frame of ``env`` (made with ``render_mode="rgb_array"`` and reset once) in ``state``."""
    set_env_state(env, state)
    frame = env.render()
    if frame is None:
        raise UserError("the environment returned no frame; create it with render_mode='rgb_array'")
    return np.asarray(frame)
