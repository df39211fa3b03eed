"""The training loop: warm-up, epochs of lockstep acting and updating, evaluation, checkpoints.

One *joint step* is one environment step in every task (of every member) followed by one update of the
learner (every ``train_frequency`` joint steps). A run is:

1. warm-up: ``replay.warmup`` random-action steps per task into the replay memories, no update;
2. evaluation "epoch 0" of the untrained network;
3. for each epoch: reset every environment (seeded by member seed, epoch and task), ``steps_per_epoch``
   joint steps with epsilon-greedy acting, then an evaluation (in a background process when enabled).

All randomness is drawn from streams derived from (member seed, purpose, epoch, task), so resuming at an
epoch boundary needs no saved random state and reproduces an uninterrupted run exactly, and the member with
seed s of a population acts, samples and explores exactly as a run with seed s alone.

Several seeds (``RunConfig.seeds``) train together as a population of independent agents: parameters,
optimizer state, target networks and replay carry a leading member dimension S, every update is one batched
computation for all members and tasks, and each task's S environment copies step as one vector task.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mtdqn.analysis.values import diverged, possible_values
from mtdqn.best_shared import BEST_SHARED_FILE, BestShared, snapshot_shared
from mtdqn.config import Config
from mtdqn.errors import UserError
from mtdqn.evaluate import EvalJob, EvalResult, Evaluator
from mtdqn.learner import DQNLearner
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.policy import epsilon, masked_greedy, q_values
from mtdqn.replay import MultiTaskReplay
from mtdqn.runlog import (
    GRADIENT_COLUMNS,
    TASK_WEIGHT_COLUMNS,
    MetricsTable,
    load_checkpoint,
    load_config,
    plot_gradients,
    plot_learning_curves,
    save_checkpoint,
    save_config,
)
from mtdqn.seeding import derive_rng, derive_seed
from mtdqn.tasks import make_vector_task, task_specs
from mtdqn.threads import set_compute_threads
from mtdqn.transfer import SourceShared, load_shared, prepare, set_shared_trainable, shared_frozen

_SAMPLE_CHUNK = 100
"""Steps whose replay samples are drawn and planned at once."""


def _epoch_list(epochs: list[int]) -> str:
    if len(epochs) <= 5:
        return ", ".join(map(str, epochs))
    return f"{epochs[0]}, {epochs[1]}, ... {epochs[-1]} ({len(epochs)} epochs)"


def _trainer_class(cls: type, config: Config) -> type:
    """``cls``, or the Atari trainer when ``config`` is an Atari run and no subclass was asked for."""
    if cls is Trainer and config.is_atari:
        from mtdqn.train_atari import AtariTrainer

        return AtariTrainer
    return cls


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a CUDA request without CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


class Trainer:
    """A run of multi-task (or single-task baseline) DQN in its run folder."""

    def __init__(self, config: Config, run_dir: Path, progress: bool = True) -> None:
        config.validate()
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.specs = task_specs(config.tasks)
        self.device = resolve_device(config.run.device)
        self._cores = os.cpu_count() or 1
        self.seeds = list(config.run.seeds)
        self.n_members = len(self.seeds)
        threads = config.run.torch_threads or (1 if self.n_members == 1 else self._cores)
        set_compute_threads(threads)
        self.n_tasks = len(self.specs)
        self.net = MultiTaskQNetwork(
            self.specs,
            config.network,
            share=config.mode == "multi",
            n_members=self.n_members,
            seeds=self.seeds,
        ).to(self.device)
        self.learner = DQNLearner(self.net, [s.gamma for s in self.specs], config.learner)
        self.replay = MultiTaskReplay(
            self.n_members, self.n_tasks, config.replay.capacity, self.net.obs_max, self.device
        )
        self.envs = [make_vector_task(task, self.n_members) for task in config.tasks]  # one per task
        self.action_mask = self.net.action_mask.cpu().numpy()
        self.n_actions = np.array([s.n_actions for s in self.specs])
        self._start_bookkeeping()
        # Best-epoch shared weights (multi-task runs), and a transfer run's source weights once read.
        self.best = BestShared(self.n_members) if config.mode == "multi" else None
        self._source: SourceShared | None = None
        self._obs = np.zeros((self.n_members, self.n_tasks, 1, self.net.obs_max), dtype=np.float32)

    def _start_bookkeeping(self) -> None:
        """The run's record before its first step: its fingerprint, tables and counters."""
        self.fingerprint = self.config.learning_fingerprint()
        self.metrics = MetricsTable(self.run_dir / "metrics.csv")
        self.gradients = MetricsTable(self.run_dir / "gradients.csv", GRADIENT_COLUMNS)
        self.task_weights = MetricsTable(self.run_dir / "task_weights.csv", TASK_WEIGHT_COLUMNS)
        self.epoch = -1  # -1: warm-up not done; e >= 0: learning epochs completed (0 = after warm-up)
        self.env_steps = 0  # learning steps taken by each task so far (drives epsilon)
        self.wall_s = 0.0
        self.epoch_stats: dict = {}
        self._warned: set[tuple[int, int]] = set()  # (member, task) whose diverging values were reported

    # --- creating and resuming ------------------------------------------------------------------------

    @classmethod
    def create(cls, config: Config, run_dir: Path, overwrite: bool = False, progress: bool = True) -> Trainer:
        """A new run in ``run_dir``; refuses an existing run folder unless ``overwrite``.

        A transfer run (``config.transfer``) is checked against its source here, and its config gets the
        source's weight digest and the source member of every seed.
        """
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"{run_dir} exists and is not a folder; choose another --name or --runs-dir")
        source = None
        if config.transfer is not None:
            config, source = prepare(config)
        trainer = _trainer_class(cls, config)(config, run_dir, progress)  # validates before touching the disk
        trainer._source = source
        if run_dir.exists() and any(run_dir.iterdir()):
            if not (run_dir / "config.json").is_file():
                raise UserError(
                    f"{run_dir} exists and is not an mtdqn run folder (no config.json); --overwrite replaces "
                    "only run folders: choose another --name or --runs-dir"
                )
            if not overwrite:
                raise UserError(
                    f"run folder {run_dir} already exists; pass --resume to continue it, --overwrite to "
                    "replace it, or choose another --name"
                )
            shutil.rmtree(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create the run folder {run_dir} ({exc.strerror or exc}); choose another --runs-dir"
            ) from None
        save_config(run_dir, config)
        return trainer

    @classmethod
    def load(
        cls,
        run_dir: Path,
        epochs: int | None = None,
        device: str | None = None,
        progress: bool = True,
        threads: int | None = None,
        background_eval: bool | None = None,
        eval_workers: int | None = None,
        replay: bool = True,
    ) -> Trainer:
        """The run in ``run_dir`` as of its last checkpoint, without writing anything; ``epochs``,
        ``device``, ``threads``, ``background_eval`` and ``eval_workers`` replace the saved ones (none
        changes a number but the epoch count). ``replay=False`` leaves the replay memory empty (enough to
        evaluate; an Atari run deletes the previous epoch's replay folder while it trains on)."""
        run_dir = Path(run_dir)
        config = load_config(run_dir)
        changes = dict(
            epochs=epochs,
            device=device,
            torch_threads=threads,
            background_eval=background_eval,
            eval_workers=eval_workers,
        )
        for field, value in changes.items():
            if value is not None:
                setattr(config.run, field, value)
        trainer = _trainer_class(cls, config)(config, run_dir, progress)
        ckpt_path = run_dir / "checkpoint.pt"
        if ckpt_path.is_file():
            state = load_checkpoint(ckpt_path, trainer.fingerprint, map_location=trainer.device)
            trainer.load_state(state, replay=replay)
        trainer._check_history()
        if epochs is not None and epochs < trainer.epoch:
            raise UserError(
                f"--epochs {epochs} is below the {trainer.epoch} epochs {run_dir} has done; pass --epochs "
                f"{trainer.epoch} or more (a run is never shortened)"
            )
        return trainer

    def _check_history(self) -> None:
        """metrics.csv and the checkpoint must tell the same story: the evaluation of every epoch before the
        checkpoint's is recorded, and no evaluation exists without a checkpoint."""
        table = MetricsTable(self.run_dir / "metrics.csv")
        table.load(max_epoch=max(self.epoch, 0) if self.epoch >= 0 else 10**9)
        recorded = table.evaluated_epochs()
        if self.epoch < 0 and recorded:
            raise UserError(
                f"{self.run_dir}/metrics.csv records epochs up to {max(recorded)} but the run has no "
                "checkpoint.pt; restore checkpoint.pt, or start the run again with --overwrite"
            )
        missing = sorted(set(range(self.epoch)) - recorded)
        if missing:
            raise UserError(
                f"{self.run_dir}/metrics.csv lacks the evaluations of epoch(s) {_epoch_list(missing)} "
                f"before the checkpoint's epoch {self.epoch}; restore metrics.csv, or start the run again "
                "with --overwrite"
            )

    @classmethod
    def resume(cls, run_dir: Path, progress: bool = True, **changes) -> Trainer:
        """Continue the run in ``run_dir`` after its last completed epoch; ``changes`` (``epochs``,
        ``device``, ``threads``, ``background_eval``, ``eval_workers``) are :meth:`load`'s."""
        trainer = cls.load(run_dir, progress=progress, **changes)
        save_config(trainer.run_dir, trainer.config)  # records a new epoch count, device or threads
        return trainer

    def state(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "env_steps": self.env_steps,
            "wall_s": self.wall_s,
            "learner": self.learner.state_dict(),
            "replay": self._replay_state(),
            "epoch_stats": self.epoch_stats,
            "best_shared": self.best.state_dict() if self.best is not None else None,
        }

    def _replay_state(self):
        return self.replay.state_dict()

    def _load_replay(self, state) -> None:
        self.replay.load_state_dict(state)

    def load_state(self, state: dict, replay: bool = True) -> None:
        try:
            self.learner.load_state_dict(state["learner"])
            if replay:
                self._load_replay(state["replay"])
            self.epoch = int(state["epoch"])
            self.env_steps = int(state["env_steps"])
            self.wall_s = float(state["wall_s"])
            self.epoch_stats = state["epoch_stats"]
            if self.best is not None and state.get("best_shared") is not None:
                self.best.load_state_dict(state["best_shared"], self.device)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise UserError(
                f"checkpoint in {self.run_dir} does not fit this configuration ({exc}); "
                "restart the run with --overwrite"
            ) from None

    # --- the run --------------------------------------------------------------------------------------

    def run(self) -> None:
        """Warm up (if new), then train and evaluate until ``config.run.epochs``; resumable at any point."""
        cfg = self.config.run
        self.metrics.load(max_epoch=max(self.epoch, 0))
        if cfg.gradient_batches:
            self.gradients.load(max_epoch=max(self.epoch, 0))
        if self.learner.task_weights is not None:
            self.task_weights.load(max_epoch=max(self.epoch, 0))
        evaluator = Evaluator(background=cfg.background_eval, workers=self.eval_workers())
        writer = self._tensorboard(purge_step=max(self.epoch, 0))
        bar = self._progress_bar()
        try:
            if self.epoch < 0:
                self._start_transfer()
                self._warmup()
                self.epoch = 0
                self.epoch_stats = self._collect_epoch_stats(0.0)
                self._measure_gradients(writer)
                self._record_task_weights(writer)
                self._save_checkpoint()
            pending = None
            if self.epoch not in self.metrics.evaluated_epochs():
                pending = evaluator.submit(self.eval_job(self.epoch))
                pending_stats, pending_shared = self.epoch_stats, self._snapshot_shared()
            else:  # evaluated and recorded, but killed before its best-epoch judgement was checkpointed
                self._judge_best(self.epoch, self._recorded_j(self.epoch), self._snapshot_shared())
            for epoch in range(self.epoch + 1, cfg.epochs + 1):
                self._apply_freeze(epoch)
                seconds = self._train_epoch(epoch, bar)
                stats = self._collect_epoch_stats(seconds)
                if pending is not None:
                    result = pending.result()
                    self._record(result, pending_stats, writer, bar)
                    self._judge_best(result.epoch, result.j, pending_shared)
                self.epoch, self.epoch_stats = epoch, stats
                self._measure_gradients(writer)
                self._record_task_weights(writer)
                self._save_checkpoint()
                pending, pending_stats = evaluator.submit(self.eval_job(epoch)), stats
                pending_shared = self._snapshot_shared()  # epoch's weights, judged when its J arrives
            if pending is not None:
                result = pending.result()
                self._record(result, pending_stats, writer, bar)
                self._judge_best(result.epoch, result.j, pending_shared)
        finally:
            bar.close()
            evaluator.close()
            writer.close()
        plot_learning_curves(self.run_dir)
        if cfg.gradient_batches:
            plot_gradients(self.run_dir)

    def eval_workers(self) -> int:
        """Processes per background evaluation: ``run.eval_workers``, or for 0 one with a learner on the CPU
        (its threads use the cores) and otherwise one per 25 members, at most half the cores."""
        if self.config.run.eval_workers:
            return self.config.run.eval_workers
        if self.device.type == "cpu":
            return 1
        return max(1, min(self._cores // 2, math.ceil(self.n_members / 25)))

    def _save_checkpoint(self) -> None:
        """Everything needed to resume after the current epoch, written atomically."""
        save_checkpoint(self.run_dir / "checkpoint.pt", self.state())

    # --- transfer and best-epoch shared weights ----------------------------------------------------------

    def _start_transfer(self) -> None:
        """Before a transfer run's warm-up: its online shared layers <- the source's best-epoch ones."""
        if self.config.transfer is None:
            return
        if self._source is None:  # resumed before its first checkpoint: read (and re-check) the source
            _, self._source = prepare(self.config)
        load_shared(self.net, self._source, self.config.transfer.source_seeds)

    def _apply_freeze(self, epoch: int) -> None:
        if self.config.transfer is not None:
            set_shared_trainable(self.net, not shared_frozen(epoch, self.config.transfer.unfreeze_epoch))

    def _snapshot_shared(self) -> list[torch.Tensor] | None:
        return snapshot_shared(self.net) if self.best is not None else None

    def _judge_best(self, epoch: int, j: np.ndarray, shared: list[torch.Tensor] | None) -> None:
        """Keep epoch ``epoch``'s shared weights for the members whose summed J is a new best; save them."""
        if self.best is None or shared is None or epoch <= self.best.through_epoch:
            return
        self.best.consider(epoch, j, shared)
        self.best.save(
            self.run_dir / BEST_SHARED_FILE,
            self.seeds,
            [t.label for t in self.config.tasks],
            self.config.network,
            self.fingerprint,
        )

    def _recorded_j(self, epoch: int) -> np.ndarray:
        """J per (member, task) of ``epoch`` as recorded in metrics.csv (exact: floats round-trip)."""
        j = np.full((self.n_members, self.n_tasks), np.nan)
        for row in self.metrics.rows:
            if int(row["epoch"]) == epoch:
                j[int(row["member"]), int(row["task"])] = float(row["J"])
        return j

    def _warmup(self) -> None:
        """Fill every replay memory with ``replay.warmup`` uniformly random steps per task."""
        n = self.config.replay.warmup
        uniform = np.stack([derive_rng(s, "warmup").random((n, self.n_tasks)) for s in self.seeds], axis=1)
        actions = (uniform * self.n_actions).astype(np.int64)  # (steps, S, T)
        self._reset_envs("warmup")
        for step in range(n):
            self._step_envs(actions[step])

    def _train_epoch(self, epoch: int, bar) -> float:
        """``steps_per_epoch`` joint steps of epsilon-greedy acting, each followed by an update."""
        cfg = self.config
        steps, every = cfg.run.steps_per_epoch, cfg.learner.train_frequency
        # Replay samples are drawn in chunks (the same numbers, as a stream's block of k draws equals k
        # single draws) to bound memory.
        explore_u, random_actions = self._exploration_draws(epoch, steps)
        sample_rngs = [derive_rng(seed, "sample", epoch) for seed in self.seeds]
        bar.set_description(f"{self.run_dir.name} epoch {epoch}/{cfg.run.epochs}", refresh=False)
        self._reset_envs("train", epoch)
        act = self._greedy_actor()
        start = time.perf_counter()
        for step in range(steps):
            if step % _SAMPLE_CHUNK == 0:
                rows = self._plan_samples(sample_rngs, step, min(_SAMPLE_CHUNK, steps - step))
            self.env_steps += 1
            explore = explore_u[step] < epsilon(self.env_steps, cfg.exploration)
            actions = random_actions[step]
            if not explore.all():
                actions = np.where(explore, actions, act())
            self._step_envs(actions)
            if self.env_steps % every == 0:
                self.learner.update(
                    self.replay.gather_rows(rows[step % _SAMPLE_CHUNK], cfg.learner.batch_size)
                )
            if (step + 1) % 250 == 0:
                bar.update(250)
        bar.update(steps % 250)
        seconds = time.perf_counter() - start
        self.wall_s += seconds
        return seconds

    def _greedy_actor(self) -> Callable[[], np.ndarray]:
        """A function returning the greedy actions ``(S, T)`` for the current observations and weights.

        On the CPU a numpy forward on views of the live parameters (no copy, ~20 us for all tasks); on a
        GPU the network's own forward where the weights live, so that only the observations go to the
        device and the actions come back (copying every weight to the host each step would cost more).
        """
        if self.device.type == "cpu":
            params, kinds = self.net.numpy_params(), self.net.layer_kinds()
            return lambda: masked_greedy(q_values(params, kinds, self._obs)[:, :, 0], self.action_mask)
        return self._greedy_on_device

    @torch.no_grad()
    def _greedy_on_device(self) -> np.ndarray:
        """Greedy actions from the network's forward on its device (see :meth:`_greedy_actor`)."""
        q = self.net(torch.from_numpy(self._obs).to(self.device))[:, :, 0]
        q = q.masked_fill(~self.net.action_mask, float("-inf"))
        return q.argmax(-1).cpu().numpy()

    def _exploration_draws(self, epoch: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's exploration draws up front, from each member's own stream: ``(steps, S, T)`` uniforms
        compared with epsilon, and the random actions (uniform over each task's actions)."""
        explore_u, action_u = [], []
        for seed in self.seeds:
            act_rng = derive_rng(seed, "act", epoch)
            explore_u.append(act_rng.random((steps, self.n_tasks)))
            action_u.append(act_rng.random((steps, self.n_tasks)))
        explore_u, action_u = np.stack(explore_u, axis=1), np.stack(action_u, axis=1)
        return explore_u, (action_u * self.n_actions).astype(np.int64)

    def _plan_samples(self, rngs: list[np.random.Generator], step: int, n: int) -> dict[int, torch.Tensor]:
        """Replay rows of the updates among the next ``n`` steps (from ``step``), keyed by step % chunk."""
        batch = self.config.learner.batch_size
        uniform = np.stack([rng.random((n, self.n_tasks, batch)) for rng in rngs], axis=1)
        every = self.config.learner.train_frequency
        offsets = np.array([k for k in range(n) if (self.env_steps + k + 1) % every == 0], dtype=np.int64)
        if offsets.size == 0:
            return {}
        rows = self.replay.plan_indices(uniform[offsets], adds_before=offsets + 1)
        return {int((step + k) % _SAMPLE_CHUNK): rows[i] for i, k in enumerate(offsets)}

    def _reset_envs(self, phase: str, epoch: int = 0) -> None:
        """New episodes everywhere; member m's copy of task t is seeded from (seed_m, phase, epoch, t)."""
        for t, (env, spec) in enumerate(zip(self.envs, self.specs, strict=True)):
            obs = env.reset([derive_seed(s, phase, epoch, t) for s in self.seeds])
            self._obs[:, t, 0, : spec.obs_dim] = obs

    def _step_envs(self, actions: np.ndarray) -> None:
        """Step every task's copies once (actions ``(S, T)``), store the transitions, auto-reset."""
        obs = self._obs[:, :, 0].copy()
        next_obs = np.zeros_like(obs)
        reward = np.zeros(actions.shape, dtype=np.float32)
        terminal = np.zeros(actions.shape, dtype=np.float32)
        for t, (env, spec) in enumerate(zip(self.envs, self.specs, strict=True)):
            out = env.step(actions[:, t])
            d = spec.obs_dim
            next_obs[:, t, :d] = out.next_obs
            reward[:, t] = out.reward
            terminal[:, t] = out.terminated  # a horizon cut (truncated) is not a terminal: bootstrap
            self._obs[:, t, 0, :d] = out.obs
        self.replay.add(obs, actions, reward, next_obs, terminal)

    # --- evaluation and logging -----------------------------------------------------------------------

    def eval_job(self, epoch: int) -> EvalJob:
        """The evaluation of the current weights as epoch ``epoch`` (a snapshot: safe to run elsewhere)."""
        return EvalJob(
            tasks=self.config.tasks,
            params=[(w.copy(), b.copy()) for w, b in self.net.numpy_params()],
            kinds=self.net.layer_kinds(),
            action_mask=self.action_mask,
            obs_max=self.net.obs_max,
            n_steps=self.config.run.eval_steps,
            epsilon=self.config.exploration.eval_epsilon,
            seeds=self.seeds,
            epoch=epoch,
        )

    def _collect_epoch_stats(self, seconds: float) -> dict:
        stats = self.learner.pop_stats()
        joint_steps = self.config.run.steps_per_epoch if seconds > 0 else 0
        return {
            "loss": stats["loss"],
            "mean_q": stats["mean_q"],
            "epsilon": epsilon(self.env_steps, self.config.exploration) if self.env_steps else 1.0,
            "env_steps": self.env_steps,
            "updates": self.learner.n_updates,
            "steps_per_s": joint_steps * self.n_tasks * self.n_members / seconds if seconds > 0 else 0.0,
            "wall_s": self.wall_s,
        }

    def _record(self, result: EvalResult, stats: dict, writer, bar) -> None:
        rows = []
        for m in range(self.n_members):
            for t, spec in enumerate(self.specs):
                rows.append(
                    {
                        "epoch": result.epoch,
                        "member": m,
                        "seed": self.seeds[m],
                        "task": t,
                        "task_name": spec.name,
                        "J": float(result.j[m, t]),
                        "return": float(result.ret[m, t]),
                        "episodes": int(result.episodes[m, t]),
                        "loss": float(stats["loss"][m, t]),
                        "mean_q": float(stats["mean_q"][m, t]),
                        "epsilon": float(stats["epsilon"]),
                        "env_steps": int(stats["env_steps"]),
                        "updates": int(stats["updates"]),
                        "steps_per_s": float(stats["steps_per_s"]),
                        "wall_s": float(stats["wall_s"]),
                    }
                )
        self.metrics.append(rows)
        # TensorBoard and the progress bar show the mean over the population's members.
        per_task = {
            "J": result.j.mean(0),
            "return": result.ret.mean(0),
            "loss": stats["loss"].numpy().mean(0),
            "mean_q": stats["mean_q"].numpy().mean(0),
        }
        for t, spec in enumerate(self.specs):
            for key, values in per_task.items():
                if np.isfinite(values[t]):
                    writer.add_scalar(f"{spec.name}/{key}", values[t], result.epoch)
            writer.add_scalar(f"{spec.name}/epsilon", stats["epsilon"], result.epoch)
        writer.add_scalar("speed/env_steps_per_s", stats["steps_per_s"], result.epoch)
        writer.flush()
        scores = " ".join(f"{s.name[:12]}={per_task['J'][t]:.3g}" for t, s in enumerate(self.specs))
        bar.set_postfix_str(f"J@{result.epoch} {scores}", refresh=True)
        self._warn_diverging(result.epoch, stats["mean_q"].numpy(), bar)

    def _warn_diverging(self, epoch: int, mean_q: np.ndarray, bar) -> None:
        """Say when a member's mean Q of a task has left what its rewards allow (diverging values; a diverging
        task's TD errors also dominate the shared layers): one line per task, naming the seeds newly found."""
        r_min, r_max = self.replay.reward_range()
        gammas = np.array([spec.gamma for spec in self.specs])
        flagged = diverged(mean_q, r_min, r_max, gammas)
        for t, spec in enumerate(self.specs):
            new = [m for m in np.flatnonzero(flagged[:, t]) if (m, t) not in self._warned]
            if not new:
                continue
            self._warned.update((m, t) for m in new)
            worst = max(new, key=lambda m: abs(mean_q[m, t]))
            low, high = possible_values(r_min[worst, t], r_max[worst, t], gammas[t])
            named = ", ".join(str(self.seeds[m]) for m in new[:10])
            if len(new) > 10:
                named += f" and {len(new) - 10} more"
            which = f"seed {named}" if len(new) == 1 else f"seeds {named}"
            remedy = "" if self.config.learner.clip_targets else " (--clip-targets keeps them in it)"
            bar.write(
                f"warning: {self.run_dir.name}: the values of {spec.name} are diverging ({which}): mean Q "
                f"{mean_q[worst, t]:.4g} at epoch {epoch}, where its rewards (in [{r_min[worst, t]:.3g}, "
                f"{r_max[worst, t]:.3g}]) allow values in [{low:.4g}, {high:.4g}]{remedy}",
                file=sys.stderr,
            )

    def _measure_gradients(self, writer) -> None:
        """With ``run.gradient_batches``: each task's gradient on the shared layers at the current epoch
        (:func:`~mtdqn.analysis.gradients.measure_sharing`, stream seed = the epoch) into gradients.csv, and
        its means over the members into TensorBoard. Written before the epoch's checkpoint, so a resumed
        run has the rows of every checkpointed epoch (and recomputes, identically, those of a lost one)."""
        batches = self.config.run.gradient_batches
        if not batches:
            return
        from mtdqn.analysis.gradients import PER_TASK, measure_sharing

        numbers = measure_sharing(self, batches, seed=self.epoch)
        rows = [
            {
                "epoch": self.epoch,
                "member": m,
                "seed": self.seeds[m],
                "task": t,
                "task_name": spec.name,
                "batches": batches,
                **{key: float(numbers[key][m, t]) for key in PER_TASK},
            }
            for m in range(self.n_members)
            for t, spec in enumerate(self.specs)
        ]
        self.gradients.append(rows)
        for t, spec in enumerate(self.specs):
            for key in ("contribution", "cosine_with_others"):
                values = numbers[key][:, t]
                if np.isfinite(values).any():
                    writer.add_scalar(f"{spec.name}/gradient_{key}", np.nanmean(values), self.epoch)

    def _record_task_weights(self, writer) -> None:
        """With ``param-norm``: each task's moving-average pull and loss weight at the current epoch into
        task_weights.csv and (means over the members) TensorBoard, before the epoch's checkpoint."""
        weights = self.learner.task_weights
        if weights is None:
            return
        pull, weight = weights.pull.cpu().numpy(), weights.weight.cpu().numpy()
        rows = [
            {"epoch": self.epoch, "member": m, "seed": self.seeds[m], "task": t, "task_name": spec.name,
             "measurements": weights.measurements, "pull": float(pull[m, t]), "weight": float(weight[m, t])}
            for m in range(self.n_members)
            for t, spec in enumerate(self.specs)
        ]  # fmt: skip
        self.task_weights.append(rows)
        for t, spec in enumerate(self.specs):
            writer.add_scalar(f"{spec.name}/task_weight", float(weight[:, t].mean()), self.epoch)

    def _tensorboard(self, purge_step: int):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge_step)

    def _progress_bar(self):
        from tqdm import tqdm

        steps = self.config.run.steps_per_epoch
        return tqdm(
            total=self.config.run.epochs * steps,
            initial=min(max(self.epoch, 0), self.config.run.epochs) * steps,
            unit="step",
            unit_scale=True,
            desc=self.run_dir.name,
            disable=not self.progress,
            file=sys.stderr,
            dynamic_ncols=True,
            smoothing=0.1,
        )
