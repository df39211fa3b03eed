"""Q values of untrained Atari networks on random-play states: how large the per-action offsets are that
do not depend on the state, against how much Q varies with it.

For each architecture (and init), one network of ``--seed`` on ``--states`` random-play states of the game:
the mean of Q(s, a) over states per action (the offsets a greedy policy and the TD target's max see at the
start) and the standard deviation over states of max_a Q (the part that depends on the state).

    python benchmarks/probe_q_at_init.py                        # Pong, review-mtqn (Xavier) vs nature
    python benchmarks/probe_q_at_init.py --game ALE/Breakout-v5 --seed 1
"""

from __future__ import annotations

# isort: off
import mtdqn  # noqa: F401  first, as the mtdqn command does: it sets GOMP_SPINCOUNT before PyTorch loads

# isort: on
import argparse

import torch
from probe_saturation import random_play

from mtdqn.config_atari import AtariNetworkConfig
from mtdqn.nets_atari import AtariQNetwork
from mtdqn.tasks.atari import atari_game


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="ALE/Pong-v5")
    parser.add_argument("--seed", type=int, default=0, help="the networks' seed (and the random play's)")
    parser.add_argument("--states", type=int, default=500)
    parser.add_argument(
        "--arch",
        nargs="+",
        default=["review-mtqn:xavier", "review-mtqn:torch", "nature"],
        help="architectures, each with an optional :init (default: the architecture's own init)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    obs = torch.as_tensor(random_play(args.game, args.states, args.seed)["obs"])[None, None]
    n_actions = atari_game(args.game).n_actions
    print(f"{args.game}, {args.states} random-play states, seed {args.seed}")
    for spec in args.arch:
        arch, _, init = spec.partition(":")
        cfg = AtariNetworkConfig(arch=arch, init=init) if init else AtariNetworkConfig(arch=arch)
        net = AtariQNetwork([n_actions], cfg, seeds=args.seed)
        with torch.no_grad():
            q = net(obs)[0, 0, :, :n_actions]
            features = net.features(obs)[0, 0]
        offsets = " ".join(f"{v:+.3f}" for v in q.mean(0).tolist())
        print(
            f"{spec:20s} Q per action (mean over states): {offsets}; "
            f"spread of the offsets {float(q.mean(0).max() - q.mean(0).min()):.3f}; "
            f"std over states of max_a Q {float(q.max(1).values.std()):.2e}; features: mean "
            f"{float(features.mean()):.3f}, std over states {float(features.std(0).mean()):.2e}"
        )


if __name__ == "__main__":
    main()
