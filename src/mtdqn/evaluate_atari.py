"""Evaluation of an Atari run: the protocol of :mod:`mtdqn.evaluate` with frame stacks and game scores.

Every game of every member plays ``n_steps`` agent steps from freshly reset, seeded copies at epsilon
``eval_epsilon`` (0.05 in the DQN protocols), acting with the network's torch forward on uint8 stacks.
Episodes are games (a game over or the time limit), not lives; their scores are the *raw* game scores,
never the clipped learning rewards. ``return`` (the mean score of the games that ended) is the number to
report; ``J`` discounts the same raw rewards with the task's gamma; an unfinished last game is dropped and
both are 0 when no game ended, as for the control tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mtdqn.config import TaskConfig
from mtdqn.config_atari import AtariConfig, AtariNetworkConfig
from mtdqn.evaluate import EvalResult, ScoreKeeper, explore, scores_result
from mtdqn.policy import masked_greedy
from mtdqn.seeding import derive_rng, derive_seed


@dataclass
class AtariEvalJob:
    """A snapshot of an Atari network and the evaluation protocol; picklable (runs in another process)."""

    tasks: list[TaskConfig]
    atari: AtariConfig
    network: AtariNetworkConfig
    share: bool
    n_actions: list[int]
    state: dict[str, torch.Tensor]
    """The network's ``state_dict`` on the CPU."""
    n_steps: int
    epsilon: float
    seeds: list[int]
    epoch: int
    threads: int = 1
    """PyTorch threads of the evaluation's forward passes (1: leave the other cores to the learner)."""

    def run(self) -> EvalResult:
        return run_atari_evaluation(self)


def run_atari_evaluation(job: AtariEvalJob) -> EvalResult:
    """Play ``job.n_steps`` agent steps in every game of every member and score the finished games."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        return _play(job)
    finally:
        torch.set_num_threads(threads_before)  # inline evaluation: the learner keeps its threads


def _play(job: AtariEvalJob) -> EvalResult:
    from mtdqn.nets_atari import AtariQNetwork
    from mtdqn.tasks.atari import AtariVectorTask, step_games

    n_members, n_tasks = len(job.seeds), len(job.tasks)
    cfg = job.atari
    net = AtariQNetwork(
        job.n_actions,
        job.network,
        share=job.share,
        n_members=n_members,
        seeds=job.seeds,
        stack=cfg.frame_stack,
        screen=cfg.screen_size,
    )
    net.load_state_dict(job.state)
    net.eval()
    mask = net.action_mask.numpy()
    n_actions = np.array(job.n_actions)
    envs = [AtariVectorTask(task.env_id, n_members, cfg, num_threads=1) for task in job.tasks]
    scores = [ScoreKeeper(n_members, task.gamma) for task in job.tasks]
    rngs = [derive_rng(seed, "eval-explore", job.epoch) for seed in job.seeds]
    obs = np.zeros((n_members, n_tasks, 1, *net.input_shape), dtype=np.uint8)
    for t, env in enumerate(envs):
        obs[:, t, 0] = env.reset([derive_seed(seed, "eval", job.epoch, t) for seed in job.seeds])
    obs_t = torch.from_numpy(obs)  # shares memory with obs: refreshed in place every step
    with torch.inference_mode():
        for _ in range(job.n_steps):
            actions = explore(masked_greedy(net(obs_t)[:, :, 0].numpy(), mask), job.epsilon, n_actions, rngs)
            for t, out in enumerate(step_games(envs, actions)):
                scores[t].add(out.reward, out.terminated | out.truncated)
                obs[:, t, 0] = out.obs
    for env in envs:
        env.close()
    return scores_result(job.epoch, scores)
