"""`mtdqn analyze`: states recorded from a trained run, the files it writes, reuse, comparison, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_config

from mtdqn.analysis.config import AnalysisConfig
from mtdqn.analysis.render import FrameRenderer
from mtdqn.analysis.rollout import StateSet, collect_states, load_agents
from mtdqn.analysis.values import returns_to_go
from mtdqn.cli import main
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.seeding import derive_seed
from mtdqn.tasks import make_env, task_specs
from mtdqn.train import Trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A multi-task run, its single-task baseline and a 2-seed population (3 tasks, one epoch)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, mode, seeds in (("multi", "multi", [0]), ("single", "single", [0]), ("pop", "multi", [0, 1])):
        config = small_config(epochs=1, seeds=seeds)
        config.mode = mode
        Trainer.create(config, root / name, progress=False).run()
        out[name] = root / name
    return out


def test_states_hold_what_the_network_computes_on_them(runs):
    agent = load_agents(runs["multi"])[0]
    cfg = AnalysisConfig(steps=60)
    states = collect_states(agent, cfg)
    n_tasks = 3
    assert states.features.shape == (n_tasks * 60, 80)
    np.testing.assert_array_equal(states.task, np.repeat(np.arange(n_tasks), 60))
    # the shared features and Q values are those of the trained PyTorch network on the same observations
    config = agent.config
    net = MultiTaskQNetwork(task_specs(config.tasks), config.network, seeds=[0])
    net.load_state_dict(torch.load(runs["multi"] / "checkpoint.pt", weights_only=True)["learner"]["online"])
    obs = torch.as_tensor(states.obs.reshape(1, n_tasks, 60, -1))
    with torch.no_grad():
        feats, q = net.features(obs), net(obs)
    np.testing.assert_allclose(states.features, feats.reshape(-1, 80).numpy(), rtol=1e-5, atol=1e-6)
    q = q.reshape(n_tasks * 60, -1).numpy()
    valid = ~np.isnan(states.q)
    np.testing.assert_array_equal(valid.sum(axis=1), np.repeat([2, 3, 2], 60))  # padded actions are NaN
    np.testing.assert_allclose(states.q[valid], q[valid], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(states.value, np.nanmax(states.q, axis=1))
    np.testing.assert_array_equal(states.action, np.nanargmax(states.q, axis=1))  # greedy with epsilon 0
    # an episode counter that advances exactly when the step counter restarts, i.e. after an ended step
    for t in range(n_tasks):
        ep, st = states.episode[states.task == t], states.step[states.task == t]
        restart = np.flatnonzero(np.diff(ep))
        np.testing.assert_array_equal(st[restart + 1], 0)
        np.testing.assert_array_equal(np.diff(st)[np.diff(ep) == 0], 1)
        np.testing.assert_array_equal(np.flatnonzero(states.ended[states.task == t][:-1]), restart)
    # the rewards and terminals the learner sees: Cart-Pole +1 every step; Acrobot -1 but 0 on reaching the
    # goal, which is its only terminal; Car-On-Hill 0 but +-1 when it ends (top reached or car lost)
    reward, terminal = states.reward, states.terminal
    np.testing.assert_array_equal(reward[states.task == 0], 1.0)
    acro = states.task == 1
    np.testing.assert_array_equal(reward[acro], np.where(terminal[acro], 0.0, -1.0))
    coh = states.task == 2
    np.testing.assert_array_equal(reward[coh] != 0, terminal[coh])
    assert not (terminal & ~states.ended).any()  # a control task's terminal ends its episode
    assert terminal[states.task == 0].any()  # the once-trained Cart-Pole pole falls within 60 steps


def test_recorded_states_replay_the_rollout_frame_by_frame(runs):
    """Re-running the recorded actions reproduces the recorded observations, and rendering a recorded
    Acrobot state draws exactly the frame of the environment at that moment."""
    agent = load_agents(runs["multi"])[0]
    cfg = AnalysisConfig(steps=40, epsilon=0.3)
    states = collect_states(agent, cfg)
    renderer = FrameRenderer(states)
    t = 1  # Acrobot
    rows = np.flatnonzero((states.task == t) & (states.episode == 0))
    env = make_env(agent.tasks[t], render_mode="rgb_array")
    obs, _ = env.reset(seed=derive_seed(agent.seed, "analysis", cfg.seed, t))
    for row in rows:
        np.testing.assert_array_equal(states.obs[row, :6], obs)
        np.testing.assert_array_equal(renderer.frame(int(row)), env.render())
        obs, *_ = env.step(int(states.action[row]))
    renderer.close()


def test_state_sets_are_reproducible_and_round_trip_exactly(runs, tmp_path):
    agent = load_agents(runs["multi"])[0]
    a = collect_states(agent, AnalysisConfig(steps=30, epsilon=0.5, seed=4))
    b = collect_states(agent, AnalysisConfig(steps=30, epsilon=0.5, seed=4))
    c = collect_states(agent, AnalysisConfig(steps=30, epsilon=0.5, seed=5))
    a.save(tmp_path / "s.npz")
    loaded = StateSet.load(tmp_path / "s.npz")
    for name in ("task", "obs", "env_state", "episode", "step", "action", "features", "q", "reward", "ended"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(getattr(a, name), getattr(loaded, name))
    assert loaded.meta == a.meta and loaded.task_names == a.task_names
    assert not np.array_equal(a.action, c.action)


def test_analyze_writes_figures_metrics_and_a_report_and_reuses_its_states(runs, tmp_path, capsys):
    out = tmp_path / "an"
    args = [
        "analyze",
        str(runs["multi"]),
        "--steps",
        "80",
        "--out",
        str(out),
        "--perplexity",
        "10",
        "--tsne-iterations",
        "100",
        "--compare",
        str(runs["single"]),
        "--overlap-per-pair",
        "2",
    ]
    assert main(args) == 0
    for name in (
        "states.npz",
        "embedding.npz",
        "metrics.json",
        "report.html",
        "config.json",
        "comparison.png",
        "embedding_value.png",
        "embedding_task.png",
        "embedding_value_per_task.png",
        "thumbnails.npz",
    ):
        assert (out / name).is_file(), name
    assert len(list((out / "overlap").glob("*.png"))) == 3 * 2  # three task pairs
    report = json.loads((out / "metrics.json").read_text())
    metrics = report["metrics"]
    labels = ["CartPole-v1", "Acrobot-v1", "mtdqn/CarOnHill-v0"]
    assert report["n_states"] == 240 and report["tasks"] == labels
    assert 0.0 <= metrics["task_probe_accuracy"] <= 1.0 and metrics["task_probe_chance"] == pytest.approx(
        1 / 3
    )
    ((label, cka),) = metrics["cka"].items()
    assert "single" in label and set(cka) == {"all states", *labels}
    activity = metrics["layer_activity"]  # every dense layer, input to Q, each task's dead units
    assert len(activity) == 4 and all(set(row) == set(labels) for row in activity.values())
    assert all(0.0 <= entry["dead"] <= 1.0 for row in activity.values() for entry in row.values())
    assert not any("bf16_signal" in e for row in activity.values() for e in row.values())  # Atari only
    assert all(report["meanings"][k] for k in metrics)
    # V against the returns that followed, recomputed from the recorded states
    saved = StateSet.load(out / "states.npz")
    for t, (label, gamma) in enumerate(zip(labels, (0.99, 0.99, 0.95), strict=True)):
        rows = saved.task == t
        g, tail, _ = returns_to_go(saved.reward[rows], saved.terminal[rows], saved.ended[rows], gamma)
        entry = metrics["value_vs_return"][label]
        ok = tail <= 0.01
        assert entry["states"] == ok.sum()
        if ok.any():
            assert entry["bias"] == pytest.approx(float(np.mean(saved.value[rows][ok] - g[ok])), rel=1e-9)
    assert metrics["value_error_max"] == max(
        e["error"] for e in metrics["value_vs_return"].values() if e["states"]
    )
    html = (out / "report.html").read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # offline
    states_before = (out / "states.npz").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*args, "--method", "pca"]) == 0
    err = capsys.readouterr().err
    assert "reusing the recorded states" in err
    assert (out / "states.npz").stat().st_mtime_ns == states_before
    assert main([*args[:-2], "--overlap-per-pair", "0", "--epsilon", "0.2"]) == 0  # new rollout settings
    assert json.loads((out / "config.json").read_text())["analysis"]["epsilon"] == 0.2
    assert (out / "states.npz").stat().st_mtime_ns != states_before
    assert not list((out / "overlap").glob("*.png"))


def test_a_states_file_of_an_older_version_is_rolled_out_again(runs, tmp_path, capsys):
    out = tmp_path / "old"
    args = ["analyze", str(runs["multi"]), "--steps", "40", "--method", "pca", "--overlap-per-pair", "0"]
    assert main([*args, "--out", str(out)]) == 0
    with np.load(out / "states.npz") as data:  # as written before the rewards were recorded
        np.savez(
            out / "states.npz", **{k: data[k] for k in data.files if k not in ("reward", "terminal", "ended")}
        )
    assert StateSet.load(out / "states.npz") is None
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 0
    assert "reusing the recorded states" not in capsys.readouterr().err
    assert StateSet.load(out / "states.npz").reward.shape == (3 * 40,)


def test_a_population_is_analysed_per_seed_with_a_summary(runs, tmp_path):
    out = tmp_path / "pop"
    compare = ["--compare", str(runs["single"])]
    assert (
        main(["analyze", str(runs["pop"]), "--steps", "40", "--method", "pca", "--out", str(out), *compare])
        == 0
    )
    assert (out / "seed0" / "report.html").is_file() and (out / "seed1" / "report.html").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    probe = summary["metrics"]["task_probe_accuracy"]
    assert len(probe["per_seed"]) == 2 and probe["mean"] == pytest.approx(np.mean(probe["per_seed"]))
    from scipy import stats

    half = stats.t.ppf(0.975, 1) * np.std(probe["per_seed"], ddof=1) / np.sqrt(2)
    assert probe["ci95"] == pytest.approx(half)
    cka = summary["metrics"]["cka vs single"]["per_seed"]
    for seed, value in zip((0, 1), cka, strict=True):
        per_member = json.loads((out / f"seed{seed}" / "metrics.json").read_text())["metrics"]["cka"]
        assert value == next(iter(per_member.values()))["all states"]
    # a member analysed alone gives the same numbers as inside the population analysis
    alone = tmp_path / "alone"
    assert (
        main(
            [
                "analyze",
                str(runs["pop"]),
                "--seeds",
                "1",
                "--steps",
                "40",
                "--method",
                "pca",
                "--out",
                str(alone),
            ]
        )
        == 0
    )
    a = StateSet.load(out / "seed1" / "states.npz")
    b = StateSet.load(alone / "seed1" / "states.npz")
    np.testing.assert_array_equal(a.features, b.features)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--seeds", "7"], "no member with seed 7"),
        (["--epsilon", "2"], "not a number in [0, 1]"),
        (["--method", "umap"], "invalid choice"),
        (["--steps", "5"], "--steps must be at least 10"),
    ],
)
def test_analyze_mistakes_give_one_line_and_exit_code_2(runs, tmp_path, capsys, extra, needle):
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(["analyze", str(runs["multi"]), "--out", str(tmp_path / "x"), *extra]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x" / "states.npz").exists()


def test_analyze_refuses_a_folder_that_is_not_a_run_and_a_comparison_without_common_tasks(tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    other = small_config(epochs=1)
    other.tasks = other.tasks[2:]  # Car-On-Hill only
    Trainer.create(other, tmp_path / "coh", progress=False).run()
    mc = small_config(epochs=1)
    from mtdqn.config import TaskConfig

    mc.tasks = [TaskConfig("MountainCar-v0", horizon=200)]
    Trainer.create(mc, tmp_path / "mc", progress=False).run()
    code = main(
        [
            "analyze",
            str(tmp_path / "coh"),
            "--steps",
            "20",
            "--method",
            "pca",
            "--compare",
            str(tmp_path / "mc"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "shares no task" in err[-1]


def test_the_untrained_network_of_an_epoch_0_run_can_be_analysed(tmp_path):
    config = small_config(epochs=0)
    Trainer.create(config, tmp_path / "untrained", progress=False).run()
    (agent,) = load_agents(tmp_path / "untrained")
    fresh = MultiTaskQNetwork(task_specs(config.tasks), config.network, n_members=1, seeds=[0])
    assert agent.epoch == 0
    assert all(  # the weights are the init of seed 0
        np.array_equal(w, fw.detach().numpy()) for (w, _), fw in zip(agent.params, fresh.weights, strict=True)
    )
    out = tmp_path / "analysis"
    args = ["analyze", str(tmp_path / "untrained"), "--steps", "20", "--method", "pca", "--out", str(out)]
    assert main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["epoch"] == 0
