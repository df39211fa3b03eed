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
from mtdqn.analysis.rollout import Agent, StateSet, roll_out
from mtdqn.config import Config
from mtdqn.errors import UserError

_CHUNK = 256
"""States per forward pass when computing features of many states."""


@dataclass
class AtariAgent(Agent):
    """One member of an Atari run; forward passes run its torch network on uint8 stacks."""

    net: torch.nn.Module | None = None
    """A one-member :class:`~mtdqn.nets_atari.AtariQNetwork` holding this member's weights."""
    bf16_forward = True

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

    def layer_outputs(self, obs: np.ndarray, bf16: bool = False) -> list[tuple[str, str, np.ndarray]]:
        """``(label, activation, output (T, B, out))`` of each dense layer on flat stacks (T, B, C*H*W);
        ``bf16``: under bfloat16 autocast, as a ``--precision bf16`` learner computes them."""
        n_tasks, n = obs.shape[:2]
        stacks = np.asarray(obs).astype(np.uint8, copy=False).reshape(n_tasks, n, *self.net.input_shape)
        chunks = []
        device = next(self.net.parameters()).device.type
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            for start in range(0, n, _CHUNK):
                x = torch.from_numpy(np.ascontiguousarray(stacks[:, start : start + _CHUNK]))[None]
                chunks.append([y[0].float().numpy() for y in self.net.dense_outputs(x)])
        outputs = []
        dense = [(i, layer) for i, layer in enumerate(self.net.plan) if not layer.is_conv]
        for k, (i, layer) in enumerate(dense):
            role = "shared" if layer.role == "shared" else "per game"
            label = f"{i}: {layer.in_dim}->{layer.out_dim} {layer.activation} ({role})"
            outputs.append((label, layer.activation, np.concatenate([c[k] for c in chunks], axis=1)))
        return outputs

    def q(self, obs: np.ndarray) -> np.ndarray:
        """Q values ``(T, B, A_max)`` of flat stacks ``(T, B, C*H*W)``."""
        stacks = np.asarray(obs).astype(np.uint8, copy=False).reshape(*obs.shape[:2], *self.net.input_shape)
        with torch.inference_mode():
            return self.net(torch.from_numpy(np.ascontiguousarray(stacks))[None])[0].numpy()

    def forward(self, obs: np.ndarray, n_layers: int) -> np.ndarray:
        raise NotImplementedError("an Atari agent has no numpy forward; use q() or features_and_q()")


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

    envs = [make_atari_env(task.env_id, agent.config.atari, record_states=True) for task in agent.tasks]
    return roll_out(agent, cfg, envs, obs_dtype=np.uint8, state_dtype=np.float32, meta={"atari": True})
