"""The ``mtdqn`` command: ``train``, ``evaluate``, ``plot``; ``experiment``, ``report`` in cli_experiments.

User mistakes print one line naming the problem and the fix and exit with code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from mtdqn.config import (
    ACTIVATIONS,
    ARCH_PRESETS,
    MODES,
    TASK_PRESETS,
    Config,
    ExplorationConfig,
    LearnerConfig,
    ReplayConfig,
    RunConfig,
    TaskConfig,
    arch_preset,
    task_preset,
)
from mtdqn.errors import UserError

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
_positive_float = _checked(float, lambda v: v > 0, "a positive number")


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
    "feature_activation",
    "steps_per_epoch",
    "eval_steps",
    "capacity",
    "warmup",
    "batch_size",
    "lr",
    "target_update_every",
    "train_frequency",
    "double_dqn",
    "eps_start",
    "eps_end",
    "eps_decay_steps",
    "eval_epsilon",
    "seed",
    "seeds",
    "background_eval",
    "threads",
    "name",
]


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
        choices=sorted(TASK_PRESETS),
        help="task set: "
        + "; ".join(f"{k} = {', '.join(t.env_id for t in v)}" for k, v in TASK_PRESETS.items())
        + " (default: none; give --preset or --task)",
    )
    tasks.add_argument(
        "--task",
        dest="tasks",
        action="append",
        metavar="ENV_ID",
        help="a Gymnasium id with discrete actions and a flat Box observation "
        "(repeatable; instead of --preset; default: none)",
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
        choices=sorted(ARCH_PRESETS),
        help="deramo: obs->80 ReLU | 80->80 ReLU, "
        "80->80 sigmoid shared | 80->A; tiny: the review's 130-parameter 4-8-8-2 net "
        "(default: deramo)",
    )
    model.add_argument("--width", type=_positive_int, help="hidden width (default: the arch's)")
    model.add_argument(
        "--feature-activation",
        choices=ACTIVATIONS,
        help="activation of the shared feature layer (default: the arch's)",
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
        help="PyTorch threads of the learner; 0: 1 for one seed, all cores for several (default: 0)",
    )
    run.add_argument(
        "--no-background-eval",
        dest="background_eval",
        action="store_false",
        default=None,
        help="evaluate in this process instead of a second one (same numbers, slower)",
    )
    run.add_argument("--name", help="run folder name (default: <preset or tasks>-<mode>-seed<seed>)")
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

    plot = sub.add_parser(
        "plot",
        help="redraw a run's learning curves from metrics.csv",
        description="Redraw the learning-curve PNGs of a run from its metrics.csv.",
    )
    plot.add_argument("run_dir", help="the run folder")
    from mtdqn import cli_experiments  # experiment, report

    cli_experiments.add_parsers(sub)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """Compose a Config from presets and explicit options (unset options keep the defaults)."""
    if args.preset and args.tasks:
        raise UserError("give either --preset or --task, not both")
    if args.preset:
        tasks = task_preset(args.preset)
    elif args.tasks:
        tasks = [TaskConfig(env_id) for env_id in args.tasks]
    else:
        raise UserError("no task given; pass --preset deramo-gym (or review-control) or --task ENV_ID")
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
    network = arch_preset(args.arch or "deramo")
    if args.width is not None:
        network.width = args.width
    if args.feature_activation is not None:
        network.feature_activation = args.feature_activation

    def pick(obj, **values):
        return dataclasses.replace(obj, **{k: v for k, v in values.items() if v is not None})

    config = Config(
        tasks=tasks,
        mode=args.mode or "multi",
        network=network,
        replay=pick(ReplayConfig(), capacity=args.capacity, warmup=args.warmup),
        learner=pick(
            LearnerConfig(),
            lr=args.lr,
            batch_size=args.batch_size,
            target_update_every=args.target_update_every,
            train_frequency=args.train_frequency,
            double_dqn=args.double_dqn,
        ),
        exploration=pick(
            ExplorationConfig(),
            eps_start=args.eps_start,
            eps_end=args.eps_end,
            eps_decay_steps=args.eps_decay_steps,
            eval_epsilon=args.eval_epsilon,
        ),
        run=pick(
            RunConfig(),
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            eval_steps=args.eval_steps,
            seeds=args.seeds or ([args.seed] if args.seed is not None else None),
            device=args.device,
            background_eval=args.background_eval,
            torch_threads=args.threads,
        ),
    )
    config.validate()
    return config


def default_run_name(config: Config, preset: str | None) -> str:
    what = preset or "+".join(t.env_id.split("/")[-1] for t in config.tasks)
    seeds = config.run.seeds
    if len(seeds) == 1:
        tag = f"seed{seeds[0]}"
    elif seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        tag = f"seeds{seeds[0]}-{seeds[-1]}"
    else:
        tag = f"{len(seeds)}seeds"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"{what}-{config.mode}-{tag}")


def cmd_train(args: argparse.Namespace) -> None:
    from mtdqn.train import Trainer

    if args.resume:
        given = [
            f"--{o.replace('_', '-')}" for o in _EXPERIMENT_OPTIONS if getattr(args, o, None) is not None
        ]
        if given or args.overwrite:
            extra = ", ".join(given + (["--overwrite"] if args.overwrite else []))
            raise UserError(
                f"--resume continues with the run's saved config.json; drop {extra} "
                "(only --epochs, --device and --no-progress may change)"
            )
        trainer = Trainer.resume(
            Path(args.resume), epochs=args.epochs, device=args.device, progress=args.progress
        )
    else:
        config = config_from_args(args)
        run_dir = Path(args.runs_dir) / (args.name or default_run_name(config, args.preset))
        trainer = Trainer.create(config, run_dir, overwrite=args.overwrite, progress=args.progress)
    print(f"run folder: {trainer.run_dir}", file=sys.stderr)
    trainer.run()
    print(
        f"done: metrics in {trainer.run_dir / 'metrics.csv'}, plots in {trainer.run_dir / 'plots'}, "
        f"TensorBoard: tensorboard --logdir {trainer.run_dir / 'tb'}",
        file=sys.stderr,
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from mtdqn.evaluate import run_evaluation
    from mtdqn.train import Trainer

    trainer = Trainer.load(Path(args.run_dir), progress=False)
    if trainer.epoch < 0:
        raise UserError(f"{args.run_dir} has no checkpoint yet; train it first")
    job = trainer.eval_job(trainer.epoch)
    if args.steps is not None:
        job.n_steps = args.steps
    if args.epsilon is not None:
        job.epsilon = args.epsilon
    if args.seed is not None:
        job.seeds = [args.seed + k for k in range(len(job.seeds))]
    result = run_evaluation(job)
    seeds = trainer.seeds
    rows = [
        {
            "task": spec.name,
            "seed": seed,
            "J": float(result.j[m, t]),
            "return": float(result.ret[m, t]),
            "episodes": int(result.episodes[m, t]),
        }
        for m, seed in enumerate(seeds)
        for t, spec in enumerate(trainer.specs)
    ]
    if args.json:
        print(json.dumps({"epoch": trainer.epoch, "steps": job.n_steps, "tasks": rows}, indent=2))
        return
    print(f"{args.run_dir} after epoch {trainer.epoch}, {job.n_steps} steps per task, epsilon {job.epsilon}")
    if len(seeds) > 1:
        print(f"mean over {len(seeds)} seeds (per seed: --json)")
    print(f"{'task':<20} {'J':>10} {'return':>10} {'episodes':>9}")
    for t, spec in enumerate(trainer.specs):
        print(
            f"{spec.name:<20} {result.j[:, t].mean():>10.4f} {result.ret[:, t].mean():>10.2f} "
            f"{result.episodes[:, t].mean():>9.1f}"
        )


def cmd_plot(args: argparse.Namespace) -> None:
    from mtdqn.runlog import plot_learning_curves

    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.csv").is_file():
        raise UserError(f"{run_dir} has no metrics.csv; check the path or train the run first")
    for path in plot_learning_curves(run_dir):
        print(path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from mtdqn.cli_experiments import COMMANDS as EXPERIMENT_COMMANDS

        commands = {"train": cmd_train, "evaluate": cmd_evaluate, "plot": cmd_plot, **EXPERIMENT_COMMANDS}
        commands[args.command](args)
    except UserError as exc:
        print(f"mtdqn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(
            "\ninterrupted; the last completed epoch is saved: continue with mtdqn train --resume RUN_DIR",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
