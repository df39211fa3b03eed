"""Configuration checks: a hand-edited config.json and out-of-range settings are one clear UserError."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mtdqn.cli import main
from mtdqn.config import Config, LearnerConfig, TaskConfig, arch_preset, atari_run_config, task_preset
from mtdqn.errors import UserError
from mtdqn.replay import MultiTaskReplay
from mtdqn.tasks import make_env

FILE_FIX = "start a new run with --overwrite"


def _saved() -> dict:
    """What a run of the deramo-gym preset saves in its config.json, as JSON gives it back."""
    return json.loads(json.dumps(Config(tasks=task_preset("deramo-gym")).to_dict()))


def _edited(edit: Callable[[dict], object]) -> dict:
    data = _saved()
    edit(data)
    return data


def _one_line_exit_2(argv: list[str], capsys) -> str:
    """Run the CLI; assert exit code 2 with one line and no traceback; return that line."""
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


# --- types in a saved configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda d: d["learner"].update(lr="fast"), ["learner.lr is 'fast'", "not a number"]),
        (lambda d: d["tasks"][0].update(gamma="x"), ["tasks[0].gamma is 'x'", "not a number"]),
        (lambda d: d["tasks"][1].update(horizon=2.5), ["tasks[1].horizon is 2.5", "an integer or null"]),
        (lambda d: d["tasks"][2].update(env_id=7), ["tasks[2].env_id is 7", "not a string"]),
        (lambda d: d["replay"].update(capacity=5000.0), ["replay.capacity is 5000.0", "an integer"]),
        (lambda d: d["learner"].update(double_dqn=1), ["learner.double_dqn is 1", "true or false"]),
        (lambda d: d["run"].update(background_eval="no"), ["run.background_eval is 'no'", "true or false"]),
        (lambda d: d["run"].update(epochs=True), ["run.epochs is true", "an integer"]),
        (lambda d: d["run"].update(seeds=0), ["run.seeds is 0", "a list of integers"]),
        (lambda d: d["run"].update(seeds=[1, "2"]), ["run.seeds[1] is '2'", "an integer"]),
        (lambda d: d.update(tasks={"env_id": "CartPole-v1"}), ["tasks is {", "a list of objects"]),
        (lambda d: d.update(tasks=["CartPole-v1"]), ["tasks[0] is 'CartPole-v1'", "TaskConfig"]),
        (lambda d: d.update(network=None), ["network is null", "NetworkConfig"]),
        (lambda d: d.update(transfer={"source": 3}), ["transfer.source is 3", "a string"]),
        (
            lambda d: d.update(transfer={"source": "runs/a", "unfreeze_epoch": "never"}),
            ["transfer.unfreeze_epoch is 'never'", "an integer or null"],
        ),
        (lambda d: d.update(atari=[]), ["atari is []", "AtariConfig"]),
        (lambda d: d.pop("tasks"), ["no 'tasks' section"]),
        (lambda d: d.pop("learner"), ["no 'learner' section"]),
        (lambda d: d.update(schedule={}), ["unknown section 'schedule'"]),
        (lambda d: d["learner"].update(compile=True), ["learner has an unknown field 'compile'"]),
        (lambda d: d["tasks"][0].pop("env_id"), ["tasks[0] has no field 'env_id'"]),
        (lambda d: d.update(transfer={"unfreeze_epoch": 3}), ["transfer has no field 'source'"]),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_a_wrong_saved_value_names_its_field_and_the_fix(
    edit: Callable[[dict], object], needles: list[str]
) -> None:
    with pytest.raises(UserError) as exc:
        Config.from_dict(_edited(edit))
    message = str(exc.value)
    for needle in [*needles, FILE_FIX, "edited by hand"]:
        assert needle in message
    assert "\n" not in message


def test_a_saved_config_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(UserError, match="it must be an object of sections"):
        Config.from_dict([1, 2])  # type: ignore[arg-type]


def test_saved_configurations_of_older_versions_still_load() -> None:
    old = _saved()
    for section, name in [
        ("learner", "kernels"),
        ("learner", "lr_fan_in"),
        ("learner", "lr_fan_in_conv"),
        ("learner", "precision"),
        ("learner", "optimizer"),
        ("learner", "rmsprop_decay"),
        ("learner", "clip_targets"),
        ("network", "feature_width"),
        ("run", "eval_workers"),
        ("run", "torch_threads"),
    ]:
        del old[section][name]
    for optional in ("transfer", "atari", "atari_network"):
        del old[optional]
    loaded = Config.from_dict(old)
    # the defaults, but kernels "torch": the only kernels before the field existed
    expected = Config(tasks=task_preset("deramo-gym"), learner=LearnerConfig(kernels="torch"))
    assert loaded == expected
    assert loaded.learning_fingerprint() == expected.learning_fingerprint()
    clipped = dataclasses.replace(expected, learner=LearnerConfig(kernels="torch", clip_targets=True))
    assert clipped.learning_fingerprint() != expected.learning_fingerprint()
    channels = LearnerConfig(kernels="torch", lr_fan_in=64, lr_fan_in_conv="channels")
    kernel = dataclasses.replace(channels, lr_fan_in_conv="kernel")
    assert (
        dataclasses.replace(expected, learner=channels).learning_fingerprint()
        != dataclasses.replace(expected, learner=kernel).learning_fingerprint()
    )


def test_integers_are_taken_for_floats_and_keep_the_fingerprint() -> None:
    original = Config(tasks=[TaskConfig("CartPole-v1", gamma=1)], learner=LearnerConfig(lr=1, huber_delta=2))
    loaded = Config.from_dict(json.loads(json.dumps(original.to_dict())))
    loaded.validate()
    assert loaded == original
    # kept as written: a run saved with gamma 1 (not 1.0) resumes with its checkpoint's fingerprint
    assert loaded.learning_fingerprint() == original.learning_fingerprint()


def test_atari_and_transfer_configs_round_trip() -> None:
    atari = atari_run_config("review")
    assert Config.from_dict(json.loads(json.dumps(atari.to_dict()))) == atari
    data = _edited(
        lambda d: d.update(transfer={"source": "runs/a", "unfreeze_epoch": None, "source_seeds": [3]})
    )
    loaded = Config.from_dict(data)
    assert loaded.transfer is not None
    assert (loaded.transfer.unfreeze_epoch, loaded.transfer.source_seeds) == (None, [3])


# --- ranges of the settings --------------------------------------------------------------------------------


def _config(**learner) -> Config:
    config = Config(tasks=task_preset("review-control"))
    for name, value in learner.items():
        setattr(config.learner, name, value)
    return config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lr", float("nan")),
        ("lr", float("inf")),
        ("lr", 0.0),
        ("adam_eps", float("inf")),
        ("adam_eps", float("nan")),
        ("adam_eps", 0.0),
        ("adam_eps", -1e-8),
        ("huber_delta", -1.0),
        ("huber_delta", 0.0),
        ("huber_delta", float("nan")),
        ("huber_delta", float("inf")),
    ],
)
def test_learner_floats_must_be_positive_and_finite(field: str, value: float) -> None:
    with pytest.raises(UserError, match=rf"learner\.{field} is {value}; it must be a positive finite number"):
        _config(**{field: value}).validate()


def test_other_float_settings_refuse_nan_and_inf() -> None:
    for edit, needle in (
        (lambda c: setattr(c.tasks[0], "gamma", float("nan")), "gamma of CartPole is nan"),
        (lambda c: setattr(c.exploration, "eps_end", float("nan")), "eps_end is nan"),
        (lambda c: setattr(c.exploration, "eval_epsilon", float("inf")), "eval_epsilon is inf"),
        (lambda c: setattr(c.learner, "rmsprop_decay", float("nan")), "RMSProp decay is nan"),
    ):
        config = _config()
        edit(config)
        with pytest.raises(UserError, match=needle):
            config.validate()
    _config(lr=0.5, adam_eps=1e-3, huber_delta=10.0).validate()  # finite positive values pass


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--task", "CartPole-v1"], "task CartPole-v1 is listed twice (tasks[0] and tasks[1]"),
        (["--task", "Acrobot-v1", "--task", "CartPole-v1"], "(tasks[0] and tasks[2] are the same)"),
    ],
)
def test_train_refuses_a_task_given_twice(argv: list[str], needle: str, tmp_path: Path, capsys) -> None:
    err = _one_line_exit_2(["train", "--task", "CartPole-v1", *argv, "--runs-dir", str(tmp_path)], capsys)
    assert needle in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("learner.huber_delta=-1", "learner.huber_delta is -1.0"),
        ("learner.huber_delta=0", "learner.huber_delta is 0.0"),
        ("learner.adam_eps=0", "learner.adam_eps is 0.0"),
        ("network.arch=bogus", "--set network.arch is not allowed"),  # it would change no layer
        ("network.arch=tiny", "--set network.arch is not allowed"),
    ],
)
def test_experiment_overrides_are_checked_before_training(
    override: str, needle: str, tmp_path: Path, capsys
) -> None:
    argv = ["experiment", "deramo-gym", "--seeds", "1", "--set", override, "--out", str(tmp_path)]
    err = _one_line_exit_2([*argv, "--no-progress"], capsys)
    assert needle in err
    assert not any(tmp_path.rglob("*.json"))


def test_network_arch_of_a_control_run_is_a_control_preset() -> None:
    for arch in ("deramo", "tiny"):
        Config(tasks=[TaskConfig("CartPole-v1")], network=arch_preset(arch)).validate()
    config = Config(tasks=[TaskConfig("CartPole-v1")])
    config.network.arch = "bogus"
    with pytest.raises(UserError, match="one of deramo, tiny"):
        config.validate()
    atari_run_config("deramo-atari").validate()  # an Atari run leaves `network` at its defaults


def test_the_same_task_twice_is_refused_but_one_env_with_two_settings_is_not() -> None:
    twice = Config(tasks=[*task_preset("review-control"), task_preset("review-control")[1]])
    with pytest.raises(UserError, match=r"task Acrobot is listed twice \(tasks\[1\] and tasks\[3\]"):
        twice.validate()
    games = atari_run_config("review", ["ALE/Pong-v5", "ALE/Pong-v5"])
    with pytest.raises(UserError, match="task Pong is listed twice"):
        games.validate()
    Config(tasks=[TaskConfig("CartPole-v1", horizon=5), TaskConfig("CartPole-v1", horizon=500)]).validate()
    Config(tasks=[TaskConfig("CartPole-v1", gamma=0.9), TaskConfig("CartPole-v1")]).validate()


def test_a_replay_smaller_than_a_batch_is_sampled_with_replacement() -> None:
    """Kept on purpose: uniform sampling with replacement makes a batch larger than the memory
    well-defined (each stored transition is drawn about batch/capacity times)."""
    config = Config(tasks=[TaskConfig("CartPole-v1")])
    config.replay.capacity, config.learner.batch_size = 5, 8
    config.validate()
    replay = MultiTaskReplay(1, 1, capacity=5, obs_dim=2)
    for k in range(7):  # wraps around: the memory keeps steps 2..6
        obs, next_obs = np.full((1, 1, 2), k, np.float32), np.full((1, 1, 2), k + 1, np.float32)
        replay.add(obs, np.full((1, 1), k), np.zeros((1, 1)), next_obs, np.zeros((1, 1)))
    uniform = np.linspace(0.0, 0.999, 8).reshape(1, 1, 1, 8)
    batch = replay.gather_rows(replay.plan_indices(uniform, np.array([0]))[0], 8)
    assert batch.obs.shape == (1, 1, 8, 2)
    actions = batch.action.flatten().tolist()
    assert set(actions) == {2, 3, 4, 5, 6} and len(actions) == 8
    assert (batch.next_obs == batch.obs + 1).all()


# --- seeds ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seeds", "problem"),
    [([], "it is empty"), ([0, -3], "-3 is negative"), ([1, 2, 1], "a seed repeats")],
)
def test_the_seeds_message_says_what_is_wrong_with_run_seeds(seeds: list[int], problem: str) -> None:
    config = Config(tasks=[TaskConfig("CartPole-v1")])
    config.run.seeds = seeds
    with pytest.raises(UserError) as exc:
        config.validate()
    message = str(exc.value)
    assert message.startswith(f"run.seeds is {seeds}: {problem}")
    assert "non-empty list of distinct non-negative integers" in message


@pytest.mark.parametrize(("seeds", "needle"), [([], "run.seeds is []: it is empty"), (0, "run.seeds is 0")])
def test_resume_names_run_seeds_of_an_edited_config(seeds, needle: str, tmp_path: Path, capsys) -> None:
    from mtdqn.train import Trainer

    run = tmp_path / "r"
    Trainer.create(Config(tasks=[TaskConfig("CartPole-v1")]), run, progress=False)
    path = run / "config.json"
    payload = json.loads(path.read_text())
    payload["config"]["run"]["seeds"] = seeds
    path.write_text(json.dumps(payload))
    err = _one_line_exit_2(["train", "--resume", str(run), "--no-progress"], capsys)
    assert needle in err and "no seed given" not in err


# --- environment ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["Pong-v5", "PongNoFrameskip-v4"])
def test_an_atari_game_without_its_ale_namespace_gets_the_ale_id(env_id: str) -> None:
    pytest.importorskip("ale_py")  # registers PongNoFrameskip-v4: refused for its image observations
    with pytest.raises(UserError, match="use ALE/Pong-v5"):
        make_env(TaskConfig(env_id))


def test_train_suggests_the_ale_id(tmp_path: Path, capsys) -> None:
    pytest.importorskip("ale_py")
    err = _one_line_exit_2(["train", "--task", "Breakout-v5", "--runs-dir", str(tmp_path)], capsys)
    assert "unknown environment 'Breakout-v5'" in err and "use ALE/Breakout-v5" in err
    with pytest.raises(UserError) as exc:
        make_env(TaskConfig("NoSuchEnv-v0"))
    assert "ALE/" not in str(exc.value)


def test_an_integer_in_a_float_field_reads_and_hashes_as_the_float() -> None:
    config = Config(tasks=task_preset("deramo-gym"))
    saved = config.to_dict()
    # what `jq '.config.run.epochs = 5'` writes back: 1.0 -> 1, 0.0 -> 0
    saved["learner"]["huber_delta"], saved["exploration"]["eps_start"] = 1, 1
    saved["exploration"]["eval_epsilon"] = 0
    edited = Config.from_dict(saved)
    assert isinstance(edited.learner.huber_delta, float) and isinstance(
        edited.exploration.eval_epsilon, float
    )
    assert edited.learning_fingerprint() == config.learning_fingerprint()
    from_python = Config(tasks=[TaskConfig("CartPole-v1", gamma=1)])  # an int where a float belongs
    assert (
        from_python.learning_fingerprint()
        == Config(tasks=[TaskConfig("CartPole-v1", gamma=1.0)]).learning_fingerprint()
    )
