"""Time of one evaluation of the deramo-gym protocol (2,000 greedy steps per task) for a population.

    python benchmarks/bench_evaluation.py --population 100 --workers 1 2 4
    python benchmarks/bench_evaluation.py --population 10 --workers 1

For each ``--workers`` count, the evaluation runs in that many background processes (each playing a slice
of the members, as a run's evaluation does; 1 = one background process), after one untimed evaluation that
starts the processes; prints seconds per evaluation (best of ``--repeats``) and checks that every count
gives the same scores. An untrained network: the cost does not depend on the weights.
"""

from __future__ import annotations

# isort: off
import mtdqn  # noqa: F401  first, as the mtdqn command does: it sets GOMP_SPINCOUNT before PyTorch loads

# isort: on
import argparse
import time

import numpy as np

from mtdqn.config import RunConfig, arch_preset, task_preset
from mtdqn.evaluate import EvalJob, Evaluator
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.tasks import task_specs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=RunConfig.eval_steps)
    args = parser.parse_args()

    tasks = task_preset("deramo-gym")
    seeds = list(range(args.population))
    net = MultiTaskQNetwork(task_specs(tasks), arch_preset("deramo"), n_members=len(seeds), seeds=seeds)
    job = EvalJob(
        tasks=tasks,
        params=[(w.copy(), b.copy()) for w, b in net.numpy_params()],
        kinds=net.layer_kinds(),
        action_mask=net.action_mask.numpy(),
        obs_max=net.obs_max,
        n_steps=args.steps,
        epsilon=0.0,
        seeds=seeds,
        epoch=1,
    )
    reference = None
    for workers in args.workers:
        evaluator = Evaluator(background=True, workers=workers)
        try:
            evaluator.submit(job).result()  # starts the processes
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = evaluator.submit(job).result()
                times.append(time.perf_counter() - start)
        finally:
            evaluator.close()
        if reference is None:
            reference = result
        same = np.array_equal(result.j, reference.j) and np.array_equal(result.episodes, reference.episodes)
        print(
            f"{args.population} seeds, {workers} worker(s): s per evaluation "
            + ", ".join(f"{t:.2f}" for t in times)
            + f" (best {min(times):.2f}); scores as with {args.workers[0]} worker(s): {same}"
        )


if __name__ == "__main__":
    main()
