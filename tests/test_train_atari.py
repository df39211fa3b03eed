"""Atari runs end to end: configuration, smoke training per architecture, exact resume, replay checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mtdqn.cli import build_parser, config_from_args, main
from mtdqn.config import Config, LearnerConfig, TaskConfig, atari_run_config
from mtdqn.config_atari import AtariConfig, AtariNetworkConfig
from mtdqn.errors import UserError
from mtdqn.learner import DQNLearner
from mtdqn.nets_atari import AtariQNetwork
from mtdqn.replay_frames import FrameBatch, FrameReplay
from mtdqn.runlog import read_metrics
from mtdqn.train import Trainer
from mtdqn.train_atari import AtariTrainer

GAMES = ["ALE/Pong-v5", "ALE/Breakout-v5"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def tiny(arch: str = "review-exp1", mode: str = "multi", seeds=(0,), epochs: int = 1, **atari) -> Config:
    """A few hundred steps of Pong + Breakout: small replay, batch and evaluation, inline evaluation."""
    config = atari_run_config("review", GAMES, mode=mode)
    config.atari_network = AtariNetworkConfig(arch=arch)
    config.atari = dataclasses.replace(config.atari, **atari)
    config.replay = dataclasses.replace(config.replay, capacity=300, warmup=40)
    config.learner = dataclasses.replace(config.learner, batch_size=4, target_update_every=5)
    config.exploration = dataclasses.replace(config.exploration, eps_decay_steps=100)
    config.run = dataclasses.replace(
        config.run,
        epochs=epochs,
        steps_per_epoch=64,
        eval_steps=40,
        seeds=list(seeds),
        background_eval=False,
        torch_threads=1,
    )
    return config


def test_protocol_presets_become_run_configs() -> None:
    review = atari_run_config("review")
    assert [t.env_id for t in review.tasks] == GAMES
    assert [t.label for t in review.tasks] == ["Pong", "Breakout"]
    assert (review.learner.batch_size, review.learner.lr, review.learner.target_update_every) == (
        100,
        1e-4,
        250,
    )
    assert (review.replay.capacity, review.replay.warmup, review.learner.train_frequency) == (
        100_000,
        10_000,
        4,
    )
    assert (review.run.epochs, review.run.steps_per_epoch) == (16, 25_000)
    assert review.atari_network.arch == "review-exp1" and not review.atari.terminal_on_life_loss
    nature = atari_run_config("mnih2015")
    assert nature.learner.optimizer == "rmsprop-centered" and nature.learner.adam_eps == 0.01
    assert nature.atari.terminal_on_life_loss and nature.run.epochs == 200
    assert atari_run_config("deramo-atari", GAMES).replay.capacity == 500_000


def test_atari_settings_do_not_change_control_fingerprints() -> None:
    tasks = [TaskConfig("CartPole-v1")]
    plain = Config(tasks=tasks).learning_fingerprint()
    explicit = Config(tasks=tasks, learner=LearnerConfig(optimizer="adam", precision="fp32"))
    assert plain == explicit.learning_fingerprint()
    assert plain != Config(tasks=tasks, learner=LearnerConfig(precision="bf16")).learning_fingerprint()
    atari = tiny()
    assert (
        atari.learning_fingerprint() != dataclasses.replace(atari, atari=AtariConfig()).learning_fingerprint()
    )
    # --init joined the Atari settings later: runs without it keep their fingerprint (and so resume)
    network = atari.atari_network
    saved = atari.to_dict()
    saved["atari_network"].pop("init")
    assert Config.from_dict(saved).learning_fingerprint() == atari.learning_fingerprint()
    xavier = dataclasses.replace(atari, atari_network=dataclasses.replace(network, init="xavier"))
    assert xavier.learning_fingerprint() != atari.learning_fingerprint()
    # so did --zero-q-layer
    saved = atari.to_dict()
    saved["atari_network"].pop("zero_q_layer")
    assert Config.from_dict(saved).learning_fingerprint() == atari.learning_fingerprint()
    zero_q = dataclasses.replace(atari, atari_network=dataclasses.replace(network, zero_q_layer=True))
    assert zero_q.learning_fingerprint() != atari.learning_fingerprint()


def test_config_round_trips_through_its_dict() -> None:
    config = tiny(arch="deramo-atari", noop_max=5)
    again = Config.from_dict(config.to_dict())
    assert again == config and again.learning_fingerprint() == config.learning_fingerprint()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "ALE/Pong-v5", "--width", "3"], "--width does not apply to Atari"),
        (["--task", "ALE/Pong-v5", "--task", "CartPole-v1"], "not an Atari game"),
        (["--task", "CartPole-v1", "--protocol", "review"], "--protocol applies to Atari games only"),
        (["--task", "CartPole-v1", "--arch", "nature"], "--arch nature applies to Atari games only"),
        (["--task", "CartPole-v1", "--zero-q-layer"], "--zero-q-layer applies to Atari games only"),
        (["--task", "ALE/Pong-v5", "--arch", "tiny"], "network for vector tasks"),
        (["--task", "ALE/Pong-v5", "--horizon", "100"], "use --max-episode-steps"),
    ],
)
def test_cli_refuses_mixed_or_misapplied_options(argv, message, capsys) -> None:
    assert main(["train", *argv, "--runs-dir", "unused"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_builds_an_atari_run_from_a_game_group_protocol_and_flags() -> None:
    args = build_parser().parse_args(
        [
            "train",
            "--preset",
            "pong-like",
            "--protocol",
            "review",
            "--arch",
            "review-mtqn",
            "--batch-size",
            "32",
            "--sticky-actions",
            "0.25",
            "--life-loss-terminal",
            "--no-fire-reset",
            "--max-episode-steps",
            "1000",
            "--precision",
            "bf16",
            "--init",
            "xavier",
            "--optimizer-eps",
            "1.5e-4",
            "--lr-fan-in",
            "256",
            "--lr-fan-in-conv",
            "channels",
            "--zero-q-layer",
        ]
    )
    config = config_from_args(args)
    assert [t.env_id for t in config.tasks] == [
        "ALE/Pong-v5",
        "ALE/Breakout-v5",
        "ALE/Tennis-v5",
        "ALE/VideoPinball-v5",
    ]
    assert config.atari_network.arch == "review-mtqn" and config.atari_network.init == "xavier"
    assert config.atari_network.zero_q_layer
    assert config.learner.batch_size == 32 and config.learner.lr == 1e-4  # the flag, then the protocol
    assert config.learner.precision == "bf16" and config.learner.adam_eps == 1.5e-4
    assert config.learner.lr_fan_in == 256 and config.learner.lr_fan_in_conv == "channels"
    assert config.atari.repeat_action_probability == 0.25
    assert config.atari.terminal_on_life_loss and not config.atari.fire_on_reset
    assert config.atari.max_episode_steps == 1000


def test_bf16_update_tracks_the_fp32_update() -> None:
    """Same batch, same init: the bf16 autocast loss and Q values agree with float32 to bf16 precision."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (1, 2, 8, 4, 84, 84), dtype=torch.uint8, generator=gen)
    batch = FrameBatch(
        obs=obs,
        action=torch.randint(0, 4, (1, 2, 8), generator=gen),
        reward=torch.ones(1, 2, 8),
        next_obs=obs.flip(2),
        terminal=torch.zeros(1, 2, 8),
    )
    losses, weights = {}, {}
    for precision in ("fp32", "bf16"):
        net = AtariQNetwork([6, 4], AtariNetworkConfig(arch="review-exp1"))
        learner = DQNLearner(net, [0.99, 0.99], LearnerConfig(precision=precision, lr=1e-3))
        learner.update(batch)
        losses[precision] = learner.pop_stats()["loss"]
        weights[precision] = [w.detach().clone() for w in net.weights]
        assert all(w.dtype == torch.float32 for w in net.weights)  # master weights stay float32
    torch.testing.assert_close(losses["bf16"], losses["fp32"], rtol=0.05, atol=1e-3)
    moved = [float((b - a).abs().max()) for a, b in zip(weights["fp32"], weights["bf16"], strict=True)]
    assert max(moved) < 2e-3  # one Adam step of lr 1e-3 moves each weight by at most ~1e-3


