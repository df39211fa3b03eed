"""The training loop for Atari games: :class:`~mtdqn.train.Trainer` with frames, a frame replay and convnets.

The run is the control trainer's (warm-up, evaluation of the untrained network, epochs of lockstep acting
and updating with evaluation in the background, checkpoints, resuming), with these pieces swapped in:

* tasks are ALE games, each stepped as one :class:`~mtdqn.tasks.atari.AtariVectorTask` holding the S
  members' copies (ale-py's C++ vector env, one thread per game; the games step in parallel);
* the observation is a uint8 frame stack ``(S, T, 1, 4, 84, 84)`` and acting runs the network's torch
  forward under ``inference_mode``;
* the replay is a :class:`~mtdqn.replay_frames.FrameReplay`: every joint step stores one frame per game;
  each update samples from each member's own stream (``derive_rng(seed, "sample", epoch)``), so a member
  samples the same alone or in a population;
* the learner learns from the clipped reward and the learning terminal (a lost life with
  ``terminal_on_life_loss``); evaluation scores raw game scores (:mod:`mtdqn.evaluate_atari`);
* the checkpoint keeps the replay as ``.npy`` files in ``replay-<epoch>/`` beside ``checkpoint.pt``, which
  names the folder; a resumed run continues exactly as an uninterrupted one (environments are reset, and
  every random stream re-derived, at each epoch start).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mtdqn.config import Config
from mtdqn.errors import UserError
from mtdqn.evaluate_atari import AtariEvalJob
from mtdqn.learner import DQNLearner
from mtdqn.policy import epsilon, masked_greedy
from mtdqn.replay_frames import FrameReplay
from mtdqn.runlog import save_checkpoint
from mtdqn.seeding import derive_rng, derive_seed
from mtdqn.tasks.atari import step_games
from mtdqn.tasks.control import TaskSpec
from mtdqn.train import Trainer, resolve_device

REPLAY_PREFIX = "replay-"
"""Checkpointed replay folders are ``replay-<epoch>``; the checkpoint names the current one."""


def atari_task_specs(config: Config) -> list[TaskSpec]:
    """Name, action count, discount and time limit of each game (reads ale-py's action sets)."""
    from mtdqn.tasks.atari import atari_game

    cfg = config.atari
    specs = []
    for task in config.tasks:
        game = atari_game(task.env_id, cfg.full_action_space)
        specs.append(
            TaskSpec(
                name=task.label,
                obs_dim=cfg.frame_stack * cfg.screen_size**2,
                n_actions=game.n_actions,
                gamma=float(task.gamma),
                horizon=cfg.max_episode_steps,
            )
        )
    return specs


class AtariTrainer(Trainer):
    """A multi-task (or single-task baseline) DQN run on Atari games; see the module docstring."""

    def __init__(self, config: Config, run_dir: Path, progress: bool = True) -> None:
        config.validate()
        from mtdqn.nets_atari import AtariQNetwork
        from mtdqn.tasks.atari import AtariVectorTask

        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        cfg = config.atari
        self.specs = atari_task_specs(config)
        self.device = resolve_device(config.run.device)
        self.seeds = list(config.run.seeds)
        self.n_members = len(self.seeds)
        self.n_tasks = len(self.specs)
        torch.set_num_threads(config.run.torch_threads or os.cpu_count() or 1)
        self.n_actions = np.array([s.n_actions for s in self.specs])
        self.net = AtariQNetwork(
            list(self.n_actions),
            config.atari_network,
            share=config.mode == "multi",
            n_members=self.n_members,
            seeds=self.seeds,
            stack=cfg.frame_stack,
            screen=cfg.screen_size,
        ).to(self.device)
        self.learner = DQNLearner(self.net, [s.gamma for s in self.specs], config.learner)
        self.replay = FrameReplay(
            self.n_members, self.n_tasks, config.replay.capacity, (cfg.screen_size,) * 2, cfg.frame_stack
        )
        self.envs = [AtariVectorTask(t.env_id, self.n_members, cfg, num_threads=1) for t in config.tasks]
        self.action_mask = self.net.action_mask.cpu().numpy()
        self._start_bookkeeping()
        self.best = None  # best-epoch shared weights are kept for transfer, which Atari runs lack yet
        self._source = None
        self._obs = np.zeros((self.n_members, self.n_tasks, 1, *self.net.input_shape), dtype=np.uint8)
        self._first = np.ones((self.n_members, self.n_tasks), dtype=bool)
        """Whether the current observation of each (member, game) is its episode's first."""
        self._replay_dir: str | None = None

    def describe_memory(self) -> str:
        r = self.replay
        return (
            f"replay: {self.n_tasks} game(s) x {self.n_members} member(s) x {r.capacity:,} transitions "
            f"= {r.memory_bytes() / 1e9:.2f} GB of uint8 frames (committed as it fills)"
        )

    def run(self) -> None:
        print(self.describe_memory(), file=sys.stderr)
        super().run()

    # --- checkpoints: the replay as .npy files beside checkpoint.pt -----------------------------------------

    def _replay_state(self) -> dict:
        return {"folder": self._replay_dir or ""}

    def _load_replay(self, state) -> None:
        if not isinstance(state, dict) or "folder" not in state:
            raise UserError(
                f"checkpoint in {self.run_dir} is not an Atari checkpoint; restart the run with --overwrite"
            )
        self._replay_dir = state["folder"] or None
        if self._replay_dir:
            self.replay.load(self.run_dir / self._replay_dir)

    def _save_checkpoint(self) -> None:
        """Replay into a new ``replay-<epoch>`` folder, then the checkpoint naming it, then old folders go."""
        name = f"{REPLAY_PREFIX}{self.epoch}"
        folder = self.run_dir / name
        if folder.exists():  # left by a run killed between this folder and its checkpoint: not referenced
            shutil.rmtree(folder)
        self.replay.save(folder)
        self._replay_dir = name
        save_checkpoint(self.run_dir / "checkpoint.pt", self.state())
        for old in self.run_dir.glob(f"{REPLAY_PREFIX}*"):
            if old.name != name and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)

    # --- environments ---------------------------------------------------------------------------------------

    def _reset_envs(self, phase: str, epoch: int = 0) -> None:
        """New games everywhere; member m's copy of game t is seeded from (seed_m, phase, epoch, t)."""
        for t, env in enumerate(self.envs):
            self._obs[:, t, 0] = env.reset([derive_seed(s, phase, epoch, t) for s in self.seeds])
        self._first[:] = True

    def _step_envs(self, actions: np.ndarray) -> None:
        """Step every game's copies once (actions ``(S, T)``); store one frame per game in the replay."""
        outs = step_games(self.envs, actions)
        reward = np.stack([out.learning_reward for out in outs], axis=1)
        terminal = np.stack([out.learning_terminal for out in outs], axis=1)
        # Slot of this step: the newest frame of the stack the action was taken in.
        self.replay.add(self._obs[:, :, 0, -1], actions, reward, terminal, self._first)
        for t, out in enumerate(outs):
            self._obs[:, t, 0] = out.obs
            self._first[:, t] = out.terminated | out.truncated

    # --- an epoch -------------------------------------------------------------------------------------------

    def _train_epoch(self, epoch: int, bar) -> float:
        """``steps_per_epoch`` joint steps of epsilon-greedy acting, an update every ``train_frequency``."""
        cfg = self.config
        steps, every = cfg.run.steps_per_epoch, cfg.learner.train_frequency
        batch = cfg.learner.batch_size
        explore_u, random_actions = self._exploration_draws(epoch, steps)
        sample_rngs = [derive_rng(seed, "sample", epoch) for seed in self.seeds]
        bar.set_description(f"{self.run_dir.name} epoch {epoch}/{cfg.run.epochs}", refresh=False)
        self._reset_envs("train", epoch)
        obs_t = torch.from_numpy(self._obs)  # shares memory with self._obs (refreshed in place each step)
        start = time.perf_counter()
        for step in range(steps):
            self.env_steps += 1
            explore = explore_u[step] < epsilon(self.env_steps, cfg.exploration)
            actions = random_actions[step]
            if not explore.all():
                with torch.inference_mode():
                    q = self.net(obs_t.to(self.device, non_blocking=True))[:, :, 0]
                greedy = masked_greedy(q.cpu().numpy(), self.action_mask)
                actions = np.where(explore, actions, greedy)
            self._step_envs(actions)
            if self.env_steps % every == 0:
                self.learner.update(self.replay.sample(sample_rngs, batch, self.device))
            if (step + 1) % 250 == 0:
                bar.update(250)
        bar.update(steps % 250)
        seconds = time.perf_counter() - start
        self.wall_s += seconds
        return seconds

    # --- evaluation -----------------------------------------------------------------------------------------

    def eval_job(self, epoch: int) -> AtariEvalJob:
        """The evaluation of the current weights as epoch ``epoch`` (a CPU snapshot, safe elsewhere)."""
        return AtariEvalJob(
            tasks=self.config.tasks,
            atari=self.config.atari,
            network=self.config.atari_network,
            share=self.config.mode == "multi",
            n_actions=[int(a) for a in self.n_actions],
            state={k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            n_steps=self.config.run.eval_steps,
            epsilon=self.config.exploration.eval_epsilon,
            seeds=self.seeds,
            epoch=epoch,
        )
