"""Time of one ``DQNLearner.update`` (the paper's networks and batch) for a population, without environments.

    python benchmarks/bench_update.py --population 10 --threads 1
    python benchmarks/bench_update.py --population 10 --threads 1 --mode single --precision bf16
    python benchmarks/bench_update.py --population 10 --profile     # add PyTorch's operator table
    python benchmarks/bench_update.py --population 10 --kernels torch numpy   # autograd vs mtdqn.backprop
    python benchmarks/bench_update.py --population 100 --device cuda          # on a GPU (autograd)
    python benchmarks/bench_update.py --kernels torch --task-balance none feature-norm

The batch is random (the update's cost does not depend on the numbers): ``batch_size`` samples per task
and member of the ``deramo-gym`` tasks. Prints the mean time per update of each of ``--repeats`` runs of
``--updates`` updates after a warm-up, and the best of them.
"""

from __future__ import annotations

# isort: off
import mtdqn  # noqa: F401  first, as the mtdqn command does: it sets GOMP_SPINCOUNT before PyTorch loads

# isort: on
import argparse
import dataclasses
import time

import torch

from mtdqn.config import TASK_BALANCES, LearnerConfig, arch_preset, task_preset
from mtdqn.learner import DQNLearner
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.replay import Batch
from mtdqn.tasks import task_specs
from mtdqn.threads import blas_description, set_compute_threads
from mtdqn.train import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--population", type=int, default=10)
    parser.add_argument("--mode", choices=["multi", "single"], default="multi")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--kernels", nargs="+", choices=["auto", "numpy", "torch"], default=["auto"])
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (CUDA when present)")
    parser.add_argument("--task-balance", nargs="+", default=["none"], choices=TASK_BALANCES)
    args = parser.parse_args()

    set_compute_threads(args.threads)
    print(f"torch {torch.__version__}; numpy's BLAS: {blas_description()}")
    for kernels in args.kernels:
        for balance in args.task_balance:
            bench(args, kernels, balance)


def bench(args: argparse.Namespace, kernels: str, task_balance: str) -> None:
    device = resolve_device(args.device)
    specs = task_specs(task_preset("deramo-gym"))
    net = MultiTaskQNetwork(
        specs, arch_preset("deramo"), share=args.mode == "multi", n_members=args.population, seeds=0
    ).to(device)
    cfg = dataclasses.replace(
        LearnerConfig(), precision=args.precision, kernels=kernels, task_balance=task_balance
    )
    learner = DQNLearner(net, [s.gamma for s in specs], cfg)
    shape = (args.population, len(specs), cfg.batch_size)
    gen = torch.Generator().manual_seed(0)
    batch = Batch(
        obs=torch.randn(*shape, net.obs_max, generator=gen),
        action=torch.randint(0, min(net.n_actions), shape, generator=gen),
        reward=torch.randn(*shape, generator=gen),
        next_obs=torch.randn(*shape, net.obs_max, generator=gen),
        terminal=(torch.rand(*shape, generator=gen) < 0.05).float(),
    ).to(device)
    for _ in range(20):
        learner.update(batch)
    times = []
    for _ in range(args.repeats):
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(args.updates):
            learner.update(batch)
        _synchronize(device)
        times.append((time.perf_counter() - start) / args.updates * 1e3)
    print(
        f"{device}, {args.mode}, {args.population} seeds, {args.threads} thread(s), {args.precision}, "
        f"{learner.kernels} kernels, task balance {task_balance}: ms per update "
        + ", ".join(f"{t:.2f}" for t in times)
        + f" (best {min(times):.2f})"
    )
    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            for _ in range(args.updates):
                learner.update(batch)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a time measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
