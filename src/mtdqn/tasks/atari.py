"""Atari 2600 games as tasks, through ale-py and Gymnasium 1.x, with the DQN preprocessing.

Two ways to run a game; for the same seeds and actions they give the same frames, rewards and flags
whenever the emulator is deterministic (``noop_max=0`` and no sticky actions; tested step by step):

* :func:`make_atari_env`: one Gymnasium environment (evaluation, analysis, rendering). ALE's ``AtariEnv``
  at one frame per step -> FIRE and no-op reset -> Gymnasium's ``AtariPreprocessing`` (frame skip, max over
  the last two frames, grayscale, 84x84) -> ``FrameStackObservation`` with zero padding -> learning
  ``TimeLimit`` -> learning signals (clipped reward, life loss).
* :class:`AtariVectorTask`: N copies in ale-py's C++ ``AtariVectorEnv``, which does the same
  preprocessing and stacking in its own threads (no Python per copy or per frame).

With random no-ops the two draw the no-op count from different generators (numpy here, C++ ``mt19937``
there), and with sticky actions the ALE seeds differ, so they then agree in distribution only.

The reward an environment returns is the raw game score (what evaluation reports); the reward to learn
from (clipped to [-1, 1]) and the learning terminal (game over, or a lost life) come beside it. Nothing is
downloaded: the ROMs ship inside ale-py.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from mtdqn.config_atari import AtariConfig
from mtdqn.errors import UserError
from mtdqn.tasks.vector import VectorStep, VectorTask

_INSTALL_HINT = "install the Atari extra: pip install -e '.[atari]' (ale-py and OpenCV)"


def _ale_py():
    try:
        import ale_py
    except ImportError:
        raise UserError(f"Atari tasks need ale-py, which is not installed; {_INSTALL_HINT}") from None
    gym.register_envs(ale_py)
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner per emulator
    return ale_py


@dataclass(frozen=True)
class AtariGame:
    """One game: its Gymnasium id, ROM and action set."""

    env_id: str
    """The Gymnasium id it was named by, e.g. ``ALE/Pong-v5`` (only the game is taken from it)."""
    rom: str
    """ale-py's ROM name, e.g. ``pong``."""
    action_meanings: tuple[str, ...]
    """Meaning of each action index (``NOOP``, ``FIRE``, ``RIGHT``, ...)."""

    @property
    def name(self) -> str:
        """CamelCase game name, e.g. ``SpaceInvaders``."""
        return self.rom.title().replace("_", "")

    @property
    def n_actions(self) -> int:
        return len(self.action_meanings)

    @property
    def fire_action(self) -> int | None:
        """Index of FIRE in the action set, None if the game has none."""
        return self.action_meanings.index("FIRE") if "FIRE" in self.action_meanings else None


@functools.cache
def atari_game(env_id: str, full_action_space: bool = False) -> AtariGame:
    """The game named by an ALE Gymnasium id (``ALE/Pong-v5``); a clear :class:`UserError` otherwise."""
    ale_py = _ale_py()
    spec = gym.registry.get(env_id)
    if spec is None or not str(spec.entry_point).startswith("ale_py"):
        raise UserError(
            f"unknown Atari game {env_id!r}; use an ale-py id such as ALE/Pong-v5 or ALE/Breakout-v5 "
            f"({len(ale_py.roms.get_all_rom_ids())} ROMs ship with ale-py {ale_py.__version__})"
        )
    rom = spec.kwargs["game"]
    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.loadROM(ale_py.roms.get_rom_path(rom))
    actions = ale.getLegalActionSet() if full_action_space else ale.getMinimalActionSet()
    return AtariGame(env_id, rom, tuple(a.name for a in actions))


# --- one environment -----------------------------------------------------------------------------------


class AleSnapshots(gym.Wrapper):
    """Keeps the emulator state from before the latest frame and that frame's action (for re-rendering).

    ALE's ``restoreState`` restores the emulator but not the screen, which is drawn while a frame is
    emulated; replaying the last frame from the state before it redraws the screen exactly. Cloning costs
    ~40 us per frame, so only analysis rollouts use this wrapper (``make_atari_env(record_states=True)``).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.before = None
        """``ALEState`` before the latest frame (None right after a reset: no frame since)."""
        self.action = 0
        """Index (in the action set) of the latest frame's action."""

    def reset(self, **kwargs):
        self.before = None
        return self.env.reset(**kwargs)

    def step(self, action):
        self.before = self.env.unwrapped.ale.cloneState(include_rng=True)
        self.action = int(action)
        return self.env.step(action)


