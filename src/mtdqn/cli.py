"""The ``mtdqn`` command: ``train``, ``transfer``, ``evaluate``, ``plot``, ``compare``, ``analyze``;
``experiment`` and ``report`` live in :mod:`mtdqn.cli_experiments`.

User mistakes print one line naming the problem and the fix and exit with code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from mtdqn.config import (
    ACTIVATIONS,
    ARCH_PRESETS,
    INITS,
    KERNELS,
    LR_FAN_IN_CONV,
    MODES,
    OPTIMIZERS,
    PRECISIONS,
    TASK_BALANCES,
    TASK_PRESETS,
    Config,
    ExplorationConfig,
    LearnerConfig,
    NetworkConfig,
    ReplayConfig,
    RunConfig,
    TaskConfig,
    arch_preset,
    atari_run_config,
    task_preset,
)
from mtdqn.config_atari import ATARI_ARCHS, ATARI_PROTOCOLS, GAME_GROUPS, AtariConfig, game_group
from mtdqn.errors import UserError
from mtdqn.interrupts import exit_code, sigterm_as_interrupt

if TYPE_CHECKING:
    from mtdqn.train import Trainer

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _checked(convert: Callable[[str], float], ok: Callable[[float], bool], requirement: str):
    """An argparse type: ``convert`` the text, then require ``ok`` (named by ``requirement``)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {requirement}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{value} is not {requirement}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v > 0, "a positive integer")
