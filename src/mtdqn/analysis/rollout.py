"""States from a trained agent: roll it out in every task and record what the network computes on them.

Per state the record holds the task, the observation, the environment's full internal state (to render the
exact frame later), the episode and step, the action taken, the reward and end signals that followed it (as
the learner sees them), the shared features (output of the last shared layer), the Q values of the task's
valid actions and ``V = max_a Q``. A :class:`StateSet` is saved as one ``.npz`` (no pickled objects) so
re-plotting needs no new rollout.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtdqn.analysis.config import AnalysisConfig
from mtdqn.config import Config, TaskConfig
from mtdqn.errors import UserError
from mtdqn.policy import activations, epsilon_greedy, masked_greedy
from mtdqn.runlog import atomic_write_bytes, load_checkpoint, load_config
from mtdqn.seeding import derive_rng, derive_seed
from mtdqn.tasks import make_env, task_specs
from mtdqn.tasks.env_state import get_env_state

Params = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class Agent:
    """One member of a trained run, ready for numpy forward passes."""

    run_dir: Path
    config: Config
    member: int
    seed: int
    epoch: int
    params: Params
    """``(W, b)`` per layer with a leading member dimension of 1."""
    kinds: list[tuple[str, bool]]
    feature_layer: int
    """Index of the last shared layer; its output is the shared feature vector."""
    action_mask: np.ndarray
    obs_dims: list[int]
    bf16_forward = False  # a class attribute, not a field
    """Whether :meth:`layer_outputs` can run the network in bfloat16 (the torch networks of Atari runs)."""

    @property
    def tasks(self) -> list[TaskConfig]:
        return self.config.tasks

    @property
    def obs_max(self) -> int:
        return max(self.obs_dims)

    def forward(self, obs: np.ndarray, n_layers: int) -> np.ndarray:
        """First ``n_layers`` layers on padded observations ``(T, B, obs_max)`` -> ``(T, B, out)``."""
        return activations(self.params, self.kinds, obs[None].astype(np.float32), n_layers)[0]

    def q(self, obs: np.ndarray) -> np.ndarray:
        """Q values ``(T, B, A_max)`` of padded observations ``(T, B, obs_max)``."""
        return self.forward(obs, len(self.params))

    def layer_outputs(self, obs: np.ndarray, bf16: bool = False) -> list[tuple[str, str, np.ndarray]]:
        """``(label, activation, output (T, B, out))`` of every dense layer on padded observations."""
        if bf16:
            raise NotImplementedError("the numpy forward of a control agent has no bfloat16 mode")
        outputs = []
        x = obs[None].astype(np.float32)
        for i, (param, kind) in enumerate(zip(self.params, self.kinds, strict=True)):
            w = param[0]
            x = activations([param], [kind], x, 1)
            role = "shared" if kind[1] else "per task"
            outputs.append((f"{i}: {w.shape[-1]}->{w.shape[-2]} {kind[0]} ({role})", kind[0], x[0]))
        return outputs

    def features_and_q(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shared features ``(T, B, width)`` and Q values ``(T, B, A_max)`` of padded observations."""
        feats = self.forward(obs, self.feature_layer + 1)
        x = feats[None]  # the layers below write only into their own outputs
        rest = list(zip(self.params, self.kinds, strict=True))[self.feature_layer + 1 :]
        q = activations([p for p, _ in rest], [k for _, k in rest], x, len(rest))[0]
        return feats, q


def load_agents(run_dir: Path, seeds: list[int] | None = None) -> list[Agent]:
    """The members of the run in ``run_dir`` (those with ``seeds``, default all) at its last checkpoint."""
    import torch

    from mtdqn.nets import MultiTaskQNetwork

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(
            f"{run_dir} is not a run folder (no config.json); give the folder `mtdqn train` wrote"
        )
    config = load_config(run_dir)
    state = load_checkpoint(run_dir / "checkpoint.pt", config.learning_fingerprint())
    run_seeds = list(config.run.seeds)
    wanted = run_seeds if seeds is None else seeds
    missing = [s for s in wanted if s not in run_seeds]
    if missing:
        raise UserError(f"{run_dir} has no member with seed {missing[0]}; its seeds are {run_seeds}")
    if config.is_atari:
        from mtdqn.analysis.rollout_atari import load_atari_agents

        return load_atari_agents(run_dir, config, state, wanted)
    specs = task_specs(config.tasks)
    net = MultiTaskQNetwork(
        specs, config.network, share=config.mode == "multi", n_members=len(run_seeds), seeds=run_seeds
    )
    try:
        net.load_state_dict(state["learner"]["online"])
    except (KeyError, RuntimeError) as exc:
        raise UserError(f"checkpoint of {run_dir} does not fit its config.json ({exc})") from None
    with torch.no_grad():
        all_params = [(w.numpy(), b.numpy()) for w, b in zip(net.weights, net.biases, strict=True)]
    agents = []
    for seed in wanted:
        m = run_seeds.index(seed)
        agents.append(
            Agent(
                run_dir=run_dir,
                config=config,
                member=m,
                seed=seed,
                epoch=int(state["epoch"]),
                params=[(w[m : m + 1].copy(), b[m : m + 1].copy()) for w, b in all_params],
                kinds=net.layer_kinds(),
                feature_layer=net.feature_layer,
                action_mask=net.action_mask.numpy().copy(),
                obs_dims=[s.obs_dim for s in specs],
            )
        )
    return agents