class FireNoopReset(gym.Wrapper):
    """After a reset: FIRE (if the game has it and ``fire``), then random NOOP frames.

    The frame count k ~ U{0, ..., noop_max - 1} includes the FIRE frame, as in ale-py's vector env; a game
    that ends during the no-ops is reset again. Runs on the unskipped emulator (one frame per step).
    """

    def __init__(self, env: gym.Env, noop_max: int, fire_action: int | None) -> None:
        super().__init__(env)
        self.noop_max = noop_max
        self.fire_action = fire_action
        self.reset_frames = 0
        """FIRE and no-op frames run by the latest reset."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        frames = 0
        if self.fire_action is not None:
            obs, _, _, _, info = self.env.step(self.fire_action)
            frames += 1
        draw = int(self.env.unwrapped.np_random.integers(self.noop_max)) if self.noop_max > 0 else 0
        for _ in range(draw - frames):
            obs, _, terminated, truncated, info = self.env.step(0)
            frames += 1
            if terminated or truncated:
                obs, info = self.env.reset()
        self.reset_frames = frames
        return obs, info


class LearningSignals(gym.Wrapper):
    """Adds the learning reward and terminal to ``info``; the returned reward stays the raw game score.

    ``info["learning_reward"]``: the reward clipped to [-1, 1] (raw if ``clip_rewards`` is off);
    ``info["life_lost"]``: a life was lost in this step and the game goes on;
    ``info["learning_terminal"]``: game over, or a lost life when ``terminal_on_life_loss``.
    """

    def __init__(self, env: gym.Env, cfg: AtariConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.lives = 0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        life_lost = bool(lives < self.lives and not (terminated or truncated))
        self.lives = lives
        info["life_lost"] = life_lost
        learning = np.clip(reward, -1.0, 1.0) if self.cfg.clip_rewards else reward
        info["learning_reward"] = float(learning)
        info["learning_terminal"] = bool(terminated or (life_lost and self.cfg.terminal_on_life_loss))
        return obs, float(reward), terminated, truncated, info


def make_atari_env(
    env_id: str,
    cfg: AtariConfig | None = None,
    render_mode: str | None = None,
    record_states: bool = False,
) -> gym.Env:
    """One preprocessed game: observations ``(frame_stack, 84, 84)`` uint8, raw rewards (see module doc).

    ``render_mode="rgb_array"`` renders the emulator's colour screen; ``record_states`` keeps what
    :mod:`mtdqn.tasks.env_state` needs to re-render a recorded moment.
    """
    cfg = cfg or AtariConfig()
    cfg.validate()
    game = atari_game(env_id, cfg.full_action_space)
    try:
        import cv2  # noqa: F401  (AtariPreprocessing's resize)
    except ImportError:
        raise UserError(f"Atari environments need OpenCV, which is not installed; {_INSTALL_HINT}") from None
    env = gym.make(
        env_id,
        frameskip=1,
        repeat_action_probability=cfg.repeat_action_probability,
        full_action_space=cfg.full_action_space,
        max_num_frames_per_episode=0,  # no ALE limit: the TimeLimit below counts agent steps
        render_mode=render_mode,
        disable_env_checker=True,
    )
    if record_states:
        env = AleSnapshots(env)
    env = FireNoopReset(env, cfg.noop_max, game.fire_action if cfg.fire_on_reset else None)
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=0,  # done above, in the vector env's convention
        frame_skip=cfg.frame_skip,
        screen_size=cfg.screen_size,
        terminal_on_life_loss=False,  # a lost life is a learning signal, never the episode's end
        grayscale_obs=True,
    )
    env = gym.wrappers.FrameStackObservation(env, cfg.frame_stack, padding_type="zero")
    env = gym.wrappers.TimeLimit(env, cfg.max_episode_steps)
    return LearningSignals(env, cfg)


# --- many copies ---------------------------------------------------------------------------------------


@dataclass
class AtariStep(VectorStep):
    """One step of N copies of a game. ``reward`` is the raw game score; learn from the fields below.

    ``next_obs`` and ``obs`` are uint8 frame stacks ``(N, stack, 84, 84)``; ``terminated`` is a game over,
    ``truncated`` the time limit.
    """

    learning_reward: np.ndarray
    """(N,) float32: the reward clipped to [-1, 1] (raw when ``clip_rewards`` is off)."""
    life_lost: np.ndarray
    """(N,) bool: a life was lost and the game goes on."""
    learning_terminal: np.ndarray
    """(N,) bool: no bootstrap from ``next_obs`` (game over, or a lost life with terminal_on_life_loss)."""


def _seed32(seed: int) -> int:
    return int(seed) % (2**31 - 1)


class AtariVectorTask(VectorTask):
    """N copies of one game in ale-py's ``AtariVectorEnv`` (C++ threads), auto-reset in the same step.

    Copy i is seeded by ``seeds[i]`` at :meth:`reset` and keeps its own no-op generator, so it behaves the
    same whichever other copies exist. ``next_obs`` is the stack the action led to (the final one where an
    episode ended) and ``obs`` the one to act on next (a new episode's first where one ended).
    """

    def __init__(self, env_id: str, n: int, cfg: AtariConfig | None = None, num_threads: int = 0) -> None:
        cfg = cfg or AtariConfig()
        cfg.validate()
        if int(n) < 1:
            raise ValueError(f"need at least one copy, got n={n}")
        self.cfg = cfg
        self.game = atari_game(env_id, cfg.full_action_space)
        from ale_py.vector_env import AtariVectorEnv

        self.n = int(n)
        self.num_threads = num_threads or min(self.n, os.cpu_count() or 1)
        self.env = AtariVectorEnv(
            self.game.rom,
            self.n,
            num_threads=self.num_threads,
            # ale-py's own limit ends a step before its last frame is grabbed (the final stack then lacks
            # it); the limit is applied here instead, as in the single environment.
            max_num_frames_per_episode=2**31 - 1,
            repeat_action_probability=cfg.repeat_action_probability,
            full_action_space=cfg.full_action_space,
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
            img_height=cfg.screen_size,
            img_width=cfg.screen_size,
            grayscale=True,
            stack_num=cfg.frame_stack,
            frameskip=cfg.frame_skip,
            maxpool=True,
            noop_max=cfg.noop_max,
            episodic_life=False,  # life losses are read from the lives counter: the game goes on
            life_loss_info=False,
            reward_clipping=False,  # clipped here, so the raw score stays available
            use_fire_reset=cfg.fire_on_reset,
        )
        self.obs_shape = (cfg.frame_stack, cfg.screen_size, cfg.screen_size)
        self.obs_dim = int(np.prod(self.obs_shape))
        self.n_actions = self.game.n_actions
        self.horizon = cfg.max_episode_steps
        self.lives = np.zeros(self.n, np.int64)
        self.elapsed = np.zeros(self.n, np.int64)
        """Agent steps of each copy's current episode."""

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Seed copy i with ``seeds[i]`` and start a new episode everywhere; returns ``(N, *obs_shape)``."""
        seeds = np.array([_seed32(s) for s in seeds], dtype=np.int64)
        if seeds.shape != (self.n,):
            raise ValueError(f"{self.n} copies but {seeds.size} seeds")
        obs, info = self.env.reset(seed=seeds)
        self.lives = np.asarray(info["lives"], np.int64).copy()
        self.elapsed[:] = 0
        return obs

    def step(self, actions: np.ndarray) -> AtariStep:
        self.send(actions)
        return self.recv()

    def send(self, actions: np.ndarray) -> None:
        """Start a step of every copy in ale-py's threads and return at once; :meth:`recv` collects it."""
        actions = np.asarray(actions, dtype=np.int64)
        if actions.shape != (self.n,):
            raise ValueError(f"expected {self.n} actions of shape ({self.n},), got shape {actions.shape}")
        self.env.send(actions)

    def recv(self) -> AtariStep:
        """Wait for the step started by :meth:`send` and return it (as :meth:`step` does)."""
        obs, reward, terminated, truncated, info = self.env.recv()
        terminated = np.asarray(terminated, bool)
        self.elapsed += 1
        truncated = (self.elapsed >= self.horizon) & ~terminated
        next_obs = obs
        if terminated.any():  # same-step auto-reset: obs holds the new episodes' first stacks
            next_obs = obs.copy()
            next_obs[terminated] = info["final_obs"][terminated]
        if truncated.any():  # reset those copies from their own no-op generators
            if next_obs is obs:
                next_obs = obs.copy()
            obs, reset_info = self.env.reset(options={"reset_mask": truncated})
            info["lives"] = np.where(truncated, reset_info["lives"], info["lives"])
        ended = terminated | truncated
        self.elapsed[ended] = 0
        lives = np.asarray(info["lives"], np.int64)
        life_lost = (lives < self.lives) & ~ended
        self.lives = lives.copy()  # after an end: the new episode's lives
        raw = np.asarray(reward, np.float32)
        learning_reward = np.clip(raw, -1.0, 1.0) if self.cfg.clip_rewards else raw.copy()
        return AtariStep(
            next_obs=next_obs,
            reward=raw,
            terminated=terminated,
            truncated=truncated,
            obs=obs,
            learning_reward=learning_reward,
            life_lost=life_lost,
            learning_terminal=terminated | (life_lost & self.cfg.terminal_on_life_loss),
        )

    def close(self) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return f"AtariVectorTask({self.game.env_id}, n={self.n}, threads={self.num_threads})"


def step_games(envs: Sequence[AtariVectorTask], actions: np.ndarray) -> list[AtariStep]:
    """Step several games at once: ``actions[:, t]`` to ``envs[t]``, all started before any is collected.

    Each game steps in its own ale-py threads, so the games run in parallel rather than one after another;
    the result is the same as calling ``envs[t].step(actions[:, t])`` in turn.
    """
    for t, env in enumerate(envs):
        env.send(actions[:, t])
    return [env.recv() for env in envs]
