"""Atari runs after training: `mtdqn analyze` (states, features, values, frames) and `mtdqn evaluate`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_atari import tiny

from mtdqn.analysis.config import AnalysisConfig
from mtdqn.analysis.gradients import gradient_sharing, replay_batch, shared_parameters, task_gradients
from mtdqn.analysis.render import FrameRenderer
from mtdqn.analysis.rollout import StateSet, collect_states, load_agents
from mtdqn.cli import main
from mtdqn.runlog import EVALUATION_COLUMNS, GRADIENT_COLUMNS, read_metrics
from mtdqn.seeding import derive_rng, derive_seed
from mtdqn.tasks.atari import make_atari_env
from mtdqn.train import Trainer


@pytest.fixture(scope="module")
def atari_run(tmp_path_factory) -> Path:
    """A 2-member review-exp1 run on Pong + Breakout after one short epoch, gradients measured (2 batches)."""
    run_dir = tmp_path_factory.mktemp("atari") / "run"
    config = tiny(seeds=(0, 1))
    config.run.gradient_batches = 2
    trainer = Trainer.create(config, run_dir, progress=False)
    trainer.run()
    torch.set_num_threads(1)
    return run_dir


def test_states_hold_what_the_run_network_computes(atari_run: Path) -> None:
    agent = load_agents(atari_run, seeds=[1])[0]
    states = collect_states(agent, AnalysisConfig(steps=40))
    assert states.obs.dtype == np.uint8 and states.obs.shape == (80, 4 * 84 * 84)
    assert states.features.shape == (80, 256) and states.task.tolist() == [0] * 40 + [1] * 40
    assert np.isnan(states.q[states.task == 1, 4:]).all()  # Breakout has 4 of Pong's 6 actions
    # Q of the training network's member 1 (loaded afresh) on the recorded stacks, game by game.
    trainer = Trainer.load(atari_run, progress=False)
    stacks = torch.from_numpy(states.obs.reshape(2, 40, 4, 84, 84))
    with torch.inference_mode():
        q = trainer.net(stacks[None].expand(2, -1, -1, -1, -1, -1).contiguous())[1].numpy()
    for t, n_actions in enumerate((6, 4)):
        np.testing.assert_allclose(
            states.q[states.task == t, :n_actions], q[t, :, :n_actions], rtol=1e-4, atol=1e-5
        )
    np.testing.assert_allclose(states.value, np.nanmax(states.q, axis=1))
    # Every dense layer's output from one pass: the feature layer's are the features, the last is Q.
    outputs = agent.layer_outputs(states.obs.reshape(2, 40, -1))
    feats, q_agent = agent.features_and_q(states.obs.reshape(2, 40, -1))
    assert [act for _, act, _ in outputs] == ["lrelu", "identity", "lrelu", "identity"]
    np.testing.assert_allclose(outputs[1][2], feats, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[-1][2], q_agent, rtol=1e-5, atol=1e-6)
    # The first state of each game is its reset stack: zeros but for the newest frame.
    first = states.obs.reshape(-1, 4, 84, 84)[[0, 40]]
    assert (first[:, :3] == 0).all() and (first[:, 3] > 0).any()


def test_states_record_the_learning_signals_of_each_game(atari_run: Path) -> None:
    """Clipped rewards and the learner's terminals (here with a lost life as one), as the game's own
    learning signals when the recorded actions are played again."""
    agent = load_agents(atari_run, seeds=[0])[0]
    agent.config.atari = dataclasses.replace(agent.config.atari, terminal_on_life_loss=True)
    states = collect_states(agent, AnalysisConfig(steps=300, epsilon=1.0))  # random play: lives are lost
    assert set(np.unique(states.reward)) <= {-1.0, 0.0, 1.0} and (states.reward[states.task == 0] == -1).any()
    breakout = states.task == 1
    assert (states.terminal & ~states.ended)[breakout].any()  # a lost life: terminal, the game goes on
    env = make_atari_env("ALE/Breakout-v5", agent.config.atari, record_states=True)
    env.reset(seed=derive_seed(agent.seed, "analysis", 0, 1))
    for row in np.flatnonzero(breakout):
        _, _, terminated, truncated, info = env.step(int(states.action[row]))
        assert states.reward[row] == info["learning_reward"]
        assert states.terminal[row] == info["learning_terminal"]
        assert states.ended[row] == (terminated or truncated)
        if terminated or truncated:
            env.reset()
    env.close()


def test_recorded_states_render_as_colour_screens_and_round_trip_the_file(atari_run: Path, tmp_path) -> None:
    agent = load_agents(atari_run, seeds=[0])[0]
    states = collect_states(agent, AnalysisConfig(steps=30))
    states.save(tmp_path / "states.npz")
    again = StateSet.load(tmp_path / "states.npz")
    assert again.obs.dtype == np.uint8 and np.array_equal(again.env_state, states.env_state, equal_nan=True)
    renderer = FrameRenderer(again)
    try:
        pong, breakout = renderer.frame(5), renderer.frame(35)
        assert pong.shape == breakout.shape == (210, 160, 3)
        assert not np.array_equal(pong, breakout)
        np.testing.assert_array_equal(renderer.frame(5), pong)  # rendering is a pure function of the state
    finally:
        renderer.close()


def test_cli_analyze_writes_the_report_of_an_atari_run(atari_run: Path, tmp_path) -> None:
    out = tmp_path / "analysis"
    argv = ["analyze", str(atari_run), "--seeds", "0", "--steps", "60", "--method", "pca", "--out", str(out)]
    assert main(argv) == 0
    member = out / "seed0"  # a population run: one folder per analysed member
    metrics = json.loads((member / "metrics.json").read_text())
    assert metrics["tasks"] == ["Pong", "Breakout"] and metrics["n_states"] == 120
    assert 0.0 <= metrics["metrics"]["task_probe_accuracy"] <= 1.0
    activity = metrics["metrics"]["layer_activity"]  # the dense layers only, labelled by shape
    assert [label.split(" ")[1] for label in activity] == ["3136->512", "512->256", "256->10", "10->6"]
    for per_game in activity.values():  # and how much of each layer's state signal survives bfloat16
        assert set(per_game) == {"Pong", "Breakout"}
        assert all(-1.0 <= entry["bf16_signal"] <= 1.0 for entry in per_game.values())
    html = (member / "report.html").read_text()
    assert "Pong" in html and "Breakout" in html
    assert len(list((member / "overlap").glob("*.png"))) == 3


def test_the_gradients_of_each_game_on_the_shared_layers(atari_run: Path) -> None:
    """From the frame replay: review-exp1 shares conv2, conv3, 3136->512 and 512->256, and the two games'
    gradients on them add up to the joint loss's."""
    trainer = Trainer.load(atari_run, progress=False)
    shared = shared_parameters(trainer.net)
    conv2, conv3 = 64 * 32 * 4 * 4 + 64, 64 * 64 * 3 * 3 + 64
    assert sum(p[0].numel() for p in shared) == conv2 + conv3 + 3136 * 512 + 512 + 512 * 256 + 256
    batch = replay_batch(trainer, [derive_rng(s, "test") for s in trainer.seeds], 4)
    joint = torch.autograd.grad(trainer.learner.loss(batch)[0], shared)
    expected = torch.cat([g.reshape(2, -1) for g in joint], dim=1)
    torch.testing.assert_close(task_gradients(trainer.learner, batch).sum(1), expected, rtol=1e-4, atol=1e-7)
    numbers = gradient_sharing(atari_run, 2)
    assert set(numbers) == {0, 1}
    for g in numbers.values():
        assert g["transitions_per_task"] == 8
        assert g["Pong"]["contribution"] + g["Breakout"]["contribution"] == pytest.approx(1.0, abs=1e-9)
        # two games, one angle between them
        assert g["Pong"]["cosine_with_others"] == pytest.approx(g["Breakout"]["cosine_with_others"], abs=1e-9)
    # measured during training too (--gradient-batches 2): epoch 1's rows are the analysis with --seed 1
    during = read_metrics(atari_run / "gradients.csv", GRADIENT_COLUMNS)
    assert list(during["epoch"]) == [0] * 4 + [1] * 4
    assert list(during["task_name"]) == ["Pong", "Breakout"] * 4
    after = gradient_sharing(atari_run, 2, seed=1)
    for i in range(4, 8):
        game = after[int(during["seed"][i])][str(during["task_name"][i])]
        assert during["contribution"][i] == pytest.approx(game["contribution"], rel=1e-12)
        assert during["norm"][i] == pytest.approx(game["norm"], rel=1e-12)


def test_cli_evaluate_scores_an_atari_run(atari_run: Path, capsys) -> None:
    assert main(["evaluate", str(atari_run), "--steps", "50", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["epoch"] == 1 and report["steps"] == 50
    assert [(row["task"], row["seed"]) for row in report["tasks"]] == [
        ("Pong", 0),
        ("Breakout", 0),
        ("Pong", 1),
        ("Breakout", 1),
    ]
    saved = read_metrics(atari_run / "evaluations.csv", EVALUATION_COLUMNS)
    assert list(saved["task_name"]) == ["Pong", "Breakout"] * 2 and set(saved["steps"]) == {50}
    assert list(saved["return"]) == [row["return"] for row in report["tasks"]]
    assert [row["return_sd"] for row in report["tasks"]] == [None] * 4  # no game ends within 50 steps