@pytest.mark.parametrize(
    "arch, mode",
    [("review-exp1", "multi"), ("review-mtqn", "multi"), ("deramo-atari", "multi"), ("nature", "single")],
)
def test_smoke_training_of_each_architecture(arch: str, mode: str, tmp_path) -> None:
    trainer = Trainer.create(tiny(arch, mode), tmp_path / "run", progress=False)
    assert isinstance(trainer, AtariTrainer)
    trainer.run()
    metrics = read_metrics(tmp_path / "run" / "metrics.csv")
    assert sorted(set(metrics["epoch"].tolist())) == [0, 1]
    last = metrics["epoch"] == 1
    assert np.isfinite(metrics["loss"][last]).all() and (metrics["updates"][last] == 16).all()
    assert np.isfinite(metrics["return"]).all()
    # The checkpoint names the replay folder of the last epoch; earlier folders are gone.
    assert sorted(p.name for p in (tmp_path / "run").glob("replay-*")) == ["replay-1"]


def test_resumed_run_equals_uninterrupted_run(tmp_path) -> None:
    """Same seed on the CPU: 2 epochs in one go == 1 epoch, a new process's resume, 1 more epoch."""
    straight = Trainer.create(tiny(epochs=2), tmp_path / "straight", progress=False)
    straight.run()
    first = Trainer.create(tiny(epochs=1), tmp_path / "split", progress=False)
    first.run()
    resumed = Trainer.resume(tmp_path / "split", epochs=2, progress=False)
    assert resumed.replay.size == first.replay.size and resumed.env_steps == first.env_steps
    resumed.run()
    for a, b in zip(straight.net.parameters(), resumed.net.parameters(), strict=True):
        assert torch.equal(a, b)
    cols = ("J", "return", "episodes", "loss", "mean_q")
    m1, m2 = (
        read_metrics(tmp_path / "straight" / "metrics.csv"),
        read_metrics(tmp_path / "split" / "metrics.csv"),
    )
    for col in cols:
        np.testing.assert_array_equal(m1[col], m2[col])


