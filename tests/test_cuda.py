"""The learner and runs on a CUDA GPU.

Skipped where PyTorch sees none (CI); ``benchmarks/device/gpu_check.sh`` runs them on a GPU machine.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_config
from test_backprop import SPECS, _batch
from test_train_atari import tiny

from mtdqn.config import LearnerConfig, NetworkConfig
from mtdqn.learner import DQNLearner
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.runlog import read_metrics
from mtdqn.train import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("share", [True, False])
def test_the_update_on_cuda_follows_the_cpu_update(share: bool) -> None:
    """Same network, batches and hyperparameters: 20 updates on the GPU (autograd) and on the CPU (the numpy
    kernels) end at the same weights up to float rounding."""
    cpu_net = MultiTaskQNetwork(SPECS, NetworkConfig(), share=share, n_members=3, seeds=[0, 1, 2])
    cuda_net = copy.deepcopy(cpu_net).cuda()
    start = cpu_net.weights[1].detach().clone()
    cfg = dataclasses.replace(LearnerConfig(), target_update_every=7)
    gammas = [s.gamma for s in SPECS]
    cpu, gpu = DQNLearner(cpu_net, gammas, cfg), DQNLearner(cuda_net, gammas, cfg)
    assert (cpu.kernels, gpu.kernels) == ("numpy", "torch")
    for seed in range(20):
        batch = _batch(3, n=32, seed=seed)
        cpu.update(batch)
        gpu.update(batch.to("cuda"))
    for p_cpu, p_gpu in zip(cpu_net.parameters(), cuda_net.parameters(), strict=True):
        torch.testing.assert_close(p_gpu.cpu(), p_cpu, rtol=1e-3, atol=1e-4)
    assert not torch.equal(cpu_net.weights[1], start)  # the updates moved the weights


def test_a_control_run_on_cuda_trains_and_resumes_on_the_cpu(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer.create(small_config(seeds=[0, 1], device="cuda"), run_dir, progress=False)
    assert trainer.learner.kernels == "torch" and trainer.replay.storage.is_cuda
    trainer.run()
    assert all(p.is_cuda for p in trainer.net.parameters())
    resumed = Trainer.resume(run_dir, epochs=3, device="cpu", progress=False)
    assert resumed.epoch == 2 and resumed.learner.kernels == "numpy"
    resumed.run()
    metrics = read_metrics(run_dir / "metrics.csv")
    assert sorted(set(metrics["epoch"].tolist())) == [0, 1, 2, 3]
    assert np.isfinite(metrics["loss"][metrics["epoch"] >= 1]).all()


@pytest.mark.parametrize("arch", ["review-exp1", "review-mtqn"])
def test_an_atari_run_on_cuda_trains(arch: str, tmp_path: Path) -> None:
    config = tiny(arch)
    config.run = dataclasses.replace(config.run, device="cuda")
    trainer = Trainer.create(config, tmp_path / "run", progress=False)
    trainer.run()
    assert all(p.is_cuda for p in trainer.net.parameters())
    metrics = read_metrics(tmp_path / "run" / "metrics.csv")
    last = metrics["epoch"] == 1
    assert np.isfinite(metrics["loss"][last]).all() and (metrics["updates"][last] == 16).all()