@dataclass
class StateSet:
    """Recorded states of all tasks; row ``i`` is one state, rows grouped by task in task order."""

    task_names: list[str]
    env_ids: list[str]
    n_actions: list[int]
    task: np.ndarray
    """``(N,)`` task index of each state."""
    obs: np.ndarray
    """``(N, obs_max)`` observations, zero-padded (Atari: uint8 frame stacks, flattened)."""
    env_state: np.ndarray
    """``(N, state_max)`` internal env states (what the renderer draws), NaN-padded (Atari: float32
    serialized emulator states, see :mod:`mtdqn.analysis.rollout_atari`)."""
    episode: np.ndarray
    """``(N,)`` episode number within the task's rollout (0-based)."""
    step: np.ndarray
    """``(N,)`` step within the episode (0 = the reset state)."""
    action: np.ndarray
    """``(N,)`` action taken in the state."""
    features: np.ndarray
    """``(N, width)`` shared features."""
    q: np.ndarray
    """``(N, A_max)`` Q values; NaN for actions the task does not have."""
    reward: np.ndarray
    """``(N,)`` the learning reward of the step taken in the state (Atari: clipped when the run clips)."""
    terminal: np.ndarray
    """``(N,)`` whether that step ended the learner's bootstrapping (a true end; Atari: also a lost life
    when the run counts one as terminal)."""
    ended: np.ndarray
    """``(N,)`` whether the episode ended after that step (terminal, or cut by the task's horizon) and the
    environment was reset."""
    meta: dict = field(default_factory=dict)
    """Run folder, member seed, checkpoint epoch and the rollout settings."""

    @property
    def value(self) -> np.ndarray:
        """``V(s) = max`` over the task's valid actions of ``Q(s, a)``."""
        return np.nanmax(self.q, axis=1)

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    def save(self, path: Path) -> None:
        """Write atomically as a plain ``.npz`` (metadata as a JSON string)."""
        buf = io.BytesIO()
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        header = {
            "task_names": self.task_names,
            "env_ids": self.env_ids,
            "n_actions": self.n_actions,
            "meta": self.meta,
        }
        np.savez_compressed(buf, header=np.array(json.dumps(header)), **arrays)
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> StateSet | None:
        """Read a file written by :meth:`save` (no pickle); None for a file of an older version (written
        before the rewards were recorded), which is rolled out again."""
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                if any(name not in data.files for name in _ADDED_ARRAYS):
                    return None
                arrays = {name: data[name] for name in _ARRAYS}
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise UserError(f"{path} is not a states file of mtdqn analyze ({exc}); delete it") from None
        return cls(
            header["task_names"], header["env_ids"], header["n_actions"], meta=header["meta"], **arrays
        )


_ADDED_ARRAYS = ("reward", "terminal", "ended")
"""Arrays that states files written before them lack."""
_ARRAYS = ("task", "obs", "env_state", "episode", "step", "action", "features", "q", *_ADDED_ARRAYS)


def collect_states(agent: Agent, cfg: AnalysisConfig) -> StateSet:
    """Roll ``agent`` out for ``cfg.steps`` steps in each of its tasks (all tasks side by side)."""
    if agent.config.is_atari:
        from mtdqn.analysis.rollout_atari import collect_atari_states

        return collect_atari_states(agent, cfg)
    envs = [make_env(task) for task in agent.tasks]
    return roll_out(agent, cfg, envs, obs_dtype=np.float32, state_dtype=np.float64)