_nonneg_int = _checked(int, lambda v: v >= 0, "a non-negative integer")
_probability = _checked(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
_positive_float = _checked(float, lambda v: math.isfinite(v) and v > 0, "a positive finite number")
_nonneg_float = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a non-negative finite number")


def folder_name(text: str) -> str:
    """``--name``: one folder name (not ``.``/``..``, no path separator, not blank)."""
    if not text.strip() or text in (".", "..") or "/" in text or os.sep in text or "\0" in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a folder name; give a plain name such as my-run (the parent folder is "
            "--runs-dir or --out)"
        )
    return text


def _unfreeze_epoch(text: str) -> int | str:
    """``--unfreeze-epoch``: a non-negative epoch, or ``never``."""
    if text.strip().lower() == "never":
        return "never"
    return _nonneg_int(text)


def _seed_list(text: str) -> list[int]:
    """``0-9``, ``0,3,7`` or a mix (``0-4,10``) as a list of distinct non-negative seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed list like 0-9 or 0,3,7") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r} must list distinct non-negative seeds")
    return seeds


R, L, E, X = RunConfig(), LearnerConfig(), ExplorationConfig(), ReplayConfig()
# Options of `train` that change the experiment; with --resume they come from the run's config.json.
_EXPERIMENT_OPTIONS = [
    "preset",
    "tasks",
    "gamma",
    "horizon",
    "mode",
    "arch",
    "width",
    "feature_width",
    "feature_activation",
    "init",
    "steps_per_epoch",
    "eval_steps",
    "capacity",
    "warmup",
    "batch_size",
    "lr",
    "target_update_every",
    "train_frequency",
    "double_dqn",
    "clip_targets",
    "optimizer",
    "optimizer_eps",
    "lr_fan_in",
    "lr_fan_in_conv",
    "precision",
    "kernels",
    "task_balance",
    "task_balance_every",
    "task_balance_max_weight",
    "protocol",
    "noop_max",
    "sticky_actions",
    "life_loss_terminal",
    "clip_rewards",
    "fire_reset",
    "max_episode_steps",
    "full_action_space",
    "zero_q_layer",
    "conv_mode",
    "eps_start",
    "eps_end",
    "eps_decay_steps",
    "eval_epsilon",
    "gradient_batches",
    "seed",
    "seeds",
    "name",
    "like",
]


def _flag_of(dest: str, value: object) -> str:
    """The command-line flag that set option `dest` to `value` (``tasks`` is ``--task``; ``--no-...``)."""
    if dest == "tasks":
        return "--task"
    flag = f"--{dest.replace('_', '-')}"
    return f"--no-{flag[2:]}" if value is False and dest in _NEGATABLE_OPTIONS else flag


# Options given as --x / --no-x (argparse.BooleanOptionalAction).
_NEGATABLE_OPTIONS = {"life_loss_terminal", "clip_rewards", "fire_reset"}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mtdqn",
        description="Multi-task deep Q-learning with shared representations (D'Eramo et al., ICLR 2020).",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser(
        "train",
        help="train a multi-task (or single-task baseline) DQN",
        description="Train a multi-task DQN (or the single-task baseline) and write a run folder.",
    )
    tasks = train.add_argument_group("tasks")
    tasks.add_argument(
        "--preset",
        choices=sorted(TASK_PRESETS) + sorted(GAME_GROUPS),
        help="task set: "
        + "; ".join(f"{k} = {', '.join(t.env_id for t in v)}" for k, v in TASK_PRESETS.items())
        + "; Atari game groups: "
        + "; ".join(f"{k} = {', '.join(g.split('/')[-1] for g in v)}" for k, v in GAME_GROUPS.items())
        + " (default: none; give --preset or --task)",
    )
    tasks.add_argument(
        "--task",
        dest="tasks",
        action="append",
        metavar="ENV_ID",
        help="a Gymnasium id with discrete actions and a flat Box observation, or an Atari game "
        "(ALE/Pong-v5) (repeatable; instead of --preset; default: none)",
    )
    tasks.add_argument(
        "--gamma",
        type=_probability,
        nargs="+",
        metavar="G",
        help="discount: one value for all tasks or one per task (default: the preset's, else 0.99)",
    )
    tasks.add_argument(
        "--horizon",
        type=_positive_int,
        nargs="+",
        metavar="H",
        help="episode horizon (a truncation, bootstrapped): one for all tasks or one per task "
        "(default: the preset's, else the env's registered limit)",
    )
    model = train.add_argument_group("model")
    model.add_argument(
        "--mode",
        choices=MODES,
        help="multi: one net with shared layers (MDQN); single: one "
        "independent net per task, same shape and budget (the DQN baseline) (default: multi)",
    )
    model.add_argument(
        "--arch",
        choices=sorted(ARCH_PRESETS) + list(ATARI_ARCHS),
        help="deramo: obs->80 ReLU | 80->80 ReLU, "
        "80->80 sigmoid shared | 80->A; tiny: the review's 130-parameter 4-8-8-2 net; Atari games: "
        + ", ".join(ATARI_ARCHS)
        + " (README, Atari) (default: deramo; for Atari the protocol's)",
    )
    model.add_argument("--width", type=_positive_int, help="hidden width (default: the arch's)")
    model.add_argument(
        "--feature-width",
        type=_positive_int,
        help="units of the shared feature layer (default: --width); the review's failing net used 10",
    )
    model.add_argument(
        "--feature-activation",
        choices=ACTIVATIONS,
        help="activation of the shared feature layer (default: the arch's)",
    )
    model.add_argument(
        "--init",
        choices=INITS,
        help="weight init: xavier (Xavier-uniform, ReLU gain; the paper's code) or torch (PyTorch's "
        "default U(+-1/sqrt(fan_in)); the review's code) (default: the arch's)",
    )
    learn = train.add_argument_group("learning")
    learn.add_argument("--epochs", type=_nonneg_int, help=f"training epochs (default: {R.epochs})")
    learn.add_argument(
        "--steps-per-epoch",
        type=_positive_int,
        help=f"learning steps per task per epoch (default: {R.steps_per_epoch})",
    )
    learn.add_argument(
        "--eval-steps",
        type=_positive_int,
        help=f"evaluation steps per task after each epoch (default: {R.eval_steps})",
    )
    learn.add_argument(
        "--capacity", type=_positive_int, help=f"replay capacity per task (default: {X.capacity})"
    )
    learn.add_argument(
        "--warmup", type=_positive_int, help=f"random steps per task before learning (default: {X.warmup})"
    )
    learn.add_argument(
        "--batch-size", type=_positive_int, help=f"samples per task in each update (default: {L.batch_size})"
    )
    learn.add_argument("--lr", type=_positive_float, help=f"Adam learning rate (default: {L.lr})")
    learn.add_argument(
        "--target-update-every",
        type=_positive_int,
        help=f"updates between hard target copies (default: {L.target_update_every})",
    )
    learn.add_argument(
        "--train-frequency", type=_positive_int, help=f"joint steps per update (default: {L.train_frequency})"
    )
    learn.add_argument(
        "--double-dqn", action="store_true", default=None, help="Double DQN targets (default: off)"
    )
    learn.add_argument(
        "--clip-targets",
        action="store_true",
        default=None,
        help="clamp each TD target into [min(r_min, 0), max(r_max, 0)] / (1 - gamma), the values the rewards "
        "seen so far allow: keeps a task's values from diverging (default: off; not in the paper)",
    )
    learn.add_argument("--eps-start", type=_probability, help=f"initial epsilon (default: {E.eps_start})")
    learn.add_argument("--eps-end", type=_probability, help=f"final epsilon, held (default: {E.eps_end})")
    learn.add_argument(
        "--eps-decay-steps",
        type=_positive_int,
        help=f"steps per task of the linear decay (default: {E.eps_decay_steps})",
    )
    learn.add_argument(
        "--eval-epsilon", type=_probability, help=f"epsilon during evaluation (default: {E.eval_epsilon})"
    )
    learn.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help="adam, or rmsprop-centered (the Nature DQN's) (default: adam; for Atari the protocol's)",
    )
    learn.add_argument(
        "--optimizer-eps",
        type=_positive_float,
        help=f"the optimizer's epsilon: Adam's, or RMSProp's (default: {L.adam_eps:g}; for Atari the "
        "protocol's); larger values damp the steps of parameters with tiny gradients",
    )
    learn.add_argument(
        "--lr-fan-in",
        type=_nonneg_int,
        metavar="N",
        help="per-layer learning rates lr * min(1, N / fan-in) (fan-in: a unit's inputs, a convolution's "
        "in-channels x kernel area), muP's rule for Adam; keeps Adam from saturating sigmoid units behind "
        "wide layers (default: 0, one learning rate)",
    )
    learn.add_argument(
        "--lr-fan-in-conv",
        choices=LR_FAN_IN_CONV,
        help="what --lr-fan-in counts as a convolution's fan-in: kernel (in-channels x kernel area) or "
        "channels (in-channels only, muP's count: the Nature convolutions then keep the full rate for "
        "N >= 64) (default: kernel)",
    )
    learn.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32, or bf16: the update's forward and backward under bfloat16 autocast, weights and "
        "optimizer in float32 (about 1.4x faster for the Atari networks on a CPU with AVX512-BF16) "
        "(default: fp32)",
    )
    learn.add_argument(
        "--kernels",
        choices=KERNELS,
        help="how the update runs: torch (autograd), numpy (the backward written out, numpy's BLAS for the "
        "matmuls: the same gradients up to rounding, ~2x faster on AMD CPUs; fp32 control networks on a "
        "CPU only) or auto (numpy where it applies) (default: auto)",
    )
    learn.add_argument(
        "--task-balance",
        choices=TASK_BALANCES,
        help="none (the paper's joint loss); param-norm: each task's loss term weighted so that the tasks' "
        "gradients on the shared layers are equal in norm (measured every --task-balance-every updates); "
        "feature-norm: each task's gradient at the shared features rescaled to the tasks' mean norm there "
        "(not in the paper; multi-task runs) (default: none)",
    )
    learn.add_argument(
        "--task-balance-every",
        type=_positive_int,
        metavar="N",
        help=f"param-norm: updates between two measurements of the tasks' gradient norms, each an extra "
        f"backward (one per task with --kernels torch) (default: {L.task_balance_every})",
    )
    learn.add_argument(
        "--task-balance-max-weight",
        type=_checked(float, lambda v: v == 0 or 1 <= v < math.inf, "0 (no bound) or a number of at least 1"),
        metavar="W",
        help=f"param-norm: the largest loss weight a task can get, so that a task whose gradient vanishes "
        f"does not get an unbounded one; 0: no bound (default: {L.task_balance_max_weight:g})",
    )
    _add_atari_options(train)
    run = train.add_argument_group("run")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seed", type=_nonneg_int, help="seed of every random stream of the agent (default: 0)"
    )
    seeds.add_argument(
        "--seeds",
        type=_seed_list,
        metavar="SPEC",
        help="train one independent agent per seed in one process, e.g. 0-9 or 0,3,7 (default: --seed)",
    )
    run.add_argument(
        "--device", choices=["cpu", "cuda", "auto"], help=f"learner device (default: {R.device})"
    )
    run.add_argument(
        "--threads",
        type=_nonneg_int,
        help="threads of the learner (no number depends on it); 0: 1 for one seed, all cores for several "
        "(default: 0)",
    )
    run.add_argument(
        "--eval-workers",
        type=_nonneg_int,
        metavar="N",
        help="processes sharing each background evaluation, each playing a slice of the seeds (same "
        "numbers); 0: 1 with a CPU learner, else one per 25 seeds up to half the cores (default: 0)",
    )
    run.add_argument(
        "--gradient-batches",
        type=_nonneg_int,
        metavar="N",
        help="multi-task runs: after the warm-up and every epoch, measure each task's gradient on the shared "
        "layers over N replay batches into gradients.csv and plots/gradients.png (as mtdqn analyze "
        "--gradient-batches N --seed EPOCH would; ~1.5N updates' work per epoch; learning unchanged). "
        "Default: 0 (off)",
    )
    run.add_argument(
        "--no-background-eval",
        dest="background_eval",
        action="store_false",
        default=None,
        help="evaluate in this process instead of a second one (same numbers, slower)",
    )
    run.add_argument(
        "--name", type=folder_name, help="run folder name (default: <preset or tasks>-<mode>-seed<seed>)"
    )
    run.add_argument("--runs-dir", default="runs", help="parent folder of run folders (default: runs)")
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue this run after its last completed epoch (its config.json is used; "
        "--epochs may extend it)",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="replace an existing run folder of the same name"
    )
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    transfer = sub.add_parser(
        "transfer",
        parents=[train],
        add_help=False,
        help="train new tasks on top of another run's best-epoch shared layers",
        description="Train new tasks with fresh task input layers and heads on top of the shared layers of "
        "another (multi-task) run's best epoch (its best_shared.pt), frozen for the first epochs if asked. "
        "Takes every option of train; the network defaults to the source's. The run folder is an ordinary "
        "one (resume it with mtdqn train --resume). Default name: "
        "<tasks>-<mode>-from-<source>-unfreeze<N>-seed<seed>.",
    )
    tr = transfer.add_argument_group("transfer")
    tr.add_argument(
        "--from",
        dest="source",
        metavar="RUN_DIR",
        help="the source run folder: a multi-task run with a best_shared.pt (required)",
    )
    tr.add_argument(
        "--unfreeze-epoch",
        type=_unfreeze_epoch,
        metavar="N",
        help="the shared layers are frozen during epochs 1..N-1 and learn from epoch N on (the paper's "
        "--unfreeze-epoch); 0 or 1: never frozen; never: frozen for the whole run (default: 0)",
    )
    run.add_argument(  # train only: added after transfer copied train's options
        "--like",
        metavar="RUN_DIR",
        help="a new run with the saved config.json of RUN_DIR (its tasks, protocol, network and every "
        "number; e.g. another seed: --like RUN_DIR --seed 1); the options given here override it, except "
        "--preset, --task, --protocol and --arch (default name: RUN_DIR's name with the new seed tag)",
    )

    ev = sub.add_parser(
        "evaluate",
        help="evaluate a run's latest checkpoint",
        description="Evaluate the latest checkpoint of a run with the paper's protocol and print J per task.",
    )
    ev.add_argument("run_dir", help="the run folder, e.g. runs/deramo-gym-multi-seed0")
    ev.add_argument("--steps", type=_positive_int, help="steps per task (default: the run's eval_steps)")
    ev.add_argument("--epsilon", type=_probability, help="exploration during evaluation (default: the run's)")
    ev.add_argument(
        "--seed", type=_nonneg_int, help="seed of the evaluation environments (default: the run's)"
    )
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.add_argument(
        "--no-save",
        action="store_true",
        help="do not add the result to RUN/evaluations.csv (by default every evaluation is kept there, one "
        "row per member and task; running the same evaluation again replaces its rows)",
    )

    plot = sub.add_parser(
        "plot",
        help="redraw a run's learning curves from metrics.csv",
        description="Redraw the learning-curve PNGs of a run from its metrics.csv (and plots/gradients.png "
        "from its gradients.csv, if it has one).",
    )
    plot.add_argument("run_dir", help="the run folder")
    _add_compare_parser(sub)
    _add_analyze_parser(sub)
    from mtdqn import cli_experiments  # experiment, report

    cli_experiments.add_parsers(sub)
    return parser


def _add_atari_options(train: argparse.ArgumentParser) -> None:
    a = AtariConfig()
    atari = train.add_argument_group("Atari games (tasks ALE/<Game>-v5)")
    atari.add_argument(
        "--protocol",
        choices=sorted(ATARI_PROTOCOLS),
        help="every DQN number of a published Atari setup (README, Atari): mnih2015 (Nature DQN), "
        "deramo-atari (the paper's run_atari.py), review (the review's, bugs fixed); explicit options "
        "override it (default: deramo-atari)",
    )
    atari.add_argument(
        "--noop-max",
        type=_nonneg_int,
        help=f"random no-op frames after a reset, 0 = off (default: {a.noop_max})",
    )
    atari.add_argument(
        "--sticky-actions",
        type=_probability,
        metavar="P",
        help="repeat-action probability (ALE v5 uses 0.25) (default: 0, deterministic)",
    )
    atari.add_argument(
        "--life-loss-terminal",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a lost life is a terminal for learning (default: the protocol's)",
    )
    atari.add_argument(
        "--clip-rewards",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="learn from rewards clipped to [-1, 1]; scores stay raw (default: on)",
    )
    atari.add_argument(
        "--fire-reset",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="press FIRE after a reset in games that have it (default: on)",
    )
    atari.add_argument(
        "--max-episode-steps",
        type=_positive_int,
        help=f"time limit in agent steps (a truncation) (default: {a.max_episode_steps})",
    )
    atari.add_argument(
        "--full-action-space",
        action="store_true",
        default=None,
        help="all 18 actions instead of each game's minimal set (default: minimal)",
    )
    atari.add_argument(
        "--zero-q-layer",
        action="store_true",
        default=None,
        help="start the Q layer at zero: Q = 0 everywhere at the start, no per-action offsets (default: off)",
    )
    atari.add_argument(
        "--conv-mode",
        choices=["auto", "grouped", "loop"],
        help="per-game convolutions as one grouped convolution or one per game; auto: loop on the CPU "
        "(default: auto)",
    )


def _add_analyze_parser(sub) -> None:
    from mtdqn.analysis.config import METHODS, AnalysisConfig

    a = AnalysisConfig()
    an = sub.add_parser(
        "analyze",
        help="analyse a run's shared features (t-SNE, sharing metrics, overlap pictures, HTML report)",
        description="Roll out a trained run, record its shared features and write figures, sharing metrics "
        "and a self-contained report.html into <run>/analysis/ (per seed for a population run). Recorded "
        "states and embeddings are reused when their settings are unchanged.",
    )
    an.add_argument("run_dir", help="the run folder, e.g. runs/review-control-multi-seed0")
    an.add_argument("--seeds", type=_seed_list, help="members to analyse (default: every seed of the run)")
    an.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="RUN_DIR",
        help="another run (e.g. the single-task baseline) whose features on the same states are embedded "
        "beside this run's and compared by CKA; repeatable",
    )
    an.add_argument("--out", help="output folder (default: RUN_DIR/analysis)")
    an.add_argument(
        "--steps", type=_positive_int, default=a.steps, help=f"states per task (default: {a.steps})"
    )
    an.add_argument(
        "--epsilon",
        type=_probability,
        default=a.epsilon,
        help=f"exploration of the rollout (default: {a.epsilon}, greedy)",
    )
    an.add_argument(
        "--seed",
        type=_nonneg_int,
        default=a.seed,
        help=f"seed of the rollout, embedding and probes (default: {a.seed})",
    )
    an.add_argument(
        "--method", choices=METHODS, default=a.method, help=f"embedding (default: {a.method}; pca is instant)"
    )
    an.add_argument(
        "--perplexity",
        type=_positive_float,
        default=a.perplexity,
        help=f"t-SNE perplexity (default: {a.perplexity})",
    )
    an.add_argument(
        "--tsne-iterations",
        type=_positive_int,
        default=a.tsne_iterations,
        help=f"t-SNE steps after early exaggeration (default: {a.tsne_iterations})",
    )
    an.add_argument(
        "--tsne-learning-rate",
        type=_checked(float, lambda v: v >= 0, "0 (auto) or a positive number"),
        default=a.tsne_learning_rate,
        help="t-SNE learning rate (default: 0 = auto, N/12)",
    )
    an.add_argument(
        "--tsne-early-exaggeration",
        type=_checked(float, lambda v: v >= 1, "a number of at least 1"),
        default=a.tsne_early_exaggeration,
        help=f"t-SNE early exaggeration (default: {a.tsne_early_exaggeration})",
    )
    an.add_argument(
        "--tsne-threads",
        type=_positive_int,
        default=a.tsne_threads,
        help=f"t-SNE threads from 2,000 states on; part of the result (default: {a.tsne_threads})",
    )
    an.add_argument(
        "--neighbours",
        type=_positive_int,
        default=a.neighbours,
        help=f"k of the k-NN mixing and overlap search (default: {a.neighbours})",
    )
    an.add_argument(
        "--overlap-per-pair",
        type=_nonneg_int,
        default=a.overlap_per_pair,
        help=f"overlap pictures per pair of tasks (default: {a.overlap_per_pair})",
    )
    an.add_argument(
        "--thumbnail-width",
        type=_positive_int,
        default=a.thumbnail_width,
        help=f"hover picture width in pixels (default: {a.thumbnail_width})",
    )
    an.add_argument(
        "--gradient-batches",
        type=_nonneg_int,
        default=a.gradient_batches,
        help="also measure how each task's TD-loss gradient pulls on the shared layers, averaged over this "
        "many replay batches (loads the run's replay memory; default: 0 = off)",
    )


def _add_compare_parser(sub) -> None:
    cmp = sub.add_parser(
        "compare",
        help="compare runs side by side (curves against learning steps, a summary table)",
        description="Compare runs from their metrics.csv (and gradients.csv, evaluations.csv): per task "
        "(matched by name) "
        "each run's score against learning steps per task, a population's mean and 95% t-interval over "
        "its seeds; writes OUT/curves.png, OUT/summary.csv and OUT/summary.md and prints the table. Runs "
        "still training are compared on the epochs they have finished.",
    )
    cmp.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run folders (of mtdqn train or mtdqn transfer), or finished experiment folders (their arms)",
    )
    cmp.add_argument(
        "--label",
        action="append",
        dest="labels",
        metavar="NAME",
        help="a name for each run, once per run in the same order; run folders given the same name are "
        "pooled as the seeds of one setting (their config.json must agree but for seeds) (default: the "
        "folder names)",
    )
    cmp.add_argument(
        "--metric",
        choices=("return", "J"),
        default="return",
        help="the score compared: the undiscounted return or the paper's discounted J (default: return)",
    )
    cmp.add_argument(
        "--last",
        type=_positive_int,
        default=3,
        metavar="K",
        help="the summary's recent score: the mean of each seed's last K evaluations (default: 3)",
    )
    cmp.add_argument(
        "--baseline", metavar="NAME", help="the run the others are compared with (default: the first)"
    )
    cmp.add_argument(
        "--mean-q",
        action="store_true",
        help="also draw each task's mean Q of the learning batches (metrics.csv's mean_q) and table its last "
        "value: shows values that diverge (run folders, and experiments whose results.csv has mean_q)",
    )
    cmp.add_argument(
        "--out", metavar="DIR", help="output folder (default: comparisons/<label>-vs-<label>...)"
    )


def _is_atari(env_ids: list[str]) -> bool:
    return any(env_id.startswith("ALE/") for env_id in env_ids)


def config_from_args(args: argparse.Namespace) -> Config:
    """Compose a Config from presets and explicit options (unset options keep the defaults)."""
    if getattr(args, "like", None):
        return _config_like(args)
    if args.preset and args.tasks:
        raise UserError("give either --preset or --task, not both")
    if args.preset in GAME_GROUPS or (args.tasks and _is_atari(args.tasks)):
        return _atari_config_from_args(args)
    _refuse_atari_options(args)
    if args.preset:
        tasks = task_preset(args.preset)
    elif args.tasks:
        tasks = [TaskConfig(env_id) for env_id in args.tasks]
    else:
        raise UserError("no task given; pass --preset deramo-gym (or review-control) or --task ENV_ID")
    _per_task(args, tasks)
    network = _with_network_options(arch_preset(args.arch or "deramo"), args)
    config = _with_overrides(Config(tasks=tasks, network=network), args)
    config.validate()
    return config


def _with_network_options(network: NetworkConfig, args: argparse.Namespace) -> NetworkConfig:
    """``network`` (of vector tasks) with the explicit --width, --feature-width, --feature-activation and
    --init."""
    return _pick(
        network,
        width=args.width,
        feature_width=args.feature_width,
        feature_activation=args.feature_activation,
        init=args.init,
    )


def _refuse_atari_options(args: argparse.Namespace) -> None:
    """A run of vector tasks: the Atari-only options are a mistake."""
    atari_given = [o for o in _ATARI_ONLY if getattr(args, o, None) is not None]
    if atari_given or args.arch in ATARI_ARCHS:
        option = f"--{atari_given[0].replace('_', '-')}" if atari_given else f"--arch {args.arch}"
        raise UserError(
            f"{option} applies to Atari games only; give Atari tasks (--task ALE/Pong-v5) or drop it"
        )


def _refuse_vector_options(args: argparse.Namespace) -> None:
    """A run of Atari games: the options of the vector tasks' networks and horizons are a mistake."""
    for option in ("width", "feature_width", "horizon"):
        if getattr(args, option) is not None:
            fix = "--max-episode-steps" if option == "horizon" else "--arch"
            raise UserError(f"--{option.replace('_', '-')} does not apply to Atari games; use {fix}")


# What a run is: --like takes these from the other run's config.json.
_LIKE_FIXED = ("preset", "tasks", "protocol", "arch")


def _config_like(args: argparse.Namespace) -> Config:
    """The saved configuration of the run ``args.like`` with the explicit options of ``args`` on top."""
    given = [_flag_of(o, getattr(args, o)) for o in _LIKE_FIXED if getattr(args, o) is not None]
    if given:
        raise UserError(
            f"--like takes the tasks, protocol and network of {args.like}; drop {', '.join(given)} "
            "(or give the whole command without --like)"
        )
    from mtdqn.runlog import load_config

    config = load_config(Path(args.like))
    if config.transfer is not None:
        raise UserError(
            f"{args.like} is a transfer run; start another one with mtdqn transfer --from "
            f"{config.transfer.source} (its options are in {Path(args.like) / 'config.json'})"
        )
    if config.is_atari:
        _refuse_vector_options(args)
        config = _with_atari_overrides(config, args)
    else:
        _refuse_atari_options(args)
        config.network = _with_network_options(config.network, args)
    _per_task(args, config.tasks)
    config = _with_overrides(config, args)
    config.validate()
    return config


_ATARI_ONLY = (
    "protocol",
    "noop_max",
    "sticky_actions",
    "life_loss_terminal",
    "clip_rewards",
    "fire_reset",
    "max_episode_steps",
    "full_action_space",
    "zero_q_layer",
    "conv_mode",
)


def _per_task(args: argparse.Namespace, tasks: list[TaskConfig]) -> None:
    """--gamma and --horizon: one value for all tasks or one per task."""
    for field_name, values in (("gamma", args.gamma), ("horizon", args.horizon)):
        if values is None:
            continue
        if len(values) not in (1, len(tasks)):
            raise UserError(
                f"--{field_name} got {len(values)} values for {len(tasks)} tasks; "
                "give one value or one per task"
            )
        for task, value in zip(tasks, values * len(tasks) if len(values) == 1 else values, strict=False):
            setattr(task, field_name, value)


def _pick(obj, **values):
    """A copy of the dataclass ``obj`` with the values that were given (not None)."""
    return dataclasses.replace(obj, **{k: v for k, v in values.items() if v is not None})


def _with_overrides(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with the explicit mode, replay, learner, exploration and run options of ``args``."""
    return dataclasses.replace(
        config,
        mode=args.mode or config.mode,
        replay=_pick(config.replay, capacity=args.capacity, warmup=args.warmup),
        learner=_pick(
            config.learner,
            lr=args.lr,
            batch_size=args.batch_size,
            target_update_every=args.target_update_every,
            train_frequency=args.train_frequency,
            double_dqn=args.double_dqn,
            clip_targets=args.clip_targets,
            optimizer=args.optimizer,
            adam_eps=args.optimizer_eps,
            lr_fan_in=args.lr_fan_in,
            lr_fan_in_conv=args.lr_fan_in_conv,
            precision=args.precision,
            kernels=args.kernels,
            task_balance=args.task_balance,
            task_balance_every=args.task_balance_every,
            task_balance_max_weight=args.task_balance_max_weight,
        ),
        exploration=_pick(
            config.exploration,
            eps_start=args.eps_start,
            eps_end=args.eps_end,
            eps_decay_steps=args.eps_decay_steps,
            eval_epsilon=args.eval_epsilon,
        ),
        run=_pick(
            config.run,
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            eval_steps=args.eval_steps,
            seeds=args.seeds or ([args.seed] if args.seed is not None else None),
            device=args.device,
            background_eval=args.background_eval,
            torch_threads=args.threads,
            eval_workers=args.eval_workers,
            gradient_batches=args.gradient_batches,
        ),
    )


def _atari_config_from_args(args: argparse.Namespace) -> Config:
    """An Atari run: the protocol preset's numbers, then the explicit options."""
    env_ids = game_group(args.preset) if args.preset else list(args.tasks)
    if not all(env_id.startswith("ALE/") for env_id in env_ids):
        other = next(e for e in env_ids if not e.startswith("ALE/"))
        raise UserError(f"{other} is not an Atari game; a run takes Atari games or vector tasks, not both")
    _refuse_vector_options(args)
    if args.arch is not None and args.arch not in ATARI_ARCHS:
        raise UserError(
            f"--arch {args.arch} is a network for vector tasks; for Atari use one of {', '.join(ATARI_ARCHS)}"
        )
    config = atari_run_config(args.protocol or "deramo-atari", env_ids)
    _per_task(args, config.tasks)
    config = _with_overrides(_with_atari_overrides(config, args), args)
    config.validate()
    return config


def _with_atari_overrides(config: Config, args: argparse.Namespace) -> Config:
    """``config`` (an Atari run's) with the explicit preprocessing and network options of ``args``."""
    config.atari = _pick(
        config.atari,
        noop_max=args.noop_max,
        repeat_action_probability=args.sticky_actions,
        terminal_on_life_loss=args.life_loss_terminal,
        clip_rewards=args.clip_rewards,
        fire_on_reset=args.fire_reset,
        max_episode_steps=args.max_episode_steps,
        full_action_space=args.full_action_space,
    )
    config.atari_network = _pick(
        config.atari_network,
        arch=args.arch,
        feature_activation=args.feature_activation,
        init=args.init,
        zero_q_layer=args.zero_q_layer,
        conv_mode=args.conv_mode,
    )
    return config


def default_run_name(config: Config, preset: str | None, kind: str | None = None) -> str:
    """``<preset or tasks>-<kind, default: mode>-<seeds>``."""
    what = preset or "+".join(t.env_id.split("/")[-1] for t in config.tasks)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"{what}-{kind or config.mode}-{_seed_tag(config.run.seeds)}")


def like_run_name(source: Path, config: Config) -> str:
    """The name of a ``--like source`` run: the source's name, its seed tag (if any) replaced by the new
    run's (``pong-seed0`` -> ``pong-seed1``; ``my-run`` -> ``my-run-seed1``)."""
    stem = re.sub(r"-(seed\d+|seeds\d+-\d+|\d+seeds)$", "", source.resolve().name)
    return f"{stem}-{_seed_tag(config.run.seeds)}"


def _seed_tag(seeds: list[int]) -> str:
    """``seed3``, ``seeds0-9`` (a range) or ``4seeds``."""
    if len(seeds) == 1:
        return f"seed{seeds[0]}"
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds{seeds[0]}-{seeds[-1]}"
    return f"{len(seeds)}seeds"


def cmd_train(args: argparse.Namespace) -> None:
    from mtdqn.train import Trainer

    if args.resume:
        given = [
            _flag_of(o, getattr(args, o)) for o in _EXPERIMENT_OPTIONS if getattr(args, o, None) is not None
        ]
        if given or args.overwrite:
            extra = ", ".join(given + (["--overwrite"] if args.overwrite else []))
            raise UserError(
                f"--resume continues with the run's saved config.json; drop {extra} "
                "(only --epochs, --device, --threads, --eval-workers, --no-background-eval and "
                "--no-progress may change)"
            )
        trainer = Trainer.resume(
            Path(args.resume),
            epochs=args.epochs,
            device=args.device,
            progress=args.progress,
            threads=args.threads,
            background_eval=args.background_eval,
            eval_workers=args.eval_workers,
        )
    else:
        config = config_from_args(args)
        if getattr(args, "like", None):
            run_dir = Path(args.runs_dir) / (args.name or like_run_name(Path(args.like), config))
            if run_dir.resolve() == Path(args.like).resolve():
                raise UserError(f"the new run's folder would be {args.like} itself; give another --name")
        else:
            run_dir = Path(args.runs_dir) / (args.name or default_run_name(config, args.preset))
        trainer = Trainer.create(config, run_dir, overwrite=args.overwrite, progress=args.progress)
    _run_and_report(trainer)


_STARTED_RUN: list[Path] = []
"""The run folder a train/transfer command is training (for the message after an interrupt)."""


def _run_and_report(trainer: Trainer) -> None:
    print(f"run folder: {trainer.run_dir}", file=sys.stderr)
    _STARTED_RUN[:] = [trainer.run_dir]
    trainer.run()
    gradients = trainer.run_dir / "gradients.csv"
    measured = f", gradients in {gradients}" if trainer.config.run.gradient_batches else ""
    print(
        f"done: metrics in {trainer.run_dir / 'metrics.csv'}{measured}, "
        f"plots in {trainer.run_dir / 'plots'}, TensorBoard: tensorboard --logdir {trainer.run_dir / 'tb'}",
        file=sys.stderr,
    )


def cmd_transfer(args: argparse.Namespace) -> None:
    from mtdqn.train import Trainer
    from mtdqn.transfer import make_transfer_config

    if args.resume:
        if args.source is not None or args.unfreeze_epoch is not None:
            raise UserError(
                "--resume continues with the run's saved config.json; drop --from and --unfreeze-epoch"
            )
        cmd_train(args)
        return
    if args.source is None:
        raise UserError("no source run given; pass --from RUN_DIR (the folder of a multi-task run)")
    unfreeze = 0 if args.unfreeze_epoch is None else args.unfreeze_epoch
    unfreeze = None if unfreeze == "never" else unfreeze
    keep_network = any(
        getattr(args, o) is not None for o in ("arch", "width", "feature_width", "feature_activation", "init")
    )
    config = make_transfer_config(config_from_args(args), args.source, unfreeze, keep_network=keep_network)
    schedule = "never" if unfreeze is None else unfreeze
    kind = f"{config.mode}-from-{Path(args.source).resolve().name}-unfreeze{schedule}"
    run_dir = Path(args.runs_dir) / (args.name or default_run_name(config, args.preset, kind))
    trainer = Trainer.create(config, run_dir, overwrite=args.overwrite, progress=args.progress)
    _run_and_report(trainer)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from mtdqn.evaluate import return_interval
    from mtdqn.runlog import save_evaluation
    from mtdqn.train import Trainer

    trainer = Trainer.load(Path(args.run_dir), progress=False, replay=False)  # weights suffice
    if trainer.epoch < 0:
        raise UserError(
            f"{args.run_dir} has no checkpoint yet (no epoch finished); "
            f"continue it with mtdqn train --resume {args.run_dir}"
        )
    job = trainer.eval_job(trainer.epoch)
    if args.steps is not None:
        job.n_steps = args.steps
    if args.epsilon is not None:
        job.epsilon = args.epsilon
    if args.seed is not None:
        job.seeds = [args.seed + k for k in range(len(job.seeds))]
    result = job.run()
    seeds = trainer.seeds
    records = [
        {
            "epoch": trainer.epoch,
            "steps": job.n_steps,
            "epsilon": job.epsilon,
            "eval_seed": job.seeds[m],
            "member": m,
            "seed": seed,
            "task": t,
            "task_name": spec.name,
            "J": float(result.j[m, t]),
            "return": float(result.ret[m, t]),
            "episodes": int(result.episodes[m, t]),
            "return_sd": float(result.ret_sd[m, t]),
        }
        for m, seed in enumerate(seeds)
        for t, spec in enumerate(trainer.specs)
    ]
    if not args.no_save:
        print(f"saved in {save_evaluation(Path(args.run_dir), records)}", file=sys.stderr)
    shown = ("seed", "J", "return", "episodes", "return_sd")
    rows = [{"task": r["task_name"], **{k: _json_number(r[k]) for k in shown}} for r in records]
    if args.json:
        print(json.dumps({"epoch": trainer.epoch, "steps": job.n_steps, "tasks": rows}, indent=2))
        return
    print(f"{args.run_dir} after epoch {trainer.epoch}, {job.n_steps} steps per task, epsilon {job.epsilon}")
    if len(seeds) > 1:
        print(f"mean over {len(seeds)} seeds; +-95%: Student-t interval over the seeds (per seed: --json)")
    else:
        print("+-95%: Student-t interval of the mean return over the episodes that ended")
    print(f"{'task':<20} {'J':>10} {'return':>10} {'+-95%':>8} {'episodes':>9}")
    for t, spec in enumerate(trainer.specs):
        half = return_interval(result.ret[:, t], result.ret_sd[:, t], result.episodes[:, t])
        print(
            f"{spec.name:<20} {result.j[:, t].mean():>10.4f} {result.ret[:, t].mean():>10.2f} "
            f"{half:>8.2f} {result.episodes[:, t].mean():>9.1f}"
        )


def _json_number(value):
    """nan as JSON's null (json.dumps would write the non-standard NaN)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def cmd_plot(args: argparse.Namespace) -> None:
    from mtdqn.runlog import plot_gradients, plot_learning_curves

    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.csv").is_file():
        raise UserError(f"{run_dir} has no metrics.csv; check the path or train the run first")
    paths = plot_learning_curves(run_dir)
    if not paths:
        raise UserError(f"{run_dir}/metrics.csv has no evaluations yet; train the run for an epoch first")
    gradients = plot_gradients(run_dir)  # runs trained with --gradient-batches
    for path in paths + ([gradients] if gradients else []):
        print(path)


def cmd_compare(args: argparse.Namespace) -> None:
    from mtdqn.compare import compare_runs

    out, markdown = compare_runs(
        [Path(r) for r in args.runs],
        out=Path(args.out) if args.out else None,
        labels=args.labels,
        metric=args.metric,
        recent=args.last,
        baseline=args.baseline,
        mean_q=args.mean_q,
    )
    print(markdown)
    print(f"written: {out}/curves.png, summary.csv, summary.md", file=sys.stderr)


def cmd_analyze(args: argparse.Namespace) -> None:
    from mtdqn.analysis.config import AnalysisConfig
    from mtdqn.analysis.pipeline import analyze_run

    cfg = AnalysisConfig(
        steps=args.steps,
        epsilon=args.epsilon,
        seed=args.seed,
        method=args.method,
        perplexity=args.perplexity,
        tsne_iterations=args.tsne_iterations,
        tsne_learning_rate=args.tsne_learning_rate,
        tsne_early_exaggeration=args.tsne_early_exaggeration,
        tsne_threads=args.tsne_threads,
        neighbours=args.neighbours,
        overlap_per_pair=args.overlap_per_pair,
        thumbnail_width=args.thumbnail_width,
        gradient_batches=args.gradient_batches,
    )
    out = Path(args.out) if args.out else None
    analyze_run(
        Path(args.run_dir),
        cfg,
        seeds=args.seeds,
        compare=[Path(c) for c in args.compare],
        out=out,
        log=lambda message: print(message, file=sys.stderr),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with sigterm_as_interrupt():
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        from mtdqn.cli_experiments import COMMANDS as EXPERIMENT_COMMANDS

        commands = {
            "train": cmd_train,
            "transfer": cmd_transfer,
            "evaluate": cmd_evaluate,
            "plot": cmd_plot,
            "compare": cmd_compare,
            "analyze": cmd_analyze,
            **EXPERIMENT_COMMANDS,
        }
        commands[args.command](args)
    except UserError as exc:
        print(f"mtdqn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as interrupt:
        run_dir = _STARTED_RUN[0] if _STARTED_RUN else "RUN_DIR"  # `mtdqn experiment` says its own
        print(
            f"\ninterrupted; the last completed epoch is saved: continue with mtdqn train --resume {run_dir}",
            file=sys.stderr,
        )
        return exit_code(interrupt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