def test_member_learns_the_same_alone_and_in_a_population(tmp_path) -> None:
    alone = Trainer.create(tiny(seeds=(1,)), tmp_path / "alone", progress=False)
    alone.run()
    pair = Trainer.create(tiny(seeds=(0, 1)), tmp_path / "pair", progress=False)
    pair.run()
    for a, b in zip(alone.net.parameters(), pair.net.parameters(), strict=True):
        torch.testing.assert_close(a[0], b[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(alone.replay.frames[0], pair.replay.frames[2])  # member 1, Pong


def filled_replay() -> FrameReplay:
    """A one-member, two-game replay of 20 slots after 27 random transitions (the ring has wrapped)."""
    rng = np.random.default_rng(0)
    replay = FrameReplay(1, 2, 20, frame_shape=(6, 6), check_memory=False)
    for step in range(27):
        replay.add(
            rng.integers(0, 256, (1, 2, 6, 6)),
            rng.integers(0, 4, (1, 2)),
            rng.random((1, 2)),
            rng.random((1, 2)) < 0.1,
            np.full((1, 2), step % 9 == 0),
        )
    return replay


def test_replay_save_and_load_round_trip(tmp_path) -> None:
    replay = filled_replay()
    replay.save(tmp_path / "r")
    again = FrameReplay(1, 2, 20, frame_shape=(6, 6), check_memory=False)
    again.load(tmp_path / "r")
    slots = replay.sample_slots(np.random.default_rng(1), 16)
    a, b = replay.gather(slots), again.gather(slots)
    for name in ("obs", "action", "reward", "next_obs", "terminal"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert [s.tolist() for s in replay.valid_slots()] == [s.tolist() for s in again.valid_slots()]
    with pytest.raises(FileExistsError):
        replay.save(tmp_path / "r")
    other = FrameReplay(1, 2, 30, frame_shape=(6, 6), check_memory=False)
    with pytest.raises(UserError, match="capacity is 20 there, 30 here"):
        other.load(tmp_path / "r")
    (tmp_path / "r" / "frames.npy").write_bytes(b"not an array")
    with pytest.raises(UserError, match="cannot be read into this run"):
        again.load(tmp_path / "r")


@pytest.mark.parametrize("name", ["frames", "action", "terminal"])
def test_a_replay_file_changed_in_place_is_refused_by_its_digest(name: str, tmp_path) -> None:
    """A flipped byte inside an array's data (its .npy header intact) is found; the untouched copy loads."""
    replay = filled_replay()
    replay.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert set(meta["digests"]) == {"frames", "action", "reward", "terminal", "episode_pos", "cut"}
    shutil.copytree(tmp_path / "r", tmp_path / "old")  # as saved before digests: none in meta.json
    del meta["digests"]
    (tmp_path / "old" / "meta.json").write_text(json.dumps(meta))
    FrameReplay(1, 2, 20, frame_shape=(6, 6), check_memory=False).load(tmp_path / "old")
    path = tmp_path / "r" / f"{name}.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1  # the last data byte: the array still parses, with one value changed
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=f"{name}.npy does not match its SHA-256 digest"):
        FrameReplay(1, 2, 20, frame_shape=(6, 6), check_memory=False).load(tmp_path / "r")


def test_resume_with_a_missing_replay_folder_is_a_user_error(tmp_path) -> None:
    Trainer.create(tiny(), tmp_path / "run", progress=False).run()
    for folder in (tmp_path / "run").glob("replay-*"):
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    with pytest.raises(UserError, match="restart the run with --overwrite"):
        Trainer.resume(tmp_path / "run", progress=False)


def test_atari_config_without_atari_settings_is_refused() -> None:
    with pytest.raises(UserError, match="no Atari settings"):
        Config(tasks=[TaskConfig("ALE/Pong-v5")]).validate()


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory) -> tuple[Path, str]:
    """A tiny Pong + Breakout run and the output of `mtdqn evaluate --json` on it."""
    run = tmp_path_factory.mktemp("atari") / "run"
    Trainer.create(tiny(), run, progress=False).run()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["evaluate", str(run), "--steps", "20", "--json"]) == 0
    return run, out.getvalue()


@pytest.mark.parametrize(
    "damage",
    [
        lambda f: (f / "reward.npy").write_bytes(b""),  # an empty .npy
        lambda f: (f / "meta.json").write_text("[]"),  # not an object
        lambda f: (f / "meta.json").write_text('{"size": null}'),
    ],
)
def test_a_damaged_replay_stops_resume_but_not_evaluate(damage, evaluated_run, tmp_path, capsys) -> None:
    run = Path(shutil.copytree(evaluated_run[0], tmp_path / "run"))
    (folder,) = run.glob("replay-*")
    damage(folder)
    with pytest.raises(UserError, match="cannot be read into this run"):
        Trainer.resume(run, progress=False)
    # evaluation needs only the weights: the same scores with the replay damaged, or gone
    capsys.readouterr()
    assert main(["evaluate", str(run), "--steps", "20", "--json"]) == 0
    assert capsys.readouterr().out == evaluated_run[1]
    shutil.rmtree(folder)
    assert main(["evaluate", str(run), "--steps", "20", "--json"]) == 0
    assert capsys.readouterr().out == evaluated_run[1]