def roll_out(
    agent: Agent, cfg: AnalysisConfig, envs: list, obs_dtype, state_dtype, meta: dict | None = None
) -> StateSet:
    """Play ``cfg.steps`` steps of ``agent`` in ``envs`` (one per task, closed at the end) and record them.

    Observations are flattened into ``obs_dtype`` rows (zero-padded to the agent's widest), internal env
    states into ``state_dtype`` rows (NaN-padded); features and Q come from ``agent.features_and_q``.
    """
    tasks = agent.tasks
    n_tasks, steps = len(tasks), cfg.steps
    obs = np.zeros((n_tasks, steps, agent.obs_max), dtype=obs_dtype)
    states: list[list[np.ndarray]] = [[] for _ in range(n_tasks)]
    episode = np.zeros((n_tasks, steps), dtype=np.int64)
    step = np.zeros((n_tasks, steps), dtype=np.int64)
    actions = np.zeros((n_tasks, steps), dtype=np.int64)
    rewards = np.zeros((n_tasks, steps), dtype=np.float32)
    terminals = np.zeros((n_tasks, steps), dtype=bool)
    ends = np.zeros((n_tasks, steps), dtype=bool)
    current = np.zeros((n_tasks, 1, agent.obs_max), dtype=obs_dtype)

    def put(t: int, o) -> None:
        o = np.asarray(o).reshape(-1)
        current[t, 0, o.size :] = 0
        current[t, 0, : o.size] = o

    for t, env in enumerate(envs):
        put(t, env.reset(seed=derive_seed(agent.seed, "analysis", cfg.seed, t))[0])
    rng = derive_rng(agent.seed, "analysis-explore", cfg.seed)
    n_actions = agent.action_mask.sum(-1)
    ep = np.zeros(n_tasks, dtype=np.int64)
    st = np.zeros(n_tasks, dtype=np.int64)
    for i in range(steps):
        obs[:, i] = current[:, 0]
        episode[:, i], step[:, i] = ep, st
        for t, env in enumerate(envs):
            states[t].append(get_env_state(env).astype(state_dtype))
        greedy = masked_greedy(agent.q(current)[:, 0], agent.action_mask)
        chosen = epsilon_greedy(greedy, cfg.epsilon, n_actions, rng) if cfg.epsilon > 0 else greedy
        actions[:, i] = chosen
        for t, env in enumerate(envs):
            o, reward, terminated, truncated, info = env.step(int(chosen[t]))
            # What the learner sees: an Atari game reports its clipped reward and life-loss terminal beside
            # the raw score; a control task's reward and termination are the learner's.
            rewards[t, i] = info.get("learning_reward", reward)
            terminals[t, i] = info.get("learning_terminal", terminated)
            ends[t, i] = terminated or truncated
            st[t] += 1
            if terminated or truncated:
                o, _ = env.reset()
                ep[t] += 1
                st[t] = 0
            put(t, o)
    for env in envs:
        env.close()
    feats, q = agent.features_and_q(obs)
    q = np.where(agent.action_mask[:, None, :], q, np.nan)
    state_max = max(len(s) for per_task in states for s in per_task)
    env_state = np.full((n_tasks, steps, state_max), np.nan, dtype=state_dtype)
    for t in range(n_tasks):
        for i, s in enumerate(states[t]):
            env_state[t, i, : len(s)] = s
    meta = {
        "run": str(agent.run_dir),
        "mode": agent.config.mode,
        "seed": agent.seed,
        "epoch": agent.epoch,
        **(meta or {}),
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
        reward=flat(rewards),
        terminal=flat(terminals),
        ended=flat(ends),
        meta=meta,
    )


def layer_outputs_per_task(
    agent: Agent, states: StateSet, bf16: bool = False
) -> list[tuple[str, str, list[np.ndarray]]]:
    """``(label, activation, [output on task t's states (N_t, out) for each t])`` of every dense layer of
    ``agent`` on the states it was rolled out on (``bf16``: from a bfloat16 forward)."""
    per_task = []
    for t in range(len(states.task_names)):
        rows = np.flatnonzero(states.task == t)
        obs = np.zeros((len(agent.tasks), len(rows), states.obs.shape[1]), dtype=states.obs.dtype)
        obs[t] = states.obs[rows]
        per_task.append([(label, act, y[t]) for label, act, y in agent.layer_outputs(obs, bf16)])
    return [
        (label, act, [layers[k][2] for layers in per_task]) for k, (label, act, _) in enumerate(per_task[0])
    ]


def features_on(agent: Agent, states: StateSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Another agent's shared features and V on the same states, for the tasks it shares with them.

    Tasks are matched by environment id. Returns ``(rows, features, value)``: the indices of the states
    whose task the agent knows, and its features and ``V`` on them.
    """
    own_ids = [task.env_id for task in agent.tasks]
    rows_all, feats_all, values_all = [], [], []
    for t, env_id in enumerate(states.env_ids):
        if env_id not in own_ids:
            continue
        t_agent = own_ids.index(env_id)
        rows = np.flatnonzero(states.task == t)
        dim = agent.obs_dims[t_agent]
        obs = np.zeros((len(own_ids), len(rows), agent.obs_max), dtype=states.obs.dtype)
        obs[t_agent, :, :dim] = states.obs[rows, :dim]
        feats, q = agent.features_and_q(obs)
        q_task = np.where(agent.action_mask[t_agent], q[t_agent], -np.inf)
        rows_all.append(rows)
        feats_all.append(feats[t_agent])
        values_all.append(q_task.max(axis=1))
    if not rows_all:
        raise UserError(
            f"{agent.run_dir} shares no task with the analysed run ({', '.join(states.env_ids)}); "
            "compare runs trained on the same environments"
        )
    return np.concatenate(rows_all), np.concatenate(feats_all), np.concatenate(values_all)
