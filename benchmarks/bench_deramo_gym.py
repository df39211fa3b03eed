"""Speed of one seed of the paper's deramo-gym protocol (5 tasks, one update per joint step).

    python benchmarks/bench_deramo_gym.py                 # the full protocol: 50 epochs, 51 evaluations
    python benchmarks/bench_deramo_gym.py --epochs 5      # a shorter measurement
    python benchmarks/bench_deramo_gym.py --threads 2 --no-background-eval
    python benchmarks/bench_deramo_gym.py --population 10 --epochs 4 --kernels torch   # autograd's update
    python benchmarks/bench_deramo_gym.py --population 100 --epochs 2 --device cuda    # the learner on a GPU

Prints learning env steps/s (all tasks), updates/s, evaluation steps, wall-clock and peak memory of this
process and of the evaluation worker. The run folder goes to a temporary directory unless --keep PATH.
"""

from __future__ import annotations

# isort: off
import mtdqn  # noqa: F401  first, as the mtdqn command does: it sets GOMP_SPINCOUNT before PyTorch loads

# isort: on
import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import torch

from mtdqn.config import Config, LearnerConfig, RunConfig, arch_preset, task_preset
from mtdqn.runlog import read_metrics
from mtdqn.threads import blas_description
from mtdqn.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--population", type=int, default=1, help="train seeds seed .. seed + N - 1 together")
    parser.add_argument("--threads", type=int, default=RunConfig.torch_threads)
    parser.add_argument("--mode", choices=["multi", "single"], default="multi")
    parser.add_argument("--no-background-eval", action="store_true")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--kernels", choices=["auto", "numpy", "torch"], default="auto")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (CUDA when present)")
    parser.add_argument("--eval-workers", type=int, default=0, help="processes per evaluation (0: auto)")
    parser.add_argument("--keep", type=Path, help="write the run folder here instead of a temporary one")
    args = parser.parse_args()

    config = Config(
        tasks=task_preset("deramo-gym"),
        mode=args.mode,
        network=arch_preset("deramo"),
        learner=dataclasses.replace(LearnerConfig(), precision=args.precision, kernels=args.kernels),
        run=dataclasses.replace(
            RunConfig(),
            epochs=args.epochs,
            seeds=list(range(args.seed, args.seed + args.population)),
            torch_threads=args.threads,
            background_eval=not args.no_background_eval,
            device=args.device,
            eval_workers=args.eval_workers,
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.keep or Path(tmp) / "bench"
        start = time.perf_counter()
        trainer = Trainer.create(config, run_dir, overwrite=True, progress=False)
        trainer.run()
        wall = time.perf_counter() - start
        m = read_metrics(run_dir / "metrics.csv")
        last = m["epoch"] == m["epoch"].max()
        j = {str(n): float(m["J"][last & (m["task_name"] == n)].mean()) for n in m["task_name"][last]}
        later = m["epoch"] >= 2  # epoch 1 includes one-off costs (allocations, oneDNN kernels)
        later_rate = float(m["steps_per_s"][later].mean()) if later.any() else float("nan")
    n_tasks = len(config.tasks)
    learn_steps = args.epochs * config.run.steps_per_epoch * n_tasks * args.population
    train_s = trainer.wall_s
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"torch {torch.__version__}, device {trainer.device}, threads {args.threads},"
        f" background eval {not args.no_background_eval} ({trainer.eval_workers()} process(es)),"
        f" precision {args.precision}, kernels {trainer.learner.kernels} (numpy's BLAS: {blas_description()})"
    )
    print(
        f"epochs                      {args.epochs} x {config.run.steps_per_epoch} steps x {n_tasks} tasks"
        f" x {args.population} seeds"
    )
    print(f"learning env steps          {learn_steps}")
    print(f"updates                     {trainer.learner.n_updates}")
    print(
        f"evaluation env steps        {(args.epochs + 1) * config.run.eval_steps * n_tasks * args.population}"
    )
    print(f"learning phase              {train_s:.1f} s")
    print(f"env steps/s (learning)      {learn_steps / train_s:.0f} (seed-steps/s: all tasks and seeds)")
    print(f"updates/s                   {trainer.learner.n_updates / train_s:.0f}")
    print(f"env steps/s, epochs 2+      {later_rate:.0f} (without epoch 1's one-off costs)")
    print(f"wall-clock, whole run       {wall:.1f} s")
    print(f"peak memory                 {self_mb:.0f} MiB (learner), {child_mb:.0f} MiB (evaluation worker)")
    print("J at the last evaluation    (mean over seeds) " + ", ".join(f"{k} {v:.3f}" for k, v in j.items()))


if __name__ == "__main__":
    main()
