"""Speed of the Atari building blocks on this machine: environments, the network update, the frame replay.

    python benchmarks/bench_atari_parts.py                  # everything, about a minute on 2 cores
    python benchmarks/bench_atari_parts.py --parts env      # one part: env, net, conv, replay

* env: agent steps per second (4 emulator frames each, preprocessing and stacking included, random
  actions, resets included) of Pong and Breakout, one Gymnasium environment vs ale-py's vector env.
* net: forward + backward of ``review-exp1`` on a batch of 32 per game (Pong + Breakout), and the whole
  DQN update (TD target through the target net, Huber loss, fused Adam step), per intra-op thread count.
* conv: forward and forward + backward of each Nature convolution on a batch of 32 per game (conv1 once
  per game, conv2 and conv3 on both games' 64 images), fp32 and bfloat16, on NCHW and on channels-last
  (NHWC) memory: why ``conv_mode="loop"`` keeps its activations channels-last.
* replay: :class:`~mtdqn.replay_frames.FrameReplay` add per joint step, and sampling + stack rebuilding
  of a 32-per-game batch from full rings.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from mtdqn.config import LearnerConfig
from mtdqn.config_atari import AtariConfig, AtariNetworkConfig
from mtdqn.learner import DQNLearner
from mtdqn.nets_atari import AtariQNetwork
from mtdqn.replay_frames import FrameReplay
from mtdqn.tasks.atari import AtariVectorTask, make_atari_env

GAMES = ["ALE/Pong-v5", "ALE/Breakout-v5"]


def _best(fn, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls (the machine is shared: the minimum is the cost)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_env(steps: int) -> None:
    print(f"== environments: agent steps/s, {steps} random steps, AtariConfig defaults")
    for game in GAMES:
        env = make_atari_env(game)
        rng = np.random.default_rng(0)
        actions = rng.integers(0, env.action_space.n, steps)
        env.reset(seed=0)
        start = time.perf_counter()
        for a in actions:
            *_, terminated, truncated, _ = env.step(int(a))
            if terminated or truncated:
                env.reset()
        rate = steps / (time.perf_counter() - start)
        print(f"  {game:18s} single Gymnasium env            {rate:8.0f} steps/s")
        for copies, threads in ((1, 1), (8, 1), (8, 2), (32, 2)):
            vec = AtariVectorTask(game, copies, num_threads=threads)
            vec.reset(list(range(copies)))
            acts = rng.integers(0, vec.n_actions, (steps // copies + 1, copies))
            start = time.perf_counter()
            for a in acts:
                vec.step(a)
            rate = acts.size / (time.perf_counter() - start)
            print(f"  {game:18s} vector env {copies:2d} copies, {threads} thread(s)  {rate:8.0f} steps/s")
            vec.close()


def bench_net(repeats: int) -> None:
    print("== review-exp1 on Pong + Breakout, batch 32 per game (S=1, T=2), ms per call (best of runs)")
    obs = torch.randint(0, 256, (1, 2, 32, 4, 84, 84), dtype=torch.uint8)
    batch_rng = np.random.default_rng(0)
    replay = FrameReplay(1, 2, 1000, check_memory=False)
    for step in range(1000):
        replay.add(
            batch_rng.integers(0, 256, (1, 2, 84, 84), dtype=np.uint8),
            [[step % 4, step % 6]],
            [[0.0, 1.0]],
            [[False, False]],
            [[step % 200 == 0] * 2],
        )
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for mode in ("loop", "grouped"):
            net = AtariQNetwork([6, 4], AtariNetworkConfig(arch="review-exp1", conv_mode=mode))

            def fwd_bwd(net=net) -> None:
                net.zero_grad(set_to_none=True)
                net(obs).sum().backward()

            learner = DQNLearner(net, [0.99, 0.99], LearnerConfig(lr=1e-4, batch_size=32))
            batch = replay.sample(batch_rng, 32)
            fwd_bwd()
            learner.update(batch)
            t_fb = _best(fwd_bwd, repeats)
            t_up = _best(lambda learner=learner, batch=batch: learner.update(batch), repeats)

            def act(net=net) -> None:
                with torch.inference_mode():
                    net(obs[:, :, :1])

            t_act = _best(act, repeats)
            print(
                f"  {threads} thread(s), {mode:7s} convs: forward+backward {t_fb * 1e3:6.1f} ms, "
                f"full DQN update (target, Huber, fused Adam) {t_up * 1e3:6.1f} ms, "
                f"acting (1 stack per game) {t_act * 1e3:5.2f} ms"
            )
    torch.set_num_threads(1)


def bench_conv(repeats: int) -> None:
    print(
        "== Nature convolutions, batch 32 per game, ms per call (best of runs), 2 threads: NCHW / NHWC memory"
    )
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    layers = (
        ("conv1 4->32 8x8/4", 32, 4, 84, 32, 8, 4),
        ("conv2 32->64 4x4/2", 64, 32, 20, 64, 4, 2),
        ("conv3 64->64 3x3/1", 64, 64, 9, 64, 3, 1),
    )  # (name, images, in, size, out, kernel, stride)
    for name, n, c, size, out, kernel, stride in layers:
        for dtype in (torch.float32, torch.bfloat16):
            times = []
            for memory in (torch.contiguous_format, torch.channels_last):
                x = torch.rand(n, c, size, size, generator=gen).to(dtype).contiguous(memory_format=memory)
                x.requires_grad_(not name.startswith("conv1"))  # conv1's input needs no gradient
                w = (torch.randn(out, c, kernel, kernel, generator=gen) * 0.05).to(dtype).requires_grad_()

                def forward(x=x, w=w, stride=stride) -> None:
                    with torch.no_grad():
                        F.conv2d(x, w, stride=stride)

                def forward_backward(x=x, w=w, stride=stride) -> None:
                    y = F.conv2d(x, w, stride=stride)
                    y.backward(torch.ones_like(y))

                forward_backward()
                times += [_best(forward, repeats), _best(forward_backward, repeats)]
            f_nchw, fb_nchw, f_nhwc, fb_nhwc = (t * 1e3 for t in times)
            print(
                f"  {name:20s} {str(dtype)[6:]:8s} forward {f_nchw:5.2f} / {f_nhwc:5.2f} ms, "
                f"forward+backward {fb_nchw:5.2f} / {fb_nhwc:5.2f} ms"
            )
    torch.set_num_threads(1)


def bench_replay(capacity: int, repeats: int) -> None:
    print(f"== frame replay, 2 games, {capacity:,} transitions per game (rings full)")
    replay = FrameReplay(1, 2, capacity, check_memory=True)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (64, 1, 2, 84, 84), dtype=np.uint8)
    start = time.perf_counter()
    for step in range(capacity):
        replay.add(frames[step % 64], [[1, 2]], [[0.0, 1.0]], [[False, False]], [[step % 500 == 0] * 2])
    per_add = (time.perf_counter() - start) / capacity
    print(f"  add (one joint step, 2 games)         {per_add * 1e6:8.1f} us")
    t_slots = _best(lambda: replay.sample_slots(rng, 32), repeats)
    slots = replay.sample_slots(rng, 32)
    t_gather = _best(lambda: replay.gather(slots), repeats)
    print(f"  sample slots (32 per game)            {t_slots * 1e6:8.1f} us")
    print(f"  rebuild stacks, obs + next_obs        {t_gather * 1e6:8.1f} us")
    print(f"  memory of the rings                   {replay.memory_bytes() / 1e9:8.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["env", "net", "conv", "replay"],
        choices=["env", "net", "conv", "replay"],
    )
    parser.add_argument("--env-steps", type=int, default=3000)
    parser.add_argument("--capacity", type=int, default=50_000, help="replay transitions per game")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} cores; AtariConfig: {AtariConfig()}")
    if "env" in args.parts:
        bench_env(args.env_steps)
    if "net" in args.parts:
        bench_net(args.repeats)
    if "conv" in args.parts:
        bench_conv(args.repeats)
    if "replay" in args.parts:
        bench_replay(args.capacity, args.repeats)


if __name__ == "__main__":
    main()
