"""States from a trained Atari agent (the review's ``atari_tsne`` and ``atari_game_tsne`` inputs).

The counterpart of :mod:`mtdqn.analysis.rollout` for runs on ALE games: the agent acts with the run's
:class:`~mtdqn.nets_atari.AtariQNetwork` (torch, one member), the games run as single preprocessed
environments that record emulator states, and a :class:`~mtdqn.analysis.rollout.StateSet` holds

* ``obs``: the uint8 frame stacks, flattened (``4 * 84 * 84`` values per state);
* ``env_state``: per state the serialized ALE state from before the latest emulator frame and that
  frame's action (:mod:`mtdqn.tasks.env_state`), as float32 (bytes and sizes are exact in float32; half
  the size of float64), NaN-padded; rendering one replays that frame and gives the colour screen.

Everything downstream (features, V, t-SNE, overlap pictures, thumbnails, report) is shared with the control
tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtdqn.analysis.config import AnalysisConfig
from mtdqn.analysis.rollout import Agent, StateSet
from mtdqn.config import Config
from mtdqn.errors import UserError
from mtdqn.policy import epsilon_greedy, masked_greedy
from mtdqn.seeding import derive_rng, derive_seed
from mtdqn.tasks.env_state import get_env_state

_CHUNK = 256
"""States per forward pass when computing features of many states."""


@dataclass
class AtariAgent(Agent):
    """One member of an Atari run; forward passes run its torch network on uint8 stacks."""

    net: torch.nn.Module | None = None
    """A one-member :class:`~mtdqn.nets_atari.AtariQNetwork` holding this member's weights."""

    def features_and_q(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shared features ``(T, B, F)`` and Q values ``(T, B, A_max)`` of flat stacks ``(T, B, C*H*W)``."""
        n_tasks, n = obs.shape[:2]
        stacks = np.asarray(obs).astype(np.uint8, copy=False).reshape(n_tasks, n, *self.net.input_shape)
        feats, qs = [], []
        with torch.inference_mode():
            for start in range(0, n, _CHUNK):
                x = torch.from_numpy(np.ascontiguousarray(stacks[:, start : start + _CHUNK]))[None]
                feats.append(self.net.features(x)[0].numpy())
                qs.append(self.net(x)[0].numpy())
        return np.concatenate(feats, axis=1), np.concatenate(qs, axis=1)

    def forward(self, obs: np.ndarray, n_layers: int) -> np.ndarray:
        """Q values of flat stacks ``(T, B, C*H*W)`` (the whole network; ``n_layers`` is ignored)."""
        return self.features_and_q(obs)[1]


def load_atari_agents(run_dir: Path, config: Config, state: dict, wanted: list[int]) -> list[AtariAgent]:
    """The members with seeds ``wanted`` of the Atari run in ``run_dir`` (checkpoint ``state``)."""
    from mtdqn.nets_atari import AtariQNetwork
    from mtdqn.train_atari import atari_task_specs

    specs = atari_task_specs(config)
    n_actions = [s.n_actions for s in specs]
    run_seeds = list(config.run.seeds)
    online = state["learner"]["online"]
    agents = []
    for seed in wanted:
        m = run_seeds.index(seed)
        net = AtariQNetwork(
            n_actions,
            config.atari_network,
            share=config.mode == "multi",
            n_members=1,
            seeds=[seed],
            stack=config.atari.frame_stack,
            screen=config.atari.screen_size,
        )
        member = {k: (v if k == "action_mask" else v[m : m + 1]) for k, v in online.items()}
        try:
            net.load_state_dict(member)
        except RuntimeError as exc:
            raise UserError(f"checkpoint of {run_dir} does not fit its config.json ({exc})") from None
        net.eval()
        agents.append(
            AtariAgent(
                run_dir=run_dir,
                config=config,
                member=m,
                seed=seed,
                epoch=int(state["epoch"]),
                params=[],
                kinds=[],
                feature_layer=net.feature_layer,
                action_mask=net.action_mask.numpy().copy(),
                obs_dims=[s.obs_dim for s in specs],
                net=net,
            )
        )
    return agents


def collect_atari_states(agent: AtariAgent, cfg: AnalysisConfig) -> StateSet:
    """Roll ``agent`` out for ``cfg.steps`` agent steps in each of its games (all games side by side)."""
    from mtdqn.tasks.atari import make_atari_env

    tasks, atari = agent.tasks, agent.config.atari
    n_tasks, steps = len(tasks), cfg.steps
    envs = [make_atari_env(task.env_id, atari, record_states=True) for task in tasks]
    obs_dim = agent.obs_dims[0]
    obs = np.zeros((n_tasks, steps, obs_dim), dtype=np.uint8)
    states: list[list[np.ndarray]] = [[] for _ in range(n_tasks)]
    episode = np.zeros((n_tasks, steps), dtype=np.int64)
    step = np.zeros((n_tasks, steps), dtype=np.int64)
    actions = np.zeros((n_tasks, steps), dtype=np.int64)
    current = np.zeros((n_tasks, 1, obs_dim), dtype=np.uint8)
    for t, env in enumerate(envs):
        o, _ = env.reset(seed=derive_seed(agent.seed, "analysis", cfg.seed, t))
        current[t, 0] = np.asarray(o).reshape(-1)
    rng = derive_rng(agent.seed, "analysis-explore", cfg.seed)
    n_actions = agent.action_mask.sum(-1)
    ep = np.zeros(n_tasks, dtype=np.int64)
    st = np.zeros(n_tasks, dtype=np.int64)
    for i in range(steps):
        obs[:, i] = current[:, 0]
        episode[:, i], step[:, i] = ep, st
        for t, env in enumerate(envs):
            states[t].append(get_env_state(env).astype(np.float32))
        greedy = masked_greedy(agent.forward(current, 0)[:, 0], agent.action_mask)
        chosen = epsilon_greedy(greedy, cfg.epsilon, n_actions, rng) if cfg.epsilon > 0 else greedy
        actions[:, i] = chosen
        for t, env in enumerate(envs):
            o, _, terminated, truncated, _ = env.step(int(chosen[t]))
            st[t] += 1
            if terminated or truncated:
                o, _ = env.reset()
                ep[t] += 1
                st[t] = 0
            current[t, 0] = np.asarray(o).reshape(-1)
    for env in envs:
        env.close()
    feats, q = agent.features_and_q(obs)
    q = np.where(agent.action_mask[:, None, :], q, np.nan)
    state_max = max(len(s) for per_task in states for s in per_task)
    env_state = np.full((n_tasks, steps, state_max), np.nan, dtype=np.float32)
    for t in range(n_tasks):
        for i, s in enumerate(states[t]):
            env_state[t, i, : len(s)] = s
    meta = {
        "run": str(agent.run_dir),
        "mode": agent.config.mode,
        "seed": agent.seed,
        "epoch": agent.epoch,
        "atari": True,
        **cfg.rollout_key(),
    }
    flat = lambda a: a.reshape(n_tasks * steps, *a.shape[2:])  # noqa: E731
    return StateSet(
        task_names=[task.label for task in tasks],
        env_ids=[task.env_id for task in tasks],
        n_actions=[int(n) for n in n_actions],
        task=np.repeat(np.arange(n_tasks), steps),
        obs=flat(obs),
        env_state=flat(env_state),
        episode=flat(episode),
        step=flat(step),
        action=flat(actions),
        features=flat(feats).astype(np.float32),
        q=flat(q).astype(np.float32),
        meta=meta,
    )
