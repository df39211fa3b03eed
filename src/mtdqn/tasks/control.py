"""Building a task's Gymnasium environment and checking that mtdqn can learn it.

A task is any Gymnasium environment with a ``Discrete`` action space and a flat ``Box`` observation. Its
horizon is applied with Gymnasium's ``TimeLimit``: reaching it *truncates* the episode (the last transition
is bootstrapped), while the environment's own ``terminated`` is a true terminal (no bootstrap).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from mtdqn.config import TaskConfig
from mtdqn.errors import UserError
from mtdqn.tasks.classic_envs import RETIRED_IDS
from mtdqn.tasks.vector import GymVectorTask, VectorTask


@dataclass(frozen=True)
class TaskSpec:
    """The shapes of one task that the network and the replay need."""

    name: str
    obs_dim: int
    n_actions: int
    gamma: float
    horizon: int


def make_env(task: TaskConfig, render_mode: str | None = None) -> gym.Env:
    """Create the environment of ``task`` with its horizon as a ``TimeLimit`` (no env checker)."""
    if task.env_id.startswith("ALE/"):
        raise UserError(
            f"{task.env_id} is an Atari game: it is built by make_atari_env (mtdqn.tasks.atari) with a run's "
            "Atari settings (mtdqn train --task ALE/... adds them), not as a vector task"
        )
    if task.env_id in RETIRED_IDS:
        successor, why = RETIRED_IDS[task.env_id]
        raise UserError(
            f"{task.env_id} is retired: {why}; use {successor} (the deramo-gym preset does) and train again"
        )
    kwargs: dict = {"disable_env_checker": True}
    if task.horizon is not None:
        kwargs["max_episode_steps"] = task.horizon
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        env = gym.make(task.env_id, **kwargs)
    except gym.error.Error as exc:
        ale_id = ale_game_id(task.env_id)
        if ale_id is not None:
            raise UserError(
                f"unknown environment {task.env_id!r}; Atari games are named ALE/<Game>-v5: use {ale_id}"
            ) from None
        raise UserError(
            f"unknown environment {task.env_id!r} ({exc}); check the id, e.g. CartPole-v1, "
            "Acrobot-v1, MountainCar-v0, mtdqn/CarOnHill-v0, mtdqn/InvertedPendulumDiscrete-v1"
        ) from None
    except Exception as exc:  # environments raise anything on bad kwargs or missing extras
        raise UserError(f"could not create environment {task.env_id!r}: {exc}") from None
    _check_spaces(task, env)
    return env


NUMPY_VECTOR_MIN_COPIES = {"gym": 4, "classic": 8}
"""From this many copies on, a task with a vector implementation uses it; below, a loop of single envs is
faster (measured crossovers: ~4 copies for CartPole/Acrobot/MountainCar, ~8-10 for Car-On-Hill and the
pendulum, whose vector tasks spend ~20 us per step on bookkeeping around the compiled integrators). Both
give bit-identical numbers (tested)."""


def make_vector_task(task: TaskConfig, n: int) -> VectorTask:
    """``n`` independent copies of ``task`` behind the :class:`~mtdqn.tasks.vector.VectorTask` interface."""
    from mtdqn.tasks.vector_classic import VECTOR_CLASSIC_TASKS
    from mtdqn.tasks.vector_gym import VECTOR_GYM_TASKS

    for family, registry in (("gym", VECTOR_GYM_TASKS), ("classic", VECTOR_CLASSIC_TASKS)):
        vector_cls = registry.get(task.env_id)
        if vector_cls is not None and n >= NUMPY_VECTOR_MIN_COPIES[family]:
            return vector_cls(n, task.horizon)
    return GymVectorTask(task, n)


def ale_game_id(env_id: str) -> str | None:
    """The ALE id (``ALE/Pong-v5``) of a game named without its ``ALE/`` namespace (``Pong-v5``, ``Pong``)
    or by a pre-v5 id (``PongNoFrameskip-v4``); None for anything else, or when ale-py is not installed."""
    if env_id.startswith("ALE/"):
        return None
    try:
        import ale_py  # importing it registers the ALE ids with Gymnasium
    except Exception:  # not installed, or broken: no suggestion rather than another error
        return None
    gym.register_envs(ale_py)
    for candidate in (f"ALE/{env_id}", f"ALE/{env_id}-v5"):
        if candidate in gym.registry:
            return candidate
    spec = gym.registry.get(env_id)
    if spec is not None and str(spec.entry_point).startswith("ale_py"):
        game = spec.kwargs.get("game")
        for key, other in gym.registry.items():
            if (
                key.startswith("ALE/")
                and key.endswith("-v5")
                and "-ram" not in key
                and other.kwargs.get("game") == game
            ):
                return key
    return None


def _check_spaces(task: TaskConfig, env: gym.Env) -> None:
    act, obs = env.action_space, env.observation_space
    if not isinstance(act, gym.spaces.Discrete):
        env.close()
        raise UserError(
            f"{task.env_id} has a {type(act).__name__} action space; mtdqn's DQN needs discrete actions "
            "(pick a Discrete-action environment, e.g. CartPole-v1)"
        )
    if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
        env.close()
        shape = getattr(obs, "shape", None)
        if isinstance(obs, gym.spaces.Box) and len(obs.shape) >= 2:
            ale_id = ale_game_id(task.env_id)
            use = f"use {ale_id}" if ale_id else "use one of those"
            raise UserError(
                f"{task.env_id} has image observations {shape}; the only image tasks mtdqn takes are ALE "
                f"games (ALE/<Game>-v5); {use} or an environment with a flat vector observation"
            )
        raise UserError(
            f"{task.env_id} has a {type(obs).__name__} observation space of shape {shape}; mtdqn needs a "
            "flat Box observation (a 1-D vector)"
        )


def task_specs(tasks: list[TaskConfig]) -> list[TaskSpec]:
    """Create each environment once to read its observation size, action count and horizon."""
    specs = []
    for task in tasks:
        env = make_env(task)
        horizon = task.horizon if task.horizon is not None else env.spec.max_episode_steps
        if horizon is None:
            env.close()
            raise UserError(
                f"{task.env_id} registers no episode limit; give one with --horizon (a positive integer)"
            )
        specs.append(
            TaskSpec(
                name=task.label,
                obs_dim=int(np.prod(env.observation_space.shape)),
                n_actions=int(env.action_space.n),
                gamma=float(task.gamma),
                horizon=int(horizon),
            )
        )
        env.close()
    return specs
