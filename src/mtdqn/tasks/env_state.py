"""An environment's full internal state: record it during a rollout, render that exact moment later.

The observation is not always the state a renderer draws: Acrobot observes ``(cos th1, sin th1, cos th2,
sin th2, dth1, dth2)`` but draws from ``(th1, th2, dth1, dth2)``. Writing an observation into the state slot
(the review's analysis notebook did) draws the wrong arm. Here the recorded vector is the environment's own
``unwrapped.state``, so rendering it reproduces the frame the agent saw.

Atari (ale-py) keeps its state in the emulator: the recorded vector is the serialized ``ALEState`` from
before the latest emulator frame plus that frame's action; restoring it replays the frame, which redraws
the screen (``restoreState`` alone restores the emulator but leaves the screen as it was). Such an
environment must come from ``make_atari_env(..., record_states=True)``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from mtdqn.errors import UserError


def get_env_state(env: gym.Env) -> np.ndarray:
    """The internal state that ``env``'s dynamics and renderer read (a flat float64 copy)."""
    if _is_ale(env):
        return _get_ale_state(env)
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
    if _is_ale(env):
        _set_ale_state(env, state)
        return
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


# --- Atari (ale-py) ------------------------------------------------------------------------------------

_ALE_FRAME, _ALE_RESET = 1.0, 0.0
"""First entry of an ALE state vector: a state before a frame plus its action, or a fresh reset's state."""


def _is_ale(env: gym.Env) -> bool:
    return type(env.unwrapped).__module__.startswith("ale_py")


def _snapshots(env: gym.Env):
    from mtdqn.tasks.atari import AleSnapshots

    inner = env
    while isinstance(inner, gym.Wrapper):
        if isinstance(inner, AleSnapshots):
            return inner
        inner = inner.env
    env_id = env.spec.id if env.spec is not None else "this Atari environment"
    raise UserError(
        f"{env_id} does not record emulator states; create it with "
        "mtdqn.tasks.atari.make_atari_env(..., record_states=True) to re-render its frames"
    )


def _get_ale_state(env: gym.Env) -> np.ndarray:
    """``[kind, action, n_bytes, *bytes]`` as float64 (the container of every recorded state)."""
    snaps = _snapshots(env)
    if snaps.before is None:  # no frame since the reset: the reset itself redraws the screen
        kind, blob = _ALE_RESET, env.unwrapped.ale.cloneState(include_rng=True).serialize()
    else:
        kind, blob = _ALE_FRAME, snaps.before.serialize()
    data = np.frombuffer(blob, np.uint8).astype(np.float64)
    return np.concatenate([[kind, float(snaps.action), float(data.size)], data])


def _set_ale_state(env: gym.Env, state: np.ndarray) -> None:
    import ale_py

    snaps = _snapshots(env)
    state = np.asarray(state, np.float64)
    kind, action, size = state[0], int(state[1]), int(state[2])
    blob = ale_py.ALEState(state[3 : 3 + size].astype(np.uint8).tobytes())
    ale = env.unwrapped.ale
    if kind == _ALE_FRAME:
        ale.restoreState(blob)
        env.unwrapped.step(action)  # one emulator frame (make_atari_env runs ALE at frameskip 1)
        snaps.before, snaps.action = blob, action
    else:
        ale.reset_game()  # draws the reset screen; the state (including the RNG) comes next
        ale.restoreState(blob)
        snaps.before, snaps.action = None, action
