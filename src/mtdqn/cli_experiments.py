"""The ``mtdqn experiment`` and ``mtdqn report`` commands (added to the parser of :mod:`mtdqn.cli`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtdqn.errors import UserError
from mtdqn.interrupts import exit_code

ANALYZE_STEPS = 1000
ANALYZE_METHOD = "pca"


def _seed_count_or_list(text: str) -> list[int]:
    """``10`` -> seeds 0..9; ``0-9``, ``3,5,7`` or ``0-4,10`` -> those seeds."""
    from mtdqn.cli import _seed_list

    if text.strip().isdigit():
        n = int(text)
        if n <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive seed count")
        return list(range(n))
    return _seed_list(text)


def add_parsers(sub) -> None:
    """Add ``experiment`` and ``report`` to the ``mtdqn`` subcommands."""
    from mtdqn.cli import _nonneg_float, _nonneg_int, _positive_int, folder_name
    from mtdqn.experiments import EXPERIMENTS

    exp = sub.add_parser(
        "experiment",
        help="run a registered experiment (several arms x seeds) and report it",
        description="Run every arm of a registered experiment on the same seeds as ordinary runs inside an "
        "experiment folder, gather results.csv and write the report. Running the same command again "
        "keeps finished groups and resumes unfinished ones.",
    )
    exp.add_argument(
        "experiment",
        choices=sorted(EXPERIMENTS),
        help="; ".join(f"{e.name}: {e.description}" for e in EXPERIMENTS.values()),
    )
    exp.add_argument(
        "--seeds",
        type=_seed_count_or_list,
        required=True,
        metavar="N|SPEC",
        help="a count N (seeds 0..N-1) or a list like 0-9 or 0,3,7",
    )
    exp.add_argument(
        "--epochs",
        type=_nonneg_int,
        help="epochs of every run (default: the experiment's: 50, the Atari ones 14)",
    )
    exp.add_argument(
        "--group-size",
        type=_positive_int,
        metavar="K",
        help="seeds trained together in one run (a population); an arm's seeds are split into groups of at "
        "most K (default: all seeds of an arm in one group)",
    )
    exp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a configuration field of every arm, e.g. --set run.steps_per_epoch=200 "
        "(repeatable; sections: network, replay, learner, exploration, run; atari and atari_network in the "
        "Atari experiments)",
    )
    exp.add_argument("--device", choices=["cpu", "cuda", "auto"], help="learner device (default: cpu)")
    exp.add_argument(
        "--name", type=folder_name, help="experiment folder name (default: the experiment's name)"
    )
    exp.add_argument(
        "--out", default="experiments", help="parent folder of experiment folders (default: experiments)"
    )
    exp.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: groups on this machine (one after another, or --jobs at a time); ray: each group a "
        "Ray task (the folder must be on a filesystem all workers share) (default: local)",
    )
    exp.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        metavar="N",
        help="local backend: run N groups at once in worker processes, each with cores/N learner threads "
        "(on 2 cores --jobs 2 runs the paper's two arms side by side, one core each, which the learner's "
        "one-thread BLAS needs to use both cores; default: 1, in this process)",
    )
    exp.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join, e.g. auto or HOST:6379 (default: start a local Ray instance)",
    )
    exp.add_argument(
        "--cpus-per-group",
        type=_positive_int,
        metavar="N",
        help="CPUs Ray reserves for each group, also its learner threads (default: 2; 1 on a 1-CPU machine)",
    )
    exp.add_argument(
        "--gpus-per-group",
        type=_nonneg_float,
        metavar="G",
        help="GPUs Ray reserves for each group; a fraction lets groups share one, e.g. 0.25. Ray shows a "
        "task only the GPUs it reserved (default: 1 with --device cuda; with --device auto 1 when the "
        "cluster has a GPU, else 0)",
    )
    exp.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    exp.add_argument(
        "--analyze",
        action="store_true",
        help="after training, analyse the shared features of every multi-task group (as mtdqn analyze) "
        "and add the sharing metrics to the report (sharing.csv)",
    )
    exp.add_argument(
        "--analyze-steps",
        type=_positive_int,
        metavar="N",
        help=f"with --analyze: states recorded per task and seed (default: {ANALYZE_STEPS})",
    )
    exp.add_argument(
        "--analyze-method",
        choices=["pca", "tsne"],
        help=f"with --analyze: embedding of the per-seed pictures (default: {ANALYZE_METHOD}; the metrics do "
        "not depend on it)",
    )
    exp.add_argument(
        "--analyze-gradient-batches",
        type=_positive_int,
        metavar="N",
        help="with --analyze: also measure each task's gradient on the shared layers over N replay batches "
        "(mtdqn analyze --gradient-batches; adds the gradient cosines and dominance to sharing.csv)",
    )

    rep = sub.add_parser(
        "report",
        help="write an experiment's report from its results.csv",
        description="Write FOLDER/report/ (learning curves beside the paper's published ones, summary.csv, "
        "summary.md, report.md) from FOLDER/results.csv alone.",
    )
    rep.add_argument("folder", help="the experiment folder, e.g. experiments/deramo-gym")
    where = rep.add_mutually_exclusive_group()
    where.add_argument(
        "--reference",
        type=Path,
        metavar="DIR",
        help="the published results folder (default: $MTDQN_REFERENCE, else ../shared/reference/deramo2020 "
        "from here or from the repository)",
    )
    where.add_argument("--no-reference", action="store_true", help="leave out the published curves")
    rep.add_argument(
        "--baseline", metavar="ARM", help="arm the others are compared with (default: the experiment's)"
    )
    rep.add_argument(
        "--partial",
        action="store_true",
        help="report the groups finished so far (an experiment still running or stopped): writes "
        "FOLDER/partial/results.csv and FOLDER/partial/report/",
    )


def cmd_experiment(args: argparse.Namespace) -> None:
    from mtdqn.backends import make_backend
    from mtdqn.experiment_report import make_report
    from mtdqn.experiments import RunOptions, get_experiment, parse_override
    from mtdqn.runner import run_experiment

    if not args.analyze:
        for flag, value in (
            ("--analyze-steps", args.analyze_steps),
            ("--analyze-method", args.analyze_method),
            ("--analyze-gradient-batches", args.analyze_gradient_batches),
        ):
            if value is not None:
                raise UserError(
                    f"{flag} applies to the analysis of --analyze only; add --analyze to analyse the "
                    f"groups after training, or leave out {flag}"
                )
    experiment = get_experiment(args.experiment)
    overrides = dict(parse_override(text) for text in args.set)
    options = RunOptions(
        epochs=experiment.epochs if args.epochs is None else args.epochs,
        overrides=overrides,
        device=args.device,
        progress=args.progress,
    )
    folder = Path(args.out) / (args.name or experiment.name)
    backend = make_backend(
        args.backend, args.ray_address, args.cpus_per_group, args.jobs, args.gpus_per_group, args.device
    )
    analysis = None
    if args.analyze:
        from mtdqn.analysis.config import AnalysisConfig
        from mtdqn.experiment_analysis import check_analysis

        analysis = AnalysisConfig(
            steps=args.analyze_steps or ANALYZE_STEPS,
            method=args.analyze_method or ANALYZE_METHOD,
            gradient_batches=args.analyze_gradient_batches or 0,
        )
        check_analysis(experiment, options, analysis)  # before anything trains

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        results = run_experiment(experiment, folder, args.seeds, options, args.group_size, backend, log)
        if analysis is not None:
            from mtdqn.experiment_analysis import analyze_experiment

            sharing = analyze_experiment(folder, analysis, log)
            log(f"sharing metrics in {sharing}" if sharing else "no multi-task group to analyse")
    except KeyboardInterrupt as interrupt:
        print(
            "\ninterrupted; finished epochs and analyses are saved: run the same command again to continue",
            file=sys.stderr,
        )
        raise SystemExit(exit_code(interrupt)) from None
    report = make_report(folder)
    log(f"done: results in {results}, report in {report}")


def cmd_report(args: argparse.Namespace) -> None:
    from mtdqn.experiment_report import make_report

    print(make_report(Path(args.folder), args.reference, not args.no_reference, args.baseline, args.partial))


COMMANDS = {"experiment": cmd_experiment, "report": cmd_report}
