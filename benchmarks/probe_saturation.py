"""How fast an optimiser drives `review-mtqn`'s units constant or into saturation, without playing.

DQN updates of a `review-mtqn` network (Pong + Breakout, float32, one thread) on fixed random-play data
(the same transitions for every configuration), and every ``--every`` updates, on held-out random-play
states of each game: per dense layer the fraction of units constant over the states (std < 1e-3), the
fraction of sigmoid outputs within 0.01 of 0 or 1, and the spread of max_a Q over the states.
A cheap look at the first few hundred updates of a run; whether a configuration learns needs a real run.

    python benchmarks/probe_saturation.py --updates 600                      # Adam 1e-4, Xavier init
    python benchmarks/probe_saturation.py --updates 600 --lr-fan-in 256      # per-layer learning rates
    python benchmarks/probe_saturation.py --optimizer rmsprop-centered --lr 2.5e-4 --optimizer-eps 0.01
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mtdqn.config import LearnerConfig
from mtdqn.config_atari import AtariConfig, AtariNetworkConfig
from mtdqn.learner import DQNLearner
from mtdqn.nets_atari import AtariQNetwork
from mtdqn.replay_frames import FrameBatch
from mtdqn.tasks.atari import atari_game, make_atari_env

GAMES = ["ALE/Pong-v5", "ALE/Breakout-v5"]


def random_play(env_id: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` random-play transitions of one game (clipped rewards, a lost life as terminal)."""
    env = make_atari_env(env_id, AtariConfig(terminal_on_life_loss=True))
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out: dict[str, list] = {"obs": [], "action": [], "reward": [], "next_obs": [], "terminal": []}
    while len(out["obs"]) < n:
        action = int(rng.integers(env.action_space.n))
        nxt, _, terminated, truncated, info = env.step(action)
        values = (obs, action, info["learning_reward"], nxt, info["learning_terminal"])
        for key, value in zip(out, values, strict=True):
            out[key].append(value)
        obs = nxt
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    floats = ("reward", "terminal")
    return {k: np.asarray(v, dtype=np.float32 if k in floats else None) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", default="xavier", choices=("xavier", "torch"))
    p.add_argument("--optimizer", default="adam", choices=("adam", "rmsprop-centered"))
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--optimizer-eps", type=float, default=1e-8)
    p.add_argument("--lr-fan-in", type=int, default=0)
    p.add_argument("--updates", type=int, default=600)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--transitions", type=int, default=3000, help="training transitions per game")
    p.add_argument("--held-out", type=int, default=1000, help="probe states per game")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(1)
    n = args.transitions + args.held_out
    data = [random_play(g, n, seed) for seed, g in enumerate(GAMES)]
    n_actions = [atari_game(g).n_actions for g in GAMES]
    net = AtariQNetwork(n_actions, AtariNetworkConfig(arch="review-mtqn", init=args.init), seeds=0)
    cfg = LearnerConfig(
        lr=args.lr,
        adam_eps=args.optimizer_eps,
        lr_fan_in=args.lr_fan_in,
        optimizer=args.optimizer,
        batch_size=args.batch_size,
        target_update_every=250,  # the review protocol's 1,000 agent steps at one update per 4
    )
    learner = DQNLearner(net, [0.99] * len(GAMES), cfg)
    held = torch.from_numpy(np.stack([d["obs"][args.transitions :] for d in data]))[None]
    dense = [layer for layer in net.plan if not layer.is_conv]
    print(f"{args}\nlayer: constant fraction (sigmoid: / saturated fraction), Pong | Breakout")

    def report(update: int, loss: float) -> None:
        with torch.no_grad():
            outs = net.dense_outputs(held)
        cells = []
        for layer, y in zip(dense, outs, strict=True):
            per_game = []
            for t in range(len(GAMES)):
                yt = y[0, t].double()
                text = f"{(yt.std(0) < 1e-3).double().mean():.2f}"
                if layer.activation == "sigmoid":
                    text += f"/{((yt < 0.01) | (yt > 0.99)).double().mean():.2f}"
                per_game.append(text)
            cells.append(f"{layer.in_dim}->{layer.out_dim} {' | '.join(per_game)}")
        v_std = [float(outs[-1][0, t, :, : n_actions[t]].max(-1).values.std()) for t in range(len(GAMES))]
        v_text = " | ".join(f"{v:.1e}" for v in v_std)
        print(f"update {update:5d}  loss {loss:.4f}  " + "  ".join(cells) + f"  std V {v_text}")

    rng = np.random.default_rng(1)
    start, losses = time.time(), []
    report(0, float("nan"))
    for update in range(1, args.updates + 1):
        idx = [rng.integers(args.transitions, size=args.batch_size) for _ in GAMES]
        fields = {
            key: torch.from_numpy(np.stack([d[key][i] for d, i in zip(data, idx, strict=True)]))[None]
            for key in ("obs", "action", "reward", "next_obs", "terminal")
        }
        fields["action"] = fields["action"].long()
        learner.update(FrameBatch(**fields))
        losses.append(float(learner.pop_stats()["loss"].mean()))
        if update % args.every == 0:
            report(update, float(np.mean(losses[-args.every :])))
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
