"""Speed of the integrated Atari training loop: agent steps/s and the time for the review's budget.

    python benchmarks/bench_atari_train.py                                 # review-exp1, fp32 and bf16
    python benchmarks/bench_atari_train.py --arch review-mtqn --precision bf16 --steps 2000
    python benchmarks/bench_atari_train.py --precision bf16 --task-balance none param-norm

Times one training epoch of :class:`~mtdqn.train_atari.AtariTrainer` on Pong + Breakout after a random
warm-up: epsilon-greedy acting with the network (epsilon held at 0.01, so nearly every step runs the
forward), both games stepping in ale-py's vector env, one frame per game into the frame replay, and one
update (batch ``--batch-size`` per game) every 4 joint steps. Evaluation and checkpoints are left out (the
run does them in a background process / once per epoch). Reports agent steps/s summed over both games and
the wall time of 350,000 steps per game (the review's budget) at that rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from mtdqn.config import TASK_BALANCES, atari_run_config
from mtdqn.config_atari import AtariNetworkConfig
from mtdqn.train import Trainer

BUDGET = 350_000
"""Agent steps per game of the review's Atari runs."""


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_description(self, *args, **kwargs) -> None:
        pass


def measure(
    arch: str, precision: str, batch: int, steps: int, threads: int, device: str, task_balance: str = "none"
) -> float:
    """Joint steps per second of one epoch of ``steps`` joint steps (after a warm-up)."""
    config = atari_run_config("review")
    config.atari_network = AtariNetworkConfig(arch=arch)
    config.replay = dataclasses.replace(config.replay, capacity=20_000, warmup=5_000)
    config.learner = dataclasses.replace(
        config.learner, batch_size=batch, precision=precision, task_balance=task_balance
    )
    config.exploration = dataclasses.replace(config.exploration, eps_start=0.01, eps_end=0.01)
    config.run = dataclasses.replace(
        config.run, epochs=1, steps_per_epoch=steps, torch_threads=threads, device=device
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer.create(config, Path(tmp) / "run", progress=False)
        trainer._warmup()
        trainer._train_epoch(1, _NoBar())  # first epoch warms up allocators and oneDNN kernels
        start = time.perf_counter()
        trainer._train_epoch(2, _NoBar())
        return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", nargs="+", default=["review-exp1"])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=32, help="samples per game per update")
    parser.add_argument("--steps", type=int, default=4000, help="joint steps timed")
    parser.add_argument("--threads", type=int, default=0, help="PyTorch threads (0: all cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--task-balance", nargs="+", default=["none"], choices=TASK_BALANCES)
    args = parser.parse_args()
    threads = args.threads or torch.get_num_threads()
    print(f"Pong + Breakout, batch {args.batch_size} per game, update every 4 joint steps, {threads} threads")
    print(f"{'arch':<14} {'precision':<9} {'task balance':<13} {'agent steps/s':>14} {'350k steps/game':>16}")
    for arch in args.arch:
        for precision in args.precision:
            for balance in args.task_balance:
                joint = measure(arch, precision, args.batch_size, args.steps, threads, args.device, balance)
                minutes = BUDGET / joint / 60
                print(
                    f"{arch:<14} {precision:<9} {balance:<13} {2 * joint:>14.1f} {minutes:>13.1f} min",
                    flush=True,
                )


if __name__ == "__main__":
    main()
